# SPDX-License-Identifier: GPL-2.0
# vm-scenario: under real UEFI Secure Boot (OVMF's Secure Boot firmware, the
#   fleet certificate as PK, KEK and db), the kernel locks itself down and
#   enforces module signatures on its own; `milspecd policy` says so and
#   names the fleet key the kernel holds; a package whose module the fleet
#   certificate signs is installed, then another swapped in live; an
#   unsigned package and one signed by another certificate are refused
#   before the unload, the live module, its parameters and the state record
#   unchanged.
# vendor: Dell Inc.
# boots: 1
# firmware: secure-boot
# needs: bins engine secure-boot dbus
# timeout: 120

mkdir -p /sys/kernel/security
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
# efivarfs, the kernel's own module (its build key signed it), as systemd
# would mount it.
insmod /opt/secure-boot/efivarfs.ko || fail "the kernel's own efivarfs module did not load"
mount -t efivarfs efivarfs /sys/firmware/efi/efivars || fail "efivarfs did not mount"

# What the kernel says on its own.
dmesg | grep -E 'Secure boot|secureboot|locked down|UEFI:db' | sed 's/^/    dmesg| /'
check "booted by UEFI" test -d /sys/firmware/efi
expect_match "the kernel is locked down by Secure Boot" "$(cat /sys/kernel/security/lockdown)" '\[integrity\]'
expect_eq "sig_enforce on with no command-line flag" "$(cat /sys/module/module/parameters/sig_enforce)" Y
expect_no_match "no sig_enforce flag given" "$(cat /proc/cmdline)" 'sig_enforce'
skid=$(cat /opt/secure-boot/fleet.skid)
expect_match "the fleet certificate is a kernel key" "$(cat /proc/keys)" "Fleet modules: $skid: X509"

# What milspecd reads of it.
milspecd policy | sed 's/^/    policy| /'
json=$(milspecd policy --json | tr -d '\n')
expect_match "Secure Boot read from efivarfs" "$json" '"secure_boot": *true'
expect_match "lockdown read" "$json" '"lockdown": *"integrity"'
expect_match "enforced through lockdown" "$json" '"enforcement": *\{ *"kind": *"lockdown", *"mode": *"integrity" *\}'
expect_match "the fleet key listed, in .platform (UEFI db)" "$json" "\"skid\": *\"$skid\", *\"keyring\": *\".platform\""
expect_match "the kernel's build key in .builtin_trusted_keys" "$json" '"keyring": *".builtin_trusted_keys"'
expect_no_match "every key placed in its keyring" "$json" '"keyring": *null'
expect_match "platform keyring counted" "$json" '"name": *".platform", *"keys": *1'

# The kernel refuses an unsigned module by itself.
if insmod "$(ko prod)" 2>/tmp/insmod.err; then
	fail "an unsigned module loaded under Secure Boot"
fi
say "insmod refused: $(cat /tmp/insmod.err)"

. /vm/engine.sh
# A fleet-signed package: accepted, loaded, committed.
install_pkg fleet-1.0.0 0
expect_eq "fleet 1.0.0 live" "$(live_version)" 1.0.0
expect_eq "fleet 1.0.0 committed" "$(history_last committed version)" 1.0.0
expect_no_match "the kernel saw a good signature" "$(dmesg)" 'module verification failed'
params() { for p in /sys/module/"$MOD"/parameters/*; do printf '%s=%s\n' "${p##*/}" "$(cat "$p")"; done; }
params >/tmp/params.before

# Refused before the unload: an unsigned build and another certificate's.
snap_state sb0
install_pkg 1.1.0 2
expect_match "unsigned: refused at plan" "$(cat /tmp/install.out)" "records no module signature"
expect_match "unsigned: names the lockdown" "$(cat /tmp/install.out)" "locked down"
install_pkg modsig-untrusted 2
out=$(cat /tmp/install.out)
expect_match "other certificate: refused at plan" "$out" "a key the kernel does not hold"
expect_match "other certificate: names the signer" "$out" '"Stranger modules" \(key id [0-9a-f]*\)'
expect_match "other certificate: names the fleet key" "$out" "key id $skid"
expect_eq "1.0.0 still live" "$(live_version)" 1.0.0
params >/tmp/params.after
check "parameters unchanged" cmp -s /tmp/params.before /tmp/params.after
expect_state_same sb0 "refused under Secure Boot" rejected rejected

# A fleet-signed upgrade is swapped in live.
install_pkg fleet-1.1.0 0
expect_eq "fleet 1.1.0 swapped in" "$(live_version)" 1.1.0
expect_eq "fleet 1.1.0 committed" "$(history_last committed version)" 1.1.0
[ "$(grep -c "^$MOD " /proc/modules)" = 1 ] || fail "not exactly one $MOD"

# The compliance report, read locally, by the daemon over the system bus,
# and by an unprivileged caller, against what the kernel says.
. /vm/dbus.sh
start_bus
start_daemon "$CONF"
milspecctl report | sed 's/^/    report| /'
one_line() { tr -d '\n' | sed 's/  */ /g; s/"at": "[^"]*",//'; }
# ere TEXT: TEXT as an extended regular expression that matches only itself.
ere() { printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|]/\\&/g'; }
milspecd report --config "$CONF" --json | one_line >/tmp/report-local.json
milspecctl report --json | one_line >/tmp/report-bus.json
as_nobody 0 report --json
one_line </tmp/ctl.out >/tmp/report-nobody.json
stop_daemon
r=$(cat /tmp/report-bus.json)
expect_match "report: schema" "$r" '"schema": "milspec.report/1"'
expect_match "report: Secure Boot" "$r" '"secure_boot": true'
expect_match "report: lockdown" "$r" "\"lockdown\": \"$(sed 's/.*\[\([a-z]*\)\].*/\1/' /sys/kernel/security/lockdown)\""
expect_match "report: sig_enforce" "$r" '"sig_enforce": true'
expect_match "report: the fleet key in .platform" "$r" "\"skid\": \"$skid\", \"keyring\": \".platform\""
# Every system keyring of /proc/keys, with its count.
awk '$8 == "keyring" && $9 ~ /^\.(builtin_trusted_keys|secondary_trusted_keys|machine|platform|blacklist):$/ {
	n = ($10 == "empty") ? 0 : $10; sub(/:$/, "", $9); print $9, n }' /proc/keys >/tmp/rings
check "the kernel shows its system keyrings" test -s /tmp/rings
while read -r ring n; do
	expect_match "report: keyring $ring ($n)" "$r" "\"name\": \"$ring\", \"keys\": $n,"
done </tmp/rings
expect_match "report: taint value" "$r" "\"taint\": \\{ \"value\": $(cat /proc/sys/kernel/tainted),"
expect_match "report: kernel release" "$r" "\"kernel_release\": \"$(ere "$(uname -r)")\""
expect_match "report: DMI vendor" "$r" "\"sys_vendor\": \"$(ere "$(cat /sys/class/dmi/id/sys_vendor)")\""
expect_match "report: threshold" "$r" '"threshold": 1'
expect_match "report: committed 1.1.0" "$r" '"committed": \{ "slot": "[ab]", "version": "1.1.0"'
expect_match "report: the committed slot covers this kernel" "$r" "\"kernels\": \\[ \"$(ere "$(uname -r)")\" \\]"
expect_match "report: live 1.1.0" "$r" "\"live_module\": \\{ \"loaded\": true, \"version\": \"$(live_version)\""
expect_match "report: the live module is the committed build" "$r" '"committed_build": true'
expect_match "report: its file matches" "$r" '"file_matches": true'
sum=$(sha256sum "$STATE"/slots/*/kernels/"$(uname -r)".ko | awk '{ print $1 }' | sort -u)
found=
for s in $sum; do
	if printf '%s\n' "$r" | grep -q "\"sha256\": \"$s\""; then found=$s; fi
done
check "report: the live build's SHA-256 is a slot file's" test -n "$found"
expect_match "report: the signer is the fleet key, trusted" "$r" "\"key_id\": \"$skid\".*\"signer_trusted\": true"
check "report: the same locally and over the bus" cmp -s /tmp/report-local.json /tmp/report-bus.json
check "report: the same for an unprivileged caller" cmp -s /tmp/report-bus.json /tmp/report-nobody.json
