# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=sh
#
# Helpers for scenario scripts running inside the guest (busybox sh, with
# "set -eu").  $BOOT is the boot number (1, 2, ...).  A failed helper calls
# fail, which ends the scenario; do not call helpers that may fail inside
# $(...), where exit would only leave the subshell.

KO_ROOT=/opt/ko
MOD=dell_milspec
PROC_DIR=/proc/milspec
PARAM_DIR=/sys/module/$MOD/parameters

say() {
	echo "vm-guest: $*"
}

fail() {
	echo "vm-guest: FAIL: $*"
	exit 1
}

# check DESCRIPTION CMD...: CMD must succeed.
check() {
	_desc=$1
	shift
	"$@" || fail "$_desc (command: $*)"
	say "ok: $_desc"
}

# expect_eq WHAT GOT WANT
expect_eq() {
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
	say "ok: $1 = '$3'"
}

# expect_match WHAT TEXT EXTENDED-REGEX
expect_match() {
	printf '%s\n' "$2" | grep -Eq -- "$3" || fail "$1: '$2' does not match /$3/"
	say "ok: $1 matches /$3/"
}

# expect_no_match WHAT TEXT EXTENDED-REGEX
expect_no_match() {
	if printf '%s\n' "$2" | grep -Eq -- "$3"; then
		fail "$1: '$2' matches /$3/"
	fi
	say "ok: $1 does not match /$3/"
}

# expect_ge WHAT GOT MIN / expect_le WHAT GOT MAX (integers)
expect_ge() {
	[ "$2" -ge "$3" ] || fail "$1: got $2, want >= $3"
	say "ok: $1 = $2 (>= $3)"
}

expect_le() {
	[ "$2" -le "$3" ] || fail "$1: got $2, want <= $3"
	say "ok: $1 = $2 (<= $3)"
}

# ko VARIANT: path of a built module (prod, warn, oops, ..., v1.0.0, ...)
ko() {
	echo "$KO_ROOT/$1/dell-milspec.ko"
}

# The two kernels' releases, written by the host: KERNEL_RELEASE_NEW (every
# boot's default) and KERNEL_RELEASE_OLD.
if [ -f /vm/kernels.env ]; then
	. /vm/kernels.env
fi

# kernel_release old|new: that kernel's release (as uname -r prints it).
kernel_release() {
	case $1 in
	old) echo "${KERNEL_RELEASE_OLD:-}" ;;
	new) echo "${KERNEL_RELEASE_NEW:-}" ;;
	*) echo "kernel_release: '$1' is neither old nor new" >&2 ;;
	esac
}

# kernel_is old|new: the running kernel is that one.
kernel_is() {
	[ -n "$(kernel_release "$1")" ] && [ "$(uname -r)" = "$(kernel_release "$1")" ]
}

# boot_kernel: old or new, the kernel the host booted for this boot (the
# scenario's "# kernels:" header; new without one).
boot_kernel() {
	sed -n 's/.*milspec_vm_kernel=\([a-z]*\).*/\1/p' /proc/cmdline
}

# kvariant VARIANT: the name of VARIANT's build for the running kernel:
# VARIANT@old on the old kernel, VARIANT on the new one (load "$(kvariant
# v1.1.0)").
kvariant() {
	if kernel_is old; then
		echo "$1@old"
	else
		echo "$1"
	fi
}

is_loaded() {
	[ -d "/sys/module/$MOD" ]
}

# Modules are loaded with vm-insmod: one finit_module() call, like milspecd.
# (busybox insmod retries a failure with init_module(), running init twice.)

# load VARIANT [PARAM=VALUE...]: must succeed.
load() {
	_ko=$(ko "$1")
	shift
	[ -f "$_ko" ] || fail "no module $_ko (does the scenario declare '# needs: kmod-faults'?)"
	vm-insmod "$_ko" "$@" || fail "loading $_ko $* failed"
}

# load_fails VARIANT [PARAM=VALUE...]: must fail; the error message is left
# in $LOAD_ERROR ("... No such device (errno 19)").
load_fails() {
	_ko=$(ko "$1")
	shift
	[ -f "$_ko" ] || fail "no module $_ko"
	if vm-insmod "$_ko" "$@" 2>/tmp/insmod.err; then
		fail "loading $_ko $* succeeded, expected a failure"
	fi
	LOAD_ERROR=$(cat /tmp/insmod.err)
	say "loading $_ko $* refused: $LOAD_ERROR"
}

unload() {
	rmmod "$MOD" || fail "rmmod $MOD failed"
}

# unload_fails: rmmod must fail; the message is left in $UNLOAD_ERROR.
unload_fails() {
	if rmmod "$MOD" 2>/tmp/rmmod.err; then
		fail "rmmod $MOD succeeded, expected a failure"
	fi
	UNLOAD_ERROR=$(cat /tmp/rmmod.err)
	say "rmmod refused: $UNLOAD_ERROR"
}

# status KEY: value of KEY in /proc/milspec/status (empty if missing).
status() {
	sed -n "s/^$1: //p" "$PROC_DIR/status"
}

# param NAME: current value of a module parameter.
param() {
	cat "$PARAM_DIR/$1"
}

# set_param NAME VALUE: returns the write's status (no fail).
set_param() {
	echo "$2" > "$PARAM_DIR/$1"
}

# counter NAME: /sys/kernel/NAME (warn_count, oops_count).
counter() {
	cat "/sys/kernel/$1"
}

tainted() {
	cat /proc/sys/kernel/tainted
}

# taint_bit N: 1 if taint bit N is set (W=9, D=7, O=12, E=13).
taint_bit() {
	echo $((($(tainted) >> $1) & 1))
}

# dmesg_has EXTENDED-REGEX
dmesg_has() {
	dmesg | grep -Eq -- "$1"
}

# uptime_ms: milliseconds since boot (10 ms resolution).
uptime_ms() {
	_up=$(cut -d' ' -f1 /proc/uptime)
	echo $((${_up%.*} * 1000 + $(echo "${_up#*.}" | sed 's/^0//') * 10))
}

# expect_panic: this boot is meant to end in a kernel panic; the host then
# accepts qemu exiting without a PASS marker if the console shows the panic.
expect_panic() {
	sync
	echo "@@VM:EXPECT-PANIC boot=$BOOT@@"
}
