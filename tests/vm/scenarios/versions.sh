# SPDX-License-Identifier: GPL-2.0
# vm-scenario: version builds report their version; a swap from 1.0.0 to
#   1.1.0 carries mode5_level the way the daemon does (read, unload, insmod
#   with the value); the 1.2.0 warn build WARNs.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

load v1.0.0
expect_eq "status version" "$(status version)" 1.0.0
expect_eq "sysfs version" "$(cat "/sys/module/$MOD/version")" 1.0.0
check "set mode5_level=3" set_param mode5_level 3
level=$(param mode5_level)
unload

load v1.1.0 mode5_level="$level"
expect_eq "status version" "$(status version)" 1.1.0
expect_eq "mode5_level carried" "$(status mode5_level)" 3
check "summary version" grep -qx "Version: 1.1.0" "$PROC_DIR/summary"
unload

warns=$(counter warn_count)
load v1.2.0-warn
expect_eq "status version" "$(status version)" 1.2.0
expect_eq "fault key" "$(status fault)" warn
expect_eq "warn_count" "$(counter warn_count)" $((warns + 1))
unload
