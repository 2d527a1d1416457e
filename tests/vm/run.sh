#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run one VM-tier scenario: tests/vm/run.sh load-dell
# (a name from tests/vm/scenarios/ or a path to a scenario file);
# tests/vm/run.sh --repeat N load-dell runs it N times and counts failures.
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=tests/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

REPEAT=1
parse_repeat vm_die "$@"
shift "$REPEAT_SHIFT"
repeat=$REPEAT
if [[ $# -ne 1 ]]; then
	names=()
	for f in "$VM_DIR"/scenarios/*.sh; do
		names+=("$(basename "$f" .sh)")
	done
	echo "usage: $0 [--repeat N] SCENARIO   (one of: ${names[*]})" >&2
	exit 2
fi

file=$(vm_scenario_file "$1")
t0=$(vm_now)
vm_prepare
passed=0
failed=0
for ((pass = 1; pass <= repeat; pass++)); do
	((repeat == 1)) || vm_log "run $pass of $repeat"
	if vm_run_scenario "$file"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
	fi
done
vm_retry_summary
echo "vm: $passed passed, $failed failed"
vm_log "wall time $(vm_elapsed "$t0")s"
((failed == 0))
