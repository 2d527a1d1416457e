# SPDX-License-Identifier: GPL-2.0
# vm-scenario: ready before the reboot. On the old kernel, with 1.1.0
#   committed for it alone, the daemon crashes at each durable step of
#   adding the new kernel's build and recovers to one consistent state (the
#   committed slot valid for the old kernel throughout); the kernel postinst
#   hook then fetches and adds the build over D-Bus; a kernel with no build
#   anywhere gets a warning, a property and a metric, and the hook exits 0,
#   with or without a daemon. A trial of 1.2.0 is left running across the
#   reboot. On the new kernel, load-committed loads 1.1.0 at once, with no
#   network, and recovery rolls the interrupted trial back without
#   blocklisting 1.2.0.
# vendor: Dell Inc.
# boots: 2
# kernels: old new
# timeout: 420
# needs: engine kmod-faults dbus kernels failpoints
# shellcheck disable=SC2154

. /vm/engine.sh
. /vm/dbus.sh
. /vm/kernels.sh

OLD=$(kernel_release old)
NEW=$(kernel_release new)
kernels_config 3s

# consistent WHAT WANT_KERNELS: after a crash and a recovery, 1.1.0 is
# committed, valid and live, and its slot holds exactly WANT_KERNELS.
consistent() {
	out=$(milspecd recover --config "$CONF" 2>/tmp/recover.log) || { cat /tmp/recover.log; fail "$1: recover failed"; }
	expect_eq "$1: live" "$(live_version)" 1.1.0
	expect_match "$1: committed" "$(kjson)" '"committed_version":"1.1.0"'
	expect_no_match "$1: no slot error" "$(kjson)" '"error":"'
	expect_eq "$1: builds" "$(slot_kernels "$slot")" "$2"
	expect_match "$1: no staging left" "$(ls -a "$STATE/slots")" '^b$'
	expect_no_match "$1: no staging left" "$(ls -a "$STATE/slots")" 'staging'
	expect_eq "$1: kernel build" "$(kernel_build)" ready
}

case $BOOT in
1)
	install_pkg k-1.1.0-old 0
	slot=$(history_last committed slot)
	expect_eq "one build" "$(slot_kernels "$slot")" "$OLD"
	serve_mirror old+new

	# Crashes before the exchange leave the slot as it was; after it, the
	# slot has the build (then the running daemon drops it again, as for a
	# removed kernel, for the next case).
	start_bus
	for fp in build.staging:$OLD build.after-stage:$OLD install.after-replace:"$OLD $NEW" build.after-replace:"$OLD $NEW"; do
		want=${fp#*:}
		fp=${fp%%:*}
		_rc=0
		FAILPOINTS="$fp=panic" milspecd-fp prepare-kernel --config "$CONF" "$NEW" >/tmp/fp.out 2>&1 || _rc=$?
		[ "$_rc" != 0 ] || { cat /tmp/fp.out; fail "$fp: the crash point was not reached"; }
		say "crashed at $fp (exit $_rc)"
		consistent "crash at $fp" "$want"
		if [ "$want" != "$OLD" ]; then
			start_daemon "$CONF"
			ctl 0 kernel-removed "$NEW"
			stop_daemon
			expect_eq "dropped again" "$(slot_kernels "$slot")" "$OLD"
		fi
	done

	# The kernel's postinst hook, with the daemon running.
	start_daemon "$CONF"
	_rc=0
	/usr/lib/milspecd/kernel-hook installed "$NEW" >/tmp/hook.out 2>&1 || _rc=$?
	sed 's/^/    hook> /' /tmp/hook.out
	expect_eq "the hook exits 0" "$_rc" 0
	expect_match "build added" "$(cat /tmp/hook.out)" "build-added"
	ctl 0 kernels
	expect_has "milspecctl kernels" "$(cat /tmp/ctl.out)" "$OLD, $NEW"
	expect_eq "1.1.0 still live, untouched" "$(live_version)" 1.1.0
	expect_eq "no trial" "$(history_count swapped)" 1

	# A kernel with no build anywhere: a warning, a property, a metric.
	mkdir -p /lib/modules/6.12.999-nobuild /lib/modules/"$OLD" /lib/modules/"$NEW"
	/usr/lib/milspecd/kernel-hook installed 6.12.999-nobuild >/tmp/hook.out 2>&1 || fail "the hook failed"
	sed 's/^/    hook> /' /tmp/hook.out
	expect_match "warning" "$(cat /tmp/hook.out)" "WARNING: no dell-milspec build for kernel 6.12.999-nobuild"
	ctl 0 kernels --json
	expect_match "KernelsWithoutBuild" "$(tr -d '\n ' </tmp/ctl.out)" '"kernels_without_build":\["6.12.999-nobuild"\]'
	expect_match "metric" "$(cat /run/milspecd/milspecd.prom)" 'milspecd_kernel_without_build\{kernel_release="6.12.999-nobuild"\} 1'
	stop_daemon
	_t0=$(uptime_ms)
	/usr/lib/milspecd/kernel-hook installed "$NEW" >/tmp/hook.out 2>&1 || fail "the hook failed"
	expect_eq "no daemon: the hook says nothing" "$(cat /tmp/hook.out)" ""
	say "ok: the hook with no daemon took $(($(uptime_ms) - _t0)) ms"
	DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent /usr/lib/milspecd/kernel-hook installed "$NEW" >/tmp/hook.out 2>&1 ||
		fail "the hook failed with no bus"
	rmdir /lib/modules/6.12.999-nobuild

	# A crash after the exchange: the build is in, the slot consistent.
	out=$(milspecd-fp prepare-kernel --config "$CONF" "$NEW")
	expect_match "ready already" "$out" "already has a build"
	consistent "after the hook" "$OLD $NEW"

	# A trial of 1.2.0 still running when the host reboots into the new kernel.
	sed 's/^probation = .*/probation = "300s"/' "$CONF" >/tmp/long.toml
	milspecd install --config /tmp/long.toml "$PKG/k-1.2.0-old.mspkg" >/tmp/trial.out 2>&1 &
	i=0
	until kjson | grep -q '"phase":"watching"'; do
		i=$((i + 1))
		[ $i -lt 300 ] || { cat /tmp/trial.out; fail "the trial of 1.2.0 did not start"; }
		sleep 0.1
	done
	expect_eq "1.2.0 on trial" "$(live_version)" 1.2.0
	sync
	say "rebooting in the middle of the trial"
	;;
2)
	# At once, before any network: what modprobe's install hook runs.
	t0=$(uptime_ms)
	check "load-committed on the new kernel" milspecd load-committed --config "$CONF"
	t1=$(uptime_ms)
	expect_eq "1.1.0 live at once" "$(live_version)" 1.1.0
	expect_eq "module state" "$(status state)" ok
	unload
	t2=$(uptime_ms)
	load v1.1.0
	t3=$(uptime_ms)
	say "BENCH boot-to-live prestaged: $t1 ms after boot (load-committed $((t1 - t0)) ms; plain insmod of the same build $((t3 - t2)) ms)"
	unload
	check "load-committed again" milspecd load-committed --config "$CONF"
	out=$(milspecd recover --config "$CONF" 2>&1) || { echo "$out"; fail "recover failed"; }
	say "recover: $out"
	expect_match "the trial was rolled back" "$out" "rolled back 1.2.0"
	expect_match "as interrupted" "$(tail -n 3 "$STATE/history.jsonl")" "interrupted"
	expect_match "1.2.0 not blocklisted" "$(kjson)" '"blocklist":\[\]'
	expect_eq "1.1.0 live" "$(live_version)" 1.1.0
	expect_eq "one module" "$(grep -c "^$MOD " /proc/modules)" 1
	;;
esac
