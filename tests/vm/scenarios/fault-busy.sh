# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=busy build holds a reference on itself: rmmod is
#   refused (EAGAIN, "in use") until 1 is written to fault_release.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

load busy
expect_eq "state" "$(status state)" ok
expect_eq "refcnt" "$(cat "/sys/module/$MOD/refcnt")" 1
expect_eq "fault_release before" "$(param fault_release)" 0

unload_fails
# delete_module() answers EWOULDBLOCK (= EAGAIN) for a module in use.
expect_match "rmmod error" "$UNLOAD_ERROR" "Resource temporarily unavailable"
check "still loaded" is_loaded
check "status still readable" test -n "$(status version)"

check "write fault_release=1" set_param fault_release 1
expect_eq "refcnt after release" "$(cat "/sys/module/$MOD/refcnt")" 0
expect_eq "fault_release after" "$(param fault_release)" 1
check "release logged" dmesg_has "dell_milspec: fault busy: module reference released"
check "a second release is harmless" set_param fault_release 1
unload
check "no /proc/milspec after unload" test ! -e "$PROC_DIR"
