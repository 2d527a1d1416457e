# SPDX-License-Identifier: GPL-2.0
# vm-scenario: 1.5.0 panics the kernel during its trial; on the next boot
#   milspecd rolls back to 1.1.0 on its own and never retries 1.5.0.
# vendor: Dell Inc.
# boots: 2
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

if [ "$BOOT" = 1 ]; then
	install_pkg 1.1.0 0
	with_probation 30s
	expect_panic
	milspecd install --config "$CONF" "$PKG/1.5.0.mspkg" || true
	fail "the 1.5.0 trial should have panicked the kernel"
else
	expect_eq "nothing loaded after the panic" "$(live_version)" none
	out=$(milspecd recover --config "$CONF" 2>/tmp/recover.log) || fail "recover failed: $(cat /tmp/recover.log)"
	say "recover: $out"
	expect_match "rolled back" "$out" "rolled back 1.5.0 -> 1.1.0: the host rebooted during the trial"
	expect_eq "live version" "$(live_version)" 1.1.0
	install_pkg 1.5.0 2
	expect_match "never retried" "$(cat /tmp/install.out)" "blocklisted"
	show_status
fi
