#!/usr/bin/env bash
# Run bench suites one after another on a machine whose work folders may not outlive the session.
#
#   scripts/bench-queue.sh BUDGET THREADS SUITE [SUITE ...]     (start it with nohup; rerun to continue)
#
# Each suite runs from a frozen copy of the code at the current commit (a git worktree under $QUEUE_DIR, so commits
# made while it runs do not change it) in one shared --work folder, so cells that several suites share are made once
# (docs/reproduce.md). Results go straight to docs/results/<suite>/ after every cell; a suite whose results.json
# there is partial is resumed with --restore, so the cells a lost work folder held are kept. Extra budget overrides:
# QUEUE_SET="seed_offset=8 final_num=5000" (no spaces inside a value: generators=["sit"] runs a cell too long for
# one session in parts, each later part a restore that adds generators to the cells). QUEUE_TAG=r4 writes
# docs/results/<suite>-r4/ instead (a second run of a suite, or another budget, must not resume or overwrite the
# first one's table). Logs: $QUEUE_DIR/<suite>[-tag].out.
set -uo pipefail
set -f  # QUEUE_SET values such as generators=["sit"] are not file patterns
repo="$(cd "$(dirname "$0")/.." && pwd)"
budget=$1 threads=$2
shift 2
queue=${QUEUE_DIR:-$repo/runs/queue}
mkdir -p "$queue"
src="$queue/src-$(git -C "$repo" rev-parse --short HEAD)"
[ -d "$src" ] || git -C "$repo" worktree add -q --detach "$src" HEAD
sets=()
for s in ${QUEUE_SET:-}; do sets+=(--set "$s"); done
export HF_HUB_OFFLINE=1 PYTHONPATH="$src/src"
for suite in "$@"; do
  name="$suite${QUEUE_TAG:+-$QUEUE_TAG}"
  out="$repo/docs/results/$name"
  restore=()
  if [ -f "$out/results.json" ]; then
    # complete when it holds every cell (and generator) this budget with QUEUE_SET runs, not only what the earlier
    # run planned (reproduce.unfinished_cells)
    if PYTHONPATH="$src/src" "$repo/.venv/bin/python" - "$out/results.json" "$suite" "$budget" ${QUEUE_SET:-} <<'PY'
import json, sys
from detok.bench.reproduce import unfinished_cells
from detok.bench.suites import parse_budget
left = unfinished_cells(sys.argv[2], parse_budget(sys.argv[3], sys.argv[4:]), json.load(open(sys.argv[1]))["cells"])
print("left to run:", "; ".join(left) if left else "nothing")
sys.exit(bool(left))
PY
    then
      echo "$name: complete in $out, skipped"
      continue
    fi
    cp "$out/results.json" "$queue/$name-earlier.json"
    restore=(--restore "$queue/$name-earlier.json")
  fi
  echo "$name: start $(date -u +%FT%TZ) from $src"
  (cd "$queue" && "$repo/.venv/bin/python" -c "import sys; from detok.cli import main; sys.exit(main())" \
    bench reproduce --suite "$suite" --budget "$budget" --threads "$threads" --work "$queue/work-$budget" \
    --out "$out" "${sets[@]}" "${restore[@]}") > "$queue/$name.out" 2>&1
  rc=$?
  echo "$name: end $(date -u +%FT%TZ), exit $rc"
done
