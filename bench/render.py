"""Print the markdown tables of bench/README.md from bench/results/*.json."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load(name: str) -> dict | None:
    p = RESULTS / name
    return json.loads(p.read_text()) if p.is_file() else None


def ms(d: dict) -> str:
    return " | ".join("-" if d.get(k) is None else f"{d[k]:.0f}" for k in ("p50", "p95", "max"))


def main() -> None:
    lat = load("live_latency.json")
    if lat:
        print(f"### Latency ({lat['date']}; `{lat['command']}`)\n")
        print("| run | windows | stage | p50 ms | p95 ms | max ms |\n|---|---|---|---|---|---|")
        for run, r in lat["runs"].items():
            for key, name in (("end_to_end_ms", "window close -> fused result"), ("asr_ms", "ASR (Whisper, per window)"),
                              ("audio_model_ms", "audio model"), ("text_ms", "text branch"), ("fusion_ms", "fusion"),
                              ("emotion_path_ms", "emotion path (audio + text + fusion)"),
                              ("after_words_ms", "after the words are known (text + fusion)")):
                print(f"| {run} | {r['windows']} | {name} | {ms(r[key])} |")
        print()
    rtf = load("live_rtf.json")
    if rtf:
        print(f"### Real-time factor ({rtf['date']}; `{rtf['command']}`)\n")
        print("| threads | whole pipeline --fast | VAD | ASR | audio model | text branch |\n|---|---|---|---|---|---|")
        for t, r in rtf["rtf"].items():
            print(f"| {t} | {r['pipeline_fast']:.3f} | {r['vad']:.4f} | {r['asr']:.3f} | {r['audio_model']:.4f} | {r['text']:.4f} |")
        print()
    for fname in ("live_streams.json", "live_streams_staggered.json"):
        st = load(fname)
        if not st:
            continue
        start = "staggered starts" if st.get("start") == "staggered" else "all streams start together"
        print(f"### Concurrent real-time streams, {start} ({st['date']}; `{st['command']}`)\n")
        print("| configuration | streams | latency p50 / p95 / max ms | drops | keeps up |\n|---|---|---|---|---|")
        for key, r in st["streams"].items():
            print(f"| {key.split(':')[0]} | {r['streams']} | {ms(r['latency_ms']).replace(' | ', ' / ')} | {r['drops']} | "
                  f"{'yes' if r['keeps_up'] else 'no'} |")
        print()
    mems = sorted(RESULTS.glob("live_memory_*min.json"), key=lambda p: float(p.stem.split("_")[2][:-3]))
    if mems:
        print("### Memory and long runs: `ser-live --file REC --fast --no-dashboard` as its own process\n")
        print("| audio | command | session s | windows logged / VAD windows | RSS at session start MB | "
              "max in first tenth MB | max in last tenth MB | growth MB | peak MB | drops |\n|---|---|---|---|---|---|---|---|---|---|")
        for p in mems:
            m = json.loads(p.read_text())
            r, c = m["rss_mb"], m["counters"]
            drops = sum(v for k, v in c.items() if "dropped" in k and k != "short_tails_dropped")
            print(f"| {m['recording_minutes']:g} min | `{m['command']}` ({m['date']}) | {m['session_s']:.0f} | {m['windows']} / "
                  f"{m['expected_windows']} | {r['at_session_start']:.0f} | {r['first_tenth_max']:.0f} | {r['last_tenth_max']:.0f} | "
                  f"{m['growth_mb_after_first_tenth']:+.0f} | {r['peak']:.0f} | {drops} |")
        print()
    prof = load("memory_profile.json")
    if prof:
        print(f"### Memory profile ({prof['date']}; `{prof['command']}`)\n")
        print("| step | RSS MB | added MB |\n|---|---|---|")
        for st in prof["steps"]:
            print(f"| {st['step']} | {st['rss_mb']:.0f} | {st['added_mb']:+.0f} |")
        print()
    asr = load("asr_profile.json")
    if asr:
        print(f"### Whisper profile ({asr['date']}; `{asr['command']}`)\n")
        print("| stage (one 3.5 s window, 1 thread) | median ms |\n|---|---|")
        for k, v in asr["stages_ms"].items():
            print(f"| {k} | {v:.0f} |")
        print(f"\n| encoder input | word recall ({asr['clips']} clips) | extra words per word | ms per clip |\n|---|---|---|---|")
        for k, v in asr["recall"].items():
            print(f"| {k} | {v['recall']:.3f} | {v['extra_per_word']:.3f} | {v['ms_per_clip']} |")
        print("\n| windows per call | encoder ms per window | decoding ms per window |\n|---|---|---|")
        for b, v in asr["batched"].items():
            print(f"| {b} | {v['encoder_ms_per_window']:.0f} | {v['decoding_ms_per_window']:.0f} |")
        print()
    tl = load("text_latency.json")
    if tl:
        print(f"### Text branch ({tl['date']}; `{tl['command']}`)\n")
        print(f"{tl['n']} MELD dev sentences in ASR style ({tl['mean_words']:.1f} words on average), one thread: "
              f"median {tl['median_ms']:.1f} ms, p95 {tl['p95_ms']:.1f} ms, max {tl['max_ms']:.1f} ms; loading {tl['load_s']:.1f} s.\n")
    an = load("analyze_throughput.json")
    if an:
        print(f"### ser-analyze throughput ({an['date']}; `{an['command']}`)\n")
        print("| jobs | wall s | seconds of audio per second |\n|---|---|---|")
        for k, r in an["runs"].items():
            print(f"| {k.split()[1]} | {r['wall_s']:.0f} | {r['audio_s_per_s']:.1f} |")
        print(f"\n{an['files']} files of {an['minutes_each']:g} min; {an['note']}.\n")


if __name__ == "__main__":
    main()
