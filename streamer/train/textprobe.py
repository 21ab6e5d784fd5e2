"""A probe of a text recipe on the transfer proxies only (MELD dev, DailyDialog test), never on
GoEmotions test (kept for the shipped model):

    .venv/bin/python -m streamer.train.textprobe models/text-emotion/train.toml runs/probe meld_repeat=3

trains the recipe with ``key=value`` overrides (TOML values), saves it to OUT and writes
OUT/probe.json (the training record + ``eval``, comparable in the model card with
``ser-train-text --card-only --compare OUT/probe.json``).
"""

from __future__ import annotations

import json
import logging
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

log = logging.getLogger(__name__)

PROXIES = {"meld-dev": "meld/dev.tsv", "dailydialog-test": "dailydialog/test.tsv"}


class _Print:
    def task(self, name: str, total: int):
        return lambda n=1: None

    def message(self, text: str) -> None:
        print(text, flush=True)


def overrides(pairs: list[str]) -> dict:
    """``key=value`` pairs, values read as TOML.

    >>> overrides(["meld_repeat=3", 'dev_sets=["goemotions"]'])
    {'meld_repeat': 3, 'dev_sets': ['goemotions']}
    """
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep:
            raise SystemExit(f"error: {kv!r} is not key=value")
        out[key] = tomllib.loads(f"x = {value}")["x"]
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    import torch

    from streamer.text.torch_text import EmbeddedTextEmotion
    from streamer.text.normalize import asr_style
    from streamer.train.text import TextTrainConfig, train
    from streamer.train.textcard import emotional_f1
    from streamer.train.textdata import read_tsv
    from streamer.train.texteval import score

    torch.set_num_threads(1)
    cfg = replace(TextTrainConfig.load(args[0]), **overrides(args[2:]))
    out = Path(args[1])
    record = train(cfg, out, _Print())
    model = EmbeddedTextEmotion.load(out, compiled=False)
    data = Path(cfg.meld).parent
    record["eval"] = {}
    for name, rel in PROXIES.items():
        rows = read_tsv(data / rel, name).single()
        r = score(model, [asr_style(t) for t in rows.texts], rows.labels())
        record["eval"][name] = {"asr": r}
        print(f"{name}: accuracy {r['accuracy']:.3f}  macro-F1 {r['macro_f1']:.3f}  "
              f"emotional F1 {emotional_f1(r['confusion']['matrix']):.3f}", flush=True)
    (out / "probe.json").write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
