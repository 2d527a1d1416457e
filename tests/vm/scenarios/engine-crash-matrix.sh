# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the daemon crashes at every durable step of install, swap,
#   commit and rollback; after a restart exactly one healthy module is loaded
#   and the state record and history agree.
# vendor: Dell Inc.
# boots: 1
# timeout: 400
# needs: engine kmod-faults failpoints
# live, json: set by recover_and_check (engine.sh).
# shellcheck disable=SC2154

. /vm/engine.sh
with_probation 1s

# point PACKAGE: crash points on the way to installing PACKAGE from a
# committed 1.0.0 (1.1.0 commits, 1.2.0 WARNs and is rolled back).
MATRIX="
install.after-stage:1.1.0
install.after-checkpoint:1.1.0
install.after-unload:1.1.0
install.after-load:1.1.0
install.after-swapped:1.1.0
commit.after-save:1.1.0
install.after-load:1.2.0
rollback.after-intent:1.2.0
rollback.after-unload:1.2.0
"

reset_host() {
	if is_loaded; then rmmod "$MOD" || fail "cannot unload before the next case"; fi
	rm -rf "$STATE"
}

n=0
passed=0
for case in $MATRIX; do
	point=${case%%:*}
	pkg=${case#*:}
	n=$((n + 1))
	say "---- case $n: crash at $point while installing $pkg"
	reset_host
	install_pkg 1.0.0 0
	rc=0
	FAILPOINTS="$point=panic" milspecd-fp install --config "$CONF" "$PKG/$pkg.mspkg" \
		>/tmp/crash.out 2>/tmp/crash.log || rc=$?
	grep -q "$point" /tmp/crash.log || { cat /tmp/crash.log; fail "$point: the crash point was not reached (exit $rc)"; }
	say "crashed at $point (exit $rc)"
	recover_and_check "$point"
	last=$(tail -n 1 "$STATE/history.jsonl")
	case $pkg in
	1.1.0)
		if [ "$live" = 1.1.0 ]; then
			expect_match "$point: history ends in the commit of 1.1.0" "$last" '"event":"committed","version":"1.1.0"'
		elif grep -q '"event":"committed","version":"1.1.0"' "$STATE/history.jsonl"; then
			fail "$point: history says 1.1.0 was committed but 1.0.0 is live"
		else
			say "ok: $point: 1.1.0 never committed, 1.0.0 kept"
		fi
		;;
	1.2.0)
		expect_eq "$point: rolled back to 1.0.0" "$live" 1.0.0
		expect_match "$point: 1.2.0 blocklisted" "$json" '"version": "1.2.0"'
		expect_match "$point: history ends in the rollback" "$last" '"event":"rolled-back"'
		;;
	esac
	passed=$((passed + 1))
done
say "BENCH crash matrix: $passed/$n crash points recovered to one healthy module with agreeing state"
