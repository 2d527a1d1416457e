# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the soak scenario ("# needs: engine kmod-faults dbus soak"):
# the cycle count, and one faulty package per tenth cycle. A version that
# was rolled back is blocklisted for good, so every faulty cycle needs a
# version of its own: the WARN-at-init module (v1.2.0-warn) relabelled
# 2.C.D by rewriting its .modinfo version (same length, nothing else
# changes; the kernel does not check it), debug info stripped to keep the
# initramfs small. Sourced by tests/vm/lib.sh.

# Cycles of the soak: SOAK_CYCLES from the environment, 60 by default (CI);
# the reported figure is SOAK_CYCLES=500.
SOAK_CYCLES_DEFAULT=60
# Sequence of the package installed in cycle i: SOAK_SEQ_BASE + i.
SOAK_SEQ_BASE=2000000000

# vm_soak_stage DIR: /vm/soak.env and /opt/soak/fault-<i>.mspkg for every
# tenth cycle i.
vm_soak_stage() {
	local d=$1 cycles=${SOAK_CYCLES:-$SOAK_CYCLES_DEFAULT} i n version ko
	local repo=$REPO_ROOT/target/release/milspec-repo keys=$CACHE_DIR/engine-keys
	local src=$KO_DIR/v1.2.0-warn/dell-milspec.ko tmp

	if ! [[ $cycles =~ ^[0-9]+$ ]] || ((cycles < 10 || cycles > 990)); then
		vm_die "SOAK_CYCLES must be a number from 10 to 990, not '$cycles'"
	fi
	[[ -s $keys/release.key ]] || vm_die "no engine keys: declare 'engine' before 'soak' in # needs:"
	[[ -s $src ]] || vm_die "no $src (module variants not built)"
	mkdir -p "$d/opt/soak" "$d/vm"
	printf 'SOAK_CYCLES=%s\nSOAK_SEQ_BASE=%s\n' "$cycles" "$SOAK_SEQ_BASE" >"$d/vm/soak.env"
	tmp=$(mktemp -d)
	for ((i = 10; i <= cycles; i += 10)); do
		n=$((i / 10))
		version=2.$((n / 10)).$((n % 10))
		ko=$tmp/fault-$i.ko
		strip --strip-debug -o "$ko" "$src"
		perl -0777 -pi -e "s/\\0version=1\\.2\\.0\\0/\\0version=$version\\0/ or die 'no version=1.2.0 in .modinfo'" "$ko" ||
			vm_die "cannot relabel $src as $version"
		"$repo" pack --version "$version" --sequence $((SOAK_SEQ_BASE + i)) --module "$ko" \
			--key "$keys/release.key" --out "$d/opt/soak/fault-$i.mspkg" >/dev/null ||
			vm_die "packing the faulty $version failed"
	done
	rm -rf "$tmp"
}
