# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the UEFI Secure Boot scenarios ("# firmware: secure-boot",
# "# needs: secure-boot"): a fleet module-signing certificate made with
# `milspec-repo mok-keygen`, an OVMF variable store in which that
# certificate is PK, KEK and db with Secure Boot on (virt-firmware's
# virt-fw-vars, from PyPI, in a venv of the cache), the guest kernel image
# signed with it (sbsign), and packages whose module it signs. The guest
# then boots OVMF's Secure Boot firmware on q35: the kernel locks itself
# down and trusts the fleet certificate through its .platform keyring.

VM_PACKAGES+=(ovmf sbsigntool openssl)

# OVMF's Secure Boot build and its empty variable store (Debian's ovmf).
OVMF_CODE_SECBOOT=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd
OVMF_VARS_EMPTY=/usr/share/OVMF/OVMF_VARS_4M.fd
# virt-firmware, pinned; installed into the cache, never on the host's python.
VIRT_FIRMWARE_VERSION=26.10
SB_DIR=$CACHE_DIR/secure-boot
# The owner GUID the fleet certificate is enrolled under in db.
SB_OWNER=5d1c2e9a-7b43-4f0e-9a61-3c8e2d4b6f17

# vm_virt_fw_vars: the path of virt-fw-vars, installing it first if needed.
vm_virt_fw_vars() {
	local venv=$CACHE_DIR/venv-virt-firmware log=$CACHE_DIR/pip-virt-firmware.log
	if [[ ! -x $venv/bin/virt-fw-vars ]]; then
		rm -rf "$venv"
		vm_log "installing virt-firmware $VIRT_FIRMWARE_VERSION into $venv" >&2
		{ python3 -m venv "$venv" &&
			"$venv/bin/pip" install -q --disable-pip-version-check "virt-firmware==$VIRT_FIRMWARE_VERSION"; } \
			>"$log" 2>&1 || { tail -n 20 "$log" >&2; vm_die "installing virt-firmware failed (log: $log)"; }
	fi
	printf '%s\n' "$venv/bin/virt-fw-vars"
}

# vm_secure_boot_keys: the fleet certificate, the variable store and the
# signed kernel image in SB_DIR, made once (all again if any is missing).
vm_secure_boot_keys() {
	local repo=$REPO_ROOT/target/release/milspec-repo vars tmp
	[[ -s $SB_DIR/fleet-modules.pem && -s $SB_DIR/vars.fd && -s $SB_DIR/vmlinuz.signed ]] && return 0
	[[ -x $repo ]] || vm_die "secure-boot: milspec-repo is not built ($BINS_STATUS)"
	[[ -r $OVMF_CODE_SECBOOT && -r $OVMF_VARS_EMPTY ]] || vm_die "secure-boot: no OVMF firmware (ovmf)"
	vars=$(vm_virt_fw_vars)
	rm -rf "$SB_DIR"
	tmp=$(mktemp -d "$CACHE_DIR/secure-boot.XXXXXX")
	"$repo" mok-keygen --out "$tmp" --name fleet-modules --subject "Fleet modules" >/dev/null ||
		vm_die "secure-boot: mok-keygen failed"
	"$vars" --input "$OVMF_VARS_EMPTY" --output "$tmp/vars.fd" --enroll-cert "$tmp/fleet-modules.pem" \
		--add-db "$SB_OWNER" "$tmp/fleet-modules.pem" --no-microsoft --secure-boot \
		>"$tmp/virt-fw-vars.log" 2>&1 || { cat "$tmp/virt-fw-vars.log" >&2; vm_die "secure-boot: virt-fw-vars failed"; }
	sbsign --key "$tmp/fleet-modules.key" --cert "$tmp/fleet-modules.pem" \
		--output "$tmp/vmlinuz.signed" "$(vm_vmlinuz "$KERNEL_RELEASE")" >"$tmp/sbsign.log" 2>&1 ||
		{ cat "$tmp/sbsign.log" >&2; vm_die "secure-boot: sbsign failed"; }
	mv "$tmp" "$SB_DIR"
}

# vm_secure_boot_stage DIR: the fleet-signed packages into DIR/opt/pkg.
vm_secure_boot_stage() {
	local d=$1 repo=$REPO_ROOT/target/release/milspec-repo keys=$CACHE_DIR/engine-keys v
	[[ -s $keys/release.key ]] || vm_die "secure-boot: needs the engine fixtures (keys)"
	vm_secure_boot_keys
	mkdir -p "$d/opt/pkg" "$d/opt/secure-boot"
	for v in 1.0.0 1.1.0; do
		"$repo" pack --version "$v" --module "$KO_DIR/v$v/dell-milspec.ko" --key "$keys/release.key" \
			--module-cert "$SB_DIR/fleet-modules.pem" --module-key "$SB_DIR/fleet-modules.key" \
			--out "$d/opt/pkg/fleet-$v.mspkg" >/dev/null || vm_die "secure-boot: packing fleet-$v failed"
	done
	# The guest compares the kernel's view with the certificate's key id.
	install -m 0644 "$SB_DIR/fleet-modules.pem" "$d/opt/secure-boot/"
	# efivarfs is a module of this kernel (signed by its build key, so it
	# loads under lockdown); the guest mounts it to read SecureBoot.
	install -m 0644 "$CACHE_DIR/kernel/$KERNEL_RELEASE/efivarfs.ko" "$d/opt/secure-boot/"
	openssl x509 -in "$SB_DIR/fleet-modules.pem" -noout -ext subjectKeyIdentifier |
		sed -n 's/^ *\([0-9A-Fa-f:]*\)$/\1/p' | tr -d ':' | tr 'A-F' 'a-f' >"$d/opt/secure-boot/fleet.skid"
	[[ -s $d/opt/secure-boot/fleet.skid ]] || vm_die "secure-boot: no subject key id in the fleet certificate"
}

# vm_firmware_secure_boot RUNDIR RELEASE: sets VM_FW_ARGS (qemu arguments) and
# VM_FW_KERNEL (the signed image) for a boot under Secure Boot. The
# variable store is copied once per scenario, so its boots share it as a
# machine's NVRAM would be.
vm_firmware_secure_boot() {
	local rundir=$1
	[[ $2 == "$KERNEL_RELEASE" ]] || vm_die "secure-boot: only $KERNEL_RELEASE is signed for it (boots of the new kernel)"
	[[ -s $SB_DIR/vars.fd ]] || vm_die "secure-boot: no variable store (declare '# needs: secure-boot')"
	[[ -f $rundir/vars.fd ]] || cp "$SB_DIR/vars.fd" "$rundir/vars.fd"
	# shellcheck disable=SC2034 # read by vm_boot (tests/vm/lib.sh)
	VM_FW_ARGS=(-machine q35
		-drive "if=pflash,format=raw,readonly=on,file=$OVMF_CODE_SECBOOT"
		-drive "if=pflash,format=raw,file=$rundir/vars.fd")
	# shellcheck disable=SC2034 # read by vm_boot (tests/vm/lib.sh)
	VM_FW_KERNEL=$SB_DIR/vmlinuz.signed
}
