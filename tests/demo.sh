#!/usr/bin/env bash
# The main job: builds everything, boots a Dell-looking QEMU guest and shows
# milspecd at work, as a timeline: a publisher writes a mirror on the guest's
# own loopback; milspecd pulls 1.0.0, live-swaps to 1.1.0 and commits it,
# pulls a faulty 1.2.0 (WARN at init), rolls back to 1.1.0 on its own and
# refuses 1.2.0 when it is offered again. Installs what it needs; run as root.
set -euo pipefail
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"

ensure_debs gcc make pkg-config binutils
log=.cache/vm/runs/demo/console-boot1.log
mkdir -p "$(dirname "$log")"
rm -f "$log"

step "preparing the guest (first run: kernel download, module and release builds, a few minutes)"
bash tests/vm/run.sh demo >.cache/vm/demo-harness.log 2>&1 &
harness=$!
trap 'kill "$harness" 2>/dev/null || true' INT TERM
# Follow the guest's timeline as it runs; tail stops when the harness does.
while [ ! -e "$log" ] && kill -0 "$harness" 2>/dev/null; do sleep 0.2; done
if [ -e "$log" ]; then
	tail --pid="$harness" -n +1 -F "$log" 2>/dev/null | sed -un 's/\r$//; s/^demo| //p'
fi
rc=0
wait "$harness" || rc=$?
grep -E '^vm: (PASS|FAIL|wall)' .cache/vm/demo-harness.log || true
if [ "$rc" -ne 0 ]; then
	echo "the demo failed; harness log: .cache/vm/demo-harness.log, console: $log" >&2
	tail -n 30 .cache/vm/demo-harness.log >&2
	exit "$rc"
fi
