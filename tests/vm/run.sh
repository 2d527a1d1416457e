#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run one VM-tier scenario: tests/vm/run.sh load-dell
# (a name from tests/vm/scenarios/ or a path to a scenario file).
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -ne 1 ]]; then
	names=()
	for f in "$VM_DIR"/scenarios/*.sh; do
		names+=("$(basename "$f" .sh)")
	done
	echo "usage: $0 SCENARIO   (one of: ${names[*]})" >&2
	exit 2
fi

file=$(vm_scenario_file "$1")
t0=$(vm_now)
vm_prepare
rc=0
vm_run_scenario "$file" || rc=$?
if ((rc == 0)); then
	echo "vm: 1 passed, 0 failed"
else
	echo "vm: 0 passed, 1 failed"
fi
vm_log "wall time $(vm_elapsed "$t0")s"
exit "$rc"
