# SPDX-License-Identifier: GPL-2.0
# vm-scenario: two real kernels on one state disk: each boot runs the kernel
#   its header names (uname -r), the build for that kernel loads with state
#   ok, the other kernel's build is refused by the kernel, and a file written
#   to /state on boot 1 is still there on boots 2 and 3.
# vendor: Dell Inc.
# boots: 3
# kernels: old new old
# needs: kmod-faults
# timeout: 60

case $BOOT in
2) want=new other=old ;;
*) want=old other=new ;;
esac

# The kernel: the one the header names for this boot.
expect_eq "kernel the host booted" "$(boot_kernel)" "$want"
expect_eq "uname -r" "$(uname -r)" "$(kernel_release "$want")"
check "kernel_is $want" kernel_is "$want"
if kernel_is "$other"; then
	fail "kernel_is $other on the $want kernel"
fi
check "the two releases differ" test "$(kernel_release old)" != "$(kernel_release new)"

# The modules: v1.1.0 built for each kernel, vermagic naming its release.
mine=$(kvariant v1.1.0)
if [ "$want" = old ]; then theirs=v1.1.0; else theirs=v1.1.0@old; fi
vermagic() {
	strings "$(ko "$1")" | sed -n 's/^vermagic=//p' | head -n 1
}
vm=$(vermagic "$mine")
expect_eq "vermagic release of $mine" "${vm%% *}" "$(kernel_release "$want")"
vm=$(vermagic "$theirs")
expect_eq "vermagic release of $theirs" "${vm%% *}" "$(kernel_release "$other")"

load "$mine"
expect_eq "state" "$(status state)" ok
expect_eq "version" "$(status version)" 1.1.0
unload

# With modversions the kernel skips the release in vermagic and compares
# symbol CRCs instead, which differ between the two kernels.
load_fails "$theirs"
expect_match "refusal" "$LOAD_ERROR" "Invalid argument \(errno 22\)"
check "the kernel logged the mismatch" dmesg_has "dell_milspec: disagrees about version of symbol"
check "nothing loaded" test ! -e "/sys/module/$MOD"

# The state disk: written on boot 1, kept across both kernel changes.
check "/state is mounted" grep -q ' /state ' /proc/mounts
if [ "$BOOT" = 1 ]; then
	check "no record before boot 1" test ! -e /state/kernels-two
	echo "boot 1 $(uname -r)" >/state/kernels-two
else
	check "boot 1's record is kept" grep -qx "boot 1 $(kernel_release old)" /state/kernels-two
	echo "boot $BOOT $(uname -r)" >>/state/kernels-two
	expect_eq "records" "$(grep -c . /state/kernels-two)" "$BOOT"
fi
cat /state/kernels-two
sync
