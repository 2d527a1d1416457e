# SPDX-License-Identifier: GPL-2.0
# vm-scenario: on a non-Dell machine milspecd refuses the package (hardware fit).
# vendor: LENOVO
# product: ThinkPad T14
# boots: 1
# timeout: 90
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.1.0 2
expect_match "hardware refused" "$(cat /tmp/install.out)" "DMI vendor is LENOVO"
expect_eq "nothing loaded" "$(live_version)" none
