# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the production module loads on a Dell, /proc/milspec/status
#   and summary read back, unload leaves nothing behind.
# vendor: Dell Inc.
# product: Latitude 5430 Rugged
# boots: 1
# timeout: 60

version=$(modinfo -F version "$(ko prod)" 2>/dev/null || true)
[ -n "$version" ] || version=$(strings "$(ko prod)" | sed -n 's/^version=//p' | head -n 1)
say "module version $version"

expect_eq "DMI sys_vendor" "$(cat /sys/class/dmi/id/sys_vendor)" "Dell Inc."
check "no /proc/milspec before load" test ! -e "$PROC_DIR"
warns=$(counter warn_count)
oopses=$(counter oops_count)
before=$(sed -n 's/^\([0-9]*\)\..*/\1/p' /proc/uptime)
load prod
is_loaded || fail "/sys/module/$MOD missing after insmod"

# status: every documented key, in order, parseable.
cat "$PROC_DIR/status"
keys=$(cut -d: -f1 "$PROC_DIR/status" | tr '\n' ' ')
expect_match "status keys" "$keys" "^version state selftest mode5_level errors loaded_at forced $"
check "every status line is 'key: value'" sh -c "! grep -Ev '^[a-z0-9_]+: [^ ].*$' $PROC_DIR/status"
expect_eq "version" "$(status version)" "$version"
expect_eq "/sys/module version" "$(cat "/sys/module/$MOD/version")" "$version"
expect_eq "state" "$(status state)" "ok"
expect_eq "selftest" "$(status selftest)" "pass"
expect_eq "mode5_level" "$(status mode5_level)" "0"
expect_eq "errors" "$(status errors)" "0"
expect_eq "forced" "$(status forced)" "0"
loaded_at=$(status loaded_at)
expect_match "loaded_at" "$loaded_at" '^[1-9][0-9]*$'
# boot-time ns: between the uptime read just before insmod and now
now_s=$(sed -n 's/^\([0-9]*\)\..*/\1/p' /proc/uptime)
expect_ge "loaded_at seconds" $((loaded_at / 1000000000)) "$before"
expect_le "loaded_at seconds" $((loaded_at / 1000000000)) "$now_s"
check "file mode of status" sh -c "ls -l $PROC_DIR/status | grep -q '^-r--r--r--'"

# summary: the historic human-readable view.
cat "$PROC_DIR/summary"
summary=$(cat "$PROC_DIR/summary")
expect_eq "summary title" "$(head -n 1 "$PROC_DIR/summary")" "Dell MIL-SPEC Status"
expect_match "summary" "$summary" "Version: $version"
expect_match "summary" "$summary" "Mode 5: disabled \(level 0\)"
expect_match "summary" "$summary" "State: ok"
expect_match "summary" "$summary" "Self-test: pass"

check "load logged" dmesg_has "dell_milspec: version $version loaded: state ok, selftest pass"

# A production module is out of tree (O) and unsigned (E), nothing worse.
expect_eq "warn_count" "$(counter warn_count)" "$warns"
expect_eq "oops_count" "$(counter oops_count)" "$oopses"
expect_eq "taint W" "$(taint_bit 9)" 0
expect_eq "taint D" "$(taint_bit 7)" 0
expect_eq "taint O" "$(taint_bit 12)" 1

unload
check "no /proc/milspec after unload" test ! -e "$PROC_DIR"
check "no /sys/module/$MOD after unload" test ! -e "/sys/module/$MOD"
check "unload logged" dmesg_has "dell_milspec: version $version unloaded"
