# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the demo. On a Dell-looking guest a publisher writes a mirror
#   served on the guest's own loopback; milspecd runs as the daemon on a real
#   system bus, pulls 1.0.0 at start, live-swaps to 1.1.0 and commits it,
#   pulls a faulty 1.2.0, sees its WARN, rolls back to 1.1.0 on its own and
#   refuses 1.2.0 when it is offered again. The operator drives and follows
#   it with milspecctl (check, status, watch) over D-Bus.
# vendor: Dell Inc.
# product: Latitude 5430 Rugged
# boots: 1
# timeout: 240
# needs: engine kmod-faults dbus

. /vm/engine.sh
. /vm/dbus.sh

T0=$(uptime_ms)
MIRROR=/srv/mirror
KEY=/opt/demo/release.key

# t TEXT: one line of the timeline, with seconds since the demo started.
t() {
	_ms=$(($(uptime_ms) - T0))
	printf 'demo| [%3d.%02ds] %s\n' $((_ms / 1000)) $((_ms % 1000 / 10)) "$*"
}

# show CMD...: run CMD and put its output in the timeline, indented.
show() {
	"$@" 2>&1 | sed 's/^/demo|            /'
}

evidence() {
	t "evidence: live module $(live_version), mode5_level $(param mode5_level 2>/dev/null || echo -)," \
		"warn_count $(counter warn_count), oops_count $(counter oops_count), taint $(tainted)"
	show cat /proc/milspec/status
}

publish() {
	t "publisher: milspec-repo publish $1 to the mirror"
	show milspec-repo publish --mirror "$MIRROR" --key "$KEY" "$PKG/$1.mspkg"
}

# daemon_log_since LINE: the daemon's log lines worth showing, after LINE.
daemon_log_since() {
	tail -n +$(($1 + 1)) /tmp/milspecd.log |
		grep -E 'verified|staged|checkpoint|unloaded|loaded|probation (started|passed|failed)|unhealthy|rolled back|committed|rejected|up to date|index|pulling|downloading' |
		sed 's/^[^ ]* *//; s/^/demo|            daemon: /' || true
}

# watch_news: what `milspecctl watch` printed since the last call.
WATCH_SHOWN=0
watch_news() {
	_n=$(wc -l </tmp/watch.out)
	if [ "$_n" -gt "$WATCH_SHOWN" ]; then
		t "milspecctl watch (running since the start) printed:"
		tail -n +$((WATCH_SHOWN + 1)) /tmp/watch.out | head -n $((_n - WATCH_SHOWN)) | sed 's/^/demo|            watch> /'
	fi
	WATCH_SHOWN=$_n
}

# pull WANT_EXIT: the operator asks the daemon to poll the mirror now.
pull() {
	t "operator: milspecctl check (the daemon pulls from http://127.0.0.1:8080/)"
	_mark=$(wc -l </tmp/milspecd.log)
	_rc=0
	milspecctl check >/tmp/check.out 2>&1 || _rc=$?
	daemon_log_since "$_mark"
	show cat /tmp/check.out
	[ "$_rc" = "$1" ] || fail "milspecctl check: exit $_rc, want $1"
}

t "machine: $(cat /sys/class/dmi/id/sys_vendor) $(cat /sys/class/dmi/id/product_name), kernel $(uname -r)"
ip link set lo up
echo 5f1c2a7e9b3d4c6a8e0f1a2b3c4d5e6f >/etc/machine-id
mkdir -p "$MIRROR"
httpd -p 127.0.0.1:8080 -h "$MIRROR"
sed 's/^probation = .*/probation = "5s"/' /etc/milspecd/milspecd.toml >/tmp/demo.toml
printf '\n[source]\nurl = "http://127.0.0.1:8080/"\npoll_interval = "15m"\n' >>/tmp/demo.toml
t "mirror: busybox httpd serving $MIRROR on 127.0.0.1:8080 (the guest's own loopback)"

t "---- step 1: the daemon starts and pulls 1.0.0 on its own"
publish 1.0.0
start_bus
start_watch
t "host: milspecd run (systemd would start it); it serves com.dell.MilSpec1 and polls at once"
milspecd run --config /tmp/demo.toml >/tmp/milspecd.log 2>&1 &
# shellcheck disable=SC2034 # read by stop_daemon (dbus.sh)
DAEMON_PID=$!
i=0
until [ "$(cat /sys/module/dell_milspec/version 2>/dev/null)" = 1.0.0 ] &&
	milspecctl status 2>/dev/null | grep -q "committed:.*1.0.0"; do
	i=$((i + 1))
	[ $i -lt 600 ] || { cat /tmp/milspecd.log; fail "1.0.0 was not committed within 60 s"; }
	sleep 0.1
done
daemon_log_since 0
watch_news
evidence
show milspecctl pause
t "operator: automatic polling paused, so each next pull happens on cue"
check "operator sets mode5_level=2" set_param mode5_level 2
t "operator: mode5_level set to 2 at run time"

t "---- step 2: live swap to 1.1.0 (no reboot), settings carried"
publish 1.1.0
pull 0
expect_eq "live version" "$(live_version)" 1.1.0 >/dev/null
expect_eq "mode5_level carried" "$(param mode5_level)" 2 >/dev/null
evidence
watch_news
t "operator: milspecctl status"
show milspecctl status

t "---- step 3: 1.2.0 is faulty (WARN at init)"
publish 1.2.0
pull 3
expect_eq "live version after rollback" "$(live_version)" 1.1.0 >/dev/null
expect_eq "mode5_level restored" "$(param mode5_level)" 2 >/dev/null
evidence
watch_news
t "rollback: old module live again $(history_last rolled-back millis) ms after the fault was seen"

t "---- step 4: 1.2.0 offered again"
pull 0
_rc=0
milspecctl install "$PKG/1.2.0.mspkg" >/tmp/install.out 2>&1 || _rc=$?
t "operator: milspecctl install 1.2.0.mspkg by hand -> exit $_rc"
show cat /tmp/install.out
[ "$_rc" = 2 ] || fail "1.2.0 was not refused (exit $_rc)"
expect_eq "live version" "$(live_version)" 1.1.0 >/dev/null

t "---- end state"
watch_news
stop_watch
t "operator: milspecctl status"
show milspecctl status
t "operator: milspecctl history"
show milspecctl history --limit 20
stop_daemon
t "demo done: 1.0.0 pulled at start, swapped live to 1.1.0, faulty 1.2.0 rolled back on its own and refused again"
