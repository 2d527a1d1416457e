# SPDX-License-Identifier: GPL-2.0
# vm-scenario: host side: kmod/dkms.conf is valid and DKMS builds the module
#   for the pinned kernel (in a private DKMS tree, nothing installed).
# where: host
# timeout: 300
# shellcheck shell=bash
set -euo pipefail

: "${REPO_ROOT:?}" "${KERNEL_RELEASE:?}" "${RUNDIR:?}"
VERSION=$(cat "$REPO_ROOT/kmod/VERSION")

src=$RUNDIR/src/dell-milspec-$VERSION
tree=$RUNDIR/dkms
mkdir -p "$src" "$tree"
(cd "$REPO_ROOT/kmod" && cp Kbuild Makefile VERSION dkms.conf ./*.c "$src/")

# dkms sources the file with bash: it must read the version from VERSION.
got=$(bash -c '. "$1"; echo "$PACKAGE_NAME $PACKAGE_VERSION $AUTOINSTALL"' _ "$src/dkms.conf")
[[ $got == "dell-milspec $VERSION yes" ]] || { echo "FAIL: dkms.conf gives '$got'"; exit 1; }

opts=(-m dell-milspec -v "$VERSION" --sourcetree "$RUNDIR/src" --dkmstree "$tree")
dkms add "${opts[@]}"
dkms build "${opts[@]}" -k "$KERNEL_RELEASE" ||
	{ cat "$tree/dell-milspec/$VERSION/build/make.log" 2>/dev/null; exit 1; }
ko=$(find "$tree/dell-milspec/$VERSION/$KERNEL_RELEASE" -name 'dell-milspec.ko*' | head -n 1)
[[ -n $ko ]] || { echo "FAIL: dkms built no module"; exit 1; }
case $ko in
*.xz) xz -dc "$ko" >"$RUNDIR/dkms.ko" ;;
*.zst) zstd -qdc "$ko" >"$RUNDIR/dkms.ko" ;;
*.gz) gzip -dc "$ko" >"$RUNDIR/dkms.ko" ;;
*) cp "$ko" "$RUNDIR/dkms.ko" ;;
esac
[[ $(modinfo -F name "$RUNDIR/dkms.ko") == dell_milspec ]] || { echo "FAIL: wrong module name"; exit 1; }
[[ $(modinfo -F version "$RUNDIR/dkms.ko") == "$VERSION" ]] || { echo "FAIL: wrong version"; exit 1; }
echo "dkms built $(basename "$ko") $VERSION for $KERNEL_RELEASE"
