# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=degraded build passes its self-test but counts a
#   runtime error: state degraded, errors 1.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

load degraded
cat "$PROC_DIR/status"
expect_eq "state" "$(status state)" degraded
expect_eq "selftest" "$(status selftest)" pass
expect_eq "errors" "$(status errors)" 1
check "summary State" grep -qx "State: degraded" "$PROC_DIR/summary"
unload
