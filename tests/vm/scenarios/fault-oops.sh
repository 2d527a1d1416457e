# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the FAULT=oops build loads, then ~200 ms later its thread
#   writes through a NULL pointer: oops_count rises, taint D is set, and the
#   module stays pinned (rmmod refused) as a real oopsed module may; the
#   guest still unmounts and powers off cleanly.
# vendor: Dell Inc.
# boots: 1
# needs: kmod-faults
# timeout: 60

oopses=$(counter oops_count)
expect_eq "taint D before" "$(taint_bit 7)" 0
load oops
expect_eq "fault key" "$(status fault)" oops

i=0
while [ "$(counter oops_count)" -eq "$oopses" ] && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
say "oops seen after about $((i * 100)) ms"
expect_eq "oops_count" "$(counter oops_count)" $((oopses + 1))
expect_eq "taint D after" "$(taint_bit 7)" 1
check "NULL dereference in the log" dmesg_has "BUG: kernel NULL pointer dereference"
check "oops in our fault thread" dmesg_has "RIP: .*milspec_fault_threadfn"

# After the oops the module is pinned; unloading is refused, not hung.
unload_fails
expect_match "rmmod error" "$UNLOAD_ERROR" "Resource temporarily unavailable"
check "still loaded" is_loaded
