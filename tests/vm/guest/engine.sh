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

# snap_state NAME: remembers the state folder: a sha256 of every file and
# the list of folders (all but the history, kept whole beside it).
snap_state() {
	(cd "$STATE" && find . -path ./history.jsonl -prune -o -print | LC_ALL=C sort |
		while read -r _p; do
			if [ -d "$_p" ]; then echo "folder $_p"; else sha256sum "$_p"; fi
		done) >"/tmp/$1.sums"
	if [ -e "$STATE/history.jsonl" ]; then cp "$STATE/history.jsonl" "/tmp/$1.hist"; else : >"/tmp/$1.hist"; fi
}

# expect_state_same NAME WHAT [EVENT...]: the state folder is byte for byte
# what snap_state NAME saw, but for the history: its old content is a
# prefix and exactly the given events (in order) were appended.
expect_state_same() {
	_name=$1 _what=$2
	shift 2
	snap_state "$_name.now"
	if ! cmp -s "/tmp/$_name.sums" "/tmp/$_name.now.sums"; then
		diff "/tmp/$_name.sums" "/tmp/$_name.now.sums" | sed 's/^/    diff| /'
		fail "$_what: the state folder changed"
	fi
	_old=$(wc -c <"/tmp/$_name.hist")
	head -c "$_old" "$STATE/history.jsonl" | cmp -s - "/tmp/$_name.hist" ||
		fail "$_what: the history was rewritten, not appended to"
	tail -c +"$((_old + 1))" "$STATE/history.jsonl" >"/tmp/$_name.added"
	_got=$(sed -n 's/.*"event":"\([^"]*\)".*/\1/p' "/tmp/$_name.added" | tr '\n' ' ')
	_got=${_got% }
	_want="$*"
	[ "$_got" = "$_want" ] ||
		{ sed 's/^/    added| /' "/tmp/$_name.added"; fail "$_what: history added [$_got], want [$_want]"; }
	say "ok: $_what: slots and state byte-identical ($(grep -c . "/tmp/$_name.sums") entries), history +[${_want}]"
}
