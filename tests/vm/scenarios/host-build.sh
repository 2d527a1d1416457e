# SPDX-License-Identifier: GPL-2.0
# vm-scenario: host side: the module builds W=1 and sparse clean (production
#   and every fault build), "make -C kmod" gives kmod/dell-milspec.ko named
#   dell_milspec, VERSION= and FAULT= behave, and the production .ko holds
#   no fault code (nm, strings) while every fault build does.
# where: host
# timeout: 300
# shellcheck shell=bash
set -euo pipefail
# (grep -q closes its pipe early: with pipefail, feed it from <<<"$(...)".)

: "${REPO_ROOT:?}" "${KDIR:?}" "${KO_DIR:?}" "${KERNEL_RELEASE:?}" "${RUNDIR:?}"
FAULTS=(warn oops selftest busy panic slowinit degraded warnlater)
# What only fault code puts in a module: its symbols, messages, status key,
# parameter and build flag.  (Plain "fault" is everywhere in debug info.)
FAULT_CODE='milspec_fault|fault_release|fault_warn|fault (warn|oops|selftest|busy|panic|slowinit|degraded|warnlater)|^fault: |MILSPEC_FAULT|injected'
VERSION=$(cat "$REPO_ROOT/kmod/VERSION")

step() {
	printf '== %s\n' "$*"
}

die() {
	printf 'FAIL: %s\n' "$*" >&2
	exit 1
}

step "W=1 + sparse, production build"
make -s -C "$REPO_ROOT/kmod" KDIR="$KDIR" CHECK_DIR="$RUNDIR/check-prod" check

step "W=1 + sparse, fault builds (${FAULTS[*]})"
pids=()
for f in "${FAULTS[@]}"; do
	make -s -C "$REPO_ROOT/kmod" KDIR="$KDIR" FAULT="$f" CHECK_DIR="$RUNDIR/check-$f" \
		check >"$RUNDIR/check-$f.out" 2>&1 &
	pids+=($!)
	if ((${#pids[@]} == 2)); then
		wait "${pids[0]}" || { cat "$RUNDIR"/check-*.out; die "fault build check failed"; }
		pids=("${pids[@]:1}")
	fi
done
for p in "${pids[@]}"; do
	wait "$p" || { cat "$RUNDIR"/check-*.out; die "fault build check failed"; }
done

step "make -C kmod (in a copy of the tree) builds kmod/dell-milspec.ko"
copy=$RUNDIR/tree
mkdir -p "$copy/kmod"
(cd "$REPO_ROOT/kmod" && cp Kbuild Makefile VERSION dkms.conf ./*.c "$copy/kmod/")
make -s -C "$copy/kmod" KDIR="$KDIR" >"$RUNDIR/inplace.log" 2>&1 ||
	{ cat "$RUNDIR/inplace.log"; die "make -C kmod failed"; }
ko=$copy/kmod/dell-milspec.ko
[[ -f $ko ]] || die "no $ko"
[[ $(modinfo -F name "$ko") == dell_milspec ]] || die "module name is not dell_milspec"
[[ $(modinfo -F version "$ko") == "$VERSION" ]] || die "version is not $VERSION"
[[ $(modinfo -F license "$ko") == GPL ]] || die "license is not GPL"
[[ $(modinfo -F vermagic "$ko") == "$KERNEL_RELEASE "* ]] || die "vermagic is not $KERNEL_RELEASE"
grep -q '^mode5_level:' <<<"$(modinfo -F parm "$ko")" || die "no mode5_level parameter"
grep -q '^force:' <<<"$(modinfo -F parm "$ko")" || die "no force parameter"
cp "$ko" "$RUNDIR/inplace.ko"
make -s -C "$copy/kmod" clean
[[ -z $(find "$copy/kmod" -name '*.o' -o -name '*.ko') ]] || die "make clean left objects"
ko=$RUNDIR/inplace.ko

step "make VERSION=1.2.3 overrides the version; bad VERSION and FAULT are refused"
make -s -C "$REPO_ROOT/kmod" KDIR="$KDIR" VERSION=1.2.3 BUILD_DIR="$RUNDIR/v123" \
	>"$RUNDIR/v123.log" 2>&1 || { cat "$RUNDIR/v123.log"; die "VERSION=1.2.3 build failed"; }
[[ $(modinfo -F version "$RUNDIR/v123/dell-milspec.ko") == 1.2.3 ]] || die "VERSION=1.2.3 not applied"
if make -s -C "$REPO_ROOT/kmod" KDIR="$KDIR" VERSION='1.2"3' BUILD_DIR="$RUNDIR/vbad" \
	>"$RUNDIR/vbad.log" 2>&1; then
	die "a version with a quote was accepted"
fi
grep -q 'may only use' "$RUNDIR/vbad.log" || { cat "$RUNDIR/vbad.log"; die "no clear error for a bad version"; }
if make -s -C "$REPO_ROOT/kmod" KDIR="$KDIR" FAULT=bogus BUILD_DIR="$RUNDIR/fbad" \
	>"$RUNDIR/fbad.log" 2>&1; then
	die "FAULT=bogus was accepted"
fi
grep -q 'unknown fault "bogus"' "$RUNDIR/fbad.log" || { cat "$RUNDIR/fbad.log"; die "no clear error for FAULT=bogus"; }

step "production .ko has no fault code; every fault build has some"
for ko in "$ko" "$KO_DIR/prod/dell-milspec.ko" "$KO_DIR"/v1.[01].0/dell-milspec.ko; do
	[[ -f $ko ]] || die "missing $ko"
	if nm "$ko" | grep -i fault; then
		die "fault symbols in $ko"
	fi
	if strings -a "$ko" | grep -E "$FAULT_CODE"; then
		die "fault strings in $ko"
	fi
	if grep -q '^fault' <<<"$(modinfo -F parm "$ko")"; then
		die "fault parameter in $ko"
	fi
	echo "clean: ${ko#"$RUNDIR"/}"
done
for f in "${FAULTS[@]}"; do
	ko=$KO_DIR/$f/dell-milspec.ko
	case $f in
	busy | oops | panic)
		# these keep named fault functions or parameters; the rest may
		# be inlined away, leaving only their strings
		grep -qi fault <<<"$(nm "$ko")" || die "$f build: no fault symbol (the nm check is blind)"
		;;
	esac
	grep -Eq "$FAULT_CODE" <<<"$(strings -a "$ko")" || die "$f build: no fault strings (check is blind)"
done
echo "fault code found in every fault build: ${FAULTS[*]}"

step "version variants"
for v in 1.0.0 1.1.0; do
	[[ $(modinfo -F version "$KO_DIR/v$v/dell-milspec.ko") == "$v" ]] || die "v$v has the wrong version"
done
[[ $(modinfo -F version "$KO_DIR/v1.2.0-warn/dell-milspec.ko") == 1.2.0 ]] || die "v1.2.0-warn has the wrong version"
echo "ok"
