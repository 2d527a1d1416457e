# SPDX-License-Identifier: GPL-2.0
# vm-scenario: on a kernel booted with module.sig_enforce=1, `milspecd
#   policy` says signatures are enforced and lists the keys /proc/keys
#   shows (the kernel's built-in Debian keys); the kernel indeed refuses
#   the unsigned module; milspecd refuses an unsigned package and one whose
#   module is signed by a certificate the kernel lacks at plan time, before
#   any payload byte is written, changing nothing but the history.
# vendor: Dell Inc.
# boots: 1
# needs: bins engine
# cmdline: module.sig_enforce=1
# timeout: 90

mkdir -p /sys/kernel/security
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null || true
milspecd policy | sed 's/^/    policy| /'
json=$(milspecd policy --json | tr -d '\n ')
expect_match "sig_enforce read" "$json" '"sig_enforce":true'
expect_match "enforced through sig_enforce" "$json" '"enforcement":\{"kind":"sig-enforce"\}'
if [ -r /sys/kernel/security/lockdown ]; then
	expect_match "lockdown read (no Secure Boot: none)" "$json" '"lockdown":"none"'
else
	expect_match "no lockdown file: unknown" "$json" '"lockdown":null'
fi
expect_match "no UEFI: Secure Boot unknown" "$json" '"secure_boot":null'
# Every X.509 key of /proc/keys is listed, by its subject key id.
want=$(grep -c ' asymmetri ' /proc/keys || true)
got=$(milspecd policy --json | grep -c '"skid":' || true)
expect_eq "keys listed" "$got" "$want"
check "the kernel holds its built-in keys" test "$want" -ge 1
first=$(sed -n 's/.* asymmetri [^:]*: \([0-9a-f]*\): X509.*/\1/p' /proc/keys | head -n 1)
expect_match "the first key's skid" "$json" "\"skid\":\"$first\""
expect_match "keys placed in the builtin keyring (keyctl)" "$json" '"keyring":".builtin_trusted_keys"'
expect_match "builtin keyring counted" "$json" '"name":".builtin_trusted_keys","keys":[1-9]'
# What the policy says is what the kernel does: the unsigned module is refused.
if insmod "$(ko prod)" 2>/tmp/insmod.err; then
	fail "an unsigned module loaded under module.sig_enforce=1"
fi
say "insmod refused: $(cat /tmp/insmod.err)"
check "not loaded" test ! -e "/sys/module/$MOD"

# milspecd decides before the kernel does, from the manifest's record.
. /vm/engine.sh
install_pkg 1.1.0 2
expect_match "unsigned: refused at plan" "$(cat /tmp/install.out)" "records no module signature"
expect_match "unsigned: names the enforcement" "$(cat /tmp/install.out)" "module.sig_enforce is on"
expect_eq "unsigned: nothing loaded" "$(live_version)" none
snap_state sig0
install_pkg modsig-untrusted 2
out=$(cat /tmp/install.out)
expect_match "untrusted: refused at plan" "$out" "a key the kernel does not hold"
expect_match "untrusted: names the signer" "$out" '"Stranger modules" \(key id [0-9a-f]*\)'
expect_match "untrusted: names a key the kernel trusts" "$out" "key id $first"
expect_eq "untrusted: nothing loaded" "$(live_version)" none
expect_state_same sig0 "untrusted module signer" rejected
