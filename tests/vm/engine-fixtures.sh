# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the engine scenarios: a signing key, a host configuration and
# signed packages built from the module variants, staged for the guest.
# Sourced by tests/vm/lib.sh; scenarios that use it declare "# needs: engine".

# A committed version whose module cannot be unloaded (engine-reject-slots).
KO_VARIANTS+=(v1.1.0-busy:busy:1.1.0)

# Packages: VERSION:KO_VARIANT:FILE (FILE defaults to VERSION).
ENGINE_PACKAGES=(
	1.0.0:v1.0.0:
	1.1.0:v1.1.0:
	1.2.0:v1.2.0-warn:
	1.3.0:v1.3.0-oops:
	1.4.0:v1.4.0-selftest:
	1.5.0:v1.5.0-panic:
	1.0.0:v1.0.0-busy:1.0.0-busy
	1.1.0:v1.1.0-busy:1.1.0-busy
)

# vm_fake_ko RELEASE OUT: an ELF object that looks like a module built for
# another kernel release (only its .modinfo matters to the tools).
vm_fake_ko() {
	local release=$1 out=$2 src
	src=$(mktemp --suffix=.c)
	printf 'static const char mi[] __attribute__((section(".modinfo"), used)) =\n"name=dell_milspec\\0vermagic=%s SMP preempt mod_unload modversions \\0version=2.0.0\\0srcversion=F00\\0license=GPL";\nint milspec_dummy;\n' "$release" >"$src"
	gcc -c -o "$out" "$src"
	rm -f "$src"
}

# vm_flip_byte IN OUT NEEDLE: OUT is IN with the first byte of NEEDLE
# flipped (one bit), everything else the same.
vm_flip_byte() {
	local in=$1 out=$2 off b
	off=$(grep -obUaF -m1 "$3" "$in" | head -n 1 | cut -d: -f1)
	[[ -n $off ]] || vm_die "vm_flip_byte: '$3' not found in $in"
	cp "$in" "$out"
	b=$(od -An -tu1 -j "$off" -N1 "$in" | tr -d ' ')
	# shellcheck disable=SC2059
	printf "\\$(printf '%03o' $((b ^ 1)))" | dd of="$out" bs=1 seek="$off" conv=notrunc status=none
}

# vm_check_sign_file REPO KEY: milspec-repo sign-module writes the very
# bytes the kernel's own scripts/sign-file (from the headers) writes for
# the same module, key KEY.key and certificate KEY.pem.
vm_check_sign_file() {
	local repo=$1 key=$2 sf=$KDIR/scripts/sign-file tmp=$CACHE_DIR/sign-file-check
	[[ -x $sf ]] || vm_die "no $sf (linux-headers-$KERNEL_RELEASE)"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	cp "$KO_DIR/v1.1.0/dell-milspec.ko" "$tmp/unsigned.ko"
	"$sf" sha256 "$key.key" "$key.pem" "$tmp/unsigned.ko" "$tmp/sign-file.ko" || vm_die "sign-file failed"
	"$repo" sign-module --cert "$key.pem" --key "$key.key" --out "$tmp/milspec-repo.ko" "$tmp/unsigned.ko" \
		>/dev/null || vm_die "milspec-repo sign-module failed"
	cmp -s "$tmp/sign-file.ko" "$tmp/milspec-repo.ko" ||
		vm_die "milspec-repo sign-module and the kernel's sign-file wrote different signatures"
	rm -rf "$tmp"
}

# vm_engine_stage DIR: keys, config and packages into DIR (the guest's /).
vm_engine_stage() {
	local d=$1 repo=$REPO_ROOT/target/release/milspec-repo keys=$CACHE_DIR/engine-keys
	local spec version variant file

	[[ -x $repo ]] || vm_die "milspec-repo is not built ($BINS_STATUS)"
	mkdir -p "$d/etc/milspecd/keys" "$d/opt/pkg" "$d/vm"
	install -m 0644 "$VM_DIR/guest/engine.sh" "$d/vm/engine.sh"
	if [[ ! -s $keys/release.key ]]; then
		rm -rf "$keys"
		mkdir -p "$keys"
		"$repo" keygen --out "$keys" --name release >/dev/null
		"$repo" keygen --out "$keys" --name stranger >/dev/null
	fi
	# A module-signing certificate no guest kernel trusts.
	if [[ ! -s $keys/stranger-modules.pem ]]; then
		"$repo" mok-keygen --out "$keys" --name stranger-modules --subject "Stranger modules" >/dev/null
	fi
	install -m 0644 "$keys/release.pub" "$d/etc/milspecd/keys/"
	# The demo plays the publisher too, inside the guest.
	install -D -m 0600 "$keys/release.key" "$d/opt/demo/release.key"
	cat >"$d/etc/milspecd/milspecd.toml" <<-'TOML'
		[trust]
		keys_dir = "/etc/milspecd/keys"
		threshold = 1

		[paths]
		state_dir = "/state/milspecd"

		[health]
		probation = "3s"
		checks_dir = "/etc/milspecd/health.d"
		unload_timeout = "3s"
	TOML
	for spec in "${ENGINE_PACKAGES[@]}"; do
		IFS=: read -r version variant file <<<"$spec"
		"$repo" pack --version "$version" --module "$KO_DIR/$variant/dell-milspec.ko" \
			--key "$keys/release.key" --out "$d/opt/pkg/${file:-$version}.mspkg" >/dev/null ||
			vm_die "packing $variant as $version failed"
	done
	# A package for another kernel, and one signed by an untrusted key.
	vm_fake_ko 6.1.0-28-amd64 "$CACHE_DIR/other-kernel.ko"
	"$repo" pack --version 2.0.0 --module "$CACHE_DIR/other-kernel.ko" \
		--key "$keys/release.key" --out "$d/opt/pkg/other-kernel.mspkg" >/dev/null
	"$repo" pack --version 1.1.0 --module "$KO_DIR/v1.1.0/dell-milspec.ko" \
		--key "$keys/stranger.key" --out "$d/opt/pkg/untrusted.mspkg" >/dev/null
	# Validly signed, its module signed by a certificate the kernel lacks.
	"$repo" pack --version 1.1.0 --module "$KO_DIR/v1.1.0/dell-milspec.ko" --key "$keys/release.key" \
		--module-cert "$keys/stranger-modules.pem" --module-key "$keys/stranger-modules.key" \
		--out "$d/opt/pkg/modsig-untrusted.mspkg" >/dev/null || vm_die "packing modsig-untrusted failed"
	vm_check_sign_file "$repo" "$keys/stranger-modules"
	# A validly signed newer package with one payload byte flipped, and the
	# same package cut off inside its payload.
	local off
	vm_flip_byte "$d/opt/pkg/1.2.0.mspkg" "$d/opt/pkg/1.2.0-flipped.mspkg" "license=GPL"
	off=$(grep -obUaF -m1 "license=GPL" "$d/opt/pkg/1.2.0.mspkg" | cut -d: -f1)
	head -c "$off" "$d/opt/pkg/1.2.0.mspkg" >"$d/opt/pkg/1.2.0-truncated.mspkg"
	if cmp -s "$d/opt/pkg/1.2.0.mspkg" "$d/opt/pkg/1.2.0-flipped.mspkg"; then
		vm_die "the flipped package is unchanged"
	fi
}

# vm_failpoints_stage DIR: milspecd built with crash points, as milspecd-fp.
# It is the debug build with every feature, the one `cargo test
# --all-features` has already built in a full run, so it costs no build of
# its own there (its fake kernel stays off without MILSPECD_FAKE_KERNEL=1).
vm_failpoints_stage() {
	local d=$1 log=$CACHE_DIR/cargo-failpoints.log

	vm_log "cargo build --locked --all-features --bin milspecd (debug, as milspecd-fp)"
	(cd "$REPO_ROOT" && cargo build --locked --all-features --bin milspecd) \
		>"$log" 2>&1 || { tail -n 30 "$log" >&2; vm_die "failpoints build failed (log: $log)"; }
	strip -o "$CACHE_DIR/milspecd-fp" "$REPO_ROOT/target/debug/milspecd"
	vm_stage_elf "$d" "$CACHE_DIR/milspecd-fp" /usr/bin/milspecd-fp
}
