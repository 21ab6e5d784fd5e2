"""``python -m streamer.text.compile FOLDER``: build a text model folder's network, trace it
and save it where :meth:`EmbeddedTextEmotion.load` looks for it (run in a child process by
``load`` itself, so the parent never holds transformers)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from streamer.core.errors import SerError
from streamer.text.compiled import compiled_path, save_compiled
from streamer.text.emotion import base_folder
from streamer.text.torch_text import EmbeddedTextEmotion


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m streamer.text.compile MODEL_FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    try:
        model = EmbeddedTextEmotion.load(folder, compiled=False)  # checks the folder and its label map
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    base = json.loads((folder / "config.json").read_text())["base"]
    target = compiled_path(folder, base_folder(base))
    if target is None:
        print(f"error: base model {base} is not a local folder; nothing to compile", file=sys.stderr)
        return 1
    if model.run is model.net:
        print("error: TorchScript tracing is unavailable here", file=sys.stderr)
        return 1
    save_compiled(model.run, target)
    return 0 if target.is_file() else 1


if __name__ == "__main__":
    sys.exit(main())
