# SPDX-License-Identifier: GPL-2.0
# vm-scenario: on a system that is not a Dell, insmod fails with ENODEV and
#   one pr_err line; force=1 loads it anyway and status says forced.
# vendor: LENOVO
# product: ThinkPad T14
# boots: 1
# timeout: 60

expect_eq "DMI sys_vendor" "$(cat /sys/class/dmi/id/sys_vendor)" "LENOVO"

load_fails prod
expect_match "load error" "$LOAD_ERROR" "No such device \(errno 19\)"
check "not loaded" sh -c "! test -e /sys/module/$MOD"
check "no /proc/milspec" test ! -e "$PROC_DIR"
dmesg | grep dell_milspec
expect_eq "refusal lines" "$(dmesg | grep -c 'dell_milspec: not a Dell system')" 1
expect_eq "KERN_ERR lines from the module" "$(dmesg -r | grep '^<3>' | grep -c 'dell_milspec:')" 1
check "refusal names the vendor and force=1" \
	dmesg_has 'dell_milspec: not a Dell system \(sys_vendor "LENOVO"\); refusing to load \(force=1 overrides\)'
check "refusal logged at KERN_ERR" sh -c "dmesg -r | grep -q '^<3>.*dell_milspec: not a Dell system'"
load_fails prod force=0
expect_eq "one line per refused load" "$(dmesg | grep -c 'dell_milspec: not a Dell system')" 2

load prod force=1
expect_eq "state" "$(status state)" "ok"
expect_eq "selftest" "$(status selftest)" "pass"
expect_eq "forced" "$(status forced)" "1"
expect_eq "force parameter" "$(param force)" "Y"
check "summary notes the forced load" grep -q "force=1" "$PROC_DIR/summary"
check "forced load logged" dmesg_has "dell_milspec: not a Dell system .*loading anyway \(force=1\)"
unload
check "no /proc/milspec after unload" test ! -e "$PROC_DIR"
