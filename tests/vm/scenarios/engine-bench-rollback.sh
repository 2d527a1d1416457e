# SPDX-License-Identifier: GPL-2.0
# vm-scenario: benchmark of the rollback path against the raw kernel: 20
#   WARN rollbacks through milspecd (fault seen -> old module live again, as
#   the engine records it) and 20 raw rmmod+insmod of the same modules in the
#   same guest; medians and their ratio (target <= 1.5), the daemon's swap
#   time and its idle RSS. Figures are BENCH lines; opt-in (a few minutes).
# vendor: Dell Inc.
# boots: 1
# timeout: 1200
# opt-in: bench
# needs: engine kmod-faults

. /vm/engine.sh
with_probation 1s
ROUNDS=${BENCH_ROUNDS:-20}

# now_us: a monotonic clock in microseconds. /proc/uptime has only 10 ms
# steps and busybox date has no %N, so read the kernel's own clock.
now_us() {
	awk '/^now at/ { printf "%d\n", $3 / 1000; exit }' /proc/timer_list
}
[ -n "$(now_us)" ] || fail "no /proc/timer_list clock in this guest"

# median: the median of the numbers on stdin, one a line.
median() {
	sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "none"; exit }
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# range: "min-max" of the numbers on stdin.
range() {
	sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'
}

unload_any() {
	if is_loaded; then
		if [ -e "$PARAM_DIR/fault_release" ]; then set_param fault_release 1; fi
		rmmod "$MOD" || fail "cannot unload $MOD"
	fi
}

# Raw: the WARNing 1.2.0 is live; time rmmod of it plus insmod of 1.0.0,
# the same modules and loader (one finit_module call) the engine uses.
: >/tmp/raw.us
i=0
while [ $i -lt "$ROUNDS" ]; do
	unload_any
	load v1.2.0-warn
	t0=$(now_us)
	rmmod "$MOD"
	vm-insmod "$(ko v1.0.0)" || fail "insmod 1.0.0 failed"
	t1=$(now_us)
	echo $((t1 - t0)) >>/tmp/raw.us
	i=$((i + 1))
done
unload_any
raw_us=$(median </tmp/raw.us)
say "BENCH raw rmmod+insmod: median ${raw_us} us of $ROUNDS (range $(range </tmp/raw.us) us)"

# Daemon: from a fresh state with 1.0.0 committed, install 1.2.0, which
# WARNs at init and is rolled back to 1.0.0 (exit 3). The rolled-back event's
# millis is the time from the fault seen to the old module live again.
: >/tmp/rb.ms
: >/tmp/swap.ms
i=0
while [ $i -lt "$ROUNDS" ]; do
	unload_any
	rm -rf "$STATE"
	milspecd install --config "$CONF" "$PKG/1.0.0.mspkg" >/tmp/install.out 2>/tmp/install.log ||
		{ cat /tmp/install.log; fail "round $i: install 1.0.0 failed"; }
	rc=0
	milspecd install --config "$CONF" "$PKG/1.2.0.mspkg" >/tmp/install.out 2>/tmp/install.log || rc=$?
	[ "$rc" = 3 ] || { cat /tmp/install.log; fail "round $i: install 1.2.0 exited $rc, want 3"; }
	[ "$(live_version)" = 1.0.0 ] || fail "round $i: 1.0.0 not live after the rollback"
	history_last rolled-back millis >>/tmp/rb.ms
	history_last swapped millis >>/tmp/swap.ms
	i=$((i + 1))
done
rb_ms=$(median </tmp/rb.ms)
swap_ms=$(median </tmp/swap.ms)
say "BENCH daemon rollback (fault seen -> old module live): median ${rb_ms} ms of $ROUNDS (range $(range </tmp/rb.ms) ms)"
say "BENCH daemon swap 1.0.0 -> 1.2.0: median ${swap_ms} ms of $ROUNDS (range $(range </tmp/swap.ms) ms)"
say "BENCH rollback ratio daemon/raw: $(awk -v d="$rb_ms" -v r="$raw_us" 'BEGIN { printf "%.2f", d * 1000 / r }') (target <= 1.5)"

# Idle daemon RSS, 1.0.0 committed.
milspecd run --config "$CONF" >/tmp/run.log 2>&1 &
pid=$!
sleep 3
[ -d "/proc/$pid" ] || { cat /tmp/run.log; fail "milspecd run exited"; }
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
kill "$pid"
wait "$pid" 2>/dev/null || true
say "BENCH idle daemon RSS: ${rss} kB (peak ${hwm} kB)"
