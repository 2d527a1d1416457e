# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the VM test tier: prerequisites, cached builds (kernel image,
# module variants, Rust binaries, initramfs), and booting one scenario.
# Sourced by run.sh and run-all.sh; see docs/vm-tests.md.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$VM_DIR/../.." && pwd)
# shellcheck source=tests/vm/versions.env
. "$VM_DIR/versions.env"

# The tier builds into and stages from the repository's own target/: a
# CARGO_TARGET_DIR set elsewhere would build one place and stage another.
unset CARGO_TARGET_DIR

CACHE_DIR=${MILSPEC_VM_CACHE:-$REPO_ROOT/.cache/vm}
# Two kernels: "new" (KERNEL_RELEASE, every boot's default) and "old"
# (KERNEL_RELEASE_OLD, for boots a scenario names in "# kernels: ...").
KDIR=/usr/src/linux-headers-$KERNEL_RELEASE
KDIR_OLD=/usr/src/linux-headers-$KERNEL_RELEASE_OLD
# The new kernel's image (tests/system/run.sh boots it).
# shellcheck disable=SC2034
VMLINUZ=$CACHE_DIR/kernel/$KERNEL_RELEASE/vmlinuz
KO_DIR=$CACHE_DIR/ko
RUNS_DIR=$CACHE_DIR/runs

# vCPUs per guest and a factor for every boot timeout (slow CI machines).
VM_SMP=${VM_SMP:-1}
VM_TIMEOUT_SCALE=${VM_TIMEOUT_SCALE:-1}
# Extra kernel command line for debugging (e.g. "initcall_debug loglevel=8").
VM_KERNEL_ARGS=${VM_KERNEL_ARGS:-}
# Seconds a guest gets to power off after printing its result.
VM_POWEROFF_GRACE=${VM_POWEROFF_GRACE:-10}
# Seconds (scaled) a guest gets to reach its /init and print BEGIN; a guest
# that does not is a boot death (below), not a failed scenario.
VM_START_TIMEOUT=${VM_START_TIMEOUT:-60}
# Boots that died before their scenario started and were tried again.
VM_RETRIED=()
# For the harness's own test (scenario harness-retry): the first N boots of
# this run are made to die at boot, with a kernel panic before /init.
VM_INJECT_BOOT_DEATHS=${VM_INJECT_BOOT_DEATHS:-0}
VM_INJECTED=0

# The qemu of the boot in progress, stopped if the harness is interrupted.
VM_QEMU_PID=
trap 'if [[ -n $VM_QEMU_PID ]]; then kill -TERM "$VM_QEMU_PID" 2>/dev/null; fi' EXIT

VM_PACKAGES=(qemu-system-x86 busybox-static cpio kmod make gcc libc6-dev sparse e2fsprogs dbus xz-utils
	dkms shellcheck "linux-headers-$KERNEL_RELEASE" "linux-headers-$KERNEL_RELEASE_OLD")

# Module variants: NAME:FAULT:VERSION (empty VERSION: kmod/VERSION). A NAME
# ending in "@old" is built against the old kernel's headers
# (KERNEL_RELEASE_OLD), every other against the new kernel's.
KO_VARIANTS=(
	prod::
	warn:warn:
	oops:oops:
	selftest:selftest:
	busy:busy:
	panic:panic:
	slowinit:slowinit:
	degraded:degraded:
	warnlater:warnlater:
	v1.0.0::1.0.0
	v1.1.0::1.1.0
	v1.2.0-warn:warn:1.2.0
	v1.3.0-oops:oops:1.3.0
	v1.4.0-selftest:selftest:1.4.0
	v1.5.0-panic:panic:1.5.0
	v1.0.0-busy:busy:1.0.0
	v1.1.0@old::1.1.0
)

# Rust binaries put into the guest (milspecd in /usr/sbin, the others in
# /usr/bin, as the package installs them) when they build.
RUST_BINS=(milspecd milspecctl milspec-repo)

vm_log() {
	printf 'vm: %s\n' "$*" >&2
}

vm_warn() {
	printf 'vm: warning: %s\n' "$*" >&2
}

vm_die() {
	printf 'vm: error: %s\n' "$*" >&2
	exit 1
}

vm_now() {
	date +%s.%N
}

# vm_elapsed START: seconds since START with one decimal.
vm_elapsed() {
	awk -v s="$1" -v e="$(vm_now)" 'BEGIN { printf "%.1f", e - s }'
}

# vm_hash FILE...: one hash over the names and contents of the files.
vm_hash() {
	local f
	for f in "$@"; do
		printf '%s\n' "${f#"$REPO_ROOT"/}"
		cat "$f"
	done | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------- prereqs

APT_UPDATED=

vm_apt() {
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@"
}

vm_apt_update_once() {
	if [[ -z $APT_UPDATED ]]; then
		vm_log "apt-get update"
		vm_apt -qq update >&2 || vm_die "apt-get update failed"
		APT_UPDATED=1
	fi
}

vm_pkg_installed() {
	[[ $(dpkg-query -W -f '${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

vm_prereqs() {
	local missing=() p t0

	[[ $(id -u) -eq 0 ]] || vm_die "the VM tier runs as root (it installs packages)"
	command -v dpkg-query >/dev/null || vm_die "needs a Debian system (dpkg-query not found)"
	for p in "${VM_PACKAGES[@]}"; do
		vm_pkg_installed "$p" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		t0=$(vm_now)
		vm_apt_update_once
		vm_log "installing ${missing[*]}"
		vm_apt -y -qq install --no-install-recommends "${missing[@]}" >&2 ||
			vm_die "apt-get install ${missing[*]} failed"
		vm_log "installed in $(vm_elapsed "$t0")s"
	fi
	[[ -d $KDIR ]] || vm_die "kernel headers not found at $KDIR"
	[[ -d $KDIR_OLD ]] || vm_die "kernel headers not found at $KDIR_OLD"
}

# ----------------------------------------------------------------- kernel

# vm_release old|new: the kernel release of that name.
vm_release() {
	case $1 in
	new) printf '%s\n' "$KERNEL_RELEASE" ;;
	old) printf '%s\n' "$KERNEL_RELEASE_OLD" ;;
	*) vm_die "unknown kernel '$1' (old or new)" ;;
	esac
}

# vm_vmlinuz RELEASE: where the cache keeps that kernel's image.
vm_vmlinuz() {
	printf '%s\n' "$CACHE_DIR/kernel/$1/vmlinuz"
}

# vm_kernel [RELEASE]: the guest kernel of that release (default
# KERNEL_RELEASE), extracted from the Debian package into the cache, never
# installed on the host.
vm_kernel() {
	local release=${1:-$KERNEL_RELEASE} pkg tmp deb dir vmlinuz t0

	pkg=linux-image-$release-unsigned
	dir=$CACHE_DIR/kernel/$release
	vmlinuz=$dir/vmlinuz
	[[ -s $vmlinuz && -s $dir/efivarfs.ko ]] && return 0
	t0=$(vm_now)
	vm_log "fetching $pkg"
	tmp=$(mktemp -d "$CACHE_DIR/kernel-dl.XXXXXX")
	# apt's sandbox user cannot write into our private temporary folder
	if ! (cd "$tmp" && vm_apt -qq -o APT::Sandbox::User=root download "$pkg" >&2); then
		vm_apt_update_once
		(cd "$tmp" && vm_apt -qq -o APT::Sandbox::User=root download "$pkg" >&2) ||
			vm_die "apt-get download $pkg failed"
	fi
	deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
	[[ -n $deb ]] || vm_die "apt-get download $pkg left no .deb"
	dpkg-deb -x "$deb" "$tmp/root" || vm_die "dpkg-deb -x $deb failed"
	[[ -s $tmp/root/boot/vmlinuz-$release ]] ||
		vm_die "$deb has no boot/vmlinuz-$release"
	mkdir -p "$dir"
	cp "$tmp/root/boot/config-$release" "$dir/config"
	# The kernel's own efivarfs module (signed by its build key), for the
	# Secure Boot scenarios to read the UEFI variables.
	xz -dc "$tmp/root/lib/modules/$release/kernel/fs/efivarfs/efivarfs.ko.xz" >"$dir/efivarfs.ko" ||
		vm_die "$deb has no efivarfs module"
	cp "$tmp/root/boot/vmlinuz-$release" "$vmlinuz.tmp"
	mv "$vmlinuz.tmp" "$vmlinuz"
	rm -rf "$tmp"
	vm_log "kernel $release ready ($(vm_elapsed "$t0")s)"
}

# ---------------------------------------------------------------- modules

# vm_variant_release NAME: the kernel release a variant is built for.
vm_variant_release() {
	if [[ $1 == *@old ]]; then
		printf '%s\n' "$KERNEL_RELEASE_OLD"
	else
		printf '%s\n' "$KERNEL_RELEASE"
	fi
}

# vm_kmod_inputs_hash RELEASE: the inputs every module build for RELEASE
# depends on (sources, release, headers package, compiler), hashed.
vm_kmod_inputs_hash() {
	local release=$1 files
	mapfile -t files < <(find "$REPO_ROOT/kmod" -maxdepth 1 -type f \
		\( -name '*.c' -o -name '*.h' -o -name Kbuild -o -name Makefile \
		-o -name VERSION \) | LC_ALL=C sort)
	{
		vm_hash "${files[@]}"
		printf '%s\n' "$release"
		dpkg-query -W -f '${Version}\n' "linux-headers-$release"
		gcc --version | head -n 1
	} | sha256sum | cut -c1-16
}

# vm_build_ko NAME FAULT VERSION HASH: build one variant into $KO_DIR/NAME,
# against the headers of the release it is for (vm_variant_release).
vm_build_ko() {
	local name=$1 fault=$2 version=$3 hash=$4
	local out=$KO_DIR/$name bdir=$CACHE_DIR/kbuild/$name
	local args=(-C "$REPO_ROOT/kmod" KDIR="/usr/src/linux-headers-$(vm_variant_release "$name")"
		BUILD_DIR="$bdir")

	[[ -n $fault ]] && args+=(FAULT="$fault")
	[[ -n $version ]] && args+=(VERSION="$version")
	rm -rf "$bdir" "$out"
	mkdir -p "$bdir" "$out"
	if ! make "${args[@]}" modules >"$bdir.log" 2>&1; then
		cat "$bdir.log" >&2
		return 1
	fi
	cp "$bdir/dell-milspec.ko" "$out/dell-milspec.ko"
	printf '%s\n' "$hash" >"$out/.inputs"
}

# vm_build_kos: every variant whose inputs changed, two at a time.
vm_build_kos() {
	local hash hash_new hash_old spec name fault version pids=() failed=0 pid built=() t0

	t0=$(vm_now)
	hash_new=$(vm_kmod_inputs_hash "$KERNEL_RELEASE")
	hash_old=$(vm_kmod_inputs_hash "$KERNEL_RELEASE_OLD")
	mkdir -p "$KO_DIR" "$CACHE_DIR/kbuild"
	for spec in "${KO_VARIANTS[@]}"; do
		IFS=: read -r name fault version <<<"$spec"
		[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]*(@old)?$ ]] ||
			vm_die "module variant '$name': a name is [A-Za-z0-9._-], optionally ending in @old"
		hash=$hash_new
		[[ $name == *@old ]] && hash=$hash_old
		if [[ -s $KO_DIR/$name/dell-milspec.ko &&
			$(cat "$KO_DIR/$name/.inputs" 2>/dev/null) == "$hash" ]]; then
			continue
		fi
		built+=("$name")
		vm_build_ko "$name" "$fault" "$version" "$hash" &
		pids+=($!)
		if ((${#pids[@]} >= 2)); then
			wait "${pids[0]}" || failed=1
			pids=("${pids[@]:1}")
		fi
	done
	for pid in "${pids[@]}"; do
		wait "$pid" || failed=1
	done
	((failed == 0)) || vm_die "module build failed (logs in $CACHE_DIR/kbuild/)"
	if ((${#built[@]})); then
		vm_log "built modules: ${built[*]} ($(vm_elapsed "$t0")s)"
	fi
}

# ----------------------------------------------------------- Rust binaries

BINS_STATUS=

# vm_build_bins: cargo build --release --bins when the workspace exists.
# Tolerant: a missing or broken workspace only fails scenarios that declare
# "# needs: bins".
vm_build_bins() {
	local cargo log=$CACHE_DIR/cargo.log

	if [[ ! -f $REPO_ROOT/Cargo.toml ]]; then
		vm_warn "no Cargo.toml: guests get no Rust binaries"
		BINS_STATUS="no Cargo.toml at the repo root"
		return 0
	fi
	cargo=$(command -v cargo || true)
	[[ -z $cargo && -x $HOME/.cargo/bin/cargo ]] && cargo=$HOME/.cargo/bin/cargo
	if [[ -z $cargo ]]; then
		vm_warn "cargo not found: guests get no Rust binaries"
		BINS_STATUS="cargo not found"
		return 0
	fi
	vm_log "cargo build --locked --release --bins"
	if ! (cd "$REPO_ROOT" && "$cargo" build --locked --release --bins) >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		vm_warn "cargo build failed (log: $log): guests get no Rust binaries"
		BINS_STATUS="cargo build failed, see $log"
		return 0
	fi
	BINS_STATUS=ok
}

# ------------------------------------------------------------- initramfs

# vm_stage_elf ROOT FILE DEST: copy an executable and the shared libraries
# ldd lists for it (with the dynamic loader) into ROOT.
vm_stage_elf() {
	local root=$1 file=$2 dest=$3 lib

	mkdir -p "$root$(dirname "$dest")"
	cp -L "$file" "$root$dest"
	while read -r lib; do
		[[ -e $root$lib ]] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done < <(ldd "$file" 2>/dev/null | awk '
		$2 == "=>" && $3 ~ /^\// { print $3 }
		$1 ~ /^\// { print $1 }')
}

# vm_cpio DIR OUT: a newc archive of DIR, owned by root.
vm_cpio() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort |
		cpio -o -H newc -R 0:0 --quiet) >"$2.tmp"
	mv "$2.tmp" "$2"
}

# vm_dir_hash DIR: hash over the paths, modes and contents under DIR.
vm_dir_hash() {
	(cd "$1" && find . -mindepth 1 -printf '%p %m %l\n' | LC_ALL=C sort &&
		find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r cat) |
		sha256sum | cut -c1-16
}

# vm_cached_cpio STAGE NAME: archive STAGE as $CACHE_DIR/initramfs/NAME-<hash>
# (reused while the content is the same); prints its path.
vm_cached_cpio() {
	local stage=$1 name=$2 hash out

	hash=$(vm_dir_hash "$stage")
	out=$CACHE_DIR/initramfs/$name-$hash.cpio
	if [[ ! -s $out ]]; then
		mkdir -p "$CACHE_DIR/initramfs"
		find "$CACHE_DIR/initramfs" -name "$name-*.cpio" -delete
		vm_cpio "$stage" "$out"
	fi
	printf '%s\n' "$out"
}

# vm_build_insmod: the guest's single-finit_module loader, static.
vm_build_insmod() {
	local src=$VM_DIR/guest/vm-insmod.c out=$CACHE_DIR/vm-insmod hash

	hash=$(vm_hash "$src")
	[[ -x $out && $(cat "$out.inputs" 2>/dev/null) == "$hash" ]] && return 0
	gcc -static -O2 -Wall -Wextra -Werror -o "$out" "$src" ||
		vm_die "cannot build $src (gcc, libc6-dev)"
	printf '%s\n' "$hash" >"$out.inputs"
}

BASE_CPIO=
FAULTS_CPIO=

# vm_initramfs: the base archive (busybox, init, guest helpers, Rust binaries,
# production module) and the archive of the other module variants.
vm_initramfs() {
	local stage=$CACHE_DIR/stage bin spec name d dir

	rm -rf "$stage"
	mkdir -p "$stage/base/bin" "$stage/base/vm" "$stage/base/opt/ko/prod" \
		"$stage/faults/opt/ko"
	d=$stage/base
	vm_stage_elf "$d" /bin/busybox /bin/busybox
	vm_build_insmod
	install -D -m 0755 "$CACHE_DIR/vm-insmod" "$d/usr/bin/vm-insmod"
	install -m 0755 "$VM_DIR/guest/init" "$d/init"
	install -m 0644 "$VM_DIR"/guest/*.sh "$d/vm/"
	# The two releases, for the guest's kernel helpers (kernel_is old).
	printf 'KERNEL_RELEASE_NEW=%s\nKERNEL_RELEASE_OLD=%s\n' \
		"$KERNEL_RELEASE" "$KERNEL_RELEASE_OLD" >"$d/vm/kernels.env"
	install -m 0644 "$KO_DIR/prod/dell-milspec.ko" "$d/opt/ko/prod/"
	if [[ $BINS_STATUS == ok ]]; then
		for bin in "${RUST_BINS[@]}"; do
			if [[ -x $REPO_ROOT/target/release/$bin ]]; then
				# Where the package installs it: the daemon in /usr/sbin.
				dir=/usr/bin
				[[ $bin != milspecd ]] || dir=/usr/sbin
				vm_stage_elf "$d" "$REPO_ROOT/target/release/$bin" "$dir/$bin"
			fi
		done
	fi
	for spec in "${KO_VARIANTS[@]}"; do
		name=${spec%%:*}
		[[ $name == prod ]] && continue
		mkdir -p "$stage/faults/opt/ko/$name"
		install -m 0644 "$KO_DIR/$name/dell-milspec.ko" "$stage/faults/opt/ko/$name/"
	done
	BASE_CPIO=$(vm_cached_cpio "$stage/base" base)
	FAULTS_CPIO=$(vm_cached_cpio "$stage/faults" kmod-faults)
}

# vm_prepare: everything a run needs before its first boot.
vm_prepare() {
	local t0

	t0=$(vm_now)
	mkdir -p "$CACHE_DIR"
	vm_prereqs
	vm_kernel "$KERNEL_RELEASE"
	vm_kernel "$KERNEL_RELEASE_OLD"
	vm_build_kos
	vm_build_bins
	vm_initramfs
	vm_log "prepared in $(vm_elapsed "$t0")s (cache: $CACHE_DIR)"
}

# -------------------------------------------------------------- scenarios

# vm_header FILE KEY [DEFAULT]: value of the "# KEY: value" header line(s),
# one per line.
vm_header() {
	local v
	v=$(sed -n "s/^# $2:[[:space:]]*//p" "$1")
	printf '%s\n' "${v:-${3:-}}"
}

# vm_scenario_file NAME-OR-PATH: the scenario's path.
vm_scenario_file() {
	local s=$1
	if [[ -f $s ]]; then
		printf '%s\n' "$(cd "$(dirname "$s")" && pwd)/$(basename "$s")"
	elif [[ -f $VM_DIR/scenarios/$s.sh ]]; then
		printf '%s\n' "$VM_DIR/scenarios/$s.sh"
	elif [[ -f $VM_DIR/scenarios/$s ]]; then
		printf '%s\n' "$VM_DIR/scenarios/$s"
	else
		vm_die "no scenario '$s' (see $VM_DIR/scenarios/)"
	fi
}

# vm_boot_kernel FILE N: the kernel (old or new) boot N of the scenario runs:
# the Nth word of its "# kernels:" header, new when it has none.
vm_boot_kernel() {
	local kernels
	read -r -a kernels <<<"$(vm_header "$1" kernels)"
	printf '%s\n' "${kernels[$2 - 1]:-new}"
}

# vm_check_kernels FILE BOOTS: a "# kernels:" header names old or new for
# each of the BOOTS boots (or is absent); prints what is wrong otherwise.
vm_check_kernels() {
	local kernels k
	read -r -a kernels <<<"$(vm_header "$1" kernels)"
	((${#kernels[@]} == 0)) && return 0
	if ((${#kernels[@]} != $2)); then
		echo "'# kernels:' names ${#kernels[@]} kernel(s) for $2 boot(s)"
		return 1
	fi
	for k in "${kernels[@]}"; do
		if [[ $k != old && $k != new ]]; then
			echo "'# kernels:' has '$k'; each boot's kernel is old or new"
			return 1
		fi
	done
}

# vm_qemu_escape TEXT: qemu option values double their commas.
vm_qemu_escape() {
	printf '%s' "${1//,/,,}"
}

# vm_tail_console LOG: the last 50 console lines, for a failed boot.
vm_tail_console() {
	echo "---- last 50 console lines ($1) ----"
	tr -d '\r' <"$1" | tail -n 50
	echo "---- end of console ----"
}

# vm_death_lines LOG: the console lines that show why a guest died at boot
# (Oops, panic, BUG, faults and the first frames after them), at most 25.
vm_death_lines() {
	tr -d '\r' <"$1" | grep -a -A 6 -E 'Oops|Kernel panic|BUG:|general protection|int3|WARNING: CPU|Unable to handle|watchdog: BUG|rcu_sched detected|segfault' |
		head -n 25
}

# vm_boot SCENARIO RUNDIR N: one boot; returns 0 if the boot did what the
# scenario expects (PASS marker, or a panic announced by EXPECT-PANIC), 2 if
# the guest died before its scenario started (no BEGIN marker: an Oops or a
# panic at boot, a hang before /init), 1 for any other failure.
vm_boot() {
	local file=$1 rundir=$2 n=$3
	local vendor product timeout smp log rc t0 needs state done_at start begun start_timeout
	local kernel vmlinuz cmdline firmware
	local append="console=ttyS0 panic=-1 quiet mitigations=off milspec_vm_boot=$n"

	kernel=$(vm_boot_kernel "$file" "$n")
	vmlinuz=$(vm_vmlinuz "$(vm_release "$kernel")")
	BOOT_KERNEL=$kernel
	append+=" milspec_vm_kernel=$kernel"
	append+=${VM_KERNEL_ARGS:+ $VM_KERNEL_ARGS}
	cmdline=$(vm_header "$file" cmdline)
	append+=${cmdline:+ $cmdline}
	# Firmware other than the default BIOS: a fixture's
	# vm_firmware_<name> RUNDIR RELEASE sets VM_FW_ARGS and VM_FW_KERNEL.
	VM_FW_ARGS=()
	firmware=$(vm_header "$file" firmware)
	if [[ -n $firmware ]]; then
		declare -F "vm_firmware_${firmware//-/_}" >/dev/null || vm_die "unknown firmware '$firmware'"
		"vm_firmware_${firmware//-/_}" "$rundir" "$(vm_release "$kernel")"
		vmlinuz=$VM_FW_KERNEL
	fi

	vendor=$(vm_header "$file" vendor "Dell Inc.")
	product=$(vm_header "$file" product "Latitude 5430 Rugged")
	timeout=$(vm_header "$file" timeout 60)
	timeout=$(awk -v t="$timeout" -v s="$VM_TIMEOUT_SCALE" 'BEGIN { print int(t * s) }')
	smp=$(vm_header "$file" smp "$VM_SMP")
	needs=$(vm_header "$file" needs)
	if ((VM_INJECTED < VM_INJECT_BOOT_DEATHS)); then
		VM_INJECTED=$((VM_INJECTED + 1))
		vm_warn "boot $n: injected boot death $VM_INJECTED of $VM_INJECT_BOOT_DEATHS (rdinit=/no-such-init)"
		append+=" rdinit=/no-such-init"
	fi
	start_timeout=$(awk -v t="$VM_START_TIMEOUT" -v s="$VM_TIMEOUT_SCALE" 'BEGIN { print int(t * s) }')
	log=$rundir/console-boot$n.log

	t0=$(vm_now)
	rc=0
	state=running
	done_at=
	begun=
	: >"$log"
	# timeout(1) is only a safety net; the loop below enforces the limit.
	timeout --kill-after=5 $((timeout + 30)) qemu-system-x86_64 \
		-accel tcg -cpu max -smp "$smp" -m 512 "${VM_FW_ARGS[@]}" \
		-nographic -no-reboot -nodefaults -monitor none \
		-serial "file:$log" \
		-smbios "type=1,manufacturer=$(vm_qemu_escape "$vendor"),product=$(vm_qemu_escape "$product")" \
		-kernel "$vmlinuz" -initrd "$rundir/initrd.cpio" -append "$append" \
		-drive "file=$rundir/state.img,if=none,id=state,format=raw,cache=unsafe" \
		-device nvme,serial=state,drive=state \
		</dev/null >"$rundir/qemu-boot$n.log" 2>&1 &
	VM_QEMU_PID=$!
	start=$SECONDS
	while kill -0 "$VM_QEMU_PID" 2>/dev/null; do
		if ((SECONDS - start >= timeout)); then
			state=timeout
			break
		fi
		if [[ -z $begun ]]; then
			if grep -qa "@@VM:BEGIN boot=$n@@" "$log"; then
				begun=1
			elif ((SECONDS - start >= start_timeout)); then
				state=nostart
				break
			fi
		fi
		# The guest powers off right after its result; give it a grace.
		if [[ -z $done_at ]] &&
			grep -qa -e "@@VM:PASS boot=$n@@" -e "@@VM:FAIL boot=$n " "$log"; then
			done_at=$SECONDS
		fi
		if [[ -n $done_at ]] && ((SECONDS - done_at >= VM_POWEROFF_GRACE)); then
			state=stuck
			break
		fi
		sleep 0.2
	done
	if [[ $state != running ]]; then
		kill -TERM "$VM_QEMU_PID" 2>/dev/null || true
	fi
	wait "$VM_QEMU_PID" || rc=$?
	VM_QEMU_PID=
	BOOT_TIME=$(vm_elapsed "$t0")

	if ! grep -qa "@@VM:BEGIN boot=$n@@" "$log"; then
		if [[ $state == nostart ]]; then
			vm_log "boot $n: DIED AT BOOT: no BEGIN marker within ${start_timeout}s; the scenario never started"
		else
			vm_log "boot $n: DIED AT BOOT: the guest stopped (qemu status $rc) before its scenario started"
		fi
		if [[ -n $(vm_death_lines "$log") ]]; then
			echo "---- console lines that show it ($log) ----"
			vm_death_lines "$log"
			echo "---- end ----"
		else
			vm_tail_console "$log"
		fi
		return 2
	fi
	if [[ $state == timeout ]] || ((rc == 124 || rc == 137)); then
		vm_log "boot $n: timed out after ${timeout}s"
		vm_tail_console "$log"
		return 1
	fi
	if [[ $state == stuck ]]; then
		vm_warn "boot $n: guest did not power off ${VM_POWEROFF_GRACE}s after its result; stopped it"
	elif ((rc != 0)); then
		vm_log "boot $n: qemu exited with status $rc"
		cat "$rundir/qemu-boot$n.log"
		vm_tail_console "$log"
		return 1
	fi
	if grep -qa "@@VM:PASS boot=$n@@" "$log"; then
		return 0
	fi
	if [[ $state == running ]] && grep -qa "@@VM:EXPECT-PANIC boot=$n@@" "$log" &&
		grep -qa "Kernel panic - not syncing" "$log"; then
		return 0
	fi
	if grep -qa "@@VM:FAIL boot=$n " "$log"; then
		vm_log "boot $n: scenario failed"
	else
		vm_log "boot $n: guest stopped without a result marker (needs: ${needs:-none})"
	fi
	vm_tail_console "$log"
	return 1
}

# vm_run_host SCENARIO RUNDIR: a "# where: host" scenario runs here, with
# bash, and passes when it exits 0.
vm_run_host() {
	local file=$1 rundir=$2 timeout rc=0

	timeout=$(vm_header "$file" timeout 300)
	REPO_ROOT=$REPO_ROOT KDIR=$KDIR KO_DIR=$KO_DIR KERNEL_RELEASE=$KERNEL_RELEASE \
		KDIR_OLD=$KDIR_OLD KERNEL_RELEASE_OLD=$KERNEL_RELEASE_OLD CACHE_DIR=$CACHE_DIR RUNDIR=$rundir \
		timeout --kill-after=5 "$timeout" bash "$file" >"$rundir/host.log" 2>&1 || rc=$?
	if ((rc != 0)); then
		tail -n 50 "$rundir/host.log"
		((rc == 124)) && vm_log "timed out after ${timeout}s"
		return 1
	fi
	return 0
}

# vm_run_scenario NAME-OR-PATH: run one scenario (after vm_prepare); prints
# one PASS/FAIL line; returns 0 on pass.
vm_run_scenario() {
	local file name rundir boots n need where t0 times=() line src dst seed
	local stage fn rc retried=0 kerr kernels stage_lock

	file=$(vm_scenario_file "$1")
	name=$(basename "$file" .sh)
	rundir=$RUNS_DIR/$name
	rm -rf "$rundir"
	mkdir -p "$rundir"
	t0=$(vm_now)

	where=$(vm_header "$file" where guest)
	if [[ $where == host ]]; then
		if vm_run_host "$file" "$rundir"; then
			vm_log "PASS $name (host, $(vm_elapsed "$t0")s)"
			return 0
		fi
		vm_log "FAIL $name (host; log: $rundir/host.log)"
		return 1
	fi

	boots=$(vm_header "$file" boots 1)
	if ! kerr=$(vm_check_kernels "$file" "$boots"); then
		vm_log "FAIL $name: $kerr"
		return 1
	fi
	kernels=$(vm_header "$file" kernels)

	# Per-scenario archive: the scenario itself and any declared files.
	stage=$rundir/stage
	mkdir -p "$stage/vm"
	# Staging writes shared files of the cache (keys made once, a build
	# copied out): one scenario stages at a time when run-all runs several.
	exec {stage_lock}>"$CACHE_DIR/.stage.lock"
	flock "$stage_lock"
	install -m 0644 "$file" "$stage/vm/scenario.sh"
	cat "$BASE_CPIO" >"$rundir/initrd.cpio"
	for need in $(vm_header "$file" needs); do
		case $need in
		kmod-faults)
			cat "$FAULTS_CPIO" >>"$rundir/initrd.cpio"
			;;
		bins)
			if [[ $BINS_STATUS != ok ]]; then
				vm_log "FAIL $name: needs the Rust binaries: $BINS_STATUS"
				exec {stage_lock}>&-
				return 1
			fi
			;;
		*)
			# An extension (tests/vm/*-fixtures.sh) stages what it needs.
			fn=vm_${need//-/_}_stage
			if ! declare -F "$fn" >/dev/null; then
				vm_log "FAIL $name: unknown need '$need' (built in: kmod-faults bins; no $fn)"
				exec {stage_lock}>&-
				return 1
			fi
			if ! ("$fn" "$stage") >"$rundir/stage-$need.log" 2>&1; then
				cat "$rundir/stage-$need.log" >&2
				vm_log "FAIL $name: staging '$need' failed"
				exec {stage_lock}>&-
				return 1
			fi
			;;
		esac
	done
	while read -r line; do
		[[ -z $line ]] && continue
		read -r src dst <<<"$line"
		dst=${dst:-/opt/files}
		[[ -d $REPO_ROOT/$src ]] || vm_die "$name: files: no folder $REPO_ROOT/$src"
		mkdir -p "$stage$dst"
		cp -a "$REPO_ROOT/$src/." "$stage$dst/"
	done < <(vm_header "$file" files)
	vm_cpio "$stage" "$rundir/scenario.cpio"
	cat "$rundir/scenario.cpio" >>"$rundir/initrd.cpio"
	exec {stage_lock}>&-

	# The state disk survives between the boots of one scenario.
	seed=$(vm_header "$file" state-seed)
	if [[ -n $seed ]]; then
		[[ -d $REPO_ROOT/$seed ]] || vm_die "$name: state-seed: no folder $REPO_ROOT/$seed"
		mkfs.ext4 -q -F -L state -E lazy_itable_init=0,lazy_journal_init=0 -d "$REPO_ROOT/$seed" "$rundir/state.img" 64M \
			>"$rundir/mkfs.log" 2>&1 || { cat "$rundir/mkfs.log" >&2; return 1; }
	else
		mkfs.ext4 -q -F -L state -E lazy_itable_init=0,lazy_journal_init=0 "$rundir/state.img" 64M \
			>"$rundir/mkfs.log" 2>&1 || { cat "$rundir/mkfs.log" >&2; return 1; }
	fi

	# A boot that dies before its scenario starts (rc 2) is tried once more:
	# the state disk is mounted only after BEGIN, so nothing of the scenario
	# ran. A failed assertion (rc 1) is never tried again.
	for ((n = 1; n <= boots; n++)); do
		rc=0
		vm_boot "$file" "$rundir" "$n" || rc=$?
		if ((rc == 2)) && ((retried == 0)); then
			retried=1
			mv "$rundir/console-boot$n.log" "$rundir/console-boot$n.died.log"
			VM_RETRIED+=("$name:boot$n")
			vm_log "RETRY $name boot $n: the guest died before its scenario started" \
				"(console: $rundir/console-boot$n.died.log); trying this boot once more"
			rc=0
			vm_boot "$file" "$rundir" "$n" || rc=$?
		fi
		if ((rc != 0)); then
			if ((rc == 2)); then
				vm_log "FAIL $name (boot $n of $boots died at boot$( ((retried)) && echo ' again, after one retry'); logs: $rundir/)"
			else
				vm_log "FAIL $name (boot $n of $boots, ${BOOT_TIME}s; logs: $rundir/)"
			fi
			return 1
		fi
		if [[ -n $kernels ]]; then
			times+=("${BOOT_TIME}s($BOOT_KERNEL)")
		else
			times+=("${BOOT_TIME}s")
		fi
	done
	vm_log "PASS $name (boots: ${times[*]}; total $(vm_elapsed "$t0")s)"
	return 0
}

# Extensions: tests/vm/NAME-fixtures.sh may add module variants to KO_VARIANTS
# and define vm_<need>_stage DIR, which stages files into DIR (the guest's /)
# for scenarios that declare "# needs: <need>" ('-' in a need becomes '_').
for _fixtures in "$VM_DIR"/*-fixtures.sh; do
	if [[ -f $_fixtures ]]; then
		# shellcheck source=/dev/null
		. "$_fixtures"
	fi
done
unset _fixtures

# vm_retry_summary: one loud line naming the boots that died at boot and were
# tried again (nothing when none did).
vm_retry_summary() {
	if ((${#VM_RETRIED[@]})); then
		vm_warn "${#VM_RETRIED[@]} boot(s) died before their scenario started and were retried once: ${VM_RETRIED[*]}"
	fi
}
