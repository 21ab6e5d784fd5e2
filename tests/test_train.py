"""The training loop learns, is reproducible, and never mixes speakers across splits."""

from dataclasses import replace

import pytest
import torch

from streamer.audio.windows import encode_window
from streamer.audio.features import prepare
from streamer.audio.io import load_audio
from streamer.audio.model import NetConfig
from streamer.core.labels import INDEX
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


@pytest.mark.corpus("trains a small network on one RAVDESS actor's clips of the 7 labels")
def test_training_loop_overfits_a_small_set(tiny_set):
    torch.set_num_threads(1)
    res = fit(tiny_set, tiny_set, tiny_config(), SMALL, seed=3)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert res.val_ua >= 0.9  # evaluated on the training clips: it has learned them
    assert 0.05 < res.temperature < 20


@pytest.mark.corpus("trains a small network on one RAVDESS actor's clips of the 7 labels")
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


def test_linear_head_learns_and_round_trips(tmp_path):
    import numpy as np

    from streamer.audio.linear import LinearHead
    from streamer.train.linear import fit_linear

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 700)
    x = rng.normal(0, 1, (700, 20)).astype(np.float32)
    x[np.arange(700), y] += 2.5
    head = fit_linear(x, y, np.ones(700), n_classes=7, l2=1e-3)
    assert (head.logits(x).argmax(1) == y).mean() > 0.8
    strong = fit_linear(x, y, np.ones(700), n_classes=7, l2=10.0)
    assert np.abs(strong.coef).sum() < 0.1 * np.abs(head.coef).sum()  # the penalty shrinks the weights
    head.save(tmp_path / "h.npz")
    again = LinearHead.load(tmp_path / "h.npz")
    assert np.array_equal(again.logits(x), head.logits(x))


@pytest.mark.corpus("plans the training recipe's splits over the corpora's speakers, corpora and words")
def test_plan_splits_keep_test_out_of_training(ravdess, tess):
    from streamer.train.recipe import plan_splits

    clips = scan([ravdess, tess]).clips
    cfg = TrainConfig()
    splits = plan_splits(cfg, clips)
    assert [s.kind for s in splits] == ["loao"] * 5 + ["loco", "loco", "final"]
    for s in splits:
        train = {c.path for c in clips if s.train(c)}
        val = {c.path for c in clips if s.val(c)}
        test = {c.path for c in clips if s.test(c)} if s.test else set()
        assert train and val and not train & val and not train & test and not val & test
        if s.kind == "loao":
            assert {c.speaker for c in clips if s.test(c)} == set(s.info["test_speakers"])
            assert not {c.speaker for c in clips if c.path in train} & set(s.info["test_speakers"])
        if s.kind == "loco":
            assert {c.corpus for c in clips if c.path in train | val} == {s.info["train_corpus"]}
            assert {c.corpus for c in clips if c.path in test} == set(s.info["test_corpora"])
    tess_split = next(s for s in splits if s.name == "loco_tess")
    from streamer.train.recipe import text_item

    # validation words are never spoken in training
    assert not {text_item(c) for c in clips if tess_split.train(c)} & set(tess_split.info["val_items"])


def test_cross_fitted_temperature():
    import numpy as np

    from streamer.train.blend import HeldOut, cross_fitted, fit_temperature

    rng = np.random.default_rng(1)

    def make(sharp):
        y = rng.integers(0, 7, 500)
        z = rng.normal(0, 1, (500, 7))
        z[np.arange(500), y] += 1.2
        return HeldOut(sharp * z, np.zeros((500, 7)), np.arange(500), np.ones(500), list(y))

    sets = {"a": make(3.0), "b": make(3.0)}
    out = cross_fitted(sets, 0.0)
    assert 2.0 < out["per_set"]["a"]["temperature_from_others"] < 4.5
    raw = __import__("streamer.train.metrics", fromlist=["x"]).expected_calibration_error(sets["a"].probs(0.0, 1.0), sets["a"].y)
    assert out["pooled_ece"] < 0.5 * raw  # calibrated on the other set, still far better than raw
    assert fit_temperature(sets["a"], 0.0) > 2.0


def test_every_ablation_variant_builds_a_network():
    """ser-train --ablation compares these variants; each must be a valid change to the shipped net."""
    from streamer.audio.model import AudioEmotionNet
    from streamer.core.paths import model_dir
    from streamer.train.ablation import ABLATION, ABLATION_BUDGET
    from streamer.train.recipe import load_config

    cfg = load_config(model_dir("audio-emotion-network") / "train.toml")
    assert len(ABLATION) == 4 and set(ABLATION_BUDGET) <= set(vars(cfg))
    variants = {name: replace(cfg.net, **change) for name, change in ABLATION.items()}
    assert len(set(variants.values())) == len(ABLATION)  # four different networks
    for name, net_cfg in variants.items():
        assert sum(p.numel() for p in AudioEmotionNet(net_cfg).parameters()) > 0, name
