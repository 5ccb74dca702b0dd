#!/usr/bin/env bash
# Creates ./.venv (if needed) and installs vopstore into it, editable.
# torch is installed FIRST and pinned: an unpinned torch on a CPU machine would
# resolve a multi-GB CUDA build. Usage: scripts/setup-venv.sh [extras, e.g. test]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
torch_spec="${VOPSTORE_TORCH:-torch==2.13.0}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
quiet() { "$@" 2> >(grep -v "^WARNING: Location" >&2); }  # drop this machine's local-mirror noise
.venv/bin/python -c "import torch" 2>/dev/null || quiet "${pip[@]}" "$torch_spec"
target="."
[ -n "$extras" ] && target=".[$extras]"
quiet "${pip[@]}" -e "$target"
