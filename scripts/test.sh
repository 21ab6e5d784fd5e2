#!/usr/bin/env bash
# The test command (README, CI): install what the tests need (scripts/setup.sh --dev), check the
# layers (lint-imports), run the suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
.venv/bin/lint-imports --no-cache  # the layers (pyproject.toml [tool.importlinter]); tests/test_layers.py runs it too
exec .venv/bin/python -m pytest "$@"
