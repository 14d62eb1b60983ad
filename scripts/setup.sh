#!/usr/bin/env bash
# Creates .venv (if missing) and installs napari-skinseg into it. Extra pip targets may be given,
# e.g. `scripts/setup.sh ".[test]"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first, within the same ranges pyproject.toml asks for.
.venv/bin/python -m pip install -q "torch>=2.1,<2.15" "torchvision>=0.16,<0.30"
.venv/bin/python -m pip install -q -e "${1:-.}"
