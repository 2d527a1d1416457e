# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the whole cycle driven by milspecctl over a real system bus:
#   milspecd run serves com.dell.MilSpec1; install and commit 1.0.0 and
#   1.1.0, a faulty 1.2.0 rolled back on its own, an operator's rollback
#   with no trial (back to the other slot) and one in the middle of a
#   trial, the version it left blocklisted listed by status and unblocked
#   (root only, recorded) and installed again, a module removed behind the daemon's back repaired by Reconcile,
#   and every change refused to uid 65534 while its reads are answered.
# vendor: Dell Inc.
# boots: 1
# timeout: 300
# needs: engine kmod-faults dbus

. /vm/engine.sh
. /vm/dbus.sh

with_probation 3s
start_bus
start_daemon "$CONF"
ctl 0 status
start_watch

say "-- install and commit over D-Bus"
ctl 0 install "$PKG/1.0.0.mspkg"
expect_match "1.0.0 outcome" "$(cat /tmp/ctl.out)" "committed 1.0.0"
ctl 0 install "$PKG/1.1.0.mspkg"
expect_match "1.1.0 outcome" "$(cat /tmp/ctl.out)" "committed 1.1.0"
expect_match "progress shown" "$(cat /tmp/ctl.out)" "State: trial"
expect_eq "live version" "$(live_version)" 1.1.0
check "set mode5_level=2" set_param mode5_level 2

say "-- uid 65534: reads answered, every change refused, nothing changed"
as_nobody 0 status
as_nobody 0 slots
as_nobody 0 history --limit 3
h0=$(wc -l <"$STATE/history.jsonl")
for args in "install $PKG/1.2.0.mspkg" check rollback pause resume reconcile; do
	# shellcheck disable=SC2086
	as_nobody 4 $args
	expect_match "refusal names the caller" "$(cat /tmp/ctl.out)" "access denied.*uid 65534"
done
expect_eq "history unchanged" "$(wc -l <"$STATE/history.jsonl")" "$h0"
expect_eq "live version" "$(live_version)" 1.1.0

say "-- a faulty 1.2.0: swapped, rolled back on its own"
ctl 3 install "$PKG/1.2.0.mspkg"
expect_match "reason" "$(cat /tmp/ctl.out)" "rolled back 1.2.0 -> 1.1.0: (warn_count rose|kernel log)"
expect_eq "live version" "$(live_version)" 1.1.0
expect_eq "mode5_level restored" "$(param mode5_level)" 2
ctl 2 install "$PKG/1.2.0.mspkg"
expect_match "re-offer refused" "$(cat /tmp/ctl.out)" "blocklisted"

say "-- the module removed behind the daemon's back: Reconcile loads the committed slot"
check "rmmod" rmmod dell_milspec
expect_eq "live version" "$(live_version)" none
ctl 0 reconcile
expect_match "reconcile" "$(cat /tmp/ctl.out)" "loaded-committed"
expect_eq "live version" "$(live_version)" 1.1.0

say "-- operator rollback with no trial: slot a holds 1.2.0 (blocklisted), so refused"
ctl 1 rollback
expect_match "refusal" "$(cat /tmp/ctl.out)" "NothingToRollBack.*blocklisted"

say "-- 1.0.0 then 1.1.0 again, then rollback with no trial: back to 1.0.0"
ctl 0 install "$PKG/1.1.0.mspkg"
expect_match "already" "$(cat /tmp/ctl.out)" "already installed"
stop_daemon
# Start over from 1.0.0: a new state folder, no module loaded.
rm -rf "$STATE"
check "rmmod" rmmod dell_milspec
start_daemon "$CONF"
ctl 0 install "$PKG/1.0.0.mspkg"
ctl 0 install "$PKG/1.1.0.mspkg"
ctl 0 rollback
expect_match "rollback to the other slot" "$(cat /tmp/ctl.out)" "going back from 1.1.0 to 1.0.0"
expect_match "committed" "$(cat /tmp/ctl.out)" "committed 1.0.0"
expect_eq "live version" "$(live_version)" 1.0.0
ctl 2 install "$PKG/1.1.0.mspkg"
expect_match "left version blocklisted" "$(cat /tmp/ctl.out)" "blocklisted"

say "-- unblock: the operator lets 1.1.0 in again, and it is recorded who did"
ctl 0 status
expect_match "status: blocked with reason and time" "$(cat /tmp/ctl.out)" \
	"blocked: +1\.1\.0 since 20[0-9-]+T[0-9:.]+Z: rollback requested by the operator \(uid 0\)"
h0=$(wc -l <"$STATE/history.jsonl")
as_nobody 4 unblock 1.1.0
expect_eq "nobody: history unchanged" "$(wc -l <"$STATE/history.jsonl")" "$h0"
ctl 0 unblock 1.1.0
expect_match "unblocked" "$(cat /tmp/ctl.out)" "unblocked: 1\.1\.0 is off the blocklist"
check "the history names who unblocked it" sh -c "grep '\"event\":\"unblocked\"' '$STATE/history.jsonl' | grep -q 'unblocked by uid 0'"
ctl 2 unblock 1.1.0
expect_match "a second unblock is refused" "$(cat /tmp/ctl.out)" "not blocklisted"
ctl 0 install "$PKG/1.1.0.mspkg"
expect_match "installed again" "$(cat /tmp/ctl.out)" "committed 1.1.0"
expect_eq "live version" "$(live_version)" 1.1.0

say "-- operator rollback in the middle of a 60 s trial"
stop_daemon
rm -rf "$STATE"
check "rmmod" rmmod dell_milspec
start_daemon "$CONF"
ctl 0 install "$PKG/1.0.0.mspkg"
stop_daemon
with_probation 60s
start_daemon "$CONF"
milspecctl install "$PKG/1.1.0.mspkg" >/tmp/long.out 2>&1 &
long=$!
i=0
until [ "$(milspecctl status | sed -n 's/^state: *//p')" = trial ]; do
	i=$((i + 1))
	[ $i -lt 300 ] || fail "1.1.0 never reached its trial"
	sleep 0.1
done
t0=$(uptime_ms)
ctl 0 rollback
say "BENCH operator rollback mid-trial: done in $(($(uptime_ms) - t0)) ms"
expect_match "rollback" "$(cat /tmp/ctl.out)" "rolled back 1.1.0 -> 1.0.0"
rc=0
wait "$long" || rc=$?
sed 's/^/    install> /' /tmp/long.out
expect_eq "install's exit (rolled back)" "$rc" 3
expect_match "install's outcome" "$(cat /tmp/long.out)" "rollback requested by the operator \(uid 0\)"
expect_eq "live version" "$(live_version)" 1.0.0

stop_watch
say "milspecctl watch saw:"
sed 's/^/    watch| /' /tmp/watch.out
expect_match "watch: swap" "$(cat /tmp/watch.out)" "swapped: 1.0.0 -> 1.1.0"
expect_match "watch: commit" "$(cat /tmp/watch.out)" "committed: 1.1.0"
expect_match "watch: rollback" "$(cat /tmp/watch.out)" "rolled back: 1.2.0 -> 1.1.0"
expect_match "watch: states" "$(cat /tmp/watch.out)" "State: trial"
ctl 0 status
ctl 0 history --limit 8
stop_daemon
