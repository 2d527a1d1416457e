# SPDX-License-Identifier: GPL-2.0
# vm-scenario: power cut at each durable step of install, swap, probation,
#   commit and rollback: the daemon stops at the step and the kernel stops
#   dead right after it (sysrq crash: no sync, no unmount, no writeback of
#   anything the daemon did not fsync itself), the guest boots again, and
#   recovery leaves exactly one healthy module, the committed one, with the
#   state record and history agreeing. Two boots per case.
# vendor: Dell Inc.
# boots: 20
# timeout: 120
# needs: engine kmod-faults failpoints
# json, live and committed are set by recover_and_check (guest/engine.sh).
# shellcheck disable=SC2154

. /vm/engine.sh

# CASE:PACKAGE, in boot order (case n is cut in boot 2n-1, checked in 2n).
# "mid-probation" is no failpoint: the cut comes 1 s into a 30 s watch.
CASES="
install.after-stage:1.1.0
install.after-checkpoint:1.1.0
install.after-unload:1.1.0
install.after-load:1.1.0
install.after-swapped:1.1.0
mid-probation:1.1.0
commit.after-save:1.1.0
install.after-load:1.2.0
rollback.after-intent:1.2.0
rollback.after-unload:1.2.0
"
RESULTS=/state/power-cut.results

n=0
for c in $CASES; do
	n=$((n + 1))
	if [ $((2 * n - 1)) = "$BOOT" ] || [ $((2 * n)) = "$BOOT" ]; then
		point=${c%%:*}
		pkg=${c#*:}
		break
	fi
done
total=$(echo "$CASES" | grep -c :)
[ -n "${point:-}" ] || fail "boot $BOOT: no case for this boot ($total cases)"

# power_cut: stop the machine now, the way a power cut would.
power_cut() {
	echo "@@VM:EXPECT-PANIC boot=$BOOT@@"
	echo c >/proc/sysrq-trigger
	sleep 10
	fail "the machine did not stop"
}

if [ $((BOOT % 2)) = 1 ]; then
	say "---- case $n/$total: power cut at $point while installing $pkg"
	[ "$BOOT" = 1 ] && : >"$RESULTS"
	echo "$n $point $pkg" >>"$RESULTS"
	rm -rf "$STATE"
	sync
	# Nothing is synced from here on: only what milspecd made durable
	# survives the cut.
	install_pkg 1.0.0 0
	if [ "$point" = mid-probation ]; then
		with_probation 30s
		milspecd install --config "$CONF" "$PKG/$pkg.mspkg" >/tmp/cut.out 2>/tmp/cut.log &
		i=0
		until grep -Eq '"phase": *"watching"' "$STATE/state.json" 2>/dev/null; do
			i=$((i + 1))
			[ $i -lt 300 ] || { cat /tmp/cut.log; fail "the trial never reached its watch"; }
			sleep 0.1
		done
		sleep 1
		say "cutting power 1 s into the probation of $pkg"
		power_cut
	fi
	rc=0
	FAILPOINTS="$point=panic" milspecd-fp install --config "$CONF" "$PKG/$pkg.mspkg" \
		>/tmp/cut.out 2>/tmp/cut.log || rc=$?
	grep -q "$point" /tmp/cut.log || { cat /tmp/cut.log; fail "$point: the step was not reached (exit $rc)"; }
	say "milspecd stopped at $point (exit $rc); cutting power"
	power_cut
fi

say "---- case $n/$total: after a power cut at $point while installing $pkg"
expect_eq "$point: nothing loaded after the cut" "$(live_version)" none
recover_and_check "$point"
hist=$STATE/history.jsonl
last_commit=$(history_last committed version)
expect_eq "$point: the last commit in the history is the committed version" "$last_commit" "$committed"
# Every swap in the history has an outcome after it.
open=$(sed -n 's/.*"event":"\([a-z-]*\)".*/\1/p' "$hist" | awk '
	/^swapped$/ { open = 1 }
	/^(committed|rolled-back|rollback-pending-reboot)$/ { open = 0 }
	END { print open + 0 }')
expect_eq "$point: no swap without an outcome in the history" "$open" 0
case $point:$pkg in
commit.after-save:*)
	expect_eq "$point: the commit survived" "$live" "$pkg"
	;;
install.after-load:1.2.0)
	# Cut before its health was judged: inconclusive, tried again.
	expect_eq "$point: rolled back to 1.0.0" "$live" 1.0.0
	expect_match "$point: $pkg not blocklisted" "$json" '"blocklist": \[\]'
	expect_match "$point: $pkg inconclusive" "$(tr -d '\n ' <"$STATE/state.json")" "\"inconclusive\":\\[\\{[^]]*\"version\":\"$pkg\""
	;;
*:1.2.0)
	# Judged faulty before the cut (the rollback had begun): blocklisted.
	expect_eq "$point: rolled back to 1.0.0" "$live" 1.0.0
	expect_match "$point: $pkg blocklisted" "$json" "\"version\": \"$pkg\""
	;;
*)
	expect_eq "$point: 1.0.0 kept" "$live" 1.0.0
	if grep -q "\"event\":\"committed\",\"version\":\"$pkg\"" "$hist"; then
		fail "$point: the history says $pkg was committed but 1.0.0 is live"
	fi
	;;
esac
echo "$n $point $pkg PASS" >>"$RESULTS"
if [ "$n" = "$total" ]; then
	passed=$(grep -c ' PASS$' "$RESULTS")
	say "BENCH power cut: $passed/$total steps recovered after a power cut to one healthy module with agreeing state and history"
	expect_eq "power-cut cases passed" "$passed" "$total"
fi
