# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# Host side of the D-Bus scenarios ("# needs: dbus"): the real dbus-daemon
# with a system-bus configuration like Debian's (deny by default) plus the
# policy file milspecd ships, users root and nobody, and the guest helpers.
# Scenarios that use it also need "engine" (keys, config and packages).

# vm_dbus_stage DIR: dbus-daemon, its configuration and the shipped policy.
vm_dbus_stage() {
	local d=$1 daemon
	daemon=$(command -v dbus-daemon) || vm_die "dbus-daemon not found (apt-get install dbus)"

	vm_stage_elf "$d" "$daemon" /usr/bin/dbus-daemon
	# util-linux's setpriv (busybox's cannot change uids), for uid 65534.
	vm_stage_elf "$d" "$(command -v setpriv)" /usr/bin/setpriv-ul
	install -D -m 0644 "$REPO_ROOT/daemon/dist/usr/share/dbus-1/system.d/com.dell.MilSpec1.conf" \
		"$d/usr/share/dbus-1/system.d/com.dell.MilSpec1.conf"
	install -m 0644 "$VM_DIR/guest/dbus.sh" "$d/vm/dbus.sh"
	mkdir -p "$d/etc" "$d/var"
	# Clients look for /var/run/dbus/system_bus_socket, as on Debian.
	ln -sfn ../run "$d/var/run"
	printf 'root:x:0:0:root:/root:/bin/sh\nmessagebus:x:100:101::/nonexistent:/bin/false\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
		>"$d/etc/passwd"
	printf 'root:x:0:\nmessagebus:x:101:\nnogroup:x:65534:\n' >"$d/etc/group"
	sed -e 's|@SOCKET@|/run/dbus/system_bus_socket|' -e 's|@POLICY_DIR@|/usr/share/dbus-1/system.d|' \
		"$REPO_ROOT/daemon/tests/fixtures/system-bus.conf" >"$d/etc/vm-system-bus.conf"
}
