# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Guest helpers for engine scenarios ("# needs: engine"): run milspecd and
# read what it did. Sourced after lib.sh.

CONF=/etc/milspecd/milspecd.toml
PKG=/opt/pkg
STATE=/state/milspecd

# with_probation DURATION: use a config with another probation window.
with_probation() {
	sed "s/^probation = .*/probation = \"$1\"/" /etc/milspecd/milspecd.toml >/tmp/milspecd.toml
	CONF=/tmp/milspecd.toml
}

# install_pkg NAME WANT_EXIT: milspecd install /opt/pkg/NAME.mspkg; the exit
# status must be WANT_EXIT. Output is shown and kept in /tmp/install.out.
install_pkg() {
	say "milspecd install $1.mspkg (want exit $2)"
	_t0=$(uptime_ms)
	_rc=0
	milspecd install --config "$CONF" "$PKG/$1.mspkg" >/tmp/install.out 2>/tmp/install.log || _rc=$?
	INSTALL_MS=$(($(uptime_ms) - _t0))
	sed 's/^/    | /' /tmp/install.log
	sed 's/^/    > /' /tmp/install.out
	[ "$_rc" = "$2" ] || fail "milspecd install $1: exit $_rc, want $2"
	say "ok: install $1 exited $_rc after $INSTALL_MS ms"
}

# live_version: the loaded module's version, or "none".
live_version() {
	if [ -r "/sys/module/$MOD/version" ]; then cat "/sys/module/$MOD/version"; else echo none; fi
}

# history_last EVENT FIELD: FIELD of the newest EVENT line in the history.
history_last() {
	grep "\"event\":\"$1\"" "$STATE/history.jsonl" | tail -n 1 |
		sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

show_status() {
	milspecd status --config "$CONF" | sed 's/^/    status| /'
}

# recover_and_check WHAT: milspecd recover, then: no trial left, exactly one
# module loaded and it is the committed one, its status ok. Leaves the
# status JSON in $json, the live version in $live, the committed one in
# $committed.
recover_and_check() {
	out=$(milspecd recover --config "$CONF" 2>/tmp/recover.log) || { cat /tmp/recover.log; fail "$1: recover failed"; }
	say "recover: $out"
	json=$(milspecd status --config "$CONF" --json)
	live=$(live_version)
	committed=$(printf '%s\n' "$json" | sed -n 's/^  "committed_version": "\(.*\)",$/\1/p')
	expect_match "$1: no trial left" "$json" '"trial": null'
	expect_eq "$1: exactly one module, the committed one" "$live" "$committed"
	expect_eq "$1: module healthy" "$(status state)" ok
	[ "$(grep -c "^$MOD " /proc/modules)" = 1 ] || fail "$1: not exactly one $MOD"
}
