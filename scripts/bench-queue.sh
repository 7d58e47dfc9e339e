#!/usr/bin/env bash
# Run bench suites one after another on a machine whose work folders may not outlive the session.
#
#   scripts/bench-queue.sh BUDGET THREADS SUITE [SUITE ...]     (start it with nohup; rerun to continue)
#
# Each suite runs from a frozen copy of the code at the current commit (a git worktree under $QUEUE_DIR, so commits
# made while it runs do not change it) in one shared --work folder, so cells that several suites share are made once
# (docs/reproduce.md). Results go straight to docs/results/<suite>/ after every cell; a suite whose results.json
# there is partial is resumed with --restore, so the cells a lost work folder held are kept. Extra budget overrides:
# QUEUE_SET="seed_offset=8 final_num=5000". QUEUE_TAG=r4 writes docs/results/<suite>-r4/ instead (a second run of a
# suite, or another budget, must not resume or overwrite the first one's table). Logs: $QUEUE_DIR/<suite>[-tag].out.
set -uo pipefail
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
    if "$repo/.venv/bin/python" -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(len(r['cells']) < r['planned_cells'])" "$out/results.json"; then
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
