#!/usr/bin/env bash
# Mutation testing (mutmut 3) of the modules that carry the README's guarantees.
# Slow, so not in CI. Usage:
#
#   scripts/mutation.sh                    # every target below, one after the other
#   scripts/mutation.sh metrics sync       # only these targets
#   scripts/mutation.sh --list             # the targets and their tests
#   MUTATION_JOBS=4 scripts/mutation.sh    # parallel mutant runs (default 2)
#
# Each target is one module (or folder) plus the tests that should notice when it
# breaks: mutmut records which of those tests reach each function and runs only
# those against that function's mutants. Results land in .mutation/<target>/:
# survivors.txt (every surviving mutant's diff) and results.txt (mutmut's table).
#
# Why a staging tree: setup.py installs trainer/ and cli/ as vopstore.trainer and
# vopstore.cli. mutmut 3 names a mutant after its file path (trainer/metrics.py ->
# "trainer.metrics") and activates it only when that equals the module's runtime
# __name__ ("vopstore.trainer.metrics"), and it puts mutants/ first on sys.path,
# where vopstore/ has no trainer/ below it (the editable finder would then serve the
# unmutated original). So each target runs in .mutation/<target>/, a copy laid out
# as installed (vopstore/trainer/, vopstore/cli/, vopstore/migrations/) next to
# tests/ and pyproject.toml, and the paths below are paths in that layout.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

# target | files to mutate (globs in the installed layout) | tests that guard them
TARGETS=(
  "metrics|vopstore/trainer/metrics.py|tests/test_metrics.py"
  "sync|vopstore/store/sync.py|tests/test_store_sync.py tests/test_store_push_alias.py tests/test_store_push_race.py"
  "direct|vopstore/store/direct.py|tests/test_store_registry.py tests/test_store_hardening.py tests/test_store_races.py tests/test_store_recovery.py tests/test_store_concurrency.py tests/test_store_sync.py"
  "cache|vopstore/store/cache.py|tests/test_store_registry.py tests/test_store_hardening.py tests/test_store_sync.py tests/test_checkpoint.py tests/test_store_scope_matrix.py tests/test_store_cache.py"
  "maintenance|vopstore/store/maintenance.py|tests/test_store_registry.py tests/test_store_recovery.py tests/test_store_faults.py tests/test_store_races.py tests/test_store_concurrency.py"
  "blobs|vopstore/blobs/*|tests/test_blobs_contract.py tests/test_blobs_factory.py tests/test_blobs_local.py tests/test_blobs_s3.py"
  "encode|vopstore/runtime/encode.py|tests/test_runtime_lifecycle.py tests/test_runtime_mixed.py tests/test_runtime_merged_rows.py tests/test_runtime_video.py tests/test_runtime_promises.py tests/test_runtime_text_groups.py"
  "runtime|vopstore/runtime/*|tests/test_runtime_lifecycle.py tests/test_runtime_mixed.py tests/test_runtime_merged_rows.py tests/test_runtime_video.py tests/test_runtime_promises.py tests/test_runtime_text_groups.py"
  "forward|vopstore/prompts/forward.py|tests/test_prompts_methods.py tests/test_prompts_golden.py tests/test_prompts_oracle.py tests/test_runtime_mixed.py"
)

if [ "${1:-}" = "--list" ]; then
  for t in "${TARGETS[@]}"; do IFS='|' read -r name files tests <<<"$t"; printf '%-12s %-32s %s\n' "$name" "$files" "$tests"; done
  exit 0
fi

scripts/setup-venv.sh test,mutation
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# One torch thread per mutant worker: mutmut already runs MUTATION_JOBS of them.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mutmut="$root/.venv/bin/mutmut"
jobs="${MUTATION_JOBS:-2}"

wanted=("$@")
selected() { [ ${#wanted[@]} -eq 0 ] && return 0; local w; for w in "${wanted[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
toml_list() { local out="" x; for x in "$@"; do out+="\"$x\", "; done; echo "[${out%, }]"; }

found=0
for t in "${TARGETS[@]}"; do
  IFS='|' read -r name files tests <<<"$t"
  selected "$name" || continue
  found=1
  work="$root/.mutation/$name"
  echo "== $name: mutating $files; tests: $tests"
  rm -rf "$work"
  mkdir -p "$work"
  # The installed layout (see the top of this file); no caches, no earlier mutants.
  cp -a vopstore "$work/vopstore"
  cp -a trainer "$work/vopstore/trainer"
  cp -a cli "$work/vopstore/cli"
  cp -a migrations "$work/vopstore/migrations"
  cp -a tests "$work/tests"
  find "$work" -name __pycache__ -type d -prune -exec rm -rf {} +
  # shellcheck disable=SC2086
  { cat pyproject.toml; cat <<EOF

[tool.mutmut]
source_paths = ["vopstore"]
only_mutate = $(toml_list $files)
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "--timeout=300"]
pytest_add_cli_args_test_selection = $(toml_list $tests)
process_isolation = "forkserver"
EOF
  } >"$work/pyproject.toml"
  # The [tool.mutmut] keys above are read from the staged copy only.
  (cd "$work" && "$mutmut" run --max-children "$jobs") || echo "mutmut run exited with $? for $name"
  (cd "$work" && "$mutmut" results --all true >results.txt 2>&1 || true)
  : >"$work/survivors.txt"
  for m in $(cd "$work" && "$mutmut" results 2>/dev/null | awk -F: '/: survived/ {print $1}'); do
    (cd "$work" && "$mutmut" show "$m" >>survivors.txt 2>&1; echo >>survivors.txt)
  done
  echo "-- $name: $(grep -c ': killed' "$work/results.txt" || true) killed," \
       "$(grep -c ': survived' "$work/results.txt" || true) survived" \
       "(list: $work/results.txt, diffs: $work/survivors.txt)"
done
[ "$found" = 1 ] || { echo "no such target: ${wanted[*]} (see --list)" >&2; exit 2; }
