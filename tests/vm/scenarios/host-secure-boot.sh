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
# needs: bins engine secure-boot
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
