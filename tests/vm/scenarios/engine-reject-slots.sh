# SPDX-License-Identifier: GPL-2.0
# vm-scenario: with 1.0.0 committed in slot a and 1.1.0 in slot b, a signed
#   1.2.0 with one payload byte flipped, the same cut off in its payload, and
#   a good 1.2.0 while the live module is busy are each refused with exit 2
#   and leave slots and state byte-identical but for one `rejected` event;
#   slot a still holds 1.0.0, the version a rollback goes back to.
# vendor: Dell Inc.
# boots: 1
# timeout: 200
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.0.0 0
install_pkg 1.1.0-busy 0
expect_eq "live version" "$(live_version)" 1.1.0
expect_eq "slot a holds 1.0.0" "$(cat "$STATE/slots/a/valid")" 1.0.0

snap_state flipped
install_pkg 1.2.0-flipped 2
expect_match "flipped: says sha256" "$(cat /tmp/install.out)" "sha256"
expect_state_same flipped "flipped payload byte" rejected

snap_state truncated
install_pkg 1.2.0-truncated 2
expect_match "truncated: says truncated" "$(cat /tmp/install.out)" "truncated"
expect_state_same truncated "truncated payload" rejected

loaded0=$(status loaded_at)
snap_state busy
install_pkg 1.2.0 2
expect_match "busy: says in use" "$(cat /tmp/install.out)" "in use \(refcount"
expect_state_same busy "busy old module (real kernel, FAULT=busy)" rejected
expect_eq "old module still live" "$(live_version)" 1.1.0
expect_eq "same instance" "$(status loaded_at)" "$loaded0"
expect_eq "slot a still holds 1.0.0" "$(cat "$STATE/slots/a/valid")" 1.0.0
check "slot a still verifies" sh -c "milspecd status --config $CONF | grep -q 1.0.0"
check "no staging folder left" sh -c "! ls -a $STATE/slots | grep -q staging"
check "release the busy reference" set_param fault_release 1
install_pkg 1.2.0 3
expect_eq "1.2.0 (WARN) rolled back to 1.1.0" "$(live_version)" 1.1.0
