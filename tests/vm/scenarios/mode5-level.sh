# SPDX-License-Identifier: GPL-2.0
# vm-scenario: mode5_level is settable as an insmod parameter and through
#   sysfs (0-3), 4 and junk are refused with EINVAL, every change is logged.
# vendor: Dell Inc.
# boots: 1
# timeout: 60

load prod mode5_level=2
expect_eq "status mode5_level" "$(status mode5_level)" 2
expect_eq "sysfs mode5_level" "$(param mode5_level)" 2
expect_eq "sysfs mode" "$(stat -c %a "$PARAM_DIR/mode5_level")" 644
check "summary shows level 2" grep -qx "Mode 5: enabled (level 2)" "$PROC_DIR/summary"
check "insmod setting logged" dmesg_has "dell_milspec: mode5_level set to 2 \(was 0\)"

prev=2
for level in 0 1 2 3; do
	check "write mode5_level=$level" set_param mode5_level "$level"
	expect_eq "status after writing $level" "$(status mode5_level)" "$level"
	expect_eq "sysfs after writing $level" "$(param mode5_level)" "$level"
	check "change to $level logged" dmesg_has "dell_milspec: mode5_level set to $level \(was $prev\)"
	prev=$level
done
check "summary shows level 3" grep -qx "Mode 5: enabled (level 3)" "$PROC_DIR/summary"

for bad in 4 5 -1 abc 2x ""; do
	if set_param mode5_level "$bad" 2>/tmp/write.err; then
		fail "writing mode5_level='$bad' succeeded"
	fi
	expect_match "error writing '$bad'" "$(cat /tmp/write.err)" "Invalid argument"
	expect_eq "mode5_level after refusing '$bad'" "$(status mode5_level)" 3
done
check "refusal of 4 logged" dmesg_has "dell_milspec: mode5_level 4 refused \(allowed: 0-3\)"

check "back to 0" set_param mode5_level 0
check "summary shows disabled" grep -qx "Mode 5: disabled (level 0)" "$PROC_DIR/summary"
expect_eq "state" "$(status state)" ok
expect_eq "errors (refusals are not errors)" "$(status errors)" 0
unload

load_fails prod mode5_level=4
expect_match "load with mode5_level=4" "$LOAD_ERROR" "Invalid argument \(errno 22\)"
check "not loaded after refused parameter" sh -c "! test -e /sys/module/$MOD"
check "no /proc/milspec" test ! -e "$PROC_DIR"

load prod mode5_level=3
expect_eq "status after insmod mode5_level=3" "$(status mode5_level)" 3
unload

# The module keeps nothing across an unload: whoever swaps it carries the level.
load prod
expect_eq "mode5_level after a plain reload" "$(status mode5_level)" 0
unload
