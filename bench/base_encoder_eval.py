"""Does the audio model keep its accuracy when its second encoder (Whisper base) runs as the
8-bit ONNX export instead of CTranslate2 int8 (the encoder its head was trained on)?

Each RAVDESS leave-speakers-out fold model (``ser-train --fold-models DIR``: a head trained
without that fold's actors) predicts its own unseen actors' clips twice: base frames from
CTranslate2 int8, and from ``models/whisper-base-encoder``. Printed: UA of each, the share of
clips with the same label, and the largest probability difference. With ``--phone`` the clips
first go through the sox telephone channel (8 kHz G.711), as the card's telephone figure does.

    .venv/bin/python bench/base_encoder_eval.py --folds runs/audio-folds-pooled [--phone]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=Path, default=Path("runs/audio-folds-pooled"))
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("SER_SHARED", "../shared")))
    ap.add_argument("--phone", action="store_true", help="score the sox telephone copy of each clip")
    ap.add_argument("--limit", type=int, default=0, help="at most this many clips per fold (0: all)")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()

    from streamer.audio.encoder import WhisperHandle, WhisperOptions
    from streamer.audio.io import load_audio
    from streamer.audio.pooled import PooledEmotion
    from streamer.core.labels import LABELS
    from streamer.train.corpora import scan

    clips = [c for c in scan([args.shared / "data" / "speech" / "RAVDESS"]).clips]
    if not clips:
        print(f"no RAVDESS clips under {args.shared}/data/speech (set --shared)", file=sys.stderr)
        return 2
    truth, ct2_p, onnx_p = [], [], []
    ct2_base = WhisperHandle.shared(WhisperOptions("embedded:base"))
    for fold in sorted(args.folds.glob("fold*")):
        actors = set((fold / "test_actors.txt").read_text().split())
        mine = [c for c in clips if c.speaker in actors]
        if args.limit:
            mine = mine[:: max(1, len(mine) // args.limit)][: args.limit]
        onnx_model = PooledEmotion.load(fold)
        ct2_model = PooledEmotion.load(fold)
        assert type(onnx_model.encoders[1]).__name__ == "OnnxEncoder", "models/whisper-base-encoder is missing"
        ct2_model.encoders[1] = ct2_base
        for c in mine:
            if args.phone:
                from streamer.train.cache import sox_telephone

                x = sox_telephone(Path(c.path))
            else:
                x = load_audio(c.path)
            truth.append(LABELS.index(c.label))
            ct2_p.append(ct2_model.predict_proba(x))
            onnx_p.append(onnx_model.predict_proba(x))
        print(f"{fold.name}: {len(mine)} clips of {', '.join(sorted(actors))}", file=sys.stderr)
    y, a, b = np.array(truth), np.array(ct2_p), np.array(onnx_p)

    def ua(p: np.ndarray) -> float:
        pred = p.argmax(1)
        return float(np.mean([np.mean(pred[y == k] == k) for k in np.unique(y)]))

    out = {"clips": int(len(y)), "channel": "telephone" if args.phone else "clean",
           "ua_ct2_int8": round(ua(a), 4), "ua_onnx_8bit": round(ua(b), 4),
           "same_label": round(float(np.mean(a.argmax(1) == b.argmax(1))), 4),
           "max_abs_prob_diff": round(float(np.abs(a - b).max()), 4),
           "mean_abs_prob_diff": round(float(np.abs(a - b).mean()), 5)}
    print(json.dumps(out))
    if args.out:
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
