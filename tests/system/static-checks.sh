#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Host-side checks of what the package ships (docs/service.md):
# `systemd-analyze verify` on every unit, the unit's security exposure
# against its target, the default config accepted by `milspecd config`, one
# kmod version everywhere the package names it, the two .debs' contents,
# conffiles and relations, and shellcheck on the maintainer and test
# scripts. (lintian runs in daemon/debian/build-debs.)
# Usage: static-checks.sh MILSPECD_DEB MILSPEC_REPO_DEB   (needs target/release/milspecd)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEB=${1:?usage: static-checks.sh path/to/milspecd.deb path/to/milspec-repo.deb}
REPO_DEB=${2:?usage: static-checks.sh path/to/milspecd.deb path/to/milspec-repo.deb}
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
mkdir -p "$tmp/vroot/usr/lib/systemd/system" "$tmp/vroot/usr/bin" "$tmp/vroot/usr/sbin"
cp -a /lib/systemd/system/. "$tmp/vroot/usr/lib/systemd/system/"
for b in sbin/milspecd bin/milspecctl bin/milspec-repo; do
	printf '#!/bin/sh\n' >"$tmp/vroot/usr/$b"
	chmod 0755 "$tmp/vroot/usr/$b"
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
# `milspecd config` checks what `run` checks, trusted keys included: the
# keys folder is pointed at one made here (the only line changed).
conf=$ROOT/daemon/dist/etc/milspecd/milspecd.toml
milspecd=$ROOT/target/release/milspecd
"$ROOT/target/release/milspec-repo" keygen --out "$tmp/keys" --name static >/dev/null
keys_line="keys_dir = \"$tmp/keys\""
sed "s|^keys_dir = .*|$keys_line|" "$conf" >"$tmp/shipped.toml"
printf '[trust]\n%s\n' "$keys_line" >"$tmp/empty.toml"
if "$milspecd" config --config "$tmp/shipped.toml" >"$tmp/conf.out" 2>&1 &&
	"$milspecd" config --config "$tmp/empty.toml" | diff -q - "$tmp/conf.out" >/dev/null; then
	pass "default config accepted, equal to the built-in defaults"
else
	flunk "default config: $(cat "$tmp/conf.out")"
fi
sed 's/^#\(\[source\]\|[a-z_]* = \)/\1/' "$tmp/shipped.toml" >"$tmp/source.toml"
if "$milspecd" config --config "$tmp/source.toml" >"$tmp/source.out" 2>&1 && grep -q '^\[source\]' "$tmp/source.out"; then
	pass "default config with its [source] example uncommented accepted"
else
	flunk "default config's [source] example: $(cat "$tmp/source.out")"
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
	/usr/sbin/milspecd /usr/bin/milspecctl
	/usr/lib/systemd/system/milspecd.service /usr/lib/systemd/system/milspecd.path
	/usr/lib/udev/rules.d/60-milspecd.rules
	/usr/lib/modprobe.d/dell-milspec.conf
	/usr/share/dbus-1/system.d/com.dell.MilSpec1.conf
	/usr/share/polkit-1/actions/com.dell.milspec1.policy
	/usr/lib/systemd/catalog/milspecd.catalog
	/etc/milspecd/milspecd.toml
	/etc/milspecd/keys/README /etc/milspecd/conf.d/README /etc/milspecd/health.d/README
	/usr/share/doc/milspecd/copyright /usr/share/doc/milspecd/changelog.Debian.gz
	/usr/lib/milspecd/kernel-hook /etc/kernel/postinst.d/milspecd /etc/kernel/postrm.d/milspecd
	/usr/lib/kernel/install.d/50-milspecd.install
	/etc/prometheus/rules/milspecd.rules.yml /usr/share/grafana/dashboards/milspecd.json
	/usr/share/doc/milspecd/fleet.md
	"/usr/src/dell-milspec-$kver/dkms.conf" "/usr/src/dell-milspec-$kver/dell-milspec.c"
	"/usr/src/dell-milspec-$kver/Kbuild" "/usr/src/dell-milspec-$kver/Makefile"
	"/usr/src/dell-milspec-$kver/VERSION"
	/usr/share/man/man8/milspecd.8.gz /usr/share/man/man8/milspecd-run.8.gz
	/usr/share/man/man1/milspecctl.1.gz /usr/share/man/man1/milspecctl-install.1.gz
	/usr/share/man/man5/milspecd.toml.5.gz
	/usr/share/bash-completion/completions/milspecd /usr/share/bash-completion/completions/milspecctl
	/usr/share/zsh/vendor-completions/_milspecd /usr/share/zsh/vendor-completions/_milspecctl
	/usr/share/fish/vendor_completions.d/milspecd.fish /usr/share/fish/vendor_completions.d/milspecctl.fish
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
# Moved away: the daemon to /usr/sbin, the publisher's tool to its package;
# no path in the package names the old place of the daemon.
if ! grep -qx -e /usr/bin/milspecd -e /usr/bin/milspec-repo "$tmp/files"; then
	pass ".deb ships neither /usr/bin/milspecd nor milspec-repo"
else
	flunk ".deb still ships $(grep -x -e /usr/bin/milspecd -e /usr/bin/milspec-repo "$tmp/files" | tr '\n' ' ')"
fi
mkdir -p "$tmp/tree"
dpkg-deb -x "$DEB" "$tmp/tree"
# (The documentation may tell of the move.)
if ! grep -rl --exclude-dir=doc '/usr/bin/milspecd\b' "$tmp/tree" >"$tmp/oldpath"; then
	pass "no shipped file outside /usr/share/doc names /usr/bin/milspecd"
else
	flunk "files naming /usr/bin/milspecd: $(tr '\n' ' ' <"$tmp/oldpath")"
fi
# The udev rule wants the path unit and the service on both Dell names.
rule=$ROOT/udev/60-milspecd.rules
if grep -q 'ATTR{sys_vendor}=="Dell Inc.|Dell Computer Corporation"' "$rule" &&
	grep -q 'ENV{SYSTEMD_WANTS}+="milspecd.path milspecd.service"' "$rule"; then
	pass "udev rule: both Dell vendor strings, wants milspecd.path and milspecd.service"
else
	flunk "udev rule does not match both vendor strings or want both units"
fi
dpkg-deb -e "$DEB" "$tmp/control"
if grep -qx /etc/milspecd/milspecd.toml "$tmp/control/conffiles" &&
	grep -q '^Recommends:.*dkms' "$tmp/control/control" &&
	grep -q '^Depends:.*default-dbus-system-bus | dbus-system-bus' "$tmp/control/control" &&
	! grep -q '^Depends:.*dbus,' "$tmp/control/control" &&
	grep -q 'try-restart milspecd.path milspecd.service' "$tmp/control/postinst" &&
	[[ $(grep -c 'stop milspecd' "$tmp/control/prerm") == 1 ]] &&
	grep -B1 'stop milspecd' "$tmp/control/prerm" | grep -q '"\$1" = remove'; then
	pass ".deb control: conffile, the system bus as a virtual dependency, Recommends dkms, restart after upgrade, no stop before it"
else
	flunk ".deb control data: $(cat "$tmp/control/control" "$tmp/control/conffiles")"
fi
# milspec-repo: its binary only, taking the file over from milspecd up to
# the revision that still shipped it.
dpkg-deb -c "$REPO_DEB" | awk '{ print $6 }' | sed 's|^\./|/|' >"$tmp/repo-files"
dpkg-deb -e "$REPO_DEB" "$tmp/repo-control"
ver=$(dpkg-deb -f "$DEB" Version)
if grep -qx /usr/bin/milspec-repo "$tmp/repo-files" &&
	grep -qx /usr/share/doc/milspec-repo/copyright "$tmp/repo-files" &&
	grep -qx /usr/share/man/man1/milspec-repo.1.gz "$tmp/repo-files" &&
	grep -qx /usr/share/bash-completion/completions/milspec-repo "$tmp/repo-files" &&
	! grep -q -e milspecd -e /etc/ "$tmp/repo-files" &&
	grep -qx 'Breaks: milspecd (<< 0.1.0-2~)' "$tmp/repo-control/control" &&
	grep -qx 'Replaces: milspecd (<< 0.1.0-2~)' "$tmp/repo-control/control" &&
	dpkg --compare-versions "$ver" ge 0.1.0-2~; then
	pass "milspec-repo .deb: its tool only, Breaks/Replaces milspecd << 0.1.0-2~ (milspecd is $ver)"
else
	flunk "milspec-repo .deb: $(cat "$tmp/repo-control/control") $(tr '\n' ' ' <"$tmp/repo-files")"
fi

# 6. shellcheck on the scripts that ship or run in the guest.
if command -v shellcheck >/dev/null; then
	if out=$(shellcheck -S warning -s sh "$ROOT"/daemon/debian/postinst "$ROOT"/daemon/debian/prerm \
		"$ROOT"/daemon/debian/postrm "$ROOT"/daemon/debian/build-debs "$ROOT"/daemon/dist/usr/lib/milspecd/kernel-hook \
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
