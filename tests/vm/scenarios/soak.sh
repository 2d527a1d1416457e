# SPDX-License-Identifier: GPL-2.0
# vm-scenario: soak: the long-running milspecd (on the system bus) swaps the
#   real module SOAK_CYCLES times (60 here by default, 500 for the report),
#   alternating good 1.0.0 and 1.1.0 builds, every tenth cycle a release that
#   WARNs at init and must be rolled back. After each cycle: daemon RSS and
#   open fds, module refcount, /proc/milspec entries, one module loaded, the
#   committed version is the live one. Figures are "BENCH soak" lines.
#   SOAK_CYCLES=500 VM_TIMEOUT_SCALE=6 bash tests/vm/run.sh soak
# vendor: Dell Inc.
# boots: 1
# timeout: 900
# needs: engine kmod-faults dbus soak

. /vm/engine.sh
. /vm/dbus.sh
. /vm/soak.env

# Growth allowed from the first measured cycles to the last ones.
RSS_GROWTH_MAX_KB=1024
FD_GROWTH_MAX=0
WARMUP=10

with_probation 1s
start_bus
start_daemon "$CONF"
ctl 0 install "$PKG/1.0.0.mspkg"
good=1.0.0
pid=$DAEMON_PID

# json_field NAME: a top-level string field of the status in /tmp/status.json
# (pretty-printed: two spaces of indent).
json_field() {
	sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" /tmp/status.json
}

# count DIR: entries in DIR.
count() {
	find "$1" -mindepth 1 -maxdepth 1 | wc -l
}

entries0=$(count "$PROC_DIR")
rss_first=0
fds_first=0
rss_max=0
rollbacks=0
t0=$(uptime_ms)
i=1
while [ "$i" -le "$SOAK_CYCLES" ]; do
	c0=$(uptime_ms)
	if [ $((i % 10)) = 0 ]; then
		pkg=/opt/soak/fault-$i.mspkg
		want=3
		expect=$good
	else
		if [ "$good" = 1.0.0 ]; then v=1.1.0; else v=1.0.0; fi
		milspec-repo pack --version "$v" --sequence $((SOAK_SEQ_BASE + i)) --module "$(ko "v$v")" \
			--key /opt/demo/release.key --out /tmp/cycle.mspkg >/dev/null || fail "cycle $i: packing $v failed"
		pkg=/tmp/cycle.mspkg
		want=0
		expect=$v
	fi
	rc=0
	milspecctl install "$pkg" >/tmp/ctl.out 2>&1 || rc=$?
	if [ "$rc" != "$want" ]; then
		cat /tmp/ctl.out
		tail -n 20 /tmp/milspecd.log
		fail "cycle $i: milspecctl install $pkg exited $rc, want $want"
	fi
	[ "$want" = 3 ] && rollbacks=$((rollbacks + 1))
	good=$expect
	ms=$(($(uptime_ms) - c0))

	kill -0 "$pid" 2>/dev/null || { tail -n 40 /tmp/milspecd.log; fail "cycle $i: milspecd run died"; }
	rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
	fds=$(count "/proc/$pid/fd")
	refcnt=$(cat "/sys/module/$MOD/refcnt")
	entries=$(count "$PROC_DIR")
	mods=$(grep -c "^$MOD " /proc/modules)
	milspecctl status --json >/tmp/status.json || fail "cycle $i: milspecctl status failed"
	committed=$(json_field committed_version)
	dstate=$(json_field state)
	live=$(live_version)
	say "BENCH soak cycle=$i ms=$ms rss_kb=$rss fds=$fds refcnt=$refcnt proc_entries=$entries modules=$mods committed=$committed live=$live state=$dstate"

	[ "$live" = "$expect" ] || fail "cycle $i: live $live, want $expect"
	[ "$committed" = "$live" ] || fail "cycle $i: committed $committed but $live is live"
	[ "$dstate" = idle ] || fail "cycle $i: daemon state $dstate, want idle"
	[ "$mods" = 1 ] || fail "cycle $i: $mods $MOD modules listed"
	[ "$refcnt" = 0 ] || fail "cycle $i: refcount $refcnt"
	[ "$entries" = "$entries0" ] || fail "cycle $i: $entries entries in $PROC_DIR, $entries0 at start"
	[ "$(status state)" = ok ] || fail "cycle $i: module state $(status state)"
	if [ "$i" = "$WARMUP" ]; then
		rss_first=$rss
		fds_first=$fds
	fi
	[ "$rss" -gt "$rss_max" ] && rss_max=$rss
	i=$((i + 1))
done
total_ms=$(($(uptime_ms) - t0))
rss_last=$rss
fds_last=$fds
hist=$(cat "$STATE"/history.jsonl* | wc -l)
say "BENCH soak: $SOAK_CYCLES cycles ($rollbacks rolled back) in $((total_ms / 1000)) s:" \
	"$(awk -v n="$SOAK_CYCLES" -v ms="$total_ms" 'BEGIN { printf "%.1f", n * 60000 / ms }') cycles/min"
say "BENCH soak: daemon RSS ${rss_first} kB after $WARMUP cycles, ${rss_last} kB at the end (max ${rss_max} kB);" \
	"fds ${fds_first} -> ${fds_last}; $hist history lines kept; state dir $(du -sk "$STATE" | cut -f1) kB"
expect_le "RSS growth after warm-up (kB)" $((rss_last - rss_first)) $RSS_GROWTH_MAX_KB
expect_le "fd growth after warm-up" $((fds_last - fds_first)) $FD_GROWTH_MAX
stop_daemon
