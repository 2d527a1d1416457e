#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every VM-tier scenario in tests/vm/scenarios/ (sorted by name) and end
# with "vm: N passed, M failed"; exits non-zero if any failed.
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t0=$(vm_now)
vm_prepare

passed=0
failed=0
failures=()
for file in "$VM_DIR"/scenarios/*.sh; do
	if vm_run_scenario "$file"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("$(basename "$file" .sh)")
	fi
done

if ((failed)); then
	vm_log "failed: ${failures[*]}"
fi
vm_log "wall time $(vm_elapsed "$t0")s"
echo "vm: $passed passed, $failed failed"
((failed == 0))
