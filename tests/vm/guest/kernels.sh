# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Guest helpers for the kernel-lifecycle scenarios ("# needs: kernels"): a
# mirror served on the guest's own loopback and the daemon's view of the
# kernels. Sourced after lib.sh and engine.sh (and dbus.sh).

MIRROR_PID=
KCONF=/tmp/milspecd-kernels.toml

# kernels_config [PROBATION]: the engine config plus [source] on the loopback
# mirror and a metrics file, in $KCONF; CONF (engine.sh) names it from now on.
kernels_config() {
	sed "s/^probation = .*/probation = \"${1:-3s}\"/" /etc/milspecd/milspecd.toml >"$KCONF"
	printf '\n[source]\nurl = "http://127.0.0.1:8080/"\npoll_interval = "24h"\n\n[metrics]\ntextfile = "/run/milspecd/milspecd.prom"\n' >>"$KCONF"
	CONF=$KCONF
	ip link set lo up
	[ -s /etc/machine-id ] || echo 5f1c2a7e9b3d4c6a8e0f1a2b3c4d5e6f >/etc/machine-id
}

# serve_mirror NAME: busybox httpd serves /opt/mirror-NAME on 127.0.0.1:8080
# (the one served before is stopped first).
serve_mirror() {
	stop_mirror
	httpd -f -p 127.0.0.1:8080 -h "/opt/mirror-$1" &
	MIRROR_PID=$!
	_i=0
	until wget -q -O /dev/null http://127.0.0.1:8080/index.json 2>/dev/null; do
		_i=$((_i + 1))
		[ $_i -lt 100 ] || fail "the mirror did not come up"
		sleep 0.05
	done
	say "mirror: /opt/mirror-$1 on http://127.0.0.1:8080/"
}

stop_mirror() {
	[ -n "$MIRROR_PID" ] || return 0
	kill "$MIRROR_PID" 2>/dev/null || true
	wait "$MIRROR_PID" 2>/dev/null || true
	MIRROR_PID=
}

# kjson: milspecd status --json, on one line.
kjson() {
	milspecd status --config "$CONF" --json | tr -d '\n '
}

# kernel_build: the status's kernel.build (ready, no-build, no-version).
kernel_build() {
	kjson | sed -n 's/.*"kernel":{[^}]*"build":"\([a-z-]*\)".*/\1/p'
}

# slot_kernels SLOT: the kernel releases slot SLOT holds builds for, space separated.
slot_kernels() {
	kjson | sed -n "s/.*{\"schema\":\"milspec.slot\/1\",\"slot\":\"$1\",[^}]*\"kernels\":\[\([^]]*\)\].*/\1/p" | tr -d '"' | tr ',' ' '
}

# history_count EVENT: how many EVENT records the history holds.
history_count() {
	grep -c "\"event\":\"$1\"" "$STATE/history.jsonl" || true
}

# slots_and_state_sum: one hash over every file of both slots and state.json.
slots_and_state_sum() {
	(cd "$STATE" && find slots state.json -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-16
}

# expect_has WHAT TEXT FIXED: TEXT contains the fixed string FIXED.
expect_has() {
	case $2 in
	*"$3"*) say "ok: $1 has '$3'" ;;
	*) fail "$1: '$2' does not contain '$3'" ;;
	esac
}
