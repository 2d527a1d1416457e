# SPDX-License-Identifier: GPL-2.0
# vm-scenario: a 1.2.0 that WARNs at init is rolled back to 1.1.0 on its own
#   (checkpointed mode5_level restored), within 1 s, and refused when offered again.
# vendor: Dell Inc.
# boots: 1
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.1.0 0
check "set mode5_level=3" set_param mode5_level 3
warn0=$(counter warn_count)

install_pkg 1.2.0 3
expect_eq "live version after rollback" "$(live_version)" 1.1.0
expect_eq "mode5_level restored" "$(param mode5_level)" 3
expect_eq "module state" "$(status state)" ok
expect_match "reason" "$(cat /tmp/install.out)" "rolled back 1.2.0 -> 1.1.0: (warn_count rose|kernel log: WARNING)"
expect_ge "warn_count rose" "$(counter warn_count)" $((warn0 + 1))
rb=$(history_last rolled-back millis)
say "BENCH warn fault-to-rollback: old module live again ${rb} ms after the fault was seen"
expect_le "rollback time (ms)" "$rb" 1000

install_pkg 1.2.0 2
expect_match "re-offer refused" "$(cat /tmp/install.out)" "blocklisted"
expect_eq "live version" "$(live_version)" 1.1.0
show_status
