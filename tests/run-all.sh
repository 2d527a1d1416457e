#!/usr/bin/env bash
# Runs every test of the project on a Debian 12 machine that has only the
# Rust toolchain: installs what it needs, then formatting and lint checks,
# unit and binary tests, the dependency policy, and the real-kernel VM tier.
set -euo pipefail
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
start=$(date +%s)

ensure_debs gcc make pkg-config binutils nginx-light dbus util-linux faketime

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "cargo deny (bans, licenses, sources)"
ensure_cargo_tool cargo-deny cargo-deny
cargo deny --all-features check bans licenses sources

step "unit and binary tests"
cargo test --workspace --all-features 2>&1 | tee target/cargo-test.log
grep -q '^test result: ' target/cargo-test.log || die "cargo test ran no test"

step "fuzz (short): every target for FUZZ_SECONDS (default 10) under memory and time caps"
# Without AddressSanitizer here: half the build time for safe Rust targets;
# the long runs in docs/reliability.md use it.
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} bash tests/fuzz/run.sh "${FUZZ_SECONDS:-10}"

step "real-kernel VM tier"
bash tests/vm/run-all.sh

step "full-system test: the .deb on Debian 12 with systemd, udev and the system bus"
bash tests/system/run.sh

printf '\nall tests done in %ss\n' "$(($(date +%s) - start))"
