# SPDX-License-Identifier: GPL-2.0
# vm-scenario: 1.5.0 panics the kernel during its trial; on the next boot
#   milspecd rolls back to 1.1.0 on its own and, with no record of the
#   panic kept across the reboot (no pstore here), judges the trial
#   inconclusive: 1.5.0 is not blocklisted and is tried once more; it
#   panics again, and after that second reboot it is blocklisted and never
#   tried again.
# vendor: Dell Inc.
# boots: 3
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

# panic_in_trial: install 1.5.0 with a long window; its fault panics the kernel.
panic_in_trial() {
	with_probation 30s
	expect_panic
	milspecd install --config "$CONF" "$PKG/1.5.0.mspkg" || true
	fail "the 1.5.0 trial should have panicked the kernel"
}

# recover_after_panic: the reboot's recovery rolls 1.5.0 back to 1.1.0.
recover_after_panic() {
	expect_eq "nothing loaded after the panic" "$(live_version)" none
	out=$(milspecd recover --config "$CONF" 2>/tmp/recover.log) || fail "recover failed: $(cat /tmp/recover.log)"
	say "recover: $out"
	expect_match "rolled back" "$out" "rolled back 1.5.0 -> 1.1.0: the host rebooted during the trial"
	expect_eq "live version" "$(live_version)" 1.1.0
	show_status
}

case $BOOT in
1)
	install_pkg 1.1.0 0
	panic_in_trial
	;;
2)
	recover_after_panic
	expect_match "no evidence: inconclusive" "$out" "no evidence against the module: inconclusive"
	json=$(milspecd status --config "$CONF" --json | tr -d '\n ')
	expect_match "not blocklisted" "$json" '"blocklist":\[\]'
	expect_match "counted once" "$json" '"inconclusive":\[\{"version":"1.5.0","sequence":[0-9]*,"count":1,'
	panic_in_trial
	;;
3)
	recover_after_panic
	expect_match "the second time: blocklisted" "$out" "2 trials ended this way; blocklisted"
	install_pkg 1.5.0 2
	expect_match "never retried" "$(cat /tmp/install.out)" "blocklisted"
	;;
esac
