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
    st = load("live_streams.json")
    if st:
        print(f"### Concurrent real-time streams ({st['date']}; `{st['command']}`)\n")
        print("| configuration | streams | latency p50 / p95 / max ms | drops | keeps up |\n|---|---|---|---|---|")
        for key, r in st["streams"].items():
            print(f"| {key.split(':')[0]} | {r['streams']} | {ms(r['latency_ms']).replace(' | ', ' / ')} | {r['drops']} | "
                  f"{'yes' if r['keeps_up'] else 'no'} |")
        print()
    mem = load("live_memory.json")
    if mem:
        r = mem["rss_mb"]
        print(f"### Memory ({mem['date']}; `{mem['command']}`)\n")
        print(f"{mem['recording_minutes']:g} minutes of audio, {mem['windows']} windows "
              f"(the VAD alone cuts {mem['expected_windows']}), {mem['wall_s']:.0f} s: RSS after the first quarter "
              f"{r['after_warm_up_quarter']:.0f} MB, at the end {r['end']:.0f} MB, peak {r['peak_ru_maxrss']:.0f} MB "
              f"(growth after the first quarter {mem['growth_mb_after_first_quarter']:+.0f} MB).\n")
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
