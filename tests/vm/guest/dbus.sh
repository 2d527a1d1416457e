# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Guest helpers for D-Bus scenarios ("# needs: engine dbus"): a real system
# bus, `milspecd run` serving com.dell.MilSpec1 on it, and milspecctl.
# Sourced after lib.sh and engine.sh.

DAEMON_PID=
WATCH_PID=

# start_bus: the system bus on /run/dbus/system_bus_socket.
start_bus() {
	mkdir -p /run/dbus
	dbus-daemon --config-file=/etc/vm-system-bus.conf --fork --nopidfile ||
		fail "dbus-daemon did not start"
	say "system bus up: $(ls /run/dbus/system_bus_socket)"
}

# start_daemon [CONFIG]: milspecd run in the background; waits until it
# answers on the bus.
start_daemon() {
	milspecd run --config "${1:-$CONF}" >/tmp/milspecd.log 2>&1 &
	DAEMON_PID=$!
	_i=0
	until milspecctl status >/dev/null 2>&1; do
		_i=$((_i + 1))
		[ $_i -lt 200 ] || { cat /tmp/milspecd.log; fail "milspecd did not answer on the bus within 20 s"; }
		kill -0 "$DAEMON_PID" 2>/dev/null || { cat /tmp/milspecd.log; fail "milspecd run exited"; }
		sleep 0.1
	done
	say "milspecd run (pid $DAEMON_PID) answers on com.dell.MilSpec1"
}

stop_daemon() {
	[ -n "$DAEMON_PID" ] || return 0
	kill "$DAEMON_PID" 2>/dev/null || true
	wait "$DAEMON_PID" 2>/dev/null || true
	DAEMON_PID=
}

# start_watch: milspecctl watch into /tmp/watch.out, in the background.
start_watch() {
	milspecctl watch >/tmp/watch.out 2>&1 &
	WATCH_PID=$!
	sleep 0.3
}

stop_watch() {
	[ -n "$WATCH_PID" ] || return 0
	kill "$WATCH_PID" 2>/dev/null || true
	wait "$WATCH_PID" 2>/dev/null || true
	WATCH_PID=
}

# ctl WANT_EXIT ARGS...: milspecctl ARGS; the exit status must be
# WANT_EXIT. Output is shown and kept in /tmp/ctl.out.
ctl() {
	_want=$1
	shift
	_rc=0
	milspecctl "$@" >/tmp/ctl.out 2>&1 || _rc=$?
	sed 's/^/    ctl> /' /tmp/ctl.out
	[ "$_rc" = "$_want" ] || fail "milspecctl $*: exit $_rc, want $_want"
}

# as_nobody WANT_EXIT ARGS...: milspecctl ARGS as uid 65534.
as_nobody() {
	_want=$1
	shift
	_rc=0
	setpriv-ul --reuid=65534 --regid=65534 --clear-groups milspecctl "$@" >/tmp/ctl.out 2>&1 || _rc=$?
	sed 's/^/    nobody> /' /tmp/ctl.out
	[ "$_rc" = "$_want" ] || fail "milspecctl $* as nobody: exit $_rc, want $_want"
}
