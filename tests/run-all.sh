#!/usr/bin/env bash
# Runs every test of the project on a Debian 12 machine that has only the
# Rust toolchain: installs what it needs, then formatting and lint checks,
# unit and binary tests, the dependency policy, short fuzz runs, the
# real-kernel VM tier and the full-system test. Every cargo call is
# --locked: a stale Cargo.lock fails instead of being rewritten. Ends with
# the wall time of each tier and its share (docs/vm-tests.md keeps them).
set -euo pipefail
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/lib/common.sh"
cd "$(repo_root)"
start=$(date +%s)
TIERS=()

# tier NAME CMD...: runs CMD as one timed tier of the run.
tier() {
	local name=$1 t0
	shift
	step "$name"
	t0=$(date +%s)
	"$@"
	TIERS+=("$(($(date +%s) - t0)):$name")
}

unit_tests() {
	mkdir -p target
	cargo test --locked --workspace --all-features 2>&1 | tee target/cargo-test.log
	grep -q '^test result: ' target/cargo-test.log || die "cargo test ran no test"
}

deny_check() {
	ensure_cargo_tool cargo-deny cargo-deny
	cargo deny --locked --all-features check bans licenses sources
}

# Without AddressSanitizer here: half the build time for safe Rust targets;
# the long runs in docs/reliability.md use it.
fuzz_short() {
	FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} bash tests/fuzz/run.sh "${FUZZ_SECONDS:-10}"
}

tier "install Debian packages" ensure_debs gcc make pkg-config binutils nginx-light dbus util-linux faketime openssl kmod prometheus prometheus-node-exporter
tier "cargo fmt --check" cargo fmt --all -- --check
tier "cargo clippy (all targets, all features, warnings are errors)" \
	cargo clippy --locked --workspace --all-targets --all-features --quiet -- -D warnings
tier "cargo deny (bans, licenses, sources)" deny_check
tier "unit and binary tests" unit_tests
tier "fuzz (short): every target for FUZZ_SECONDS (default 10) under memory and time caps" fuzz_short
tier "real-kernel VM tier" bash tests/vm/run-all.sh
tier "full-system test: the .deb on Debian 12 with systemd, udev and the system bus" bash tests/system/run.sh

total=$(($(date +%s) - start))
step "wall time by tier"
for t in "${TIERS[@]}"; do
	awk -v s="${t%%:*}" -v total="$total" -v name="${t#*:}" \
		'BEGIN { printf "  %5ds %5.1f%%  %s\n", s, total ? 100 * s / total : 0, substr(name, 1, 60) }'
done
printf '\nall tests done in %ss\n' "$total"
