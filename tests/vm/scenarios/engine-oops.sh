# SPDX-License-Identifier: GPL-2.0
# vm-scenario: a 1.3.0 that oopses in a work item after load is caught and
#   rolled back; if the oopsed module cannot be unloaded the engine does not
#   hang but records "rollback pending reboot", and the next boot loads 1.1.0.
# vendor: Dell Inc.
# boots: 2
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

if [ "$BOOT" = 1 ]; then
	install_pkg 1.1.0 0
	oops0=$(counter oops_count)
	install_pkg 1.3.0 3
	expect_ge "oops_count rose" "$(counter oops_count)" $((oops0 + 1))
	expect_match "reason" "$(cat /tmp/install.out)" "(oops|kernel log)"
	show_status
	if grep -q '"event":"rollback-pending-reboot"' "$STATE/history.jsonl"; then
		say "the oopsed module is stuck: rollback pending reboot"
		expect_match "status says reboot" "$(milspecd status --config "$CONF")" "REBOOT NEEDED"
		install_pkg 1.1.0 2
		expect_match "installs wait for the reboot" "$(cat /tmp/install.out)" "reboot"
	else
		expect_eq "live version after rollback" "$(live_version)" 1.1.0
		rb=$(history_last rolled-back millis)
		say "BENCH oops fault-to-rollback: old module live again ${rb} ms after the fault was seen"
		expect_le "rollback time (ms)" "$rb" 1000
	fi
else
	out=$(milspecd recover --config "$CONF" 2>&1) || fail "recover failed: $out"
	say "recover: $out"
	expect_eq "live version on the next boot" "$(live_version)" 1.1.0
	expect_eq "module state" "$(status state)" ok
	install_pkg 1.3.0 2
	expect_match "1.3.0 refused" "$(cat /tmp/install.out)" "blocklisted"
fi
