"""Rewrite tests/data/demo_reference.json: the demo's windows and utterances (times, labels) as
the shipped models give them, which tests/test_live_cli.py compares against. Run it after a
model changes, from the repository root: .venv/bin/python scripts/make_demo_reference.py
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "ser-live"), "--file", "demo/demo.flac", "--fast", "--json",
                          "--no-transcript-log"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    records = [json.loads(line) for line in out.splitlines()]
    ref = {"made_by": f"ser-live --file demo/demo.flac --fast --json at commit {rev} (scripts/make_demo_reference.py)",
           "windows": [[r["start_s"], r["end_s"], r["label"]] for r in records if r["type"] == "window"],
           "utterances": [[r["start_s"], r["end_s"], r["label"], r["windows"]] for r in records if r["type"] == "utterance"]}
    (ROOT / "tests" / "data" / "demo_reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    print(f"{len(ref['windows'])} windows, {len(ref['utterances'])} utterances", file=sys.stderr)


if __name__ == "__main__":
    main()
