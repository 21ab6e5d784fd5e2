"""`--help` says what every option does and its default."""

import re
import subprocess
import sys

import numpy as np

from streamer.core.labels import LABELS
from streamer.train.metrics import confusion_text


def test_ser_analyze_help_names_every_default():
    res = subprocess.run([sys.executable, "-m", "streamer.cli.analyze", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    text = re.sub(r"\s+", " ", res.stdout.split("options:", 1)[1])
    options = re.findall(r" (--[a-z-]+)(?: [A-Z_{},a-z]+)? ", text)
    assert {"--out", "--channels", "--jobs", "--force", "--config", "--asr", "--vosk-model", "--whisper-model",
            "--text-model"} <= set(options)
    for opt in ("--out", "--channels", "--jobs", "--config", "--asr", "--vosk-model", "--whisper-model", "--text-model"):
        after = text.split(f" {opt} ", 1)[1].split(" --", 1)[0]
        assert "default" in after, (opt, after)
    assert "default: ser- analysis/" in text or "default: ser-analysis/" in text


def test_ser_live_help_names_every_default():
    from streamer.cli.live import build_parser

    res = subprocess.run([sys.executable, "-m", "streamer.cli.live", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "--no-transcript-log" in res.stdout
    actions = [a for a in build_parser()._actions if a.option_strings and a.dest not in ("help", "list_devices")]
    assert len(actions) == 13
    for a in actions:
        assert a.help and "default" in a.help, a.option_strings


def test_confusion_table_prints_whole_label_names():
    head = confusion_text(np.eye(len(LABELS), dtype=int)).splitlines()[0]
    assert all(label in head.split() for label in LABELS)
