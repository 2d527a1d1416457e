# SPDX-License-Identifier: GPL-2.0
# vm-scenario: packages for another kernel, signed by an untrusted key, or
#   older than the committed one are refused before the live module is touched.
# vendor: Dell Inc.
# boots: 1
# timeout: 120
# needs: engine kmod-faults

. /vm/engine.sh

install_pkg 1.1.0 0
loaded0=$(status loaded_at)
install_pkg other-kernel 2
expect_match "wrong kernel" "$(cat /tmp/install.out)" "no payload for this kernel \(6.12"
install_pkg untrusted 2
expect_match "untrusted signer" "$(cat /tmp/install.out)" "not enough trusted signatures"
install_pkg 1.0.0 2
expect_match "downgrade" "$(cat /tmp/install.out)" "downgrade refused"
expect_eq "live module untouched" "$(status loaded_at)" "$loaded0"
expect_eq "live version" "$(live_version)" 1.1.0
