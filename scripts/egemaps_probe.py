"""Would eGeMAPS help the shipped audio recipe transfer? A probe, scored as ser-train scores recipes.

eGeMAPS v02 (88 functionals of pitch, loudness, spectral slope, formants, jitter, shimmer, HNR and
MFCC 1-4; Eyben et al. 2016) is the standard hand-made feature set of cross-corpus emotion work.
This computes it per clip with openSMILE's Python package, appends the clip's vector to each of
its window rows (an upper bound: live, only the window would be heard) and scores candidates with
the shipped recipe's splits: leave-one-corpus-out over RAVDESS, TESS and nEMO, and leave-speakers-
out on RAVDESS and nEMO (``streamer.train.transfer.evaluate``; telephone rows left out).

openSMILE is not a project dependency (it brings pandas and pyarrow): install it beside the
project first, then run from the repository root with ``../shared`` beside it::

    .venv/bin/pip install opensmile
    .venv/bin/python scripts/egemaps_probe.py --json runs/egemaps_probe.json

The rows come from ``cache/pooled/`` (``ser-train`` builds them; about 5 minutes on 2 cores when
missing), eGeMAPS from ``cache/egemaps-<key>.npz`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

RECIPE = "models/audio-emotion/train.toml"
SHIPPED = ("embedded:tiny.en", "embedded:base", "prosody")
CANDIDATES = [(SHIPPED, 0.03), (SHIPPED + ("egemaps",), 0.03), (SHIPPED + ("egemaps",), 0.1),
              (("embedded:tiny.en", "prosody"), 0.03), (("embedded:tiny.en", "prosody", "egemaps"), 0.03),
              (("prosody", "egemaps"), 0.03)]

_smile = None


def _egemaps(path: str) -> np.ndarray:
    global _smile
    import opensmile
    import soundfile as sf

    if _smile is None:
        _smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                 feature_level=opensmile.FeatureLevel.Functionals)
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    return _smile.process_signal(x.mean(1), sr).to_numpy()[0].astype(np.float32)


def egemaps(paths: list[str], cache: Path, jobs: int = 2) -> np.ndarray:
    """Each clip's 88 eGeMAPS functionals (cached by the list of paths)."""
    key = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:12]
    file = cache / f"egemaps-{key}.npz"
    if file.is_file():
        with np.load(file) as z:
            return z["x"]
    with ProcessPoolExecutor(jobs) as pool:
        x = np.stack(list(pool.map(_egemaps, paths, chunksize=32)))
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(file, x=x)
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", type=Path, help="write every candidate's figures here")
    args = ap.parse_args()
    if importlib.util.find_spec("opensmile") is None:
        print("error: this probe needs openSMILE: .venv/bin/pip install opensmile", file=sys.stderr)
        return 2
    from streamer.train.pooled_recipe import load_pooled_config, load_rows
    from streamer.train.transfer import Recipe, evaluate, splits

    cfg = load_pooled_config(Path(RECIPE))
    rows = load_rows(cfg)
    e = egemaps(list(rows.paths), Path(cfg.cache_dir), cfg.jobs)
    w = rows.x.shape[1]
    rows = replace(rows, x=np.concatenate([rows.x, e[rows.clip]], 1), blocks={**rows.blocks, "egemaps": (w, w + e.shape[1])},
                   phone_x=None, phone_clip=None, phone_frames=None)
    the_splits = splits(rows, cfg.loco, cfg.speaker_folds)
    out = []
    for blocks, l2 in CANDIDATES:
        res = evaluate(rows, Recipe(blocks=blocks, norm="mixed", l2=l2, balance="corpus"), the_splits, phone=False)
        loco = " ".join(f"{k} {v['ua_present']:.3f}" for k, v in res["runs"].items() if v["kind"] == "loco")
        print(f"{res['recipe']}: LOCO ua_present {res['loco_mean_ua_present']:.3f} ({loco}); speakers UA RAVDESS "
              f"{res['speakers_ravdess_ua']:.3f}, nEMO {res['speakers_nemo_ua']:.3f}; criterion {res['criterion']:.3f}",
              flush=True)
        out.append(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
