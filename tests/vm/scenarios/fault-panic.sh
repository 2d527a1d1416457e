# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=panic build panics ~200 ms after load; with
#   panic=-1 and -no-reboot qemu exits.  The second boot sees what the first
#   wrote to the state disk before the panic, and loads production cleanly.
# vendor: Dell Inc.
# boots: 2
# needs: kmod-faults
# timeout: 60

case $BOOT in
1)
	check "state disk mounted" grep -q ' /state ext4 ' /proc/mounts
	echo "trial panic $(cat /proc/sys/kernel/random/boot_id)" >/state/trial
	sync
	expect_panic
	load panic
	sleep 10
	fail "still running 10 s after loading the panic build"
	;;
2)
	check "state disk mounted" grep -q ' /state ext4 ' /proc/mounts
	check "boot 1 left its trial record" grep -q '^trial panic ' /state/trial
	expect_eq "oops_count" "$(counter oops_count)" 0
	check "a fresh boot has no module" sh -c "! test -e /sys/module/$MOD"
	load prod
	expect_eq "state" "$(status state)" ok
	unload
	;;
esac
