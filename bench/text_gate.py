"""How often the text branch gives an opinion, per corpus, through the real batch pipeline.

    .venv/bin/python bench/text_gate.py --nemo-speakers EB0,KS0 --ravdess-actors 01-04 --per-corpus 60 \\
        [--whisper-model embedded:base] [--gate min_word_conf=0.55 ...] [--json bench/results/text_gate.json]

Each clip goes through ``streamer.batch.run_batch`` (what ``ser-analyze`` runs: the live
pipeline ``--fast``, one session log per clip). A clip *has words* when any of its window or
utterance records has words, and the text branch *gives an opinion* on it when any record's
``probs.text`` is not null. Corpora: nEMO (Polish, speakers by ``--nemo-speakers``), RAVDESS
(English, ``--ravdess-actors``), English sentences spoken by espeak-ng (made here; the first
half of the list with ``--espeak-part tune``, the second with ``report``). Targets (issue 25):
opinion on <= 10% of other-language clips, on >= 95% of English clips with words.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEECH = ROOT.parent / "shared" / "data" / "speech"

SENTENCES = [  # English sentences for espeak-ng: call-centre and everyday speech, several emotions
    "I can't believe you did that to me after everything we have been through.",
    "Thank you so much for calling, how can I help you today?",
    "The meeting has been moved to Thursday afternoon at three o'clock.",
    "I have been waiting for two weeks and nobody called me back.",
    "This is absolutely wonderful news, I am so happy for you.",
    "Please leave the package by the front door if nobody answers.",
    "I am really scared that something terrible is going to happen.",
    "We should probably check the weather before we leave tomorrow.",
    "My account was charged twice and I want a refund right now.",
    "She looked out of the window and saw the rain falling on the street.",
    "Honestly I don't know what to say, this is so disappointing.",
    "Could you repeat the last part, the line was breaking up.",
    "The train was late again so I missed the first half of the movie.",
    "Wow, I did not expect to see you here, what a surprise.",
    "Everything is fine, there is nothing to worry about.",
    "He told me the results would be ready by the end of the week.",
    "I feel so tired and lonely since she left.",
    "Turn left at the second traffic light and then keep going straight.",
    "That smell is disgusting, what did you put in the fridge?",
    "Let me look at your account and see what I can do.",
    "Why does this always happen to me, I am sick of it.",
    "Our flight was cancelled and the airline will not answer the phone.",
    "Congratulations on the new job, you really deserve it.",
    "I lost my keys somewhere between the office and the car park.",
    "Don't worry, we will sort this out together before Friday.",
    "The doctor said the test results look perfectly normal.",
    "It is so quiet here at night that I can hear my own heartbeat.",
    "You promised me you would be there and you never came.",
    "Can you believe the price of coffee in this city?",
    "I would like to cancel my subscription, please.",
    "The children were laughing and playing in the garden all afternoon.",
    "I am afraid there has been a mistake with your order.",
    "That was the best concert I have ever been to.",
    "Nobody told me the office would be closed today.",
    "We need to talk about what happened yesterday.",
    "He slammed the door and walked out without a word.",
    "The new update broke everything on my phone.",
    "I miss the old days when we used to travel together.",
    "Please hold the line while I transfer your call.",
    "What a lovely surprise to find you at the door.",
]


def parse_range(text: str) -> list[str]:
    """ "01-04,07" -> ["01", "02", "03", "04", "07"]."""
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += [f"{k:02d}" for k in range(int(a), int(b or a) + 1)]
    return out


def nemo_clips(speakers: list[str], n: int, rng: random.Random) -> list[Path]:
    rows = [r for r in csv.DictReader(open(SPEECH / "nEMO" / "manifest.tsv"), delimiter="\t") if r["speaker"] in speakers]
    rows = rng.sample(rows, min(n, len(rows)))
    return sorted(SPEECH / "nEMO" / r["path"] for r in rows)


def ravdess_clips(actors: list[str], n: int, rng: random.Random) -> list[Path]:
    files = [f for a in actors for f in sorted((SPEECH / "RAVDESS" / f"Actor_{a}").glob("*.*")) if f.suffix != ".md"]
    return sorted(rng.sample(files, min(n, len(files))))


def espeak_clips(part: str, folder: Path) -> list[Path]:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        print("espeak-ng or sox missing: no espeak corpus", file=sys.stderr)
        return []
    half = len(SENTENCES) // 2
    chosen = list(enumerate(SENTENCES))[:half] if part == "tune" else list(enumerate(SENTENCES))[half:]
    out = []
    for k, text in chosen:
        raw, wav = folder / f"raw_{k}.wav", folder / f"en_{k:02d}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True)
        subprocess.run(["sox", "-q", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav)], check=True)
        raw.unlink()
        out.append(wav)
    return out


def clip_outcome(log_path: Path) -> dict:
    """From one clip's session log: words heard, text opinion given, the skip reasons."""
    from streamer.live.session_log import read_log

    records = [r for r in read_log(log_path).records if r.get("type") in ("window", "utterance")]
    return {"words": any(r.get("words") for r in records),
            "opinion": any((r.get("probs") or {}).get("text") is not None for r in records),
            "utterance_opinion": any((r.get("probs") or {}).get("text") is not None
                                     for r in records if r["type"] == "utterance"),
            "reasons": sorted({r["text_skipped"] for r in records if r.get("text_skipped")}),
            "transcript": " / ".join(r.get("transcript") or "" for r in records if r["type"] == "utterance")}


def rates(outcomes: list[dict]) -> dict:
    n = len(outcomes)
    with_words = [o for o in outcomes if o["words"]]
    opinion = sum(o["opinion"] for o in outcomes)
    return {"clips": n, "clips_with_words": len(with_words), "opinion": opinion,
            "opinion_rate": round(opinion / n, 4) if n else None,
            "opinion_rate_of_clips_with_words": round(sum(o["opinion"] for o in with_words) / len(with_words), 4)
            if with_words else None,
            "utterance_opinion_rate": round(sum(o["utterance_opinion"] for o in outcomes) / n, 4) if n else None,
            "reasons": dict(Counter(r for o in outcomes for r in o["reasons"]))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nemo-speakers", default="EB0,KS0")
    ap.add_argument("--ravdess-actors", default="01-04")
    ap.add_argument("--espeak-part", choices=("tune", "report", "none"), default="tune")
    ap.add_argument("--per-corpus", type=int, default=60, help="clips sampled per corpus (seed 0)")
    ap.add_argument("--whisper-model", default=None, help="the recogniser (default: [whisper] model)")
    ap.add_argument("--gate", nargs="*", default=[], metavar="KEY=VALUE",
                    help="[asr.whisper.text_gate] values to try (floats, or true/false)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="add this run to a JSON file (a list of runs)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the session logs in this folder")
    args = ap.parse_args()

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from streamer.batch import BatchOptions, run_batch
    from streamer.runtime.config import Config

    cfg = Config.load()
    gate = {}
    for item in args.gate:
        key, _, value = item.partition("=")
        gate[key] = value.lower() == "true" if value.lower() in ("true", "false") else float(value)
    text_gate = replace(cfg.asr.whisper.text_gate, **gate)
    overrides = {"asr": {"whisper": replace(cfg.asr.whisper, text_gate=text_gate)}}
    if args.whisper_model:
        overrides["whisper"] = {"model": args.whisper_model}

    rng = random.Random(0)
    work = Path(args.keep or tempfile.mkdtemp(prefix="text_gate_"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "espeak").mkdir(exist_ok=True)
    corpora = {"nemo": nemo_clips(args.nemo_speakers.split(","), args.per_corpus, rng),
               "ravdess": ravdess_clips(parse_range(args.ravdess_actors), args.per_corpus, rng)}
    if args.espeak_part != "none":
        corpora["espeak_en"] = espeak_clips(args.espeak_part, work / "espeak")
    tasks, where = [], {}
    for corpus, files in corpora.items():
        for f in files:
            log_path = work / f"{corpus}__{f.name}.ndjson"
            tasks.append((str(f), str(log_path), BatchOptions(force=True)))
            where[str(f)] = (corpus, log_path)
    failed = {}
    for path, error in run_batch(tasks, args.jobs, None, overrides):
        if error:
            failed[path] = error
    outcomes: dict[str, list[dict]] = {c: [] for c in corpora}
    clips = []
    for path, (corpus, log_path) in where.items():
        if path in failed or not log_path.is_file():
            continue
        o = clip_outcome(log_path)
        outcomes[corpus].append(o)
        clips.append({"corpus": corpus, "file": Path(path).name, **o})
    run = {"date": date.today().isoformat(), "command": " ".join(["python", *sys.argv]),
           "whisper_model": args.whisper_model or cfg.whisper.model, "text_gate": asdict(text_gate),
           "nemo_speakers": args.nemo_speakers, "ravdess_actors": args.ravdess_actors, "espeak_part": args.espeak_part,
           "corpora": {c: rates(o) for c, o in outcomes.items()}, "failed": failed, "clips": clips}
    for c, r in run["corpora"].items():
        print(f"{c:10s} clips {r['clips']:4d}  with words {r['clips_with_words']:4d}  opinion {r['opinion_rate']}"
              f"  (of clips with words {r['opinion_rate_of_clips_with_words']})  reasons {r['reasons']}")
    if failed:
        print(f"{len(failed)} clip(s) failed: {failed}", file=sys.stderr)
    if args.json:
        runs = json.loads(args.json.read_text()) if args.json.is_file() else []
        runs.append(run)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(runs, indent=1) + "\n")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
