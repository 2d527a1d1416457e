#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host-side checks of what the package ships (docs/service.md):
# `systemd-analyze verify` on every unit, the unit's security exposure
# against its target, the default config accepted by `milspecd config`, one
# kmod version everywhere the package names it, the .deb's contents and
# conffiles, and shellcheck on the maintainer and test scripts.
# Usage: static-checks.sh DEB   (needs target/release/milspecd)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEB=${1:?usage: static-checks.sh path/to/milspecd.deb}
# Exposure target (systemd-analyze security scale 0.0-10.0).
EXPOSURE_MAX=${EXPOSURE_MAX:-2.5}
fails=0

pass() { printf 'static: ok   %s\n' "$*"; }
flunk() {
	printf 'static: FAIL %s\n' "$*" >&2
	fails=$((fails + 1))
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. systemd-analyze verify, in a root holding the host's units plus ours
# and stand-ins for the binaries ExecStart= names.
mkdir -p "$tmp/vroot/usr/lib/systemd/system" "$tmp/vroot/usr/bin"
cp -a /lib/systemd/system/. "$tmp/vroot/usr/lib/systemd/system/"
for b in milspecd milspecctl milspec-repo; do
	printf '#!/bin/sh\n' >"$tmp/vroot/usr/bin/$b"
	chmod 0755 "$tmp/vroot/usr/bin/$b"
done
units=()
for u in "$ROOT"/systemd/*.service "$ROOT"/systemd/*.socket "$ROOT"/systemd/*.timer "$ROOT"/systemd/*.path; do
	[[ -f $u ]] || continue
	cp "$u" "$tmp/vroot/usr/lib/systemd/system/"
	units+=("$(basename "$u")")
done
((${#units[@]})) || flunk "no unit under systemd/"
for u in "${units[@]}"; do
	if out=$(systemd-analyze verify --root="$tmp/vroot" "$u" 2>&1) && [[ -z $out ]]; then
		pass "systemd-analyze verify $u"
	else
		flunk "systemd-analyze verify $u: $out"
	fi
done

# 2. Exposure of the service (offline: the unit file as written).
line=$(systemd-analyze security --offline=yes "$ROOT/systemd/milspecd.service" 2>&1 | tail -n 1)
exposure=$(sed -n 's/.*milspecd.service: \([0-9.]*\).*/\1/p' <<<"$line")
if [[ -n $exposure ]] && awk -v e="$exposure" -v m="$EXPOSURE_MAX" 'BEGIN { exit !(e <= m) }'; then
	pass "systemd-analyze security: exposure $exposure (target <= $EXPOSURE_MAX)"
else
	flunk "systemd-analyze security: '$line' (target <= $EXPOSURE_MAX)"
fi

# 3. The shipped default config, as is and with [source] uncommented.
conf=$ROOT/daemon/dist/etc/milspecd/milspecd.toml
milspecd=$ROOT/target/release/milspecd
: >"$tmp/empty.toml"
if "$milspecd" config --config "$conf" >"$tmp/conf.out" 2>&1 &&
	"$milspecd" config --config "$tmp/empty.toml" | diff -q - "$tmp/conf.out" >/dev/null; then
	pass "default config accepted, equal to the built-in defaults"
else
	flunk "default config: $(cat "$tmp/conf.out")"
fi
sed 's/^#\(\[source\]\|[a-z_]* = \)/\1/' "$conf" >"$tmp/source.toml"
if "$milspecd" config --config "$tmp/source.toml" 2>&1 | grep -q '^\[source\]'; then
	pass "default config with its [source] example uncommented accepted"
else
	flunk "default config's [source] example: $("$milspecd" config --config "$tmp/source.toml" 2>&1)"
fi

# 4. One kmod version: kmod/VERSION, the DKMS source path in the .deb, and
# the maintainer scripts.
kver=$(tr -d '[:space:]' <"$ROOT/kmod/VERSION")
bad=$(grep -o 'usr/src/dell-milspec-[^/"]*' "$ROOT/daemon/Cargo.toml" | sort -u | grep -vx "usr/src/dell-milspec-$kver" || true)
bad+=$(grep -h '^DKMS_VERSION=' "$ROOT"/daemon/debian/* | grep -vx "DKMS_VERSION=$kver" || true)
if [[ -z $bad ]]; then
	pass "kmod version $kver everywhere (Cargo.toml assets, maintainer scripts)"
else
	flunk "kmod/VERSION is $kver but the package says: $bad"
fi

# 5. The .deb's contents and control data.
dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's|^\./|/|' >"$tmp/files"
want=(
	/usr/bin/milspecd /usr/bin/milspecctl /usr/bin/milspec-repo
	/usr/lib/systemd/system/milspecd.service
	/usr/lib/udev/rules.d/60-milspecd.rules
	/usr/lib/modprobe.d/dell-milspec.conf
	/usr/share/dbus-1/system.d/com.dell.MilSpec1.conf
	/usr/share/polkit-1/actions/com.dell.milspec1.policy
	/usr/lib/systemd/catalog/milspecd.catalog
	/etc/milspecd/milspecd.toml
	/usr/lib/milspecd/kernel-hook /etc/kernel/postinst.d/milspecd /etc/kernel/postrm.d/milspecd
	/usr/lib/kernel/install.d/50-milspecd.install
	"/usr/src/dell-milspec-$kver/dkms.conf" "/usr/src/dell-milspec-$kver/dell-milspec.c"
	"/usr/src/dell-milspec-$kver/Kbuild" "/usr/src/dell-milspec-$kver/Makefile"
	"/usr/src/dell-milspec-$kver/VERSION"
)
missing=()
for f in "${want[@]}"; do
	grep -qx -- "$f" "$tmp/files" || missing+=("$f")
done
if ((${#missing[@]} == 0)); then
	pass ".deb holds all $((${#want[@]})) expected files ($(wc -l <"$tmp/files") entries)"
else
	flunk ".deb lacks: ${missing[*]}"
fi
dpkg-deb -e "$DEB" "$tmp/control"
if grep -qx /etc/milspecd/milspecd.toml "$tmp/control/conffiles" &&
	grep -q '^Recommends:.*dkms' "$tmp/control/control" &&
	grep -q 'try-restart milspecd.service' "$tmp/control/postinst" &&
	[[ $(grep -c 'stop milspecd' "$tmp/control/prerm") == 1 ]] &&
	grep -B1 'stop milspecd' "$tmp/control/prerm" | grep -q '"\$1" = remove'; then
	pass ".deb control: conffile, Recommends dkms, restart after upgrade, no stop before it"
else
	flunk ".deb control data: $(cat "$tmp/control/control" "$tmp/control/conffiles")"
fi

# 6. shellcheck on the scripts that ship or run in the guest.
if command -v shellcheck >/dev/null; then
	if out=$(shellcheck -S warning -s sh "$ROOT"/daemon/debian/postinst "$ROOT"/daemon/debian/prerm \
		"$ROOT"/daemon/debian/postrm "$ROOT"/daemon/dist/usr/lib/milspecd/kernel-hook \
		"$ROOT"/daemon/dist/etc/kernel/postinst.d/milspecd "$ROOT"/daemon/dist/etc/kernel/postrm.d/milspecd \
		"$ROOT"/daemon/dist/usr/lib/kernel/install.d/50-milspecd.install "$ROOT"/tests/system/guest/systest-run \
		"$ROOT"/tests/system/guest/guest.sh 2>&1) &&
		out+=$(shellcheck -S warning -x "$ROOT"/tests/system/*.sh 2>&1); then
		pass "shellcheck: maintainer scripts, kernel hooks, guest and host scripts"
	else
		flunk "shellcheck: $out"
	fi
fi

((fails == 0)) || { echo "static: $fails check(s) failed" >&2; exit 1; }
