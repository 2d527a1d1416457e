# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=selftest build loads but its self-test fails:
#   state failed, selftest fail, errors counted, summary agrees.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

load selftest
cat "$PROC_DIR/status"
expect_eq "state" "$(status state)" failed
expect_eq "selftest" "$(status selftest)" fail
expect_ge "errors" "$(status errors)" 1
expect_eq "fault key" "$(status fault)" selftest
check "summary State" grep -qx "State: failed" "$PROC_DIR/summary"
check "summary Self-test" grep -qx "Self-test: fail" "$PROC_DIR/summary"
check "self-test failure logged" dmesg_has "dell_milspec: self-test: memory pattern mismatch"
check "load logged with its state" dmesg_has "dell_milspec: version .* loaded: state failed, selftest fail"
expect_eq "warn_count" "$(counter warn_count)" 0
unload
check "no /proc/milspec after unload" test ! -e "$PROC_DIR"
