# SPDX-License-Identifier: GPL-2.0
# vm-scenario: a 1.4.0 whose self-test fails (state: failed) is rolled back to 1.1.0.
# vendor: Dell Inc.
# boots: 1
# timeout: 120
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.1.0 0
install_pkg 1.4.0 3
expect_match "reason" "$(cat /tmp/install.out)" "rolled back 1.4.0 -> 1.1.0: .*(status|selftest)"
expect_eq "live version" "$(live_version)" 1.1.0
expect_eq "module state" "$(status state)" ok
