"""ser-report: figures and a self-contained HTML page from session logs (transcript by
utterance, each with its own emotion, arousal and valence; the rolling emotion as a band), or
(--clip) the seed notebook's figure for one recording: waveform, log-mel spectrogram, and the
audio, text and fused probabilities, with the fused arousal/valence in the title."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamer.cli import run_main
from streamer.errors import SerError


def clip_figure(path: Path, png: Path, config: Path | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import torch

    from streamer.audio.features import log_mel
    from streamer.audio.io import load_audio
    from streamer.config import Config
    from streamer.labels import LABELS
    from streamer.live.factory import load_models
    from streamer.dims import dims
    from streamer.live.fusion import Fuser
    from streamer.live.messages import Window
    from streamer.report import COLORS

    torch.set_num_threads(1)
    cfg = Config.load(config)
    models = load_models(cfg)
    x = load_audio(path)
    audio = models.audio.predict(x)
    samples = np.clip(np.round(x * 32768), -32768, 32767).astype(np.int16)
    words = models.asr_factory().words_for(Window(0, 0, len(samples), samples, final=True))
    transcript = " ".join(w.word for w in words)
    text = models.text.predict(transcript) if transcript else None
    fuser = Fuser.load(cfg.fusion)
    fused = fuser.fuse(audio, text)
    fig = plt.figure(figsize=(12, 7), dpi=100)
    grid = fig.add_gridspec(2, 2, height_ratios=[1, 1.3])
    ax_w = fig.add_subplot(grid[0, 0])
    ax_w.plot(np.arange(len(x)) / 16000, x, lw=0.5, color="#333333")
    ax_w.set_title("waveform", loc="left")
    ax_w.set_xlabel("s")
    ax_m = fig.add_subplot(grid[1, 0])
    mel = log_mel(x)
    ax_m.imshow(mel, origin="lower", aspect="auto", cmap="magma",
                extent=(0, len(x) / 16000, 0, 80))
    ax_m.set_title("log-mel spectrogram", loc="left")
    ax_m.set_xlabel("s")
    ax_p = fig.add_subplot(grid[:, 1])
    y = np.arange(len(LABELS))
    for k, (name, probs) in enumerate((("audio", audio), ("text", text), ("fused", fused))):
        if probs is None:
            continue
        ax_p.barh(y + (k - 1) * 0.27, [probs[lab] for lab in LABELS], height=0.26, label=name,
                  color=[COLORS[lab] for lab in LABELS], alpha=(0.45, 0.7, 1.0)[k], edgecolor="black", linewidth=0.3)
    ax_p.set_yticks(y, LABELS)
    ax_p.set_xlim(0, 1)
    ax_p.legend(title="bars: audio / text / fused (light to dark)")
    ax_p.set_title(f"“{transcript[:60]}”" if transcript else "(no words)", loc="left", fontsize=9)
    label = max(fused, key=fused.get)
    d = dims(fused)
    fig.suptitle(f"{path.name}: {label} {fused[label]:.0%}{' (uncertain)' if fuser.is_uncertain(fused) else ''}   "
                 f"fused arousal {d['arousal']:+.2f}, valence {d['valence']:+.2f}")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(prog="ser-report", description=__doc__)
    ap.add_argument("logs", nargs="*", type=Path, metavar="LOG.ndjson", help="session logs")
    ap.add_argument("--html", type=Path, default=None, help="HTML page (with several logs: a folder, one page per log)")
    ap.add_argument("--png", type=Path, default=None, help="PNG figure (with several logs: a folder, one figure per log)")
    ap.add_argument("--clip", type=Path, default=None, help="draw the figure of one recording instead (needs --png)")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args()
    if args.clip:
        if not args.png:
            raise SerError("--clip needs --png OUT.png")
        if not args.clip.is_file():
            raise SerError(f"no such audio file: {args.clip}")
        clip_figure(args.clip, args.png, args.config)
        print(f"wrote {args.png}")
        return 0
    if not args.logs:
        raise SerError("give session logs (LOG.ndjson), or --clip FILE --png OUT.png")
    if not (args.html or args.png):
        raise SerError("nothing to write: give --html OUT.html and/or --png OUT.png")
    from streamer.report import report

    many = len(args.logs) > 1
    for log in args.logs:
        if not log.is_file():
            raise SerError(f"no such log: {log}")
        html = (args.html / f"{log.stem}.html") if (many and args.html) else args.html
        png = (args.png / f"{log.stem}.png") if (many and args.png) else args.png
        for w in report(log, html, png):
            print(f"warning: {w}", file=sys.stderr)
        print(f"{log}: " + ", ".join(str(p) for p in (html, png) if p))
    return 0


def entry() -> None:
    run_main(main)


if __name__ == "__main__":
    entry()
