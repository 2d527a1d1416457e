# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the kernel-lifecycle scenarios ("# needs: kernels"): packages
# with builds for one or both pinned kernels (6.12.111 "old", 6.12.113
# "new"), kernel-build republishes made with `milspec-repo add-build`, and
# mirror folders the guest serves on its own loopback. Scenarios that use
# it also need "engine" (keys and config).

KO_VARIANTS+=(v1.0.0@old::1.0.0 v1.2.0@old::1.2.0)

# vm_kernels_stage DIR: packages into DIR/opt/pkg, mirrors into DIR/opt/mirror-*.
vm_kernels_stage() {
	local d=$1 repo=$REPO_ROOT/target/release/milspec-repo keys=$CACHE_DIR/engine-keys
	local pkg=$d/opt/pkg key m

	[[ -x $repo && -s $keys/release.key ]] || vm_die "kernels: needs the engine fixtures (milspec-repo, keys)"
	key=$keys/release.key
	mkdir -p "$pkg"
	# Two kernels in one package, and one kernel each.
	"$repo" pack --version 1.0.0 --module "$KO_DIR/v1.0.0/dell-milspec.ko" \
		--module "$KO_DIR/v1.0.0@old/dell-milspec.ko" --key "$key" --out "$pkg/k-1.0.0-both.mspkg" >/dev/null
	"$repo" pack --version 1.1.0 --module "$KO_DIR/v1.1.0/dell-milspec.ko" \
		--key "$key" --out "$pkg/k-1.1.0-new.mspkg" >/dev/null
	"$repo" pack --version 1.1.0 --module "$KO_DIR/v1.1.0@old/dell-milspec.ko" \
		--key "$key" --out "$pkg/k-1.1.0-old.mspkg" >/dev/null
	"$repo" pack --version 1.2.0 --module "$KO_DIR/v1.2.0@old/dell-milspec.ko" \
		--key "$key" --out "$pkg/k-1.2.0-old.mspkg" >/dev/null
	# The same releases republished with the other kernel's build added.
	"$repo" add-build --package "$pkg/k-1.1.0-new.mspkg" --module "$KO_DIR/v1.1.0@old/dell-milspec.ko" \
		--key "$key" --out "$pkg/k-1.1.0-new+old.mspkg" >/dev/null
	"$repo" add-build --package "$pkg/k-1.1.0-old.mspkg" --module "$KO_DIR/v1.1.0/dell-milspec.ko" \
		--key "$key" --out "$pkg/k-1.1.0-old+new.mspkg" >/dev/null
	# A republish that changes a parameter: not a kernel-build republish.
	"$repo" pack --version 1.1.0 --module "$KO_DIR/v1.1.0/dell-milspec.ko" \
		--module "$KO_DIR/v1.1.0@old/dell-milspec.ko" --param mode5_level=3 \
		--key "$key" --out "$pkg/k-1.1.0-changed.mspkg" >/dev/null

	# Mirrors: 1.1.0 for the new kernel only, then with the old kernel's
	# build added (index version 2); 1.1.0 for the old kernel with the new
	# kernel's build added; and 1.1.0 for both with another parameter (a
	# mirror that passes a changed release off as a republish).
	m=$CACHE_DIR/kernel-mirrors
	rm -rf "$m"
	mkdir -p "$m"
	"$repo" publish --mirror "$m/new-only" --key "$key" "$pkg/k-1.1.0-new.mspkg" >/dev/null
	cp -a "$m/new-only" "$m/new+old"
	"$repo" publish --mirror "$m/new+old" --key "$key" "$pkg/k-1.1.0-new+old.mspkg" >/dev/null
	"$repo" publish --mirror "$m/old+new" --key "$key" "$pkg/k-1.1.0-old.mspkg" >/dev/null
	"$repo" publish --mirror "$m/old+new" --key "$key" "$pkg/k-1.1.0-old+new.mspkg" >/dev/null
	"$repo" publish --mirror "$m/changed" --key "$key" "$pkg/k-1.1.0-changed.mspkg" >/dev/null
	# Index versions as a host meets them: new-only 1, changed 3, new+old 5.
	"$repo" refresh --mirror "$m/changed" --key "$key" >/dev/null
	"$repo" refresh --mirror "$m/changed" --key "$key" >/dev/null
	for _ in 1 2 3; do
		"$repo" refresh --mirror "$m/new+old" --key "$key" >/dev/null
	done
	cp -a "$m/." "$d/opt/"
	for m in new-only new+old old+new changed; do
		mv "$d/opt/$m" "$d/opt/mirror-$m"
	done
	install -m 0644 "$VM_DIR/guest/kernels.sh" "$d/vm/kernels.sh"
	install -D -m 0644 "$REPO_ROOT/daemon/dist/usr/lib/modprobe.d/dell-milspec.conf" "$d/opt/dist/modprobe.conf"
	install -D -m 0755 "$REPO_ROOT/daemon/dist/usr/lib/milspecd/kernel-hook" "$d/usr/lib/milspecd/kernel-hook"
}
