# SPDX-License-Identifier: GPL-2.0
# The full-system test inside a Debian 12 guest with systemd, udev and the
# system bus (docs/service.md). Run by systest-run from /systest; each check
# writes one marker line on /dev/ttyS1 that tests/system/run.sh asserts:
#   @@SYS:OK name detail | @@SYS:FAIL name detail | @@SYS:INFO text
# Boot 1 (Dell): the operator path of README.md, "Install on a host": the
# .deb first, with no key (the unit is skipped by its condition, nothing
# fails), then the mirror drop-in and the key (milspecd.path starts the
# daemon), the first check; then pull, swap, commit, roll back, restart and
# upgrade mid-trial, drift, modprobe, then a downgrade to the previous
# release and an upgrade back, each with a committed slot. Boot 2 (Dell):
# after a reboot udev starts the daemon and it loads the committed module.
# Boot 3 (not Dell): the daemon stays off; purge leaves nothing behind.

OUT=/dev/ttyS1
IN=/systest
BOOT=$(sed -n 's/.*systest\.boot=\([0-9]*\).*/\1/p' /proc/cmdline)
DEST=com.dell.MilSpec1
OBJ=/com/dell/MilSpec1
IFACE=com.dell.MilSpec1.Manager

ID_INSTALL_STARTED=39c9427969954e4e8db68bf4a00b7310
ID_SWAPPED=b425e5aac17c489da2f2c95136c91323
ID_COMMITTED=97ab94505dc440ccb3b41f4f8f7a17c2
ID_ROLLED_BACK=282cfe861371462485207fdb47e3ab92
ID_RECOVERY=1165e1fe67544f9388bd35c41727417b
ID_DRIFT=1eb05a39379a4706bb1c5ecafa6daa10

T0=$(cut -d' ' -f1 /proc/uptime)

mark() { printf '@@SYS:%s\n' "$*" | tr -d '\r' >"$OUT"; }
elapsed() { awk -v a="$T0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }'; }
info() { mark "INFO boot$BOOT +$(elapsed)s $*"; }
ok() { mark "OK $1 ${2:-}"; }
bad() { mark "FAIL $1 ${2:-}"; }
# one_line FILE: the end of FILE on one line, for a failure's detail.
one_line() { tail -c 400 "$1" 2>/dev/null | tr '\n\r' '  '; }

# check NAME CMD...: OK when CMD exits 0, else FAIL with its output.
check() {
	_n=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then
		ok "$_n" "$(head -c 200 /tmp/check.out | tr '\n' ' ')"
	else
		bad "$_n" "exit $?: $(one_line /tmp/check.out)"
	fi
}

# wait_for SECONDS CMD...: until CMD exits 0; 1 on timeout.
wait_for() {
	_end=$(($(cut -d. -f1 /proc/uptime) + $1))
	shift
	while ! "$@" >/dev/null 2>&1; do
		[ "$(cut -d. -f1 /proc/uptime)" -ge "$_end" ] && return 1
		sleep 0.5
	done
}

# prop NAME: a property of the daemon, read with systemd's own busctl.
prop() { busctl get-property "$DEST" "$OBJ" "$IFACE" "$1" 2>/dev/null | sed 's/^s "\(.*\)"$/\1/'; }
prop_is() { [ "$(prop "$1")" = "$2" ]; }
live_version() { cat /sys/module/dell_milspec/version 2>/dev/null || echo none; }
live_is() { [ "$(live_version)" = "$1" ]; }
main_pid() { systemctl show -p MainPID --value milspecd.service; }
active() { systemctl is-active --quiet milspecd.service; }
# journal_has ID [GREP]: a record with MESSAGE_ID=ID (this boot), text matching GREP.
journal_has() { journalctl -b -q -o cat MESSAGE_ID="$1" | grep -q -- "${2:-.}"; }
journal_count() { journalctl -b -q -o cat MESSAGE_ID="$1" | grep -c -- "${2:-.}"; }

# publish N: the mirror's snapshot N (the host published them in order).
publish() {
	cp -a "$IN/mirror/snap$1/." /srv/mirror/
	info "mirror: snapshot $1 ($(cat "$IN/mirror/snap$1.what"))"
}

serve_mirror() {
	mkdir -p /srv/mirror
	/usr/local/bin/busybox httpd -p 127.0.0.1:8080 -h /srv/mirror
}

# udev_started: not enabled, active, and wanted by the DMI device unit
# (as is milspecd.path).
udev_started() {
	[ "$(systemctl is-enabled milspecd.service 2>&1)" = disabled ] &&
		active &&
		systemctl show -p WantedBy --value milspecd.service | grep -q 'sys-devices-virtual-dmi-id.device' &&
		systemctl show -p WantedBy --value milspecd.path | grep -q 'sys-devices-virtual-dmi-id.device'
}

# unit_facts: what systemd says of the service and the path unit.
unit_facts() {
	echo "service: $(systemctl show -p ActiveState,SubState,Result,NRestarts,ConditionResult milspecd.service | tr '\n' ' ')"
	echo "path: $(systemctl show -p ActiveState,SubState,Result milspecd.path | tr '\n' ' ')"
}
# skipped_by_condition: installed with no key: the service was started by
# udev, skipped by its condition (inactive, not failed, no restart, no
# start limit), and milspecd.path waits for a key.
skipped_by_condition() {
	unit_facts
	[ "$(systemctl show -p ActiveState --value milspecd.service)" = inactive ] &&
		[ "$(systemctl show -p ConditionResult --value milspecd.service)" = no ] &&
		[ "$(systemctl show -p Result --value milspecd.service)" = success ] &&
		[ "$(systemctl show -p NRestarts --value milspecd.service)" = 0 ] &&
		! systemctl is-failed --quiet milspecd.service &&
		[ "$(systemctl show -p SubState --value milspecd.path)" = waiting ]
}
# started_by_path: the key made milspecd.path start the service, first try.
started_by_path() {
	unit_facts
	active &&
		[ "$(systemctl show -p ConditionResult --value milspecd.service)" = yes ] &&
		[ "$(systemctl show -p NRestarts --value milspecd.service)" = 0 ] &&
		[ "$(systemctl show -p SubState --value milspecd.path)" = running ]
}

# trial_then_commit NAME VERSION ACTION...: start a poll for VERSION in the
# background, run ACTION while VERSION is on trial, then expect the daemon
# (a new process) to commit VERSION with no rollback.
trial_then_commit() {
	_name=$1 _v=$2
	shift 2
	_rb=$(journal_count "$ID_ROLLED_BACK")
	milspecctl check --timeout 5m >"/tmp/$_name.check" 2>&1 &
	if ! wait_for 120 prop_is TrialVersion "$_v"; then
		bad "$_name" "$_v never went on trial: $(prop State) $(one_line "/tmp/$_name.check")"
		return
	fi
	_pid=$(main_pid)
	info "$_name: $_v on trial (live $(live_version)), pid $_pid; now: $*"
	"$@" >"/tmp/$_name.action" 2>&1 || info "$_name: action exit $?: $(one_line "/tmp/$_name.action")"
	if ! wait_for 60 active; then
		bad "$_name" "the unit is not active after: $*"
		return
	fi
	_new=$(main_pid)
	if [ "$_new" = "$_pid" ]; then
		bad "$_name" "the daemon was not restarted (pid $_pid)"
		return
	fi
	if ! wait_for 180 prop_is CommittedVersion "$_v"; then
		bad "$_name" "$_v not committed after the restart: state $(prop State), trial $(prop TrialVersion), committed $(prop CommittedVersion)"
		return
	fi
	if [ "$(journal_count "$ID_ROLLED_BACK")" != "$_rb" ] || ! live_is "$_v"; then
		bad "$_name" "a rollback happened or live is $(live_version)"
		return
	fi
	ok "$_name" "pid $_pid -> $_new, trial of $_v resumed and committed, live $(live_version)"
	wait "$!" 2>/dev/null || true
}

# polkit_checks: a user a site's polkit rule authorizes for
# com.dell.milspec1.manage may change things over D-Bus (the daemon asks
# polkitd); nobody may not, and is told why.
polkit_checks() {
	id fleetop >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin fleetop
	mkdir -p /etc/polkit-1/rules.d
	cat >/etc/polkit-1/rules.d/50-fleet-operator.rules <<-'RULES'
		polkit.addRule(function(action, subject) {
			if (action.id == "com.dell.milspec1.manage" && subject.user == "fleetop")
				return polkit.Result.YES;
		});
	RULES
	# polkitd is bus-activated and reads the rules at start.
	systemctl restart polkit.service 2>/dev/null || true
	as_user() { _u=$1; shift; setpriv --reuid="$_u" --regid="$_u" --clear-groups "$@"; }
	check polkit-authorized sh -c 'setpriv --reuid=fleetop --regid=fleetop --clear-groups milspecctl pause && [ "$(busctl get-property com.dell.MilSpec1 /com/dell/MilSpec1 com.dell.MilSpec1.Manager Paused)" = "b true" ]'
	check polkit-resume as_user fleetop milspecctl resume
	setpriv --reuid=nobody --regid=nogroup --clear-groups milspecctl pause >/tmp/denied.out 2>&1
	_rc=$?
	_paused=$(busctl get-property "$DEST" "$OBJ" "$IFACE" Paused 2>&1)
	if [ "$_rc" = 4 ] && grep -q "access denied" /tmp/denied.out && [ "$_paused" = "b false" ]; then
		ok polkit-denied "nobody: exit $_rc: $(one_line /tmp/denied.out)"
	else
		bad polkit-denied "nobody: exit $_rc, Paused $_paused: $(one_line /tmp/denied.out)"
	fi
}

STATE=/var/lib/milspecd/state.json
# state_complete VERSION...: the record is format 1, names a committed slot
# and keeps each VERSION in its committed versions.
state_complete() {
	grep -q '"format": 1,' "$STATE" && grep -q '"committed": "' "$STATE" || { cat "$STATE"; return 1; }
	sed -n '/"committed_versions"/,/]/p' "$STATE" >/tmp/committed.versions
	for _v in "$@"; do
		grep -q "\"$_v\"" /tmp/committed.versions || { echo "$_v missing:"; cat "$STATE"; return 1; }
	done
	echo "format 1, committed versions: $(tr -d ' \n' </tmp/committed.versions)"
}
# journal_clean SINCE: no daemon record since SINCE (a journalctl --since
# time) says the state record or a slot could not be read (the errors of
# StateError and SlotError; "resumes from the state record" at a stop is
# not one).
journal_clean() {
	! journalctl -q -o cat -u milspecd.service --since "$1" | grep -Ei 'cannot read the state record|state record is (corrupt|format)|newer milspecd|no longer verifies'
}

# cross_version: a downgrade to the previous release (built from the
# recorded commit of tests/system/run.sh) and an upgrade back, each with a
# committed slot. The previous daemon must start on what this one wrote,
# keep the committed module live and commit a release of its own; this one
# must then take over the slot and the record the previous one wrote.
# The previous package also shipped /usr/bin/milspecd and milspec-repo:
# both moves must be clean either way (milspec-repo's Breaks/Replaces).
cross_version() {
	_old=$(ls "$IN"/deb-old/milspecd_*.deb)
	info "cross-version: $(basename "$_old") (previous release) over $(dpkg-query -W -f '${Version}' milspecd)"
	_since=$(date '+%Y-%m-%d %H:%M:%S')
	check downgrade-deb dpkg -i "$_old"
	check downgrade-paths sh -c '[ -x /usr/bin/milspecd ] && [ ! -e /usr/sbin/milspecd ] && dpkg -S /usr/bin/milspec-repo | grep -x "milspecd: /usr/bin/milspec-repo"'
	if wait_for 60 active && wait_for 60 prop_is CommittedVersion 1.7.0 && live_is 1.7.0 &&
		milspecctl status >/tmp/down.status 2>&1 && grep -q 1.7.0 /tmp/down.status &&
		state_complete 1.0.0 1.1.0 1.6.0 1.7.0 >/dev/null && journal_clean "$_since"; then
		ok downgrade-kept "$(dpkg-query -W -f '${Version}' milspecd): active, 1.7.0 committed and live, record kept"
	else
		bad downgrade-kept "active $(systemctl is-active milspecd.service), committed $(prop CommittedVersion), live $(live_version): $(journalctl -q -o cat -u milspecd.service --since "$_since" | tail -n 4 | tr '\n' ' ')"
	fi
	publish 6
	check downgrade-commit sh -c 'milspecctl check && [ "$(cat /sys/module/dell_milspec/version)" = 1.8.0 ]'
	_since=$(date '+%Y-%m-%d %H:%M:%S')
	# The publisher's tool comes back as a package of its own, taking over
	# the file the previous milspecd shipped.
	check upgrade-deb dpkg -i "$IN"/deb/milspecd_*-3_amd64.deb "$IN"/deb/milspec-repo_*_amd64.deb
	check upgrade-paths sh -c '[ -x /usr/sbin/milspecd ] && [ ! -e /usr/bin/milspecd ] &&
		dpkg -S /usr/bin/milspec-repo | grep -x "milspec-repo: /usr/bin/milspec-repo" &&
		! dpkg -L milspecd | grep -q milspec-repo && milspec-repo --version'
	if wait_for 60 active && wait_for 60 prop_is CommittedVersion 1.8.0 && live_is 1.8.0 &&
		dpkg-query -W -f '${Version}' milspecd | grep -q -- '-3$' &&
		milspecctl slots >/tmp/up.slots 2>&1 && grep -q 1.8.0 /tmp/up.slots && grep -q 1.7.0 /tmp/up.slots &&
		journal_clean "$_since"; then
		ok upgrade-kept "active, 1.8.0 (committed by the previous release) still committed and live, 1.7.0 still in the other slot"
	else
		bad upgrade-kept "active $(systemctl is-active milspecd.service), committed $(prop CommittedVersion), live $(live_version): $(journalctl -q -o cat -u milspecd.service --since "$_since" | tail -n 4 | tr '\n' ' ')"
	fi
	# Format 1 both ways: nothing to migrate; every committed version kept.
	check upgrade-state state_complete 1.0.0 1.1.0 1.6.0 1.7.0 1.8.0
}

boot1() {
	info "machine: $(cat /sys/class/dmi/id/sys_vendor) / $(cat /sys/class/dmi/id/product_name), kernel $(uname -r)"
	serve_mirror
	publish 1
	# README.md, "Install on a host", step by step. 1: the package, before
	# any key: the service is skipped by its condition, not failed, and
	# stays so (longer than RestartSec=5s: no restart loop).
	check deb-install dpkg -i "$IN"/deb/milspecd_*-2_amd64.deb
	if wait_for 60 skipped_by_condition && sleep 7 && skipped_by_condition >/tmp/skipped.out; then
		ok fresh-skipped "$(tr '\n' ' ' </tmp/skipped.out)"
	else
		bad fresh-skipped "$(unit_facts | tr '\n' ' '): $(journalctl -b -q -o cat -u milspecd.service | tail -n 3 | tr '\n' ' ')"
	fi
	# 2: the mirror, in a drop-in (the toml is a conffile), by name:
	# exercises the resolver.
	install -m 0644 "$IN/50-systest.toml" /etc/milspecd/conf.d/50-site.toml
	# The metrics folder, as prometheus-node-exporter makes it (the unit's
	# ReadWritePaths= opens it to the daemon).
	install -d -m 0755 /var/lib/prometheus/node-exporter
	# 3: the trusted key: milspecd.path starts the daemon.
	install -m 0644 "$IN/release.pub" /etc/milspecd/keys/
	check unit-active wait_for 120 active
	check path-started started_by_path
	check udev-started udev_started
	check ctl-status milspecctl status
	polkit_checks
	check status-text sh -c 'systemctl show -p StatusText --value milspecd.service | grep .'
	check unit-verify sh -c '! systemd-analyze verify milspecd.service 2>&1 | grep .'
	info "security: $(systemd-analyze security milspecd.service 2>&1 | tail -n 1)"
	check udev-rule-test sh -c 'udevadm test /sys/devices/virtual/dmi/id 2>&1 | grep "SYSTEMD_WANTS=milspecd.path milspecd.service"'

	# The daemon polls at start: 1.0.0 is its first install.
	if wait_for 180 prop_is CommittedVersion 1.0.0 && live_is 1.0.0; then
		ok poll-first-install "1.0.0 committed, live $(live_version)"
	else
		bad poll-first-install "state $(prop State), committed $(prop CommittedVersion), live $(live_version): $(journalctl -b -u milspecd -q -o cat | tail -n 5 | tr '\n' ' ')"
	fi
	# The first poll asked systemd over the bus whether network-online.target
	# is active, and it was (no warning that it could not ask or timed out).
	check first-poll-network sh -c 'journalctl -b -u milspecd -q -o cat | grep "network-online.target is active" &&
		! journalctl -b -u milspecd -q -o cat | grep -e "cannot ask systemd" -e "polling anyway"'
	# 4: the first check (README): nothing newer than the committed 1.0.0.
	check first-check sh -c 'milspecctl check && [ "$(cat /sys/module/dell_milspec/version)" = 1.0.0 ]'

	publish 2
	check swap-commit sh -c 'milspecctl check && [ "$(cat /sys/module/dell_milspec/version)" = 1.1.0 ]'
	# The compliance report from the daemon under its hardened unit: it
	# reads /proc/keys and places every key in its keyring (keyctl is not
	# filtered), its taint is the kernel's, the live 1.1.0 is the
	# committed build.
	milspecctl report --json 2>&1 | tr -d '\n' | sed 's/  */ /g' >/tmp/report.json
	check report-under-unit sh -c 'r=$(cat /tmp/report.json) &&
		echo "$r" | grep -q "\"schema\": \"milspec.report/1\"" &&
		echo "$r" | grep -q "\"keyring\": \".builtin_trusted_keys\"" &&
		! echo "$r" | grep -q "\"keys\": null" &&
		! echo "$r" | grep -q "\"keyring\": null" &&
		echo "$r" | grep -q "\"taint\": { \"value\": $(cat /proc/sys/kernel/tainted)," &&
		echo "$r" | grep -q "\"live_module\": { \"loaded\": true, \"version\": \"1.1.0\"" &&
		echo "$r" | grep -q "\"committed_build\": true" && echo "$r" | grep -q "\"file_matches\": true" ||
		{ echo "$r"; exit 1; }'

	publish 3
	milspecctl check >/tmp/rb.out 2>&1
	rc=$?
	if [ "$rc" = 3 ] && live_is 1.1.0 && prop_is CommittedVersion 1.1.0; then
		ok rollback "exit 3, live $(live_version): $(tail -n 1 /tmp/rb.out)"
	else
		bad rollback "exit $rc, live $(live_version): $(one_line /tmp/rb.out)"
	fi

	publish 4
	trial_then_commit restart-mid-trial 1.6.0 systemctl restart milspecd.service
	check restart-resumed journal_has "$ID_RECOVERY" 'resumed'

	publish 5
	trial_then_commit upgrade-mid-trial 1.7.0 dpkg -i "$IN"/deb/milspecd_*-3_amd64.deb
	check upgraded sh -c 'dpkg-query -W -f "\${Version}" milspecd | grep -- "-3$"'

	for e in INSTALL_STARTED:$ID_INSTALL_STARTED SWAPPED:$ID_SWAPPED COMMITTED:$ID_COMMITTED \
		ROLLED_BACK:$ID_ROLLED_BACK RECOVERY:$ID_RECOVERY; do
		check "journal-${e%%:*}" sh -c "journalctl -b -q MESSAGE_ID=${e#*:} -o cat | tail -n 1 | grep ."
	done
	check catalog sh -c "journalctl --list-catalog 2>/dev/null | grep -q $ID_COMMITTED && journalctl -b -q -x MESSAGE_ID=$ID_COMMITTED | grep -q 'Subject: dell-milspec .* committed'"
	check metrics sh -c 'grep -q "^milspecd_info{.*committed_version=\"1.7.0\"" /var/lib/prometheus/node-exporter/milspecd.prom && grep "^milspecd_rollbacks_total{reason=" /var/lib/prometheus/node-exporter/milspecd.prom && grep -q "^milspecd_heartbeat_timestamp_seconds " /var/lib/prometheus/node-exporter/milspecd.prom'
	check watchdog sh -c '[ "$(systemctl show -p WatchdogUSec --value milspecd.service)" = 1min ] && [ "$(systemctl show -p NRestarts --value milspecd.service)" = 0 ]'

	# Drift: a module loaded behind the daemon's back is reported and left
	# alone; removing it makes udev tell the daemon, which loads the
	# committed slot again.
	systemctl stop milspecd.service
	rmmod dell_milspec
	insmod "$IN/foreign.ko"
	systemctl start milspecd.service
	check drift-reported sh -c "journalctl -b -q MESSAGE_ID=$ID_DRIFT -o cat | grep . && [ \"\$(cat /sys/module/dell_milspec/version)\" = 1.0.0 ]"
	rmmod dell_milspec
	if wait_for 60 live_is 1.7.0; then
		ok udev-drift-remove "udev ran milspecctl reconcile on remove: committed 1.7.0 loaded again"
	else
		bad udev-drift-remove "live $(live_version) 60 s after rmmod: $(journalctl -b -u milspecd -q -o cat | tail -n 3 | tr '\n' ' ')"
	fi

	# modprobe (boot-time autoload, an operator's modprobe) loads the
	# committed slot, never a stale copy.
	systemctl stop milspecd.service
	rmmod dell_milspec
	check modprobe-committed sh -c 'modprobe dell_milspec && [ "$(cat /sys/module/dell_milspec/version)" = 1.7.0 ]'
	systemctl start milspecd.service
	check final-active wait_for 60 active
	# The kernel postinst hook, as the kernel package runs it: the running
	# kernel is covered; one with no build anywhere gets a warning; both exit 0.
	check kernel-hook sh -c '/etc/kernel/postinst.d/milspecd "$(uname -r)" | grep -q kernel-ready &&
		/etc/kernel/postinst.d/milspecd 6.12.999-nobuild 2>&1 | grep -q "WARNING: no dell-milspec build for kernel 6.12.999-nobuild"'
	info "status: $(milspecctl status 2>&1 | tr '\n' ';')"
	cross_version
	info "status: $(milspecctl status 2>&1 | tr '\n' ';')"
}

boot2() {
	info "machine: $(cat /sys/class/dmi/id/sys_vendor), after a reboot"
	check reboot-udev-started wait_for 120 udev_started
	check reboot-committed-loaded wait_for 60 live_is 1.8.0
	check reboot-ctl-status sh -c 'milspecctl status | grep 1.8.0'
	check reboot-recovery journal_has "$ID_RECOVERY"
}

boot3() {
	info "machine: $(cat /sys/class/dmi/id/sys_vendor) / $(cat /sys/class/dmi/id/product_name)"
	# Give udev's coldplug and any wants time to act before judging.
	udevadm settle --timeout=60
	sleep 3
	check non-dell-inactive sh -c '! systemctl is-active --quiet milspecd.service && ! systemctl show -p WantedBy --value milspecd.service | grep -q dmi &&
		! systemctl is-active --quiet milspecd.path'
	check non-dell-no-module test ! -e /sys/module/dell_milspec
	check purge dpkg --purge milspec-repo milspecd
	left=$(find / -xdev \( -path /systest -o -path /srv -o -path /proc -o -path /sys \) -prune -o \
		-iname '*milspec*' -print 2>/dev/null | sort | tr '\n' ' ')
	info "left after purge: ${left:-nothing}"
	check purge-clean test -z "$left"
	check purge-dpkg sh -c '! dpkg-query -W -f "\${Status}" milspecd milspec-repo 2>/dev/null | grep -q installed'
}

# The scenario starts: from here on a failure is a failed check, never a
# boot that died before its scenario (tests/system/run.sh retries those).
mark "START boot=$BOOT +$(elapsed)s uptime=$(cut -d' ' -f1 /proc/uptime)s"
case $BOOT in
1) boot1 ;;
2) boot2 ;;
3) boot3 ;;
*) bad boot "unknown boot number '$BOOT'" ;;
esac
journalctl -b -u milspecd.service -q -o short-monotonic >/tmp/milspecd.journal 2>&1
info "journal of milspecd (last lines): $(tail -n 8 /tmp/milspecd.journal | tr '\n' ' ' | tail -c 1500)"
