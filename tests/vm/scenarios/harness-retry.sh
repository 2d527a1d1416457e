# SPDX-License-Identifier: GPL-2.0
# vm-scenario: host side: the harness itself. A guest that dies before its
#   scenario starts (a real kernel panic at boot) is reported as a boot
#   death with the console lines that show it and tried once, loudly; a
#   second death in a row fails; a failed assertion is never tried again.
# where: host
# timeout: 300
# shellcheck shell=bash
set -euo pipefail

: "${REPO_ROOT:?}" "${CACHE_DIR:?}" "${RUNDIR:?}"

# A one-boot probe of its own, so the real scenarios' run folders stay theirs.
probe=$RUNDIR/harness-probe.sh
cp "$REPO_ROOT/tests/vm/scenarios/load-dell.sh" "$probe"
failing=$RUNDIR/harness-fails.sh
printf '%s\n' '# vm-scenario: fails on purpose' '# timeout: 60' 'say "about to fail"' 'exit 3' >"$failing"

# harness DEATHS SCENARIO: the VM harness on the shared cache, with the first
# DEATHS boots made to panic; its output in $out, its status in $rc.
harness() {
	rc=0
	out=$(MILSPEC_VM_CACHE=$CACHE_DIR VM_INJECT_BOOT_DEATHS=$1 \
		bash "$REPO_ROOT/tests/vm/run.sh" "$2" 2>&1) || rc=$?
}
expect() { grep -qF -- "$1" <<<"$out" || { printf '%s\n' "$out"; echo "expected: $1"; exit 1; }; }
refuse() { ! grep -qF -- "$1" <<<"$out" || { printf '%s\n' "$out"; echo "unexpected: $1"; exit 1; }; }

# One death: reported with the panic line, retried, then the probe passes.
harness 1 "$probe"
((rc == 0)) || { printf '%s\n' "$out"; echo "one boot death: harness exited $rc, want 0"; exit 1; }
expect "boot 1: DIED AT BOOT"
expect "Kernel panic - not syncing"
expect "RETRY harness-probe boot 1"
expect "died before their scenario started and were retried once: harness-probe:boot1"
expect "vm: 1 passed, 0 failed"
echo "one death: retried once, passed"

# Two deaths in a row: the retry is not repeated; the scenario fails.
harness 2 "$probe"
((rc != 0)) || { printf '%s\n' "$out"; echo "two boot deaths: harness passed"; exit 1; }
expect "died at boot again, after one retry"
expect "vm: 0 passed, 1 failed"
echo "two deaths: failed after one retry"

# A failed assertion: reported as a failed scenario, never retried.
harness 0 "$failing"
((rc != 0)) || { printf '%s\n' "$out"; echo "failing scenario: harness passed"; exit 1; }
expect "boot 1: scenario failed"
expect "vm: 0 passed, 1 failed"
refuse "RETRY"
refuse "DIED AT BOOT"
echo "failed assertion: not retried"
