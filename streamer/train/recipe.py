"""The whole audio training recipe: cache features, cross-validate, train the shipped model.

Used by ``ser-train``; every step reports through a :class:`Reporter` so the CLI can show
rich progress while this module stays free of consoles.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from streamer.audio.emotion import save_model
from streamer.audio.linear import pooled_stats
from streamer.runtime.config import read_toml
from streamer.core.errors import ConfigError
from streamer.train.augment import COPIES
from streamer.train.cache import CLEAN, SOX_PHONE, ClipInputs, FeatureCache
from streamer.train.audio import (ClipData, FitResult, TrainConfig, fit, pick_val_speakers, speaker_folds, to_clip_data,
                                  window_logits)
from streamer.train.corpora import Clip, scan
from streamer.core.labels import INDEX
from streamer.train.blend import HeldOut, concat, cross_fitted, fit_temperature
from streamer.train.linear import clip_rows, train_linear
from streamer.train.metrics import expected_calibration_error, summary

if TYPE_CHECKING:
    from streamer.audio.linear import LinearHead
    from streamer.audio.model import AudioEmotionNet

log = logging.getLogger(__name__)

TRAIN_COPIES = (CLEAN, *COPIES)


class Reporter(Protocol):
    def task(self, name: str, total: int) -> Callable[[int], None]: ...
    def epoch(self, name: str, epoch: int, total: int, record: dict) -> None: ...
    def message(self, text: str) -> None: ...


def load_config(path: str | Path) -> TrainConfig:
    return TrainConfig.from_dict(read_toml(Path(path), "training config"))


@dataclass
class Dataset:
    clips: list[Clip]
    items: list[ClipData]
    phone: dict[Path, ClipInputs]  # cached sox telephone windows of the evaluation corpus

    def select(self, keep: Callable[[Clip], bool]) -> tuple[list[Clip], list[ClipData]]:
        idx = [i for i, c in enumerate(self.clips) if keep(c)]
        return [self.clips[i] for i in idx], [self.items[i] for i in idx]


def build_dataset(cfg: TrainConfig, reporter: Reporter) -> Dataset:
    """Scan the corpora and make sure every clip's copies are cached."""
    found = scan(cfg.data)
    if not found.clips:
        raise ConfigError(f"no labelled clips found under {', '.join(cfg.data)}")
    if found.skipped:
        reporter.message(f"skipped files: {dict(found.skipped)}")
    cache = FeatureCache(Path(cfg.cache_dir))
    clips: list[Clip] = []
    items: list[ClipData] = []
    phone: dict[Path, ClipInputs] = {}
    for corpus, group in sorted(found.by_corpus().items()):
        names = (*TRAIN_COPIES, SOX_PHONE) if corpus == cfg.eval_corpus else TRAIN_COPIES
        cache.build(group, names, jobs=cfg.jobs, progress=reporter.task(f"features {corpus}", len(group)))
        copies = {n: cache.load(group, n) for n in TRAIN_COPIES}
        clips.extend(group)
        items.extend(to_clip_data(group, copies, TRAIN_COPIES))
        if corpus == cfg.eval_corpus:
            phone.update(zip((c.path for c in group), cache.load(group, SOX_PHONE)))
    return Dataset(clips, items, phone)


# --- the transfer-aware recipe: LOAO folds, LOCO runs, linear head, blend, temperature -----

@dataclass(frozen=True)
class Split:
    """One training run of the recipe: which clips train, stop it early, and test it."""

    name: str
    kind: str  # "loao" (leave actors out) | "loco" (leave one corpus out) | "final"
    seed: int
    train: Callable[[Clip], bool]
    val: Callable[[Clip], bool]
    test: Callable[[Clip], bool] | None
    info: dict


def text_item(clip: Clip) -> str:
    """What a clip says (held-out validation items of a corpus with too few speakers):
    TESS the target word, RAVDESS the statement code, else the file stem.

    >>> from pathlib import Path
    >>> text_item(Clip(Path("OAF_back_angry.flac"), "angry", "tess:OAF", "tess"))
    'back'
    """
    stem = clip.path.stem
    if clip.corpus == "tess":
        return stem.split("_")[1].lower()
    if clip.corpus == "ravdess":
        return stem.split("-")[4]
    return stem


def plan_splits(cfg: TrainConfig, clips: Sequence[Clip]) -> list[Split]:
    """The LOAO folds over the evaluation corpus, a LOCO run per corpus (when ``cfg.loco`` and
    there are several) and the final run. Validation: speakers of the training corpus when it
    has enough, else 15% of its text items (TESS: 30 of 200 words)."""
    speakers = sorted({c.speaker for c in clips if c.corpus == cfg.eval_corpus})
    out = []
    for k, test in enumerate(speaker_folds(speakers, cfg.folds), start=1):
        rest = sorted(set(speakers) - set(test))
        val, _ = pick_val_speakers(rest, cfg.val_speakers, cfg.seed + k)
        out.append(Split(f"fold{k}", "loao", cfg.seed + k,
                         lambda c, t=frozenset(test), v=frozenset(val): c.speaker not in t and c.speaker not in v,
                         lambda c, v=frozenset(val): c.speaker in v, lambda c, t=frozenset(test): c.speaker in t,
                         {"test_speakers": test, "val_speakers": val}))
    corpora = sorted({c.corpus for c in clips})
    if cfg.loco and len(corpora) > 1:
        # the evaluation corpus first, then the others
        for j, corpus in enumerate(sorted(corpora, key=lambda x: (x != cfg.eval_corpus, x))):
            seed = cfg.seed + 100 * (j + 1)
            own = sorted({c.speaker for c in clips if c.corpus == corpus})
            if len(own) > cfg.val_speakers + 1:
                val, _ = pick_val_speakers(own, cfg.val_speakers, seed)
                is_val = lambda c, v=frozenset(val): c.speaker in v
                info: dict = {"train_corpus": corpus, "val_speakers": val}
            else:
                items = sorted({text_item(c) for c in clips if c.corpus == corpus})
                held = np.random.default_rng(seed).choice(items, size=max(1, round(0.15 * len(items))), replace=False)
                is_val = lambda c, h=frozenset(held.tolist()), k=corpus: c.corpus == k and text_item(c) in h
                info = {"train_corpus": corpus, "val_items": sorted(held.tolist())}
            info["test_corpora"] = [k for k in corpora if k != corpus]
            out.append(Split(f"loco_{corpus}", "loco", seed,
                             lambda c, k=corpus, v=is_val: c.corpus == k and not v(c), is_val,
                             lambda c, k=corpus: c.corpus != k, info))
    val, _ = pick_val_speakers(speakers, cfg.val_speakers, cfg.seed)
    out.append(Split("final", "final", cfg.seed, lambda c, v=frozenset(val): c.speaker not in v,
                     lambda c, v=frozenset(val): c.speaker in v, None, {"val_speakers": val}))
    return out


@dataclass
class SplitRun:
    split: Split
    net: "AudioEmotionNet"
    linears: dict[str, "LinearHead"]  # one per linear candidate
    fit_temperature: float  # the network's own temperature on its validation clips
    best_epoch: int
    val_ua: float
    history: list[dict]
    held_by: dict[str, dict[str, HeldOut]]  # candidate -> "val" | "test" | "telephone" -> logits
    clips: dict[str, list[Clip]]
    linear: "LinearHead | None" = None  # the chosen candidate (set by ``use``)
    held: dict[str, HeldOut] | None = None

    def use(self, candidate: str | None) -> None:
        self.linear = self.linears.get(candidate) if candidate else None
        self.held = self.held_by[candidate or NO_LINEAR]


NO_LINEAR = "none"


def held_out(net, linears: dict, windows: Sequence[ClipInputs], y: Sequence[int]) -> dict[str, HeldOut]:
    """The network's logits of every window of these clips (one forward pass) beside each
    linear candidate's (key ``none``: no linear head)."""
    z, owner, frames = window_logits(net, windows)
    flat = [w for ws in windows for w in ws]
    stats = pooled_stats([w.whisper for w in flat], [w.prosody for w in flat]) if linears else None
    out = {NO_LINEAR: HeldOut(z, np.zeros_like(z), owner, frames, list(y))}
    for name, head in linears.items():
        out[name] = HeldOut(z, head.logits(stats).astype(np.float64), owner, frames, list(y))
    return out


def _load_net(folder: Path, split: Split) -> tuple[FitResult, Path] | None:
    """A network trained earlier for this split (``--reuse``), checked against the plan."""
    from streamer.audio.model import AudioEmotionNet, NetConfig

    info_file = folder / split.name / "info.json"
    if not info_file.exists():
        return None
    import torch

    info = json.loads(info_file.read_text())
    for key, alias in (("val_speakers", "val"), ("test_speakers", "test"), ("val_items", "val_words")):
        saved = info.get(key, info.get(alias))
        if key in split.info and saved is not None and list(saved) != list(split.info[key]):
            raise ConfigError(f"{info_file}: {key} {saved} differ from the plan {split.info[key]}; retrain without --reuse")
    meta = json.loads((folder / split.name / "config.json").read_text())
    net = AudioEmotionNet(NetConfig(**meta["net"]))
    net.load_state_dict(torch.load(folder / split.name / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    return FitResult(net, info["temperature"], info["best_epoch"], info["val_ua"], info.get("history", [])), info_file


def run_split(cfg: TrainConfig, data: Dataset, split: Split, reporter: Reporter, reuse: Path | None = None) -> SplitRun:
    """Train (or reuse) the network and fit the linear head of one split; keep held-out logits."""
    train_clips, train = data.select(split.train)
    val_clips, val = data.select(split.val)
    loaded = _load_net(reuse, split) if reuse else None
    if loaded:
        res = loaded[0]
        reporter.message(f"{split.name}: network reused from {loaded[1].parent}")
    else:
        budget = (replace(cfg, epochs=cfg.loco_epochs, select_after=max(1, cfg.loco_epochs // 2), patience=min(cfg.patience, 4))
                  if split.kind == "loco" else cfg)
        res = fit(train, val, budget, cfg.net, split.seed, lambda e, n, r, name=split.name: reporter.epoch(name, e, n, r))
    copies = None if cfg.linear_copies == "all" else [0]
    rows = clip_rows(train, copies) if cfg.linear_candidates else None
    linears = {c: train_linear(train, cfg.eval_corpus, cfg.eval_corpus_share, c, cfg.net.n_classes, copies, rows)
               for c in cfg.linear_candidates}
    parts = {"val": held_out(res.net, linears, [c.copies[0] for c in val], [c.label for c in val])}
    clips = {"val": val_clips}
    if split.test is not None:
        test_clips, test = data.select(split.test)
        parts["test"] = held_out(res.net, linears, [c.copies[0] for c in test], [c.label for c in test])
        clips["test"] = test_clips
        phone = [c for c in test_clips if c.path in data.phone]
        if split.kind == "loao" and phone:
            parts["telephone"] = held_out(res.net, linears, [data.phone[c.path] for c in phone], [INDEX[c.label] for c in phone])
            clips["telephone"] = phone
    held_by = {cand: {part: h[cand] for part, h in parts.items()} for cand in [NO_LINEAR, *linears]}
    return SplitRun(split, res.net, linears, res.temperature, res.best_epoch, res.val_ua, res.history, held_by, clips)


def choose_weight(runs: Sequence[SplitRun], candidates: Sequence[str], weights: Sequence[float]) -> tuple[str | None, float, list[dict]]:
    """The linear candidate and blend weight with the best mean of (pooled LOAO validation-speaker
    UA, mean LOCO UA); test actors of the LOAO folds play no part. Without LOCO runs, validation
    UA alone. Every candidate's figures (test ones included, for the record) come back too."""
    loao = [r for r in runs if r.split.kind == "loao"]
    loco = [r for r in runs if r.split.kind == "loco"]
    table = []
    for cand in candidates or [NO_LINEAR]:
        for w in (weights if cand != NO_LINEAR else [0.0]):
            if cand != NO_LINEAR and w == 0 and table and table[0]["weight"] == 0:
                continue  # weight 0 is the network alone, whatever the head
            val = concat([r.held_by[cand]["val"] for r in loao])
            val_ua = summary(val.probs(w, 1.0), val.y)["ua"]
            loco_ua = {r.split.name: r.held_by[cand]["test"].report(w, 1.0)["ua"] for r in loco}
            row = {"linear": cand if w > 0 else NO_LINEAR, "weight": w, "loao_val_ua": val_ua, "loco_ua": loco_ua,
                   "loco_mean_ua": float(np.mean(list(loco_ua.values()))) if loco_ua else None,
                   "loao_test_ua": float(np.mean([r.held_by[cand]["test"].report(w, 1.0)["ua"] for r in loao])),
                   "telephone_ua": float(np.mean([r.held_by[cand]["telephone"].report(w, 1.0)["ua"] for r in loao
                                                  if "telephone" in r.held_by[cand]]))}
            row["criterion"] = val_ua if not loco_ua else (val_ua + row["loco_mean_ua"]) / 2
            table.append(row)
    best = max(table, key=lambda r: r["criterion"])
    return (None if best["linear"] == NO_LINEAR else best["linear"]), best["weight"], table


def choose_temperature(cfg: TrainConfig, runs: Sequence[SplitRun], weight: float) -> tuple[float, dict]:
    """The temperature every saved model ships with, and the cross-fitted LOCO calibration."""
    loco = {r.split.name: r.held["test"] for r in runs if r.split.kind == "loco"}
    calib: dict = {}
    if len(loco) > 1:
        calib["loco_cross_fitted"] = cross_fitted(loco, weight)
    if cfg.temperature_from == "loco" and loco:
        t = fit_temperature(concat(list(loco.values())), weight)
        calib["source"] = "pooled LOCO test predictions"
    else:
        t = fit_temperature(concat([r.held["val"] for r in runs if r.split.kind == "loao"]), weight)
        calib["source"] = "pooled LOAO validation speakers"
    calib["temperature"] = t
    for name, held in loco.items():
        calib.setdefault("loco_at_shipped", {})[name] = expected_calibration_error(held.probs(weight, t), held.y)
    return t, calib


def _report(held: HeldOut, weight: float, t: float) -> dict:
    rep, raw = held.report(weight, t), held.report(weight, 1.0)
    return {"ua": rep["ua"], "wa": rep["wa"], "macro_f1": rep["macro_f1"], "n": rep["n"], "ece_before": raw["ece"],
            "ece_after": rep["ece"], "per_class_recall": rep["per_class_recall"], "confusion": rep["confusion"],
            "net_only_ua": held.report(0.0, 1.0)["ua"], "linear_only_ua": held.report(1.0, 1.0)["ua"]}


def oof_records(run: SplitRun, part: str, weight: float, t: float) -> list[dict]:
    """Calibrated clip probabilities of a run's held-out clips (path, actor, label, probs)."""
    probs = run.held[part].probs(weight, t)
    return [{"path": str(c.path), "actor": c.speaker.split(":", 1)[1], "speaker": c.speaker, "corpus": c.corpus,
             "label": c.label, "probs": [round(float(v), 6) for v in p]} for c, p in zip(run.clips[part], probs)]


def run(cfg: TrainConfig, out: Path, reporter: Reporter, cv: bool = True, reuse: Path | None = None,
        final_from: str | None = None) -> dict:
    """Cache; train every split (LOAO folds, LOCO runs, final); choose the blend weight and the
    temperature; save the shipped model, every fold model and the out-of-fold predictions.
    ``final_from`` "best-val": no final run; the LOAO fold model with the best validation UA ships."""
    started = time.time()
    data = build_dataset(cfg, reporter)
    splits = [s for s in plan_splits(cfg, data.clips) if (cv or s.kind == "final") and not (final_from and s.kind == "final")]
    runs = []
    for split in splits:
        t0 = time.time()
        runs.append(run_split(cfg, data, split, reporter, reuse))
        reporter.message(f"{split.name}: done in {time.time() - t0:.0f} s (best epoch {runs[-1].best_epoch}, val UA {runs[-1].val_ua:.3f})")
    results: dict = {"config": plain_config(cfg), "cv": None}
    final = runs[-1] if not final_from else max((r for r in runs if r.split.kind == "loao"), key=lambda r: r.val_ua)
    if cv and cfg.linear_candidates:
        chosen, weight, table = choose_weight(runs, cfg.linear_candidates, cfg.blend_weights)
    else:
        chosen, weight, table = None, 0.0, []
    for r in runs:
        r.use(chosen)
    if cv:
        t, calib = choose_temperature(cfg, runs, weight)
    else:
        t, calib = final.fit_temperature, {"source": "final model's validation speakers"}
    results["blend"] = {"linear": chosen, "weight": weight, "candidates": table}
    results["calibration"] = calib
    if cv:
        results["cv"] = _cv_results(cfg, runs, weight, t)
        results["loco"] = {r.split.name: {**r.split.info, "best_epoch": r.best_epoch, "val_ua": r.val_ua,
                                          **_report(r.held["test"], weight, t)} for r in runs if r.split.kind == "loco"}
        _save_folds(cfg, runs, weight, t, out)
    results["final"] = {"from": final.split.name, "test_speakers": final.split.info.get("test_speakers", []),
                        "val_speakers": final.split.info["val_speakers"], "calib_speakers": [], "best_epoch": final.best_epoch,
                        "val_ua": final.val_ua, "temperature": t, "network_val_temperature": final.fit_temperature,
                        "blend_weight": weight, "history": final.history,
                        "parameters": sum(p.numel() for p in final.net.parameters()),
                        "linear_parameters": int(final.linear.coef.size + final.linear.intercept.size) if final.linear else 0}
    results["seconds"] = round(time.time() - started, 1)
    if reuse:
        results["reused_networks"] = str(reuse)
        results["network_seconds"] = {r.split.name: _net_seconds(reuse, r.split.name) for r in runs}
    save_model(final.net, out, t, final.linear if weight > 0 else None, weight)
    (out / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    if results["cv"]:
        from streamer.train.metrics import confusion_png

        m = results["cv"]["pooled_clean"]["confusion"]["matrix"]
        confusion_png(np.array(m), str(out / "confusion.png"), "RAVDESS, 5 folds pooled, unseen actors")
    return results


def _net_seconds(reuse: Path, name: str) -> float | None:
    info = reuse / name / "info.json"
    return json.loads(info.read_text()).get("seconds") if info.exists() else None


def _cv_results(cfg: TrainConfig, runs: Sequence[SplitRun], weight: float, t: float) -> dict:
    loao = [r for r in runs if r.split.kind == "loao"]
    records = []
    for k, r in enumerate(loao, start=1):
        rep, phone = _report(r.held["test"], weight, t), r.held["telephone"].report(weight, t)
        records.append({"fold": k, "test_speakers": r.split.info["test_speakers"], "val_speakers": r.split.info["val_speakers"],
                        "best_epoch": r.best_epoch, "val_ua": r.val_ua, "temperature": t, "val_temperature": r.fit_temperature, **rep,
                        "telephone_ua": phone["ua"], "telephone_wa": phone["wa"], "telephone_ece": phone["ece"]})
    keys = ("ua", "wa", "macro_f1", "ece_before", "ece_after", "telephone_ua", "telephone_wa", "telephone_ece", "net_only_ua", "linear_only_ua")
    mean = {m: float(np.mean([r[m] for r in records])) for m in keys}
    std = {m: float(np.std([r[m] for r in records])) for m in ("ua", "telephone_ua")}
    pooled = concat([r.held["test"] for r in loao])
    pooled_phone = concat([r.held["telephone"] for r in loao])
    return {"variant": "shipped recipe", "net": cfg.net.to_dict(), "folds": records, "mean": mean, "std": std,
            "pooled_clean": pooled.report(weight, t), "pooled_telephone": pooled_phone.report(weight, t),
            "pooled_clean_raw_ece": pooled.report(weight, 1.0)["ece"]}


def _save_folds(cfg: TrainConfig, runs: Sequence[SplitRun], weight: float, t: float, out: Path) -> None:
    """Every LOAO fold model as a complete model folder (its test actors listed beside it), and
    the out-of-fold predictions of the evaluation corpus (plus the LOCO runs' on it)."""
    root = Path(cfg.folds_dir)
    oof: list[dict] = []
    for r in runs:
        if r.split.kind != "loao":
            continue
        folder = root / r.split.name
        save_model(r.net, folder, t, r.linear if weight > 0 else None, weight)
        actors = [s.split(":", 1)[1] for s in r.split.info["test_speakers"]]
        (folder / "test_actors.txt").write_text("\n".join(actors) + "\n")
        (folder / "split.json").write_text(json.dumps({**r.split.info, "best_epoch": r.best_epoch, "val_ua": r.val_ua}, indent=1) + "\n")
        oof += oof_records(r, "test", weight, t)
    (out / f"oof_{cfg.eval_corpus}.json").write_text(json.dumps(oof) + "\n")
    for r in runs:
        if r.split.kind == "loco":
            save_model(r.net, root / r.split.name, t, r.linear if weight > 0 else None, weight)
            (root / r.split.name / "split.json").write_text(json.dumps(r.split.info, indent=1) + "\n")
            recs = [x for x in oof_records(r, "test", weight, t) if x["corpus"] == cfg.eval_corpus]
            if recs:
                (out / f"oof_{cfg.eval_corpus}_{r.split.name}.json").write_text(json.dumps(recs) + "\n")


def plain_config(cfg: TrainConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)
