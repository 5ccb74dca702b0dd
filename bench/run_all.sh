#!/usr/bin/env bash
# Runs every benchmark in turn; each prints medians and ratios against its own baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
for bench in store cli registry methods data train train_rows runtime runtime_baselines gallery transfer baseline_rows compare_methods; do
  echo "=== bench_$bench ==="
  .venv/bin/python "bench/bench_$bench.py" "$@"
done
