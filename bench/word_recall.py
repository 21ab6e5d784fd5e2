"""Word recall of the live path against faster-whisper on whole recordings, same model.

    .venv/bin/python bench/word_recall.py [--recordings 6] [--clips 8] [--json bench/results/word_recall.json]

Recordings with known scripts are made from real speech: RAVDESS statements ("kids are
talking / dogs are sitting by the door") and TESS carrier phrases ("say the word X"), several
clips of one speaker per recording, joined with pauses of 0.15-1.2 s (short pauses put two
sentences in one utterance and let windows cut through words). Each recording goes
through the pipeline as ``ser-live --file X --fast`` runs it (its utterance records), and
through faster-whisper's ``transcribe`` on the whole file with the same tiny.en model
(greedy, English, not conditioned on earlier text, word times).

- recall: script words found in the transcript (multiset), over all script words;
- first words kept: clips whose first script word is heard inside the clip's own time span;
- also three espeak-ng sentences with 0, 0.3 and 1 s of leading silence (first word kept).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data" / "speech"
SR = 16000


def script(path: Path) -> list[str]:
    if "TESS" in path.parts:
        return ["say", "the", "word", path.name.split("_")[1].lower()]
    statement = path.name.split("-")[4]
    return (["kids", "are", "talking"] if statement == "01" else ["dogs", "are", "sitting"]) + ["by", "the", "door"]


def recordings(n: int, per: int, rng: np.random.Generator) -> list[list[Path]]:
    """``n`` groups of ``per`` clips, each group one speaker (half RAVDESS actors, half TESS)."""
    out = []
    actors = sorted((SHARED / "RAVDESS").glob("Actor_*"))
    tess = {s: sorted((SHARED / "TESS").glob(f"{s}_*/*.*")) for s in ("OAF", "YAF")}
    for k in range(n):
        if k % 2 == 0:
            pool = sorted(p for p in actors[(7 * k) % len(actors)].iterdir() if p.suffix in (".flac", ".wav"))
        else:
            pool = tess["OAF" if k % 4 == 1 else "YAF"]
        out.append([pool[i] for i in rng.choice(len(pool), per, replace=False)])
    return out


def join(clips: list[Path], rng: np.random.Generator, path: Path) -> list[tuple[int, int]]:
    """Write the clips with pauses into ``path``; returns each clip's span in samples."""
    import soundfile as sf

    from streamer.audio.features import trim_silence
    from streamer.audio.io import load_audio

    parts, spans, pos = [np.zeros(int(0.4 * SR), np.float32)], [], int(0.4 * SR)
    for c in clips:
        x = trim_silence(load_audio(c))
        spans.append((pos, pos + len(x)))
        gap = np.zeros(int(rng.uniform(0.15, 1.2) * SR), np.float32)
        parts += [x, gap]
        pos += len(x) + len(gap)
    sf.write(str(path), np.concatenate(parts), SR, subtype="PCM_16")
    return spans


def recall(said: list[str], ref: list[str]) -> tuple[int, int]:
    have = Counter(said)
    return sum(min(n, have[w]) for w, n in Counter(ref).items()), len(ref)


def first_kept(words: list[tuple[str, float, float]], spans, scripts) -> int:
    """Clips whose first script word is among the words that overlap the clip's span."""
    kept = 0
    for (a, b), ref in zip(spans, scripts):
        near = [w for w, s, e in words if e * SR > a - 0.3 * SR and s * SR < b]
        kept += ref[0] in near[:2]
    return kept


def pipeline_words(path: Path, models, cfg) -> list[tuple[str, float, float]]:
    from streamer.runtime.streams import open_stream
    from streamer.live.sources import FileSource

    records = []
    pipe = open_stream(cfg, models, FileSource(path, fast=True), [lambda r: records.append(r.to_record())],
                       block_when_full=True)
    pipe.run(threading.Event())
    return [(w["word"], w["start_s"], w["end_s"]) for r in records if r["type"] == "utterance" for w in r["words"]]


def whisper_words(path: Path, handle) -> list[tuple[str, float, float]]:
    from streamer.text.normalize import asr_style

    segments, _ = handle.model.transcribe(str(path), language="en", beam_size=1, condition_on_previous_text=False,
                                          word_timestamps=True)
    return [(part, w.start, w.end) for s in segments for w in s.words for part in asr_style(w.word).split()]


def espeak_first_words(models, cfg, handle, tmp: Path) -> dict:
    import soundfile as sf

    sentences = ["Yesterday the weather was wonderful and we walked along the river for hours.",
                 "Please call me back tomorrow morning because the invoice is wrong.",
                 "Nobody told me the meeting was cancelled and I am furious."]
    out = {}
    for lead in (0.0, 0.3, 1.0):
        kept = {"live": 0, "faster_whisper": 0}
        for k, text in enumerate(sentences):
            raw, wav = tmp / "raw.wav", tmp / f"e{k}_{lead}.wav"
            subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
            x, sr = sf.read(str(raw), dtype="float32")
            loud = np.flatnonzero(np.abs(x) > 0.01)
            x = x[loud[0]:]
            import soxr

            x = soxr.resample(x, sr, SR)
            sf.write(str(wav), np.concatenate([np.zeros(int(lead * SR), np.float32), x, np.zeros(SR // 2, np.float32)]),
                     SR, subtype="PCM_16")
            first = text.split()[0].lower()
            live = pipeline_words(wav, models, cfg)
            kept["live"] += bool(live and live[0][0] == first)
            fw = whisper_words(wav, handle)
            kept["faster_whisper"] += bool(fw and fw[0][0] == first)
        out[str(lead)] = {k: f"{v}/{len(sentences)}" for k, v in kept.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recordings", type=int, default=6)
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from streamer.runtime.config import Config
    from streamer.runtime.models import load_models

    torch.set_num_threads(1)
    cfg = Config.load()
    models = load_models(cfg)
    from streamer.runtime.models import whisper_handle

    handle = whisper_handle(cfg, cfg.whisper.model)
    rng = np.random.default_rng(args.seed)
    totals = {"live": [0, 0, 0], "faster_whisper": [0, 0, 0]}  # found, script words, first words kept
    rows = []
    n_clips = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, clips in enumerate(recordings(args.recordings, args.clips, rng)):
            path = Path(tmp) / f"rec{k}.wav"
            spans = join(clips, rng, path)
            scripts = [script(c) for c in clips]
            ref = [w for s in scripts for w in s]
            n_clips += len(clips)
            row = {"recording": k, "clips": [c.name for c in clips], "script_words": len(ref)}
            for name, words in (("live", pipeline_words(path, models, cfg)), ("faster_whisper", whisper_words(path, handle))):
                found, total = recall([w for w, _, _ in words], ref)
                kept = first_kept(words, spans, scripts)
                totals[name][0] += found
                totals[name][1] += total
                totals[name][2] += kept
                row[name] = {"recall": round(found / total, 4), "first_words_kept": kept}
            rows.append(row)
            print(f"recording {k}: live {row['live']}  faster-whisper {row['faster_whisper']}", flush=True)
        espeak = espeak_first_words(models, cfg, handle, Path(tmp))
    result = {"date": date.today().isoformat(), "command": "bench/word_recall.py " + " ".join(sys.argv[1:]),
              "recordings": args.recordings, "clips": n_clips,
              **{name: {"recall": round(t[0] / t[1], 4), "first_words_kept": f"{t[2]}/{n_clips}"} for name, t in totals.items()},
              "espeak_first_word_kept": espeak, "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
