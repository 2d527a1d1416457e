# SPDX-License-Identifier: GPL-2.0
# vm-scenario: kernel upgrades and downgrades on two real kernels with one
#   state disk. A package with builds for both kernels, committed on the old
#   one, is live at once on the new one. A package for the new kernel only,
#   booted back on the old one: the daemon stays up and says "no build" (status,
#   D-Bus, metrics), load-committed exits 4 and modprobe falls back; a mirror
#   passing a changed release off as a republish is refused with nothing
#   changed; the kernel-build republish is pulled from the guest's loopback
#   mirror and loaded with no trial and nothing blocklisted; a removed
#   kernel's build is dropped.
# vendor: Dell Inc.
# boots: 3
# kernels: old new old
# timeout: 240
# needs: engine kmod-faults dbus kernels
# shellcheck disable=SC2154

. /vm/engine.sh
. /vm/dbus.sh
. /vm/kernels.sh

OLD=$(kernel_release old)
NEW=$(kernel_release new)
kernels_config 3s

case $BOOT in
1)
	expect_eq "uname -r" "$(uname -r)" "$OLD"
	# The harness's own check: a build for the other kernel is refused.
	load_fails v1.1.0
	check "refused for its symbol versions" dmesg_has "disagrees about version of symbol"
	install_pkg k-1.0.0-both 0
	expect_eq "live version" "$(live_version)" 1.0.0
	slot=$(history_last committed slot)
	expect_eq "the slot keeps both builds" "$(slot_kernels "$slot")" "$OLD $NEW"
	check "one file per kernel" test -f "$STATE/slots/$slot/kernels/$NEW.ko" -a -f "$STATE/slots/$slot/kernels/$OLD.ko"
	expect_eq "kernel build" "$(kernel_build)" ready
	;;
2)
	expect_eq "uname -r" "$(uname -r)" "$NEW"
	# What modprobe's install hook runs at boot: no network, no daemon.
	check "load-committed on the new kernel" milspecd load-committed --config "$CONF"
	say "BENCH boot-to-live two-kernel-package: $(uptime_ms) ms after boot"
	expect_eq "1.0.0 live at once on the new kernel" "$(live_version)" 1.0.0
	expect_eq "module state" "$(status state)" ok
	out=$(milspecd recover --config "$CONF")
	expect_match "recover" "$out" "state and kernel agree"
	# A package for the new kernel only.
	install_pkg k-1.1.0-new 0
	expect_eq "live version" "$(live_version)" 1.1.0
	expect_eq "1.1.0 holds one build" "$(slot_kernels "$(history_last committed slot)")" "$NEW"
	;;
3)
	expect_eq "uname -r" "$(uname -r)" "$OLD"
	# modprobe's line: load-committed exits 4, so modprobe falls back to the
	# system's module (a stub here stands for `modprobe --ignore-install`).
	_rc=0
	milspecd load-committed --config "$CONF" >/tmp/lc.out 2>&1 || _rc=$?
	sed 's/^/    > /' /tmp/lc.out
	expect_eq "load-committed with no build for this kernel" "$_rc" 4
	expect_has "what it says" "$(cat /tmp/lc.out)" "has no build for kernel $OLD"
	expect_no_match "not called damage" "$(cat /tmp/lc.out)" "does not match"
	rm -f /sbin/modprobe
	printf '#!/bin/sh\necho "$@" >/tmp/fallback\n' >/sbin/modprobe
	chmod 755 /sbin/modprobe
	line=$(sed -n 's/^install dell_milspec //p' /opt/dist/modprobe.conf)
	check "the modprobe line succeeds through its fallback" env CMDLINE_OPTS= sh -c "$line"
	expect_eq "fallback called" "$(cat /tmp/fallback)" "--ignore-install dell_milspec"
	expect_eq "nothing loaded" "$(live_version)" none

	# The daemon: up, says so everywhere.
	serve_mirror new-only
	start_bus
	start_daemon "$CONF"
	ctl 0 status
	expect_match "milspecctl status" "$(cat /tmp/ctl.out)" "NO BUILD"
	ctl 0 kernels --json
	expect_match "KernelBuild property" "$(tr -d '\n ' </tmp/ctl.out)" '"kernel_build":"no-build"'
	ctl 0 check
	expect_match "poll: no build anywhere" "$(cat /tmp/ctl.out)" "no build for the running kernel"
	check "the daemon is still running" kill -0 "$DAEMON_PID"
	expect_match "metric" "$(cat /run/milspecd/milspecd.prom)" "milspecd_kernel_build_missing 1"
	expect_match "journal id" "$(cat /tmp/milspecd.log)" "no build"

	# A changed release passed off as a republish: refused, nothing changed.
	before=$(slots_and_state_sum)
	rejected=$(history_count rejected)
	serve_mirror changed
	ctl 2 check
	expect_match "refused" "$(cat /tmp/ctl.out)" "not a kernel-build republish"
	expect_eq "slots and state.json byte-identical" "$(slots_and_state_sum)" "$before"
	expect_eq "one rejected record" "$(history_count rejected)" $((rejected + 1))

	# The kernel-build republish: pulled, added, loaded; no trial.
	swaps=$(history_count swapped)
	serve_mirror new+old
	_t0=$(uptime_ms)
	ctl 0 check
	say "BENCH pull-add-load (no pre-staging): $(($(uptime_ms) - _t0)) ms for the poll, download, verify, add and load; live $(uptime_ms) ms after boot"
	expect_match "build added" "$(cat /tmp/ctl.out)" "added the build of 1.1.0 .* loaded it"
	expect_eq "1.1.0 live on the old kernel" "$(live_version)" 1.1.0
	expect_eq "module state" "$(status state)" ok
	expect_eq "no new trial" "$(history_count swapped)" "$swaps"
	expect_match "nothing blocklisted" "$(kjson)" '"blocklist":\[\]'
	expect_eq "kernel build" "$(kernel_build)" ready
	slot=$(history_last build-added slot)
	expect_eq "the slot now covers both" "$(slot_kernels "$slot")" "$OLD $NEW"

	# The new kernel is removed: its build goes; the running one's never.
	ctl 0 kernel-removed "$NEW"
	expect_eq "dropped" "$(slot_kernels "$slot")" "$OLD"
	ctl 0 kernel-removed "$OLD"
	expect_eq "the running kernel's build stays" "$(slot_kernels "$slot")" "$OLD"
	stop_daemon
	stop_mirror
	;;
esac
