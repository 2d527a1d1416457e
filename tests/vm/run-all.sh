#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Run every VM-tier scenario in tests/vm/scenarios/ (sorted by name) but the
# opt-in ones ("# opt-in: ..." in the header, run them with tests/vm/run.sh)
# and end with "vm: N passed, M failed"; exits non-zero if any failed.
#   bash tests/vm/run-all.sh              one pass
#   bash tests/vm/run-all.sh --repeat N   N passes after one preparation,
#                                         counting the failures of each
# Guest scenarios run VM_JOBS at a time (default: 2, at most the CPU
# count): each guest has one vCPU, so two guests use the two cores of a
# small CI machine. Each scenario's output is printed in one piece when it
# ends. Host scenarios ("# where: host": builds, the harness's own test)
# run alone, after the guests started before them have finished.
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
jobs=${VM_JOBS:-2}
(($(nproc) < jobs)) && jobs=$(nproc)
# Injected boot deaths count across boots: one scenario at a time.
((VM_INJECT_BOOT_DEATHS == 0)) || jobs=1
((jobs >= 1)) || jobs=1
declare -A running=()

# start_scenario FILE LABEL: runs it in the background; its output goes to
# its own log, printed by reap_one.
start_scenario() {
	local file=$1 label=$2 out
	out=$RUNS_DIR/.run-all.$label.out
	mkdir -p "$RUNS_DIR"
	(
		trap 'if [[ -n $VM_QEMU_PID ]]; then kill -TERM "$VM_QEMU_PID" 2>/dev/null; fi' EXIT
		# shellcheck disable=SC2030 # this scenario's own list, written out below
		VM_RETRIED=()
		rc=0
		vm_run_scenario "$file" || rc=$?
		printf '%s\n' "${VM_RETRIED[@]}" >"$out.retried"
		exit "$rc"
	) >"$out" 2>&1 &
	running[$!]=$label
}

# reap_one: waits for one background scenario, prints its output, counts it.
reap_one() {
	local pid rc=0 label out r
	wait -n -p pid "${!running[@]}" || rc=$?
	label=${running[$pid]}
	unset "running[$pid]"
	out=$RUNS_DIR/.run-all.$label.out
	cat "$out"
	if [[ -s $out.retried ]]; then
		while read -r r; do
			# shellcheck disable=SC2031 # the parent's list, not the subshell's
			[[ -n $r ]] && VM_RETRIED+=("$r")
		done <"$out.retried"
	fi
	rm -f "$out" "$out.retried"
	if ((rc == 0)); then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		pass_failed=1
		failures+=("$label")
	fi
}

reap_all() {
	while ((${#running[@]})); do
		reap_one
	done
}

for ((pass = 1; pass <= repeat; pass++)); do
	((repeat == 1)) || vm_log "pass $pass of $repeat"
	pass_failed=0
	for file in "$VM_DIR"/scenarios/*.sh; do
		[[ -z $(vm_header "$file" opt-in) ]] || continue
		name=$(basename "$file" .sh)
		((repeat == 1)) || name+="@pass$pass"
		if [[ $(vm_header "$file" where guest) == host ]]; then
			reap_all
			start_scenario "$file" "$name"
			reap_all
			continue
		fi
		while ((${#running[@]} >= jobs)); do
			reap_one
		done
		start_scenario "$file" "$name"
	done
	reap_all
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
