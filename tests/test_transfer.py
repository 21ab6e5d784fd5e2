"""The transfer recipe: three corpora read with labels and speakers, leave-one-corpus-out
splits that never train on the test corpus, per-corpus standardisation, the stream's
running statistics, and the pooled model folder the product loads."""

from pathlib import Path

import numpy as np
import pytest

from streamer.audio.adapt import Moments, RunningNorm
from streamer.core.labels import LABELS
from streamer.train.corpora import scan
from streamer.train.pooled import PooledSet
from streamer.train.transfer import Recipe, Rows, clip_weights, evaluate, fit_and_predict, splits


def fake_set(corpus, speakers, n_per=14, dim=6, shift=0.0, seed=0):
    """Rows around a label's centre (the same in every corpus), moved and scaled per corpus, in the layout of
    :class:`PooledSet`: two 'encoder' columns blocks and prosody."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 2, (len(LABELS), dim))  # the same in every corpus
    labels, spk, x = [], [], []
    for s in speakers:
        for k in range(n_per):
            lab = LABELS[k % len(LABELS)]
            labels.append(lab)
            spk.append(f"{corpus}:{s}")
            row = centres[LABELS.index(lab)] + rng.normal(0, 0.3, dim)
            x.append(row * (1.0 + abs(shift) / 4) + shift)  # each corpus on its own scale and offset
    x = np.array(x, np.float32)
    n = len(labels)
    return PooledSet(x, np.arange(n), np.full(n, 50), np.zeros((0, dim), np.float32), np.zeros(0, int), np.zeros(0, int),
                     [f"{corpus}/{i}.wav" for i in range(n)], labels, spk, [corpus] * n,
                     {"enc": (0, 4), "prosody": (4, 6)})


def test_loco_splits_never_train_on_the_test_corpus():
    rows = Rows.join([fake_set("a", ["1", "2", "3"]), fake_set("b", ["1", "2"], shift=5), fake_set("c", ["1", "2", "3"], shift=-3)])
    sp = splits(rows, corpora=("a", "b", "c"), speaker_folds={"a": 3, "c": 3})
    loco = [s for s in sp if s.kind == "loco"]
    assert [s.name for s in loco] == ["loco_a", "loco_b", "loco_c"]
    for s in loco:
        assert not (rows.corpus[s.train] == s.test_corpus).any()
        assert (rows.corpus[s.test] == s.test_corpus).all() and s.test.sum() == (rows.corpus == s.test_corpus).sum()
    folds = [s for s in sp if s.kind == "speakers"]
    assert len(folds) == 6
    for s in folds:
        assert not set(rows.speaker[s.train]) & set(rows.speaker[s.test])  # speakers never on both sides
        assert s.train.sum() + s.test.sum() == len(rows.y)


def test_augmented_copies_train_only_with_their_clip():
    a = fake_set("a", ["1", "2"])
    b = fake_set("b", ["1", "2"], shift=5)
    rows = Rows.join([a, b]).with_copies({"noisy": [a, b]})
    assert len(rows.aug_clip) == len(rows.y)
    sp = next(s for s in splits(rows, corpora=("a", "b"), speaker_folds={}) if s.name == "loco_a")
    used = sp.train[rows.aug_clip]
    assert not (rows.corpus[rows.aug_clip[used]] == "a").any()


def test_clip_weights_balance_corpora_and_classes():
    rows = Rows.join([fake_set("a", ["1", "2", "3"]), fake_set("b", ["1"], shift=5)])
    clips = np.arange(len(rows.y))
    w = clip_weights(rows, clips, "corpus")
    assert w.sum() == pytest.approx(1.0)
    assert w[rows.corpus == "a"].sum() == pytest.approx(0.5) and w[rows.corpus == "b"].sum() == pytest.approx(0.5)
    for c in ("a", "b"):
        per_class = [w[(rows.corpus == c) & (rows.y == k)].sum() for k in np.unique(rows.y[rows.corpus == c])]
        assert np.allclose(per_class, per_class[0])


def test_per_corpus_standardisation_transfers_where_one_standardisation_does_not():
    """The label lives in column 0 in every corpus, each corpus on its own offset and scale:
    standardising each corpus by its own statistics (no labels) lets the third be read."""
    rows = Rows.join([fake_set("a", ["1", "2"]), fake_set("b", ["1", "2"], shift=8, seed=1),
                      fake_set("c", ["1", "2"], shift=-12, seed=2)])
    sp = [s for s in splits(rows, corpora=("a", "b", "c"), speaker_folds={}) if s.kind == "loco"]
    per_corpus = evaluate(rows, Recipe(blocks=("enc", "prosody"), norm="corpus", l2=1e-3), sp, phone=False)
    one = evaluate(rows, Recipe(blocks=("enc", "prosody"), norm="global", l2=1e-3), sp, phone=False)
    assert per_corpus["loco_mean_ua"] > 0.9
    assert per_corpus["loco_mean_ua"] > one["loco_mean_ua"] + 0.2
    assert 0 < per_corpus["temperature"] and set(per_corpus["loco_ece_per_corpus"]) == {"a", "b", "c"}


def test_running_norm_starts_at_the_prior_and_follows_the_stream():
    rng = np.random.default_rng(0)
    prior = Moments.of(rng.normal(0, 1, (500, 3)))
    norm = RunningNorm(prior, prior_windows=20, horizon=100)
    first = norm.standardise(np.array([[10.0, 10.0, 10.0]]))
    assert np.all(first > 5)  # far from the training statistics
    for row in rng.normal(10, 1, (300, 3)):
        norm.update(row[None])
    assert np.all(np.abs(norm.standardise(np.array([[10.0, 10.0, 10.0]]))) < 0.5)  # the stream's own now
    assert norm.moments().weight < 20 + 100 + 1  # forgetting bounds the stream's weight
    norm.reset()
    assert np.allclose(norm.standardise(np.array([[10.0, 10.0, 10.0]])), first)


def test_running_adaptation_reads_a_shifted_stream_better_than_the_prior():
    rows = Rows.join([fake_set("a", ["1", "2"]), fake_set("b", ["1", "2"], shift=8, seed=1),
                      fake_set("c", ["1", "2"], n_per=70, shift=-12, seed=2)])
    sp = [s for s in splits(rows, corpora=("a", "b", "c"), speaker_folds={}) if s.name == "loco_c"]
    r = Recipe(blocks=("enc", "prosody"), norm="corpus", l2=1e-3)
    running = evaluate(rows, r, sp, phone=False, adapt="running", prior_windows=5, horizon=1000)
    prior = evaluate(rows, r, sp, phone=False, adapt="prior")
    assert running["runs"]["loco_c"]["ua"] > prior["runs"]["loco_c"]["ua"] + 0.2


@pytest.mark.slow
@pytest.mark.corpus("reads every nEMO clip's label and speaker and checks them against its manifest.tsv")
def test_nemo_is_read_with_labels_and_speakers(nemo):
    found = scan([nemo])
    clips = found.by_corpus()["nemo"]
    assert len(clips) == 4481 and not found.skipped.get("unrecognised file name")
    assert {c.label for c in clips} == {"angry", "fear", "happy", "neutral", "sad", "surprise"}  # no disgust
    assert len({c.speaker for c in clips}) == 9 and all(c.speaker.startswith("nemo:") for c in clips)
    # the file names agree with the corpus's own manifest
    import csv

    with open(nemo / "manifest.tsv", newline="") as f:
        listed = {r["path"].split("/")[-1]: (r["label"], r["speaker"]) for r in csv.DictReader(f, delimiter="\t")}
    for c in clips[:300]:
        assert listed[c.path.name] == (c.label, c.speaker.split(":")[1])
