#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The full-system test (docs/service.md): the .deb installed on a real
# Debian 12 userland (debootstrap) with systemd, udev and the system bus,
# booted under QEMU on the pinned kernel. Three boots on one disk: a Dell
# identity (README.md's "Install on a host": the package before any key,
# skipped and not failed, then the key starts it; pull, swap, commit,
# rollback, restart and upgrade mid-trial, drift, modprobe, a downgrade to
# the previous release and an upgrade back, each with a committed slot), a
# reboot on it (udev starts the daemon, the committed module loads), then a
# non-Dell identity (the daemon stays off; purge leaves nothing). Each check in the guest is one marker line; this
# harness asserts the expected list and prints a summary with wall time.
# Run as root: bash tests/system/run.sh
set -euo pipefail

SYS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/lib/common.sh
. "$SYS_DIR/../lib/common.sh"
# The pinned kernel, module builds and qemu prerequisites of the VM tier.
# shellcheck source=tests/vm/lib.sh
. "$SYS_DIR/../vm/lib.sh"

T_START=$(vm_now)
SYS_CACHE=${MILSPEC_SYSTEM_CACHE:-$REPO_ROOT/.cache/system}
RUN=$SYS_CACHE/run
SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# What the guest needs beyond minbase; nothing can be installed there later.
# polkitd (+ libpam-systemd, its logind): a non-root operator authorized by
# a site's polkit rule.
INCLUDE=systemd,systemd-sysv,dbus,udev,kmod,polkitd,libpam-systemd
# Seconds each boot may take at most (TCG is slow; CI may be slower).
BOOT_TIMEOUT=(0 900 480 480)
# Seconds a boot gets to start its scenario (the START marker of guest.sh);
# one that does not died at boot (an Oops, a panic, a hang) and is tried once
# more, loudly. A failed check is never tried again.
START_TIMEOUT=${SYS_START_TIMEOUT:-240}
# vCPUs of the guest. One: with -smp 2 under multi-threaded TCG an early-boot
# Oops (int3 in sched_clock_cpu, while the kernel patches its own code) was
# seen once in a full run; docs/vm-tests.md has the measurements.
SYS_SMP=${SYS_SMP:-1}
SYS_ACCEL=${SYS_ACCEL:-tcg}
# For testing the harness: the first N boots panic before their scenario.
SYS_INJECT_BOOT_DEATHS=${SYS_INJECT_BOOT_DEATHS:-0}
SYS_INJECTED=0
# The root disk's MBR id: root=PARTUUID=<id>-01.
ROOT_DISK_ID=5eed5eed
SYS_QEMU_PID=
trap 'if [[ -n $SYS_QEMU_PID ]]; then kill -TERM "$SYS_QEMU_PID" 2>/dev/null || true; fi' EXIT

# Module releases served by the mirror, in publication order:
# VERSION:KO_VARIANT. 1.2.0 WARNs at init (rolled back); 1.6.0 and 1.7.0
# are good releases put on trial while the daemon is restarted/upgraded.
# 1.8.0 is committed by the previous release after the downgrade.
RELEASES=(1.0.0:v1.0.0 1.1.0:v1.1.0 1.2.0:v1.2.0-warn 1.6.0:v1.6.0 1.7.0:v1.7.0 1.8.0:v1.8.0)
# shellcheck disable=SC2034 # read by vm_build_kos (tests/vm/lib.sh)
KO_VARIANTS=(v1.0.0::1.0.0 v1.1.0::1.1.0 v1.2.0-warn:warn:1.2.0 v1.6.0::1.6.0 v1.7.0::1.7.0 v1.8.0::1.8.0)
# The previous release, for the downgrade and upgrade of boot 1: the
# daemon as it was before its formats could evolve (docs/format.md,
# "Format versions and evolution"), built from this commit with
# `git archive` and packaged with `--deb-revision 0`, which cargo deb
# writes as no revision (0.1.0): below this tree's 0.1.0-2 and 0.1.0-3,
# so dpkg sees a downgrade. It still ships milspec-repo and
# /usr/bin/milspecd. Cached per commit in $SYS_CACHE/old-deb/.
SYS_OLD_REF=${SYS_OLD_REF:-e71cd1aa8c94f735a71f15a8606b8c0ced3ae823}

# Checks each boot must report OK (names from guest/guest.sh).
EXPECT=(""
"deb-install fresh-skipped unit-active path-started udev-started ctl-status status-text unit-verify udev-rule-test
 polkit-authorized polkit-resume polkit-denied
 poll-first-install first-poll-network first-check swap-commit report-under-unit rollback restart-mid-trial restart-resumed upgrade-mid-trial upgraded
 journal-INSTALL_STARTED journal-SWAPPED journal-COMMITTED journal-ROLLED_BACK journal-RECOVERY
 catalog metrics watchdog drift-reported udev-drift-remove modprobe-committed final-active kernel-hook
 downgrade-deb downgrade-paths downgrade-kept downgrade-commit upgrade-deb upgrade-paths upgrade-kept upgrade-state"
"reboot-udev-started reboot-committed-loaded reboot-ctl-status reboot-recovery"
"non-dell-inactive non-dell-no-module purge purge-clean purge-dpkg")
VENDOR=("" "Dell Inc." "Dell Inc." "LENOVO")
PRODUCT=("" "Latitude 5430 Rugged" "Latitude 5430 Rugged" "ThinkPad T14")

log() { printf 'system: %s\n' "$*" >&2; }

# ------------------------------------------------------------ base image

# sys_base_image: a trimmed Debian 12 userland as an ext4 image, cached by
# a hash of everything that goes into it; prints its path.
sys_base_image() {
	local hash base root t0
	hash=$({
		printf '%s\n' "$SUITE" "$INCLUDE" "$KERNEL_RELEASE" "$ROOT_DISK_ID"
		sed -n -e '/^sys_base_image()/,/^}/p' -e '/^# BASE-IMAGE-BEGIN/,/^# BASE-IMAGE-END/p' "$SYS_DIR/run.sh"
		cat "$SYS_DIR/guest/systest-run" "$SYS_DIR/guest/systest.service"
		sha256sum /bin/busybox
	} | sha256sum | cut -c1-16)
	base=$SYS_CACHE/base-$hash.raw
	if [[ -s $base ]]; then
		printf '%s\n' "$base"
		return 0
	fi
	t0=$(vm_now)
	root=$SYS_CACHE/rootfs.tmp
	rm -rf "$root"
	mkdir -p "$SYS_CACHE/debs"
	log "debootstrap $SUITE ($INCLUDE), a minute or two"
	debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$SYS_CACHE/debs" \
		"$SUITE" "$root" "$DEBIAN_MIRROR" >"$SYS_CACHE/debootstrap.log" 2>&1 ||
		{ tail -n 20 "$SYS_CACHE/debootstrap.log" >&2; die "debootstrap failed (log: $SYS_CACHE/debootstrap.log)"; }
	sys_trim "$root"
	find "$SYS_CACHE" -maxdepth 1 -name 'base-*.raw' -delete
	mkfs.ext4 -q -F -L vmroot -E lazy_itable_init=0,lazy_journal_init=0 -d "$root" "$SYS_CACHE/fs.tmp" 2G >&2 ||
		die "mkfs.ext4 -d $root failed"
	# One partition with a fixed PARTUUID: the kernel finds its root by
	# that, whatever order the NVMe namespaces are probed in.
	rm -f "$base.tmp"
	truncate -s $((2048 + 1))M "$base.tmp"
	printf 'label: dos\nlabel-id: 0x%s\nstart=2048, type=83\n' "$ROOT_DISK_ID" | sfdisk -q "$base.tmp" >&2 ||
		die "sfdisk $base.tmp failed"
	dd if="$SYS_CACHE/fs.tmp" of="$base.tmp" bs=1M seek=1 conv=notrunc,sparse status=none
	rm -f "$SYS_CACHE/fs.tmp"
	mv "$base.tmp" "$base"
	rm -rf "$root"
	log "base image built in $(vm_elapsed "$t0")s: $base"
	printf '%s\n' "$base"
}

# BASE-IMAGE-BEGIN (hashed: a change here rebuilds the base image)
# sys_trim ROOT: boot from NVMe without an initramfs, fast under TCG, and
# the test runner unit.
sys_trim() {
	local r=$1 u
	printf 'systest\n' >"$r/etc/hostname"
	printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n127.0.1.1 systest\n' >"$r/etc/hosts"
	printf 'PARTUUID=%s-01 / ext4 rw,errors=remount-ro 0 1\n' "$ROOT_DISK_ID" >"$r/etc/fstab"
	# Empty: each run gives systemd.machine_id= on the command line.
	: >"$r/etc/machine-id"
	rm -f "$r/var/lib/dbus/machine-id"
	# Nothing the test does not need: timers, gettys, first-boot prompts.
	for u in apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer \
		e2scrub_reap.service fstrim.timer systemd-tmpfiles-clean.timer getty@tty1.service \
		serial-getty@ttyS0.service systemd-firstboot.service systemd-timesyncd.service \
		console-getty.service; do
		ln -sf /dev/null "$r/etc/systemd/system/$u"
	done
	# No kernel modules in the guest (the root is on NVMe, built in): an
	# empty module tree so modprobe and udev find their indexes.
	mkdir -p "$r/lib/modules/$KERNEL_RELEASE"
	touch "$r/lib/modules/$KERNEL_RELEASE"/modules.{order,builtin,builtin.modinfo}
	depmod -b "$r" "$KERNEL_RELEASE"
	install -D -m 0755 /bin/busybox "$r/usr/local/bin/busybox"
	install -D -m 0755 "$SYS_DIR/guest/systest-run" "$r/usr/local/sbin/systest-run"
	install -D -m 0644 "$SYS_DIR/guest/systest.service" "$r/etc/systemd/system/systest.service"
	mkdir -p "$r/etc/systemd/system/multi-user.target.wants"
	ln -sf /etc/systemd/system/systest.service "$r/etc/systemd/system/multi-user.target.wants/systest.service"
	rm -rf "$r/var/cache/apt/archives"/*.deb "$r/var/lib/apt/lists"/*
}
# BASE-IMAGE-END

# ------------------------------------------------------------ test inputs

# sys_old_deb: the previous release's package (SYS_OLD_REF), built once
# per commit from `git archive` in this tree's target folder (its crates
# are the same, so only the workspace's own crates build again).
sys_old_deb() {
	local commit cache src bin
	commit=$(git -C "$REPO_ROOT" rev-parse --verify "$SYS_OLD_REF^{commit}") ||
		die "SYS_OLD_REF $SYS_OLD_REF is not a commit of this repository"
	cache=$SYS_CACHE/old-deb/$commit
	mkdir -p "$RUN/in/deb-old"
	if ! ls "$cache"/milspecd_*_amd64.deb >/dev/null 2>&1; then
		log "previous release: git archive ${commit:0:12}; cargo build --locked --release --bins; cargo deb --deb-revision 0"
		src=$RUN/old-src
		rm -rf "$src" "$cache.tmp"
		mkdir -p "$src" "$cache.tmp"
		git -C "$REPO_ROOT" archive "$commit" | tar -x -C "$src"
		(cd "$src" && CARGO_TARGET_DIR=$REPO_ROOT/target cargo build --locked --release --bins \
			>"$RUN/cargo-deb-old.log" 2>&1 &&
			CARGO_TARGET_DIR=$REPO_ROOT/target cargo deb -p milspecd --no-build --deb-revision 0 \
				-o "$cache.tmp/" >>"$RUN/cargo-deb-old.log" 2>&1) ||
			{ tail -n 30 "$RUN/cargo-deb-old.log" >&2; die "previous release build failed (log: $RUN/cargo-deb-old.log)"; }
		# Its binaries must not stand in for this tree's: the build below
		# links them again, and fails loudly if it did not.
		for bin in milspecd milspecctl milspec-repo; do
			rm -f "$REPO_ROOT/target/release/$bin"
		done
		rm -rf "$src" "$cache"
		mv "$cache.tmp" "$cache"
	fi
	cp "$cache"/milspecd_*_amd64.deb "$RUN/in/deb-old/"
}

# sys_debs: the two packages as daemon/debian/build-debs makes them (the
# release build, cargo deb, lintian), and a rebuild of milspecd with the
# next revision (the upgrade taken mid-trial), all from the same build.
sys_debs() {
	local out=$RUN/in/deb rev
	mkdir -p "$out"
	rev=$(sed -n 's/^revision = "\(.*\)"$/\1/p' "$REPO_ROOT/daemon/Cargo.toml")
	[[ -n $rev ]] || die "no revision in daemon/Cargo.toml [package.metadata.deb]"
	log "daemon/debian/build-debs (cargo build --locked --release --bins; cargo deb; lintian)"
	rm -f "$REPO_ROOT"/target/debian/milspecd_*.deb "$REPO_ROOT"/target/debian/milspec-repo_*.deb
	sh "$REPO_ROOT/daemon/debian/build-debs" >"$RUN/build-debs.log" 2>&1 ||
		{ tail -n 30 "$RUN/build-debs.log" >&2; die "build-debs failed (log: $RUN/build-debs.log)"; }
	grep -a -e '^[EWI]: ' -e 'build-debs:' "$RUN/build-debs.log" >&2 || true
	cp "$REPO_ROOT"/target/debian/milspecd_*-"$rev"_amd64.deb "$REPO_ROOT"/target/debian/milspec-repo_*-"$rev"_amd64.deb "$out/"
	(cd "$REPO_ROOT" && cargo deb -p milspecd --no-build --deb-revision $((rev + 1)) -o "$out/" >>"$RUN/build-debs.log" 2>&1) ||
		die "cargo deb (revision $((rev + 1))) failed (log: $RUN/build-debs.log)"
}

# sys_mirror: signed packages and five mirror snapshots, each one release
# more, published in order by milspec-repo (the index version grows).
sys_mirror() {
	local repo=$REPO_ROOT/target/release/milspec-repo keys=$SYS_CACHE/keys
	local work=$RUN/mirror-work in=$RUN/in n=0 spec version variant
	if [[ ! -s $keys/release.key ]]; then
		rm -rf "$keys"
		mkdir -p "$keys"
		"$repo" keygen --out "$keys" --name release >/dev/null
	fi
	install -m 0644 "$keys/release.pub" "$in/release.pub"
	mkdir -p "$RUN/pkg" "$in/mirror"
	for spec in "${RELEASES[@]}"; do
		IFS=: read -r version variant <<<"$spec"
		n=$((n + 1))
		"$repo" pack --version "$version" --module "$KO_DIR/$variant/dell-milspec.ko" \
			--key "$keys/release.key" --out "$RUN/pkg/$version.mspkg" >/dev/null ||
			die "milspec-repo pack $version failed"
		"$repo" publish --mirror "$work" --key "$keys/release.key" "$RUN/pkg/$version.mspkg" >/dev/null ||
			die "milspec-repo publish $version failed"
		cp -a "$work" "$in/mirror/snap$n"
		printf '%s published\n' "$version" >"$in/mirror/snap$n.what"
	done
	# A module loaded by hand behind the daemon's back (drift).
	install -m 0644 "$KO_DIR/v1.0.0/dell-milspec.ko" "$in/foreign.ko"
	cat >"$in/50-systest.toml" <<-'TOML'
		# The full-system test's site settings (tests/system/run.sh).
		[source]
		url = "http://localhost:8080/"
		poll_interval = "1h"

		[health]
		probation = "15s"
	TOML
	install -m 0644 "$SYS_DIR/guest/guest.sh" "$in/guest.sh"
	(cd "$in" && tar -cf "$RUN/input.tar" .)
}

# ------------------------------------------------------------------ boots

# sys_boot N: one boot on the run's disk; 0 when the guest reported DONE,
# 2 when it died before its scenario started (no START marker), else 1.
sys_boot() {
	local n=$1 console markers t0 rc=0 start started='' extra=''
	if ((SYS_INJECTED < SYS_INJECT_BOOT_DEATHS)); then
		SYS_INJECTED=$((SYS_INJECTED + 1))
		log "boot $n: injected boot death $SYS_INJECTED of $SYS_INJECT_BOOT_DEATHS (init=/no-such-init)"
		extra=" init=/no-such-init"
	fi
	console=$RUN/console-boot$n.log
	markers=$RUN/markers-boot$n.log
	t0=$(vm_now)
	: >"$console"
	: >"$markers"
	qemu-system-x86_64 -accel "$SYS_ACCEL" -cpu max -machine q35 -smp "$SYS_SMP" -m 2048 \
		-nodefaults -display none -no-reboot -monitor none \
		-smbios "type=1,manufacturer=$(vm_qemu_escape "${VENDOR[n]}"),product=$(vm_qemu_escape "${PRODUCT[n]}")" \
		-kernel "$VMLINUZ" \
		-append "console=ttyS0 root=PARTUUID=$ROOT_DISK_ID-01 rw panic=-1 mitigations=off systemd.getty_auto=0 systemd.machine_id=$MACHINE_ID systest.boot=$n$extra" \
		-drive "file=$RUN/root.qcow2,if=none,id=root,format=qcow2,cache=unsafe" \
		-drive "file=$RUN/input.tar,if=none,id=in,format=raw,readonly=on" \
		-device nvme,id=nvme0,serial=vmroot \
		-device nvme-ns,bus=nvme0,drive=root,nsid=1 \
		-device nvme-ns,bus=nvme0,drive=in,nsid=2 \
		-serial "file:$console" -serial "file:$markers" \
		</dev/null >"$RUN/qemu-boot$n.log" 2>&1 &
	SYS_QEMU_PID=$!
	start=$SECONDS
	while kill -0 "$SYS_QEMU_PID" 2>/dev/null; do
		if ((SECONDS - start >= BOOT_TIMEOUT[n])); then
			log "boot $n: timed out after ${BOOT_TIMEOUT[n]}s"
			kill -TERM "$SYS_QEMU_PID" 2>/dev/null || true
			rc=1
			break
		fi
		if [[ -z $started ]]; then
			if grep -qa "^@@SYS:START boot=$n" "$markers"; then
				started=1
			elif ((SECONDS - start >= START_TIMEOUT)); then
				log "boot $n: no START marker within ${START_TIMEOUT}s"
				kill -TERM "$SYS_QEMU_PID" 2>/dev/null || true
				break
			fi
		fi
		sleep 0.5
	done
	wait "$SYS_QEMU_PID" || true
	SYS_QEMU_PID=
	BOOT_TIMES[n]=$(vm_elapsed "$t0")
	if ! grep -qa "^@@SYS:START boot=$n" "$markers"; then
		log "boot $n: DIED AT BOOT: the guest never started its scenario (${BOOT_TIMES[n]}s)"
		if [[ -n $(vm_death_lines "$console") ]]; then
			echo "---- console lines that show it ($console) ----" >&2
			vm_death_lines "$console" >&2
			echo "---- end ----" >&2
		else
			log "no Oops or panic on the console; its last lines:"
			tr -d '\r' <"$console" | tail -n 40 >&2
		fi
		return 2
	fi
	grep -a '@@SYS:INFO' "$markers" | sed 's/^@@SYS:INFO /  /' >&2 || true
	if ! grep -qa "@@SYS:DONE boot=$n" "$markers"; then
		log "boot $n: no DONE marker; last console lines:"
		tr -d '\r' <"$console" | tail -n 40 >&2
		rc=1
	fi
	return "$rc"
}

# sys_assert N: every expected check of boot N reported OK and none failed.
sys_assert() {
	local n=$1 expect name line markers bad=0
	markers=$RUN/markers-boot$n.log
	expect=${EXPECT[n]}
	for name in $expect; do
		line=$(grep -a "^@@SYS:\(OK\|FAIL\) $name\( \|$\)" "$markers" | tail -n 1 || true)
		case $line in
		"@@SYS:OK "*) printf '  ok    boot%s %s\n' "$n" "$name" ;;
		"@@SYS:FAIL "*)
			printf '  FAIL  boot%s %s: %s\n' "$n" "$name" "${line#"@@SYS:FAIL $name "}"
			bad=1
			;;
		*)
			printf '  MISS  boot%s %s: not reported\n' "$n" "$name"
			bad=1
			;;
		esac
	done
	while read -r line; do
		name=${line#@@SYS:FAIL }
		name=${name%% *}
		[[ " ${expect//$'\n'/ } " == *" $name "* ]] && continue
		printf '  FAIL  boot%s %s\n' "$n" "${line#@@SYS:FAIL }"
		bad=1
	done < <(grep -a '^@@SYS:FAIL' "$markers" || true)
	return "$bad"
}

# ------------------------------------------------------------------- main

REPEAT=1
while (($#)); do
	parse_repeat die "$@"
	((REPEAT_SHIFT)) || die "usage: $0 [--repeat N]"
	shift "$REPEAT_SHIFT"
done
[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, qemu)"
ensure_debs debootstrap qemu-system-x86 qemu-utils e2fsprogs fdisk systemd busybox-static shellcheck dpkg-dev lintian
ensure_cargo_tool cargo-deb cargo-deb
mkdir -p "$SYS_CACHE"
rm -rf "$RUN"
mkdir -p "$RUN/in"

step "prerequisites: pinned kernel $KERNEL_RELEASE, module releases"
vm_prereqs
vm_kernel
vm_build_kos

step "packages: daemon/debian/build-debs (milspecd, milspec-repo, lintian), and the previous release's"
sys_old_deb
sys_debs
DEB=$(ls "$RUN"/in/deb/milspecd_*-2_amd64.deb)
REPO_DEB=$(ls "$RUN"/in/deb/milspec-repo_*_amd64.deb)
log "$(basename "$DEB"): $(du -h "$DEB" | cut -f1); $(basename "$REPO_DEB"): $(du -h "$REPO_DEB" | cut -f1)"

step "static checks: units, exposure, default config, versions, package contents"
bash "$SYS_DIR/static-checks.sh" "$DEB" "$REPO_DEB"

step "mirror and inputs"
sys_mirror

step "base image: Debian $SUITE with systemd, udev, dbus"
T_BASE=$(vm_now)
BASE=$(sys_base_image)
BASE_TIME=$(vm_elapsed "$T_BASE")

# sys_run_once: a fresh disk, the three boots and their checks; 0 when all
# passed. A boot that dies before its scenario starts is tried once more
# (boot 1 on a fresh disk: nothing of the scenario ran on it).
sys_run_once() {
	local n rc failed=0 retried=0
	BOOT_TIMES=()
	rm -f "$RUN/root.qcow2" "$RUN"/console-boot*.log "$RUN"/markers-boot*.log
	qemu-img create -q -f qcow2 -F raw -b "$BASE" "$RUN/root.qcow2"
	MACHINE_ID=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	step "boots"
	for n in 1 2 3; do
		log "boot $n: ${VENDOR[n]} ${PRODUCT[n]}"
		rc=0
		sys_boot "$n" || rc=$?
		if ((rc == 2 && retried == 0)); then
			retried=1
			RETRIED+=("run$RUN_NO:boot$n")
			mv "$RUN/console-boot$n.log" "$RUN/console-boot$n.died.log"
			log "RETRY boot $n: the guest died before its scenario started" \
				"(console: $RUN/console-boot$n.died.log); trying this boot once more"
			if ((n == 1)); then
				rm -f "$RUN/root.qcow2"
				qemu-img create -q -f qcow2 -F raw -b "$BASE" "$RUN/root.qcow2"
			fi
			rc=0
			sys_boot "$n" || rc=$?
		fi
		log "boot $n: ${BOOT_TIMES[n]}s"
		if ((rc != 0)); then
			((rc == 2)) && log "boot $n died at boot$( ((retried)) && echo ' again, after one retry')"
			failed=1
			break
		fi
	done

	step "summary"
	for n in 1 2 3; do
		[[ -s $RUN/markers-boot$n.log ]] || { printf '  MISS  boot%s: did not run\n' "$n"; failed=1; continue; }
		sys_assert "$n" || failed=1
	done
	printf 'system: base image %ss (cached when 0.0), boots %s s / %s s / %s s (smp %s, %s)\n' \
		"$BASE_TIME" "${BOOT_TIMES[1]:--}" "${BOOT_TIMES[2]:--}" "${BOOT_TIMES[3]:--}" "$SYS_SMP" "$SYS_ACCEL"
	return "$failed"
}

RETRIED=()
bad=0
for ((RUN_NO = 1; RUN_NO <= REPEAT; RUN_NO++)); do
	((REPEAT == 1)) || step "run $RUN_NO of $REPEAT"
	if ! sys_run_once; then
		bad=$((bad + 1))
		if ((REPEAT > 1)); then
			mkdir -p "$SYS_CACHE/failed-run$RUN_NO"
			cp "$RUN"/*.log "$SYS_CACHE/failed-run$RUN_NO/" 2>/dev/null || true
			log "run $RUN_NO failed (logs kept in $SYS_CACHE/failed-run$RUN_NO/)"
		fi
	fi
done
if ((${#RETRIED[@]})); then
	log "WARNING: ${#RETRIED[@]} boot(s) died before their scenario started and were retried once: ${RETRIED[*]}"
fi
((REPEAT == 1)) || log "repeat: $REPEAT runs of the three boots, $bad failed, ${#RETRIED[@]} boot(s) retried"
log "wall time $(vm_elapsed "$T_START")s"
if ((bad)); then
	echo "system: FAILED (logs: $RUN/)" >&2
	exit 1
fi
echo "system: all checks passed"
