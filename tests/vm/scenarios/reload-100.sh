# SPDX-License-Identifier: GPL-2.0
# vm-scenario: 100 load/unload cycles in one boot, each one checked
#   (status readable and ok, /proc/milspec gone after unload).
# vendor: Dell Inc.
# boots: 1
# timeout: 120

t0=$(uptime_ms)
i=0
while [ $i -lt 100 ]; do
	vm-insmod "$(ko prod)" mode5_level=$((i % 4)) || fail "load #$i failed"
	[ "$(status state)" = ok ] || fail "load #$i: state '$(status state)'"
	[ "$(status mode5_level)" = $((i % 4)) ] || fail "load #$i: mode5_level"
	rmmod "$MOD" || fail "rmmod #$i failed"
	[ ! -e "$PROC_DIR" ] || fail "unload #$i left /proc/milspec behind"
	i=$((i + 1))
done
say "100 checked load/unload cycles in $(($(uptime_ms) - t0)) ms"
expect_eq "loads logged" "$(dmesg | grep -c 'dell_milspec: version .* loaded:')" 100
expect_eq "unloads logged" "$(dmesg | grep -c 'dell_milspec: version .* unloaded')" 100
expect_eq "warn_count" "$(counter warn_count)" 0
expect_eq "oops_count" "$(counter oops_count)" 0
