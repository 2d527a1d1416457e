# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=slowinit build sleeps ~2 s in init: insmod takes
#   about 2 s, and while init runs the module is "coming" and rmmod gets
#   EBUSY.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

t0=$(uptime_ms)
vm-insmod "$(ko slowinit)" &
pid=$!
sleep 0.5
expect_eq "initstate during init" "$(cat "/sys/module/$MOD/initstate")" coming
check "no /proc/milspec during init" test ! -e "$PROC_DIR"
unload_fails
expect_match "rmmod during init" "$UNLOAD_ERROR" "Device or resource busy"
wait $pid || fail "insmod slowinit failed"
ms=$(($(uptime_ms) - t0))
say "insmod took $ms ms"
expect_ge "insmod time (ms)" "$ms" 1900
expect_le "insmod time (ms)" "$ms" 10000
expect_eq "initstate after init" "$(cat "/sys/module/$MOD/initstate")" live
expect_eq "state" "$(status state)" ok
unload
