"""``ser-train --ablation``: the network's input variants cross-validated on the same
leave-speakers-out folds of the evaluation corpus, each with the same reduced budget, tested
on the cached windows of its fold's test clips (``ablation.json``)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from streamer.audio.emotion import AudioEmotion
from streamer.audio.pooling import pool_windows
from streamer.audio.encoder import WhisperHandle
from streamer.train.audio import ClipData, FitResult, TrainConfig, fit, pick_val_speakers, speaker_folds, window_logits
from streamer.train.cache import sox_telephone
from streamer.train.corpora import Clip
from streamer.train.evaluate import Predictions, predict_clips
from streamer.train.recipe import Dataset, Reporter, plain_config, build_dataset


def _fold_eval(model: AudioEmotion, test: Sequence[Clip], reporter: Reporter, name: str) -> dict[str, Predictions]:
    """Test clips read from disk and run through the inference API, as ``ser-eval`` does."""
    tick = reporter.task(f"{name} test", 2 * len(test))
    clean = predict_clips(model, test, progress=lambda: tick(1))
    phone = predict_clips(model, test, load=lambda c: sox_telephone(c.path), progress=lambda: tick(1))
    return {"clean": clean, "telephone": phone}


def _fold_eval_cached(res: FitResult, test: Sequence[Clip], items: Sequence[ClipData], data: Dataset) -> dict[str, Predictions]:
    """The same windows from the feature cache (used by the ablation, where speed matters)."""
    from collections import Counter

    out = {}
    for name, windows in (("clean", [c.copies[0] for c in items]), ("telephone", [data.phone[c.path] for c in test])):
        logits = window_logits(res.net, windows)  # one network pass, pooled at both temperatures
        out[name] = Predictions(list(test), pool_windows(*logits, len(windows), res.temperature),
                                pool_windows(*logits, len(windows), 1.0), Counter())
    return out


def _fold_record(fold: int, test_speakers: list[str], val_speakers: list[str], res: FitResult, preds: dict[str, Predictions]) -> dict:
    clean, phone = preds["clean"], preds["telephone"]
    rep, rep_raw, rep_phone = clean.report(), clean.report(calibrated=False), phone.report()
    return {
        "fold": fold, "test_speakers": test_speakers, "val_speakers": val_speakers,
        "best_epoch": res.best_epoch, "val_ua": res.val_ua, "temperature": res.temperature,
        "ua": rep["ua"], "wa": rep["wa"], "macro_f1": rep["macro_f1"], "n": rep["n"],
        "ece_before": rep_raw["ece"], "ece_after": rep["ece"],
        "telephone_ua": rep_phone["ua"], "telephone_wa": rep_phone["wa"], "telephone_ece": rep_phone["ece"],
        "per_class_recall": rep["per_class_recall"],
    }


def cross_validate(cfg: TrainConfig, data: Dataset, whisper: WhisperHandle | None, reporter: Reporter, variant: str) -> dict:
    """Leave-speakers-out folds over the evaluation corpus; returns per-fold and pooled metrics.
    Test clips go through the inference API from disk, or (``whisper`` None) the cache."""
    eval_speakers = [c.speaker for c in data.clips if c.corpus == cfg.eval_corpus]
    folds = speaker_folds(eval_speakers, cfg.folds)
    records, pooled = [], {"clean": [], "telephone": []}
    for k, test_speakers in enumerate(folds, start=1):
        rest = sorted(set(eval_speakers) - set(test_speakers))
        val_speakers, calib_speakers = pick_val_speakers(rest, cfg.val_speakers, cfg.seed + k, cfg.calib_speakers)
        held = set(test_speakers) | set(val_speakers) | set(calib_speakers)
        test_clips, test_items = data.select(lambda c: c.speaker in test_speakers)
        _, val = data.select(lambda c: c.speaker in val_speakers)
        _, calib = data.select(lambda c: c.speaker in calib_speakers)
        _, train = data.select(lambda c: c.speaker not in held)
        name = f"{variant} fold {k}/{len(folds)}"
        t0 = time.time()
        res = fit(train, val, cfg, cfg.net, cfg.seed + k, lambda e, n, r, name=name: reporter.epoch(name, e, n, r), calib or None)
        if whisper is None:
            preds = _fold_eval_cached(res, test_clips, test_items, data)
        else:
            preds = _fold_eval(AudioEmotion(res.net, res.temperature, whisper), test_clips, reporter, name)
        rec = _fold_record(k, test_speakers, val_speakers, res, preds)
        rec["calib_speakers"] = calib_speakers
        rec["seconds"] = round(time.time() - t0, 1)
        records.append(rec)
        for key in pooled:
            pooled[key].append(preds[key])
        reporter.message(f"{name}: UA {rec['ua']:.3f}  telephone UA {rec['telephone_ua']:.3f}  "
                         f"ECE {rec['ece_before']:.3f} -> {rec['ece_after']:.3f}  (val UA {rec['val_ua']:.3f}, epoch {rec['best_epoch']})")
    mean = {m: float(np.mean([r[m] for r in records])) for m in
            ("ua", "wa", "macro_f1", "ece_before", "ece_after", "telephone_ua", "telephone_wa", "telephone_ece")}
    std = {m: float(np.std([r[m] for r in records])) for m in ("ua", "telephone_ua")}
    all_clean = _concat(pooled["clean"])
    return {"variant": variant, "net": cfg.net.to_dict(), "folds": records, "mean": mean, "std": std,
            "pooled_clean": all_clean.report(), "pooled_telephone": _concat(pooled["telephone"]).report()}


def _concat(preds: Sequence[Predictions]) -> Predictions:
    from collections import Counter

    return Predictions([c for p in preds for c in p.clips], np.concatenate([p.probs for p in preds]),
                       np.concatenate([p.raw_probs for p in preds]), sum((p.skipped for p in preds), Counter()))


# The network variants ``ser-train --ablation`` compares (each a change to the shipped NetConfig).
ABLATION = {
    "both, joined at frames": {"inputs": "both", "join": "frames"},
    "both, joined at embedding": {"inputs": "both", "join": "embedding"},
    "Whisper frames alone": {"inputs": "whisper"},
    "prosody CNN alone": {"inputs": "prosody"},
}
ABLATION_BUDGET = {"epochs": 8, "samples_per_epoch": 1000, "select_after": 4, "patience": 4}


def run_ablation(cfg: TrainConfig, out: Path, reporter: Reporter) -> dict:
    """Cross-validate each input variant on the same folds (``ablation.json``). Every variant,
    the shipped one included, gets the same reduced budget (ABLATION_BUDGET) and is tested on
    the cached windows of the test clips, so the comparison is fair and fits in ~20 minutes."""
    from streamer.audio.model import AudioEmotionNet

    started = time.time()
    data = build_dataset(cfg, reporter)
    runs = []
    for name, change in ABLATION.items():
        variant = replace(cfg, **ABLATION_BUDGET, net=replace(cfg.net, **change))
        result = cross_validate(variant, data, None, reporter, name)
        result["parameters"] = sum(p.numel() for p in AudioEmotionNet(variant.net).parameters())
        runs.append(result)
    results = {"config": plain_config(cfg), "budget": ABLATION_BUDGET, "ablation": runs,
               "seconds": round(time.time() - started, 1)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
