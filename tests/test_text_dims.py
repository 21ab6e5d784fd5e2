"""The text branch's arousal/valence head (EmoBank), XED rows, the three-domain selection."""

import json

import numpy as np
import pytest

from streamer.core.labels import INDEX, LABELS


@pytest.mark.corpus("reads XED's split files and checks their counts against its MANIFEST.md")
def test_xed_rows_are_read_with_their_labels(xed):
    from streamer.train.textdata import read_xed

    dev = read_xed(xed, "dev")
    # the counts of xed/MANIFEST.md
    assert dev.counts() == {"angry": 263, "disgust": 149, "fear": 177, "happy": 280, "neutral": 843, "sad": 166,
                            "surprise": 183}
    assert np.all(dev.targets.max(axis=1) == 1) and dev.source == "xed-dev"
    train = read_xed(xed, "train")
    assert len(train) == 16180 and train.counts()["neutral"] == 7070
    lines = (xed / "train.tsv").read_text(encoding="utf-8").splitlines()[:50]
    for line, label in zip(lines, train.labels()[:50]):
        assert LABELS[label] == line.rpartition("\t")[2]


@pytest.mark.corpus("loads the text recipe's training and dev splits from the three corpora")
def test_xed_in_the_recipe(goemotions, meld, xed):
    from streamer.core.errors import ConfigError
    from streamer.train.text import TextTrainConfig, load_splits

    cfg = TextTrainConfig(goemotions=str(goemotions), meld=str(meld), xed=str(xed),
                          train_sets=("goemotions", "meld", "xed"), dev_sets=("goemotions", "meld", "xed"), xed_repeat=2)
    s = load_splits(cfg)
    assert set(s.dev) == {"goemotions-dev", "meld-dev", "xed-dev"}
    assert len(s.train) == 43410 + 9988 + 2 * 16180
    with pytest.raises(ConfigError):
        TextTrainConfig(train_sets=("goemotions", "tweets"))


def test_three_domain_selection_criterion():
    from streamer.train.text import selection_score

    # one vote per domain: a checkpoint that gains on GoEmotions but loses more elsewhere is not chosen
    a = {"goemotions-dev": 0.64, "meld-dev": 0.28, "xed-dev": 0.33}
    b = {"goemotions-dev": 0.63, "meld-dev": 0.30, "xed-dev": 0.36}
    assert selection_score(b) > selection_score(a)
    assert selection_score(b) == pytest.approx(np.mean(list(b.values())))
    with pytest.raises(ValueError):
        selection_score({})


def test_temperature_weights_each_dev_set_alike():
    from streamer.train.text import fit_temperature

    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 600)
    sharp = np.eye(7)[y] * 8.0  # always right, confident
    wrong = np.eye(7)[(y + 1) % 7] * 8.0  # always wrong, confident
    logits, labels = np.concatenate([sharp[:500], wrong[:100]]), np.concatenate([y[:500], y[:100]])
    t_rows = fit_temperature(logits, labels)
    weights = np.concatenate([np.full(500, 1 / 500), np.full(100, 1 / 100)])
    assert fit_temperature(logits, labels, weights) > t_rows  # the small wrong set counts as much: softer


def test_ridge_and_pearson():
    from streamer.train.metrics import pearson
    from streamer.train.textlinear import fit_ridge

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 8))
    y = np.stack([x[:, 0] - x[:, 1], 0.5 * x[:, 2]], axis=1) + 0.1 * rng.normal(size=(200, 2))
    w, b = fit_ridge(x, y, 1.0)
    p = x @ w + b
    assert w.shape == (8, 2) and b.shape == (2,)
    assert pearson(p[:, 0], y[:, 0]) > 0.95 and pearson(p[:, 1], y[:, 1]) > 0.9


@pytest.mark.corpus("reads EmoBank's test split and its rating scale")
def test_emobank_rows(emobank):
    from streamer.train.textdata import read_emobank

    test = read_emobank(emobank, "test")
    assert len(test) == 1000 and test.arousal.shape == test.valence.shape == (1000,)
    assert test.arousal.min() >= -1 and test.valence.max() <= 1  # (x - 3) / 2


def _shipped_dims_model(text_model):
    if not text_model.has_dims:
        pytest.skip("the shipped text model has no dims head")
    return text_model


@pytest.mark.corpus("evaluates the shipped arousal/valence head on EmoBank's rated test sentences")
def test_shipped_dims_head_on_emobank_rows(text_model, emobank):
    """Loaded from the model folder; shapes, range and the sign of the correlation on a few
    EmoBank test rows."""
    from streamer.train.textdata import read_emobank
    from streamer.train.metrics import pearson

    model = _shipped_dims_model(text_model)
    rows = read_emobank(emobank, "test")
    n = 60
    d = model.predict_dims(list(rows.texts[:n]) + ["", "   "])
    assert d.shape == (n + 2, 2) and np.isnan(d[n:]).all()  # no words: no opinion
    assert np.all(np.abs(d[:n]) <= 1.0)
    assert pearson(d[:n, 1], rows.valence[:n]) > 0.3
    assert pearson(d[:n, 0], rows.arousal[:n]) > 0.0


def test_text_probs_carry_the_dims_into_the_record(text_model):
    from streamer.core.dims import all_dims, dims

    model = _shipped_dims_model(text_model)
    good, bad = model.predict_batch(["thank you so much, this is wonderful", "my dog died and i feel awful"])
    assert set(good) == set(LABELS) and abs(sum(good.values()) - 1) < 1e-5
    assert good.dims["valence"] > 0.2 > -0.2 > bad.dims["valence"]
    audio = dict.fromkeys(LABELS, 1 / 7)
    rec = all_dims(audio, good, audio)
    assert rec["text"] == {k: round(good.dims[k], 6) for k in ("arousal", "valence")}
    assert rec["text"] != dims(good) and rec["fused"] == dims(audio)
    assert all_dims(audio, None, audio)["text"] is None
    single = model.predict("thank you so much, this is wonderful")
    assert single.dims == pytest.approx(good.dims, abs=1e-5)


def test_dims_head_rides_the_compiled_network(tmp_path, monkeypatch):
    """A folder gains a dims head: the cache key changes (the compiled network is rebuilt),
    and the compiled network gives what the eager one gives, dims included."""
    import shutil

    import torch

    from streamer.text.compiled import compiled_path
    from streamer.text.emotion import DEFAULT_MODEL_DIR, base_folder
    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.train.textlinear import save_dims_head

    monkeypatch.setenv("SER_MODELS_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    for name in ("dims.pt",):
        (folder / name).unlink(missing_ok=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.pop("dims", None)
    (folder / "config.json").write_text(json.dumps(cfg))
    base = base_folder("embedded:all-MiniLM-L6-v2")
    before = compiled_path(folder, base)
    rng = np.random.default_rng(0)
    save_dims_head(folder, {"weight": rng.normal(scale=0.05, size=(384, 2)), "bias": np.array([0.1, -0.1]), "alpha": 1.0},
                   "test")
    assert compiled_path(folder, base) != before
    eager = EmbeddedTextEmotion.load(folder, compiled=False)
    texts = ["i am so angry", "what a lovely day it has been", ""]
    p0, h0, d0 = eager.predict_full(texts)
    threads = torch.get_num_threads()
    compiled = EmbeddedTextEmotion.load(folder)
    torch.set_num_threads(threads)
    assert compiled.net is None and compiled.has_dims
    p1, h1, d1 = compiled.predict_full(texts)
    assert np.array_equal(h0, h1) and np.allclose(p0, p1, atol=1e-4) and np.allclose(d0, d1, atol=1e-4)
    assert d1.shape == (3, 2) and np.all(np.abs(d1) <= 1)


def test_probe_head_folds_into_a_linear_head(tmp_path):
    """A logistic-regression head over cached vectors, written as the model's linear head,
    gives the probe's probabilities (the standardisation folded in)."""
    from streamer.train.textlinear import dev_scores, fit_probe

    rng = np.random.default_rng(0)
    for name, n in (("goemotions-train", 300), ("meld-train", 100), ("xed-train", 100),
                    ("goemotions-dev", 70), ("meld-dev", 70), ("xed-dev", 70)):
        y = rng.integers(0, 7, n)
        x = rng.normal(size=(n, 16)) + 5 + np.eye(7, 16)[y] * 4
        np.savez(tmp_path / f"{name}.npz", x=x.astype(np.float32), y=np.eye(7, dtype=np.float32)[y])
    mix = {"goemotions-train": 1, "meld-train": 2, "xed-train": 1}
    probs = fit_probe(tmp_path, mix, 1.0, False)
    weight, bias = fit_probe(tmp_path, mix, 1.0, False, linear=True)
    x = np.load(tmp_path / "xed-dev.npz")["x"]
    z = x @ weight.T + bias
    q = np.exp(z - z.max(axis=1, keepdims=True))
    assert np.allclose(q / q.sum(axis=1, keepdims=True), probs(x), atol=1e-5)
    scores = dev_scores(tmp_path, probs)
    assert set(scores) == {"goemotions-dev", "meld-dev", "xed-dev"} and min(scores.values()) > 0.5
