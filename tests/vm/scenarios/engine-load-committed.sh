# SPDX-License-Identifier: GPL-2.0
# vm-scenario: `milspecd load-committed` (modprobe's install hook) loads the
#   committed slot on the real kernel with its parameters, answers 0 when the
#   module is already loaded, and refuses a tampered slot.
# vendor: Dell Inc.
# boots: 1
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

# load_committed WANT_EXIT [PARAM=VALUE...]: output kept in /tmp/lc.out.
load_committed() {
	_want=$1
	shift
	_rc=0
	milspecd load-committed --config "$CONF" -- "$@" >/tmp/lc.out 2>&1 || _rc=$?
	sed 's/^/    > /' /tmp/lc.out
	[ "$_rc" = "$_want" ] || fail "milspecd load-committed $*: exit $_rc, want $_want"
	say "ok: load-committed $* exited $_rc"
}

install_pkg 1.1.0 0
expect_eq "live version" "$(live_version)" 1.1.0
slot=$(history_last committed slot)
check "rmmod" unload
expect_eq "unloaded" "$(live_version)" none

load_committed 0 mode5_level=2
expect_eq "committed version live again" "$(live_version)" 1.1.0
expect_eq "parameter given to load-committed" "$(param mode5_level)" 2
expect_eq "module state" "$(status state)" ok
expect_match "what was loaded" "$(cat /tmp/lc.out)" "loaded dell_milspec 1.1.0 from slot $slot"

load_committed 0
expect_match "already loaded" "$(cat /tmp/lc.out)" "already loaded"

check "rmmod" unload
printf 'X' >>"$STATE/slots/$slot/module.ko"
load_committed 1
expect_match "tampered slot refused" "$(cat /tmp/lc.out)" "does not match its manifest"
expect_eq "nothing loaded" "$(live_version)" none
