"""Arousal-sign balanced accuracy of the shipped audio recipes on leave-one-corpus-out runs.

The sign of the predicted arousal (streamer/dims.py, at the LOCO temperature) separating angry/happy clips
from neutral/sad clips of a corpus the model never trained on; writes models/audio-emotion/arousal_loco.json.
Usage (from the repository root, after ser-train has cached the rows): .venv/bin/python bench/loco_arousal.py
"""
import json, torch
torch.set_num_threads(1)
from pathlib import Path
from streamer.train.pooled_recipe import load_pooled_config, load_rows
from streamer.train.transfer import Recipe, splits, evaluate
cfg = load_pooled_config(Path("models/audio-emotion/train.toml"))
rows = load_rows(cfg)
sp = [s for s in splits(rows, cfg.loco, cfg.speaker_folds) if s.kind == "loco"]
out = {}
for name, r in (("audio-emotion", Recipe(blocks=("embedded:tiny.en", "embedded:base", "prosody"), norm="corpus", l2=0.003)),
                ("audio-emotion-fast", Recipe(blocks=("embedded:tiny.en", "prosody"), norm="corpus", l2=0.003))):
    e = evaluate(rows, r, sp, phone=False)
    out[name] = {"loco_arousal_bacc_at_T": e["loco_arousal_bacc"], "temperature": e["temperature"],
                 "arousal_bacc_t1": {k: v["arousal_bacc_t1"] for k, v in e["runs"].items()}}
    print(name, out[name], flush=True)
Path("models/audio-emotion/arousal_loco.json").write_text(json.dumps(out, indent=1) + "\n")
