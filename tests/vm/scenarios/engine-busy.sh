# SPDX-License-Identifier: GPL-2.0
# vm-scenario: when the old module is busy the swap is abandoned cleanly:
#   exit 2, old module live, no trial left, slots and state byte-identical but
#   for one `rejected` event; once released the swap goes through.
# vendor: Dell Inc.
# boots: 1
# timeout: 150
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.0.0-busy 0
expect_eq "live version" "$(live_version)" 1.0.0
loaded0=$(status loaded_at)
snap_state busy
install_pkg 1.1.0 2
expect_state_same busy "busy old module" rejected
check "slot b still empty" test ! -e "$STATE/slots/b/valid"
expect_match "error says busy" "$(cat /tmp/install.out)" "in use \(refcount"
expect_eq "old module still live" "$(live_version)" 1.0.0
expect_eq "same instance" "$(status loaded_at)" "$loaded0"
expect_match "no trial" "$(milspecd status --config "$CONF")" "trial: +-"
check "release the busy reference" set_param fault_release 1
install_pkg 1.1.0 0
expect_eq "live version" "$(live_version)" 1.1.0
