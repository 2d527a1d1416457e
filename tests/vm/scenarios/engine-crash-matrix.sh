# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the daemon crashes at every durable step of install, swap,
#   commit and rollback, and while a rejected install is staged or refused;
#   after a restart exactly one healthy module is loaded and the state record
#   and history agree (for the rejected ones: slots and state byte-identical).
# vendor: Dell Inc.
# boots: 1
# timeout: 600
# needs: engine kmod-faults failpoints
# live, json: set by recover_and_check (engine.sh).
# shellcheck disable=SC2154

. /vm/engine.sh
with_probation 1s

# point:PACKAGE[:BASE]: crash points on the way to installing PACKAGE from
# a committed BASE (default 1.0.0; 1.1.0 commits, 1.2.0 WARNs and is rolled
# back). And the rejected installs: a flipped payload byte (crash while
# staging it) and an old module that cannot be unloaded (1.0.0-busy): after
# recovery slots and state are byte-identical, the history only appended to.
MATRIX="
install.after-stage:1.1.0
install.after-checkpoint:1.1.0
install.after-unload:1.1.0
install.after-replace:1.1.0
install.after-load:1.1.0
install.after-swapped:1.1.0
commit.after-save:1.1.0
install.after-load:1.2.0
rollback.after-intent:1.2.0
rollback.after-unload:1.2.0
install.staging:1.2.0-flipped
install.after-stage:1.1.0:1.0.0-busy
install.after-checkpoint:1.1.0:1.0.0-busy
"

reset_host() {
	if is_loaded; then
		if [ -e "/sys/module/$MOD/parameters/fault_release" ]; then set_param fault_release 1; fi
		rmmod "$MOD" || fail "cannot unload before the next case"
	fi
	rm -rf "$STATE"
}

n=0
passed=0
for case in $MATRIX; do
	point=${case%%:*}
	rest=${case#*:}
	pkg=${rest%%:*}
	base=${rest#"$pkg"}
	base=${base#:}
	base=${base:-1.0.0}
	n=$((n + 1))
	say "---- case $n: crash at $point while installing $pkg over $base"
	reset_host
	install_pkg "$base" 0
	snap_state crash
	rc=0
	FAILPOINTS="$point=panic" milspecd-fp install --config "$CONF" "$PKG/$pkg.mspkg" \
		>/tmp/crash.out 2>/tmp/crash.log || rc=$?
	grep -q "$point" /tmp/crash.log || { cat /tmp/crash.log; fail "$point: the crash point was not reached (exit $rc)"; }
	say "crashed at $point (exit $rc)"
	recover_and_check "$point"
	last=$(tail -n 1 "$STATE/history.jsonl")
	case $pkg:$base in
	1.2.0-flipped:*)
		expect_state_same crash "$point: flipped package"
		;;
	1.1.0:1.0.0-busy)
		expect_eq "$point: busy 1.0.0 kept" "$live" 1.0.0
		if [ "$point" = install.after-stage ]; then
			expect_state_same crash "$point: busy old module"
		else
			expect_state_same crash "$point: busy old module" recovered
		fi
		;;
	1.1.0:*)
		if [ "$live" = 1.1.0 ]; then
			expect_match "$point: history ends in the commit of 1.1.0" "$last" '"event":"committed","version":"1.1.0"'
		elif grep -q '"event":"committed","version":"1.1.0"' "$STATE/history.jsonl"; then
			fail "$point: history says 1.1.0 was committed but 1.0.0 is live"
		else
			say "ok: $point: 1.1.0 never committed, 1.0.0 kept"
		fi
		;;
	1.2.0:*)
		expect_eq "$point: rolled back to 1.0.0" "$live" 1.0.0
		expect_match "$point: 1.2.0 blocklisted" "$json" '"version": "1.2.0"'
		expect_match "$point: history ends in the rollback" "$last" '"event":"rolled-back"'
		;;
	esac
	passed=$((passed + 1))
done
say "BENCH crash matrix: $passed/$n crash points recovered to one healthy module with agreeing state"
