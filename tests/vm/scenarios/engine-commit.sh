# SPDX-License-Identifier: GPL-2.0
# vm-scenario: milspecd installs 1.0.0, live-swaps to 1.1.0 and commits it;
#   mode5_level is carried across the swap; the same version again is a no-op.
# vendor: Dell Inc.
# boots: 1
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.0.0 0
expect_eq "live version" "$(live_version)" 1.0.0
expect_eq "module state" "$(status state)" ok
check "set mode5_level=2" set_param mode5_level 2
loaded0=$(status loaded_at)

install_pkg 1.1.0 0
expect_eq "live version" "$(live_version)" 1.1.0
expect_eq "mode5_level carried across the swap" "$(param mode5_level)" 2
expect_eq "status mode5_level" "$(status mode5_level)" 2
expect_no_match "a new module instance" "$(status loaded_at)" "^$loaded0\$"
expect_match "install outcome" "$(cat /tmp/install.out)" "committed 1.1.0 in slot b"
expect_eq "swapped event" "$(history_last swapped version)" 1.1.0
expect_eq "committed event" "$(history_last committed version)" 1.1.0

install_pkg 1.1.0 0
expect_match "same version again" "$(cat /tmp/install.out)" "already installed"
show_status
expect_match "status: committed" "$(milspecd status --config "$CONF")" "committed: +1.1.0 \(slot b\)"
expect_eq "warn_count" "$(counter warn_count)" 0
