#!/usr/bin/env bash
# Installs vopstore and runs `vopstore demo`: the whole loop, offline, on a
# synthetic video-text task (local SQLite store and blobs in $VOPSTORE_HOME).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/vopstore demo "$@"
