#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every VM-tier scenario in tests/vm/scenarios/ (sorted by name) and end
# with "vm: N passed, M failed"; exits non-zero if any failed.
#   bash tests/vm/run-all.sh              one pass
#   bash tests/vm/run-all.sh --repeat N   N passes after one preparation,
#                                         counting the failures of each
set -euo pipefail

# shellcheck source=tests/vm/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

repeat=1
while (($#)); do
	case $1 in
	--repeat)
		[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || vm_die "--repeat needs a positive count"
		repeat=$2
		shift 2
		;;
	*) vm_die "usage: $0 [--repeat N]" ;;
	esac
done

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
