# SPDX-License-Identifier: GPL-2.0
# vm-scenario: a fair verdict on a real kernel. Another driver's WARN during
#   a trial (milspec_neighbour, a test module) raises warn_count and the W
#   taint bit but names no dell_milspec frame: under the default policy
#   ("extend") the trial goes on for a whole window after it and commits,
#   the commit naming the rise and the other driver's report; a WARN in
#   dell_milspec itself rolls back; with unattributed = "rollback" the
#   neighbour's WARN rolls back too. Declared checks (health.d/*.toml) run
#   through the window: an http check and a tcp check whose service stops
#   1 s into a 30 s trial roll back within seconds. After the commit:
#   milspecd run watching the committed 1.9.0 (a warnlater build) sees its
#   WARN, records a fault and, with after_commit_rollback set, rolls back
#   to 1.1.0 and blocklists 1.9.0.
# vendor: Dell Inc.
# boots: 1
# timeout: 300
# needs: engine kmod-faults health

. /vm/engine.sh

NEIGHBOUR=/sys/module/milspec_neighbour/parameters/warn

# wait_live VERSION: until VERSION is the live module (15 s at most).
wait_live() {
	_n=0
	until [ "$(live_version)" = "$1" ]; do
		_n=$((_n + 1))
		[ "$_n" -lt 300 ] || fail "$1 never went live"
		sleep 0.05
	done
}

# trial_with_neighbour_warn PKG: installs PKG in the background, makes the
# neighbour WARN 1 s into the trial, waits for the install; its exit status
# is left in $INSTALL_RC, the output in /tmp/install.out.
trial_with_neighbour_warn() {
	say "milspecd install $1.mspkg, the neighbour WARNs 1 s into the trial"
	warn_before=$(counter warn_count)
	milspecd install --config "$CONF" "$PKG/$1.mspkg" >/tmp/install.out 2>/tmp/install.log &
	_pid=$!
	wait_live "$1"
	sleep 1
	echo 1 >"$NEIGHBOUR" || fail "the neighbour did not take the write"
	expect_ge "warn_count rose (the neighbour's WARN)" "$(counter warn_count)" $((warn_before + 1))
	INSTALL_RC=0
	wait "$_pid" || INSTALL_RC=$?
	sed 's/^/    | /' /tmp/install.log
	sed 's/^/    > /' /tmp/install.out
}

check "load the neighbour test module" vm-insmod /opt/ko/neighbour/milspec-neighbour.ko
install_pkg 1.0.0 0

# Default policy, 6 s window: the WARN at ~1 s extends it to ~7 s.
with_probation 6s
trial_with_neighbour_warn 1.1.0
expect_eq "exit status (committed)" "$INSTALL_RC" 0
expect_eq "live version" "$(live_version)" 1.1.0
dmesg_has "WARNING: .*neighbour_warn_set.*\[milspec_neighbour\]" || fail "no WARNING naming milspec_neighbour in the log"
expect_eq "W taint bit set" "$(taint_bit 9)" 1
commit=$(grep '"event":"committed"' "$STATE/history.jsonl" | tail -n 1)
say "commit record: $commit"
expect_match "commit names the unattributed rise" "$commit" \
	'"reason":"faults not attributed to the module: warn_count rose from [0-9]+ to [0-9]+ \(the kernel.s report does not name the module: WARNING: .*\[milspec_neighbour\]\); window started again"'
watched=$(printf '%s\n' "$commit" | sed -n 's/.*"millis":\([0-9]*\).*/\1/p')
expect_ge "watched a whole window after the WARN (ms)" "$watched" 7000
say "BENCH unattributed WARN: trial watched ${watched} ms (window 6000 ms, WARN at ~1000 ms)"

# A WARN in dell_milspec itself, with W already set: rolled back.
with_probation 3s
install_pkg 1.2.0 3
expect_match "reason names the module's report" "$(cat /tmp/install.out)" \
	"rolled back 1.2.0 -> 1.1.0: kernel log: WARNING: .*\[dell_milspec\]"
expect_eq "live version after rollback" "$(live_version)" 1.1.0

# unattributed = "rollback": the neighbour's WARN counts against 1.6.0.
sed 's/^probation = .*/probation = "6s"\nunattributed = "rollback"/' /etc/milspecd/milspecd.toml >/tmp/milspecd.toml
CONF=/tmp/milspecd.toml
trial_with_neighbour_warn 1.6.0
expect_eq "exit status (rolled back)" "$INSTALL_RC" 3
expect_match "reason is the rise" "$(cat /tmp/install.out)" "rolled back 1.6.0 -> 1.1.0: warn_count rose from [0-9]+ to [0-9]+"
expect_eq "live version" "$(live_version)" 1.1.0

# Declared checks against a local service (busybox httpd on the guest's
# loopback), a 30 s window; the service stops 1 s into the trial.
ip link set lo up
mkdir -p /tmp/www /etc/milspecd/health.d
echo ok >/tmp/www/health
with_probation 30s

# trial_losing_service PKG CHECK: installs PKG with httpd up, stops httpd
# 1 s into the trial; PKG must roll back on CHECK well before 30 s.
trial_losing_service() {
	httpd -f -p 127.0.0.1:8080 -h /tmp/www &
	_httpd=$!
	_n=0
	until [ "$(wget -q -O - http://127.0.0.1:8080/health 2>/dev/null)" = ok ]; do
		_n=$((_n + 1))
		[ "$_n" -lt 100 ] || fail "httpd does not answer on 127.0.0.1:8080"
		sleep 0.05
	done
	say "milspecd install $1.mspkg, httpd stops 1 s into the trial"
	_t0=$(uptime_ms)
	milspecd install --config "$CONF" "$PKG/$1.mspkg" >/tmp/install.out 2>/tmp/install.log &
	_pid=$!
	wait_live "$1"
	sleep 1
	kill "$_httpd"
	wait "$_httpd" || true
	INSTALL_RC=0
	wait "$_pid" || INSTALL_RC=$?
	_ms=$(($(uptime_ms) - _t0))
	sed 's/^/    | /' /tmp/install.log
	sed 's/^/    > /' /tmp/install.out
	expect_eq "$1: exit status (rolled back)" "$INSTALL_RC" 3
	expect_match "$1: reason" "$(cat /tmp/install.out)" "rolled back $1 -> 1.1.0: health check health.d/$2.toml failed: "
	expect_le "$1: rolled back before the 30 s window ended (ms)" "$_ms" 20000
	expect_eq "$1: live version" "$(live_version)" 1.1.0
	# It passed while httpd ran: no failure logged before the stop.
	expect_eq "$1: failures before httpd stopped" \
		"$(grep -c 'health check failed: .*1 of 2' /tmp/install.log)" 1
	say "BENCH declared $2 check: service stopped ~1 s into the trial, install over after ${_ms} ms (window 30000 ms)"
}

cat >/etc/milspecd/health.d/web.toml <<'TOML'
type = "http"
url = "http://127.0.0.1:8080/health"
body_contains = "ok"
interval = "500ms"
timeout = "400ms"
failures = 2
TOML
trial_losing_service 1.7.0 web
expect_match "http failure named" "$(cat /tmp/install.out)" "GET http://127.0.0.1:8080/health: .*Connection refused.*2 of 2 failures in a row"

rm /etc/milspecd/health.d/web.toml
cat >/etc/milspecd/health.d/port.toml <<'TOML'
type = "tcp"
address = "127.0.0.1:8080"
interval = "500ms"
timeout = "400ms"
failures = 2
TOML
trial_losing_service 1.8.0 port
expect_match "tcp failure named" "$(cat /tmp/install.out)" "cannot connect to 127.0.0.1:8080: Connection refused .*2 of 2 failures in a row"

# After the commit: 1.9.0 passes its trial; then milspecd run, looking at
# the committed module every second, sees the WARN it is told to raise.
rm /etc/milspecd/health.d/port.toml
with_probation 3s
install_pkg 1.9.0 0
expect_eq "live version" "$(live_version)" 1.9.0
mkdir -p /tmp/conf.d
cat >/tmp/conf.d/50-after-commit.toml <<'TOML'
[health]
after_commit_interval = "1s"
after_commit_rollback = "1h"
[metrics]
textfile = "/tmp/metrics/milspecd.prom"
TOML
# No system bus in this scenario: the daemon says so and runs on.
milspecd run --config "$CONF" >/tmp/milspecd.log 2>&1 &
daemon=$!
_n=0
until grep -q 'ready: ' /tmp/milspecd.log; do
	_n=$((_n + 1))
	[ "$_n" -lt 200 ] || { cat /tmp/milspecd.log; fail "milspecd run never got ready"; }
	sleep 0.1
done
faults_before=$(grep -c '"event":"fault"' "$STATE/history.jsonl" || true)
_t0=$(uptime_ms)
echo 1 >/sys/module/dell_milspec/parameters/fault_warn || fail "fault_warn did not take the write"
dmesg_has "WARNING: .*fault_warn_set.*\[dell_milspec\]" || fail "no WARNING naming dell_milspec in the log"
_n=0
until [ "$(history_last committed version)" = 1.1.0 ] && [ "$(live_version)" = 1.1.0 ]; do
	_n=$((_n + 1))
	[ "$_n" -lt 300 ] || { cat /tmp/milspecd.log; fail "the fault after the commit was not rolled back within 30 s"; }
	sleep 0.1
done
_ms=$(($(uptime_ms) - _t0))
kill "$daemon"
wait "$daemon" || true
sed 's/^/    run| /' /tmp/milspecd.log | grep -E 'fault|rolling|committed|swapped' || true
expect_eq "one fault recorded" "$(grep -c '"event":"fault"' "$STATE/history.jsonl")" $((faults_before + 1))
fault=$(grep '"event":"fault"' "$STATE/history.jsonl" | tail -n 1)
say "fault record: $fault"
expect_match "the fault names the module and the rollback" "$fault" \
	'"version":"1.9.0".*"reason":"WARNING: .*\[dell_milspec\].*rolling back to the previous version"'
expect_match "metric" "$(cat /tmp/metrics/milspecd.prom)" "milspecd_committed_faults_total 1"
show_status
expect_match "1.9.0 blocklisted" "$(milspecd status --config "$CONF")" "blocklisted: +1\.9\.0 .*fault after commit"
say "BENCH fault after the commit: WARN to 1.1.0 committed again in ${_ms} ms (look every 1 s, 3 s trial)"
