# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the health scenario ("# needs: engine kmod-faults health"):
# milspec_neighbour, a test module that WARNs on request (another driver's
# fault during a trial), packages of good 1.6.0, 1.7.0 and 1.8.0 (real
# builds of those versions: a rolled-back version is blocklisted, so each
# trial that is meant to roll back needs one of its own), and 1.9.0, a
# warnlater build (healthy until told to WARN: a fault after the commit).
# Scenarios that use it also need "engine" (keys, config).

KO_VARIANTS+=(v1.6.0::1.6.0 v1.7.0::1.7.0 v1.8.0::1.8.0 v1.9.0-warnlater:warnlater:1.9.0)

# vm_neighbour_build: tests/vm/neighbour/ built against the new kernel's
# headers into $CACHE_DIR/neighbour/milspec-neighbour.ko, once per inputs.
vm_neighbour_build() {
	local src=$VM_DIR/neighbour out=$CACHE_DIR/neighbour hash
	local kdir=/usr/src/linux-headers-$KERNEL_RELEASE

	hash=$({
		vm_hash "$src/milspec-neighbour.c" "$src/Kbuild"
		printf '%s\n' "$KERNEL_RELEASE"
		dpkg-query -W -f '${Version}\n' "linux-headers-$KERNEL_RELEASE"
	} | sha256sum | cut -c1-16)
	[[ -s $out/milspec-neighbour.ko && $(cat "$out/.inputs" 2>/dev/null) == "$hash" ]] && return 0
	rm -rf "$out"
	mkdir -p "$out"
	cp "$src/milspec-neighbour.c" "$src/Kbuild" "$out/"
	make -C "$kdir" M="$out" modules >"$out/build.log" 2>&1 ||
		{ cat "$out/build.log" >&2; vm_die "cannot build the neighbour test module"; }
	printf '%s\n' "$hash" >"$out/.inputs"
}

# vm_health_stage DIR: the module into DIR/opt/ko/neighbour/, the packages
# into DIR/opt/pkg/.
vm_health_stage() {
	local d=$1 repo=$REPO_ROOT/target/release/milspec-repo keys=$CACHE_DIR/engine-keys v

	[[ -x $repo && -s $keys/release.key ]] || vm_die "health: needs the engine fixtures (declare engine first)"
	vm_neighbour_build
	install -D -m 0644 "$CACHE_DIR/neighbour/milspec-neighbour.ko" "$d/opt/ko/neighbour/milspec-neighbour.ko"
	mkdir -p "$d/opt/pkg"
	for v in 1.6.0 1.7.0 1.8.0 1.9.0-warnlater; do
		"$repo" pack --version "${v%-*}" --module "$KO_DIR/v$v/dell-milspec.ko" \
			--key "$keys/release.key" --out "$d/opt/pkg/${v%-*}.mspkg" >/dev/null ||
			vm_die "packing $v failed"
	done
}
