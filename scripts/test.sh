#!/usr/bin/env bash
# Installs vopstore with its test dependencies and runs the whole test suite.
# The suite starts its own PostgreSQL cluster and S3 servers on loopback; it
# needs PostgreSQL 15's binaries (Debian: apt-get install postgresql).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
