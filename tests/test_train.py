"""The training loop learns, is reproducible, and never mixes speakers across splits."""

from dataclasses import replace

import pytest
import torch

from streamer.audio.emotion import encode_window
from streamer.audio.features import prepare
from streamer.audio.io import load_audio
from streamer.audio.model import NetConfig
from streamer.labels import INDEX
from streamer.train.audio import ClipData, TrainConfig, fit, pick_val_speakers, sample_weights, speaker_folds
from streamer.train.corpora import scan

SMALL = NetConfig(whisper_channels=32, prosody_channels=16, embedding=32, dropout=0.0)


@pytest.fixture(scope="module")
def tiny_set(ravdess, whisper):
    """Two clips of each of the 7 labels from one actor, encoded as live windows."""
    clips = [c for c in scan([ravdess / "Actor_01"]).clips]
    picked = []
    for label in INDEX:
        picked += [c for c in clips if c.label == label][:2]
    items = []
    for c in picked:
        x = prepare(load_audio(c.path))
        items.append(ClipData(INDEX[c.label], c.corpus, c.speaker, [[encode_window(whisper, x[:40000])]]))
    return items


def tiny_config(**kw):
    return replace(TrainConfig(epochs=30, patience=30, batch_size=14, samples_per_epoch=56, lr=3e-3,
                               label_smoothing=0.0, clean_prob=1.0, select_after=1), **kw)


def test_training_loop_overfits_a_small_set(tiny_set):
    torch.set_num_threads(1)
    res = fit(tiny_set, tiny_set, tiny_config(), SMALL, seed=3)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert res.val_ua >= 0.9  # evaluated on the training clips: it has learned them
    assert 0.05 < res.temperature < 20


def test_training_is_reproducible(tiny_set):
    torch.set_num_threads(1)
    cfg = tiny_config(epochs=3)
    a = fit(tiny_set, tiny_set, cfg, SMALL, seed=5)
    b = fit(tiny_set, tiny_set, cfg, SMALL, seed=5)
    for (ka, va), (kb, vb) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_folds_are_speaker_disjoint():
    speakers = [f"ravdess:{i:02d}" for i in range(1, 21)]
    folds = speaker_folds(speakers, 5)
    assert [len(f) for f in folds] == [4] * 5
    assert sorted(s for f in folds for s in f) == speakers
    for k, test in enumerate(folds):
        rest = sorted(set(speakers) - set(test))
        val, calib = pick_val_speakers(rest, 3, seed=k)
        assert len(val) == 3 and not set(val) & set(test) and calib == []
        val2, calib2 = pick_val_speakers(rest, 3, seed=k, calib=2)
        assert len(val2) == 3 and len(calib2) == 2 and not (set(val2) | set(calib2)) & set(test) and not set(val2) & set(calib2)


def test_sample_weights_balance_corpora_and_classes():
    items = [ClipData(0, "ravdess", "a", [])] * 10 + [ClipData(1, "ravdess", "a", [])] * 30 + [ClipData(0, "tess", "b", [])] * 60
    w = sample_weights(items, "ravdess", 0.6)
    assert w.sum() == pytest.approx(1.0)
    assert w[:10].sum() == pytest.approx(0.3) and w[10:40].sum() == pytest.approx(0.3)
    assert w[40:].sum() == pytest.approx(0.4)
