#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every VM-tier scenario in tests/vm/scenarios/ (sorted by name) but the
# opt-in ones ("# opt-in: ..." in the header, run them with tests/vm/run.sh)
# and end with "vm: N passed, M failed"; exits non-zero if any failed.
#   bash tests/vm/run-all.sh              one pass
#   bash tests/vm/run-all.sh --repeat N   N passes after one preparation,
#                                         counting the failures of each
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# shellcheck source=tests/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

REPEAT=1
while (($#)); do
	parse_repeat vm_die "$@"
	((REPEAT_SHIFT)) || vm_die "usage: $0 [--repeat N]"
	shift "$REPEAT_SHIFT"
done
repeat=$REPEAT

t0=$(vm_now)
vm_prepare

passed=0
failed=0
failures=()
bad_passes=0
for ((pass = 1; pass <= repeat; pass++)); do
	((repeat == 1)) || vm_log "pass $pass of $repeat"
	pass_failed=0
	for file in "$VM_DIR"/scenarios/*.sh; do
		# Opt-in scenarios (long benchmarks) run only by name: tests/vm/run.sh NAME.
		[[ -z $(vm_header "$file" opt-in) ]] || continue
		if vm_run_scenario "$file"; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			pass_failed=1
			name=$(basename "$file" .sh)
			((repeat == 1)) || name+="@pass$pass"
			failures+=("$name")
		fi
	done
	bad_passes=$((bad_passes + pass_failed))
done

if ((failed)); then
	vm_log "failed: ${failures[*]}"
fi
vm_retry_summary
((repeat == 1)) || vm_log "repeat: $repeat passes, $bad_passes with a failure, $((${#VM_RETRIED[@]})) boot(s) retried"
vm_log "wall time $(vm_elapsed "$t0")s"
echo "vm: $passed passed, $failed failed"
((failed == 0))
