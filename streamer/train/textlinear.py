"""Cheap text probes over cached sentence embeddings, and the text dims head.

An encoder (the base all-MiniLM-L6-v2, or a model folder's fine-tuned one) is run once over
every split (ASR-style text, mean pooling, the vector the classifier head reads) and the
embeddings are cached; recipes are then compared with linear models on them:

    .venv/bin/python -m streamer.train.textlinear embed base runs/text-emb/base
    .venv/bin/python -m streamer.train.textlinear embed models/text-emotion runs/text-emb/shipped
    .venv/bin/python -m streamer.train.textlinear probe runs/text-emb/base
    .venv/bin/python -m streamer.train.textlinear dims models/text-emotion
    .venv/bin/python -m streamer.train.textlinear heads runs/text-emb/shipped
    .venv/bin/python -m streamer.train.textlinear head models/text-emotion runs/text-emb/shipped "g1 m1 x1, C 1.0, unweighted"

``heads CACHE`` compares label heads (logistic regression over a fine-tuned encoder's frozen
vectors, mixes of the three corpora) on the three-domain criterion; ``head FOLDER CACHE KEY``
writes the chosen one as the folder's ``head.pt`` and refits its temperature on the three
dev sets.

``dims FOLDER`` fits the dims head of a model folder on its own encoder and saves it there.

``probe`` prints (and writes ``probes.json``) the text leave-one-corpus-out (train a logistic
regression on two of GoEmotions / MELD / XED train, score the third's dev split) and the
three-domain dev criterion (:func:`streamer.train.text.selection_score`) of head recipes
trained on all three, plus both arousal/valence mappings on EmoBank.

The dims head (:func:`fit_dims_head`) is a ridge regression from that pooled vector to
(arousal, valence), fitted on EmoBank train with the penalty chosen on EmoBank dev, saved in
the model folder as ``dims.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from streamer.core.labels import LABELS
from streamer.train.metrics import pearson
from streamer.text.normalize import asr_style

DATA = Path("../shared/data/text")
CLASS_SETS = {"goemotions-train", "goemotions-dev", "meld-train", "meld-dev", "xed-train", "xed-dev"}
DIM_SETS = ("emobank-train", "emobank-dev", "emobank-test")
DIMS_FILE = "dims.pt"
ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)


def _rows(name: str, data: Path = DATA):
    """(texts, targets (N, 7) or (N, 2) arousal/valence) of a named split."""
    from streamer.train.textdata import read_emobank, read_goemotions, read_tsv, read_xed

    corpus, split = name.split("-")
    if corpus == "emobank":
        d = read_emobank(data / "emobank", split)
        return list(d.texts), np.stack([d.arousal, d.valence], axis=1)
    rows = {"goemotions": lambda: read_goemotions(data / "goemotions", split),
            "meld": lambda: read_tsv(data / "meld" / f"{split}.tsv", name),
            "xed": lambda: read_xed(data / "xed", split)}[corpus]()
    if split != "train":
        rows = rows.single()
    return list(rows.texts), rows.targets


def encoder_of(spec: str):
    """(tokenizer, encoder, max_length) of ``base`` (the base encoder) or a model folder."""
    from streamer.text.emotion import EMBEDDED_BASE, base_folder
    from streamer.text.torch_text import EmbeddedTextEmotion, import_transformers

    if spec == "base":
        tf = import_transformers()
        folder = base_folder(EMBEDDED_BASE)
        return tf.AutoTokenizer.from_pretrained(folder), tf.AutoModel.from_pretrained(folder).eval(), 64
    model = EmbeddedTextEmotion.load(spec, compiled=False)
    return model.tokenizer, model.net.encoder.eval(), model.max_length


def embed(tokenizer, encoder, texts: list[str], max_length: int, batch: int = 64) -> np.ndarray:
    """Mean-pooled last-layer vectors of ``texts`` as given (normalise them first)."""
    import torch

    from streamer.text.torch_text import encode_texts, mean_pool

    out = np.zeros((len(texts), encoder.config.hidden_size), np.float32)
    order = np.argsort([len(t) for t in texts])
    with torch.inference_mode():
        for s in range(0, len(order), batch):
            idx = order[s: s + batch]
            enc = encode_texts(tokenizer, [texts[i] or "." for i in idx], max_length)
            h = encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            out[idx] = mean_pool(h, enc["attention_mask"]).numpy()
    return out


def embed_all(spec: str, cache: Path, data: Path = DATA) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    tokenizer, encoder, max_length = encoder_of(spec)
    for name in sorted(CLASS_SETS) + list(DIM_SETS):
        path = cache / f"{name}.npz"
        if path.is_file():
            continue
        texts, y = _rows(name, data)
        x = embed(tokenizer, encoder, [asr_style(t) for t in texts], max_length)
        np.savez(path, x=x, y=y)
        print(f"{name}: {x.shape}", flush=True)


def _load(cache: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(cache / f"{name}.npz")
    return z["x"], z["y"]


def _expand(x: np.ndarray, t: np.ndarray, weight: float = 1.0):
    """Soft targets as weighted single-label rows (a row with k labels: k rows of weight 1/k)."""
    r, c = np.nonzero(t > 0)
    return x[r], c, t[r, c] * weight


def fit_probe(cache: Path, train: dict[str, float], C: float = 1.0, balanced: bool = True, linear: bool = False):
    """A logistic regression on ``{split: weight}`` of cached embeddings: its predict_proba,
    or with ``linear`` the (7, D) weights and (7,) bias of its logits on raw vectors (the
    standardisation folded in: a head the model folder can hold)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    parts = [_expand(*_load(cache, n), w) for n, w in train.items()]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    w = np.concatenate([p[2] for p in parts])
    if balanced:
        counts = np.bincount(y, weights=w, minlength=len(LABELS))
        w = w * (w.sum() / (len(LABELS) * np.maximum(counts, 1e-9)))[y]
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=300).fit(scaler.transform(x), y, sample_weight=w / w.mean())
    if linear:
        weight = clf.coef_ / scaler.scale_[None, :]
        return weight, clf.intercept_ - weight @ scaler.mean_
    return lambda z: clf.predict_proba(scaler.transform(z))


def macro_f1_of(probs: np.ndarray, y: np.ndarray) -> float:
    from streamer.train.metrics import confusion, macro_f1

    return macro_f1(confusion(y, probs.argmax(axis=1)))


def dev_scores(cache: Path, predict, sets=("goemotions-dev", "meld-dev", "xed-dev")) -> dict[str, float]:
    out = {}
    for name in sets:
        x, t = _load(cache, name)
        out[name] = round(macro_f1_of(predict(x), t.argmax(axis=1)), 4)
    return out


def loco(cache: Path, C: float = 1.0, balanced: bool = True) -> dict:
    """Train on two corpora, score the third's dev split; the mean of the three."""
    corpora = ("goemotions", "meld", "xed")
    out = {}
    for held in corpora:
        predict = fit_probe(cache, {f"{c}-train": 1.0 for c in corpora if c != held}, C, balanced)
        out[f"{held}-dev"] = dev_scores(cache, predict, (f"{held}-dev",))[f"{held}-dev"]
    out["mean"] = round(float(np.mean(list(out.values()))), 4)
    return out


# --- the dims head --------------------------------------------------------------------------

def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression (intercept not penalised): weights (D, K), bias (K,).

    >>> x = np.arange(20.0).reshape(10, 2); y = x @ np.array([[1.0], [0.5]]) + 2
    >>> w, b = fit_ridge(x, y, 1e-6); bool(np.allclose(x @ w + b, y, atol=1e-4))
    True
    """
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc = x - mx
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - my))
    return w, my - mx @ w


def dims_fit(cache: Path) -> dict:
    """:func:`dims_fit_arrays` on a cache's EmoBank embeddings."""
    return dims_fit_arrays({split: _load(cache, f"emobank-{split}") for split in ("train", "dev", "test")})


def dims_fit_arrays(sets: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Ridge on EmoBank train, alpha by the mean of the two Pearson r on EmoBank dev; returns
    the head (weights (D, 2) for arousal, valence) and its dev (and test) figures. ``sets``:
    split -> (embeddings, (N, 2) arousal/valence)."""
    xtr, ytr = sets["train"]
    xdv, ydv = sets["dev"]
    best = None
    for alpha in ALPHAS:
        w, b = fit_ridge(xtr, ytr, alpha)
        p = xdv @ w + b
        r = float(np.mean([pearson(p[:, k], ydv[:, k]) for k in range(2)]))
        if best is None or r > best[0]:
            best = (r, alpha, w, b)
    _, alpha, w, b = best
    out = {"alpha": alpha, "weight": w, "bias": b}
    for split in ("dev", "test"):
        if split in sets:
            x, y = sets[split]
            p = np.clip(x @ w + b, -1, 1)
            out[f"emobank-{split}"] = {"arousal_r": round(pearson(p[:, 0], y[:, 0]), 4),
                                       "valence_r": round(pearson(p[:, 1], y[:, 1]), 4)}
    return out


def fit_dims_for_folder(folder: Path, emobank: Path) -> dict:
    """Fit the dims head on a saved model's own pooled vectors (EmoBank train, alpha on dev)
    and save it there; returns the ridge's alpha and its EmoBank dev figures (test is read
    by the evaluation, through the product's loading)."""
    from streamer.train.textdata import read_emobank

    tokenizer, encoder, max_length = encoder_of(str(folder))
    sets = {}
    for split in ("train", "dev"):
        d = read_emobank(emobank, split)
        sets[split] = (embed(tokenizer, encoder, [asr_style(t) for t in d.texts], max_length),
                       np.stack([d.arousal, d.valence], axis=1))
    fit = dims_fit_arrays(sets)
    save_dims_head(folder, fit, "this model's encoder (mean-pooled, the vector the label head reads)")
    return {k: v for k, v in fit.items() if k not in ("weight", "bias")}


def circumplex_r(probs: np.ndarray, y: np.ndarray) -> dict:
    """Pearson r of the circumplex mapping (:func:`streamer.core.dims.dims`) of ``probs`` against
    EmoBank's (arousal, valence)."""
    from streamer.core.dims import dims

    d = np.array([[v["arousal"], v["valence"]] for v in (dims(dict(zip(LABELS, p))) for p in probs)])
    return {"arousal_r": round(pearson(d[:, 0], y[:, 0]), 4), "valence_r": round(pearson(d[:, 1], y[:, 1]), 4)}


def save_dims_head(folder: Path, fit: dict, encoder_tag: str) -> None:
    """Write ``dims.pt`` (a linear layer: pooled vector -> arousal, valence) and name it in
    the folder's config.json."""
    import torch

    w = torch.tensor(np.asarray(fit["weight"]).T, dtype=torch.float32).contiguous()
    torch.save({"weight": w, "bias": torch.tensor(np.asarray(fit["bias"]), dtype=torch.float32)}, folder / DIMS_FILE)
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["dims"] = {"file": DIMS_FILE, "outputs": ["arousal", "valence"], "fitted_on": "emobank-train",
                   "ridge_alpha": fit["alpha"], "encoder": encoder_tag}
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")


HEAD_MIXES = {"g1 m1 x1": {"goemotions-train": 1, "meld-train": 1, "xed-train": 1},
              "g2 m1 x1": {"goemotions-train": 2, "meld-train": 1, "xed-train": 1},
              "g1 m2 x2": {"goemotions-train": 1, "meld-train": 2, "xed-train": 2}}


def head_probes(cache: Path) -> dict:
    """Head recipes over a (fine-tuned) encoder's cached vectors, on the three-domain criterion."""
    from streamer.train.text import selection_score

    out = {}
    for name, mix in HEAD_MIXES.items():
        for C, balanced in ((1.0, False), (1.0, True), (0.1, False)):
            s = dev_scores(cache, fit_probe(cache, mix, C, balanced))
            key = f"{name}, C {C}, {'balanced' if balanced else 'unweighted'}"
            out[key] = {**s, "three_domain": round(selection_score(s), 4), "mix": mix, "C": C, "balanced": balanced}
            print(key, {k: v for k, v in out[key].items() if k not in ("mix",)}, flush=True)
    return out


def write_head(folder: Path, cache: Path, mix: dict[str, float], C: float, balanced: bool) -> dict:
    """Refit the label head of ``folder`` (whose encoder made ``cache``) as a logistic regression
    on ``mix``; the temperature is refitted on the three dev sets, each weighing the same."""
    import torch

    from streamer.train.text import fit_temperature, selection_score

    weight, bias = fit_probe(cache, mix, C, balanced, linear=True)
    torch.save({"weight": torch.tensor(weight, dtype=torch.float32), "bias": torch.tensor(bias, dtype=torch.float32)},
               folder / "head.pt")
    logits, ys, ws, scores = [], [], [], {}
    for name in ("goemotions-dev", "meld-dev", "xed-dev"):
        x, t = _load(cache, name)
        z, y = x @ weight.T + bias, t.argmax(axis=1)
        scores[name] = round(macro_f1_of(z, y), 4)
        logits.append(z)
        ys.append(y)
        ws.append(np.full(len(y), 1.0 / len(y)))
    temperature = fit_temperature(np.concatenate(logits), np.concatenate(ys), np.concatenate(ws))
    cfg_path = folder / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["temperature"] = round(temperature, 4)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    return {"dev": scores, "three_domain": round(selection_score(scores), 4), "temperature": temperature,
            "mix": mix, "C": C, "balanced": balanced}


def main(argv: list[str] | None = None) -> int:
    import torch

    args = sys.argv[1:] if argv is None else argv
    torch.set_num_threads(1)
    if len(args) == 3 and args[0] == "embed":
        embed_all(args[1], Path(args[2]))
        return 0
    if len(args) == 2 and args[0] == "heads":
        cache = Path(args[1])
        (cache / "heads.json").write_text(json.dumps(head_probes(cache), indent=2) + "\n")
        return 0
    if len(args) == 4 and args[0] == "head":  # head FOLDER CACHE "RECIPE KEY" (a key of heads.json)
        folder, cache = Path(args[1]), Path(args[2])
        r = json.loads((cache / "heads.json").read_text())[args[3]]
        print(json.dumps(write_head(folder, cache, r["mix"], r["C"], r["balanced"])), flush=True)
        return 0
    if len(args) == 2 and args[0] == "dims":
        print(json.dumps(fit_dims_for_folder(Path(args[1]), DATA / "emobank")), flush=True)
        return 0
    if len(args) == 2 and args[0] == "probe":
        cache = Path(args[1])
        report = {"loco": loco(cache)}
        print("LOCO (train on two, score the third's dev):", report["loco"], flush=True)
        mixes = {"g1 m1 x1": {"goemotions-train": 1, "meld-train": 1, "xed-train": 1},
                 "g1 m2 x1": {"goemotions-train": 1, "meld-train": 2, "xed-train": 1},
                 "g1 m2 x2": {"goemotions-train": 1, "meld-train": 2, "xed-train": 2},
                 "g1 m3 x3": {"goemotions-train": 1, "meld-train": 3, "xed-train": 3},
                 "g1 m1 (no xed)": {"goemotions-train": 1, "meld-train": 1}}
        report["mixes"] = {}
        from streamer.train.text import selection_score

        for name, mix in mixes.items():
            for C in (0.1, 1.0):
                for balanced in (True, False):
                    s = dev_scores(cache, fit_probe(cache, mix, C, balanced))
                    key = f"{name}, C {C}, {'balanced' if balanced else 'unweighted'}"
                    report["mixes"][key] = {**s, "three_domain": round(selection_score(s), 4)}
                    print(key, report["mixes"][key], flush=True)
        fit = dims_fit(cache)
        report["dims_ridge"] = {k: v for k, v in fit.items() if k not in ("weight", "bias")}
        print("dims ridge:", report["dims_ridge"], flush=True)
        (cache / "probes.json").write_text(json.dumps(report, indent=2) + "\n")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
