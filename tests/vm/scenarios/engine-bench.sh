# SPDX-License-Identifier: GPL-2.0
# vm-scenario: benchmark, not a pass/fail gate beyond sanity: daemon swap
#   time against raw rmmod+insmod of the same modules, fault-to-rollback for
#   a WARN and an oops, and the daemon's idle RSS. Figures are BENCH lines.
# vendor: Dell Inc.
# boots: 1
# timeout: 400
# needs: engine kmod-faults

. /vm/engine.sh
with_probation 1s
ROUNDS=10

# Raw: rmmod + insmod alternating 1.0.0 and 1.1.0.
load v1.0.0
t0=$(uptime_ms)
i=0
while [ $i -lt $ROUNDS ]; do
	for v in v1.1.0 v1.0.0; do
		rmmod "$MOD"
		insmod "$(ko $v)"
	done
	i=$((i + 1))
done
raw_us=$((($(uptime_ms) - t0) * 1000 / (2 * ROUNDS)))
rmmod "$MOD"
say "BENCH raw rmmod+insmod: ${raw_us} us per swap (mean of $((2 * ROUNDS)))"

# Daemon: the same swaps through milspecd install (swap = unload + load as
# the engine times it, from the history), alternating with --allow-downgrade.
install_pkg 1.0.0 0
i=0
while [ $i -lt $ROUNDS ]; do
	for v in 1.1.0 1.0.0; do
		milspecd install --allow-downgrade --config "$CONF" "$PKG/$v.mspkg" >/dev/null 2>&1 ||
			fail "install $v failed"
	done
	i=$((i + 1))
done
n=$(grep -c '"event":"swapped"' "$STATE/history.jsonl")
sum=$(grep '"event":"swapped"' "$STATE/history.jsonl" | tail -n $((2 * ROUNDS)) |
	sed -n 's/.*"millis":\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s }')
daemon_us=$((sum * 1000 / (2 * ROUNDS)))
say "BENCH daemon swap: ${daemon_us} us per swap (mean of $((2 * ROUNDS)); $n swaps in history)"
say "BENCH swap ratio daemon/raw: $(awk -v d=$daemon_us -v r=$raw_us 'BEGIN { printf "%.2f", d / r }') (target <= 1.5)"

# Idle daemon RSS.
milspecd run --config "$CONF" >/tmp/run.log 2>&1 &
pid=$!
sleep 3
[ -d "/proc/$pid" ] || { cat /tmp/run.log; fail "milspecd run exited"; }
rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
kill "$pid"
wait "$pid" 2>/dev/null || true
say "BENCH idle daemon RSS: ${rss} kB (peak ${hwm} kB; target <= 9216 kB)"
expect_le "idle RSS (kB)" "$rss" 9216

# Fault to rollback: a WARN at init.
install_pkg 1.2.0 3
rb=$(history_last rolled-back millis)
say "BENCH warn: old module live again ${rb} ms after the fault was seen"

# An oops in the module's thread ~200 ms after load: detection latency.
t0=$(uptime_ms)
install_pkg 1.3.0 3
kind=$(grep -o '"event":"rollback-pending-reboot"\|"event":"rolled-back"' "$STATE/history.jsonl" | tail -n 1)
say "BENCH oops: outcome $kind; install took ${INSTALL_MS} ms including the oops"
grep 'unhealthy' /tmp/install.log | sed 's/^/    /' || true
