# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=warn build WARNs at init: warn_count rises by one,
#   taint W is set, the module still loads and unloads.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

warns=$(counter warn_count)
expect_eq "taint W before" "$(taint_bit 9)" 0
load warn
expect_eq "warn_count" "$(counter warn_count)" $((warns + 1))
expect_eq "taint W after" "$(taint_bit 9)" 1
check "WARN in the log" dmesg_has "WARNING: .*dell-milspec.c"
check "warning text in the log" dmesg_has "dell_milspec: fault warn: injected warning at init"
expect_eq "fault key" "$(status fault)" warn
expect_eq "state" "$(status state)" ok
check "taint flags in /proc/modules" sh -c "grep '^$MOD ' /proc/modules | grep -q '(OE)'"
unload
check "no /proc/milspec after unload" test ! -e "$PROC_DIR"
