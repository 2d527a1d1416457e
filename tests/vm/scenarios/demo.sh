# SPDX-License-Identifier: GPL-2.0
# vm-scenario: the demo. On a Dell-looking guest a publisher writes a mirror
#   served on the guest's own loopback; milspecd pulls 1.0.0, live-swaps to
#   1.1.0 and commits it, pulls a faulty 1.2.0, sees its WARN, rolls back to
#   1.1.0 on its own and refuses 1.2.0 when it is offered again.
# vendor: Dell Inc.
# product: Latitude 5430 Rugged
# boots: 1
# timeout: 240
# needs: engine kmod-faults

. /vm/engine.sh

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

# pull WANT_EXIT: milspecd polls the mirror once (--now: skip the rollout waves).
pull() {
	t "host: milspecd check --now (pull from http://127.0.0.1:8080/)"
	_rc=0
	milspecd check --now --config /tmp/demo.toml >/tmp/check.out 2>/tmp/check.log || _rc=$?
	grep -E 'verified|staged|checkpoint|unloaded|loaded|probation (started|passed|failed)|unhealthy|rolled back|committed|rejected|up to date|index' \
		/tmp/check.log | sed 's/^[^ ]* *//; s/^/demo|            log: /' || true
	show cat /tmp/check.out
	[ "$_rc" = "$1" ] || fail "milspecd check: exit $_rc, want $1"
}

t "machine: $(cat /sys/class/dmi/id/sys_vendor) $(cat /sys/class/dmi/id/product_name), kernel $(uname -r)"
ip link set lo up
echo 5f1c2a7e9b3d4c6a8e0f1a2b3c4d5e6f >/etc/machine-id
mkdir -p "$MIRROR"
httpd -p 127.0.0.1:8080 -h "$MIRROR"
sed 's/^probation = .*/probation = "5s"/' /etc/milspecd/milspecd.toml >/tmp/demo.toml
printf '\n[source]\nurl = "http://127.0.0.1:8080/"\npoll_interval = "15m"\n' >>/tmp/demo.toml
t "mirror: busybox httpd serving $MIRROR on 127.0.0.1:8080 (the guest's own loopback)"

t "---- step 1: first install, 1.0.0"
publish 1.0.0
pull 0
evidence
check "operator sets mode5_level=2" set_param mode5_level 2
t "operator: mode5_level set to 2 at run time"

t "---- step 2: live swap to 1.1.0 (no reboot), settings carried"
publish 1.1.0
pull 0
expect_eq "live version" "$(live_version)" 1.1.0 >/dev/null
expect_eq "mode5_level carried" "$(param mode5_level)" 2 >/dev/null
evidence
show milspecd status --config /tmp/demo.toml

t "---- step 3: 1.2.0 is faulty (WARN at init)"
publish 1.2.0
pull 3
expect_eq "live version after rollback" "$(live_version)" 1.1.0 >/dev/null
expect_eq "mode5_level restored" "$(param mode5_level)" 2 >/dev/null
evidence
t "rollback: old module live again $(history_last rolled-back millis) ms after the fault was seen"

t "---- step 4: 1.2.0 offered again"
pull 0
expect_match "mirror poll skips the failed version" "$(cat /tmp/check.out)" "." >/dev/null
_rc=0
milspecd install --config /tmp/demo.toml "$PKG/1.2.0.mspkg" >/tmp/install.out 2>/dev/null || _rc=$?
t "host: milspecd install 1.2.0.mspkg by hand -> exit $_rc"
show cat /tmp/install.out
[ "$_rc" = 2 ] || fail "1.2.0 was not refused (exit $_rc)"
expect_eq "live version" "$(live_version)" 1.1.0 >/dev/null

t "---- end state"
show milspecd status --config /tmp/demo.toml
t "history:"
show cat "$STATE/history.jsonl"
t "demo done: 1.0.0 installed, swapped live to 1.1.0, faulty 1.2.0 rolled back on its own and refused again"
