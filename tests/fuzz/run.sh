#!/usr/bin/env bash
# Builds the cargo-fuzz targets of fuzz/ and runs each for SECONDS (default
# 10) under memory and time caps: an allocation beyond the caps, a hang or a
# crash is a failure. Prints executions, coverage and speed per target.
#
#   bash tests/fuzz/run.sh [SECONDS]
#
# Environment:
#   FUZZ_TARGETS="manifest index"  run only these targets
#   FUZZ_RUNS=1000000              stop each target after this many
#                                  executions (SECONDS still caps the time)
#   FUZZ_JOBS=1                    cargo build jobs (the machine is shared)
#   FUZZ_SANITIZER=none            build without AddressSanitizer: the
#                                  targets are safe Rust, and the build takes
#                                  less than half the time (CI's short run);
#                                  -malloc_limit_mb then is not enforced,
#                                  -rss_limit_mb still is. Default: address.
#
# Corpora grow in fuzz/corpus/<target>/ (not in git), seeded from
# fuzz/seeds/<target>/; a failing input is saved as
# fuzz/artifacts/<target>/crash-* (or oom-*, timeout-*, leak-*). Copy it
# to fuzz/regressions/<target>/ once fixed: cargo test replays that folder.
set -euo pipefail
# shellcheck source=tests/lib/common.sh
. "$(dirname "$0")/../lib/common.sh"
root=$(repo_root)
secs=${1:-10}
runs=${FUZZ_RUNS:--1}
targets=${FUZZ_TARGETS:-"manifest package package_signed index status kmsg config text modsig dbus_error dbus_history trust_doc"}
caps=(-rss_limit_mb=512 -malloc_limit_mb=256 -timeout=5)

[[ $secs =~ ^[0-9]+$ ]] || die "SECONDS must be a whole number, got \`$secs\`"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
ensure_cargo_tool cargo-fuzz cargo-fuzz

cd "$root/fuzz"
# cargo fuzz has no --locked of its own: check the lock file first, so a
# stale fuzz/Cargo.lock fails here instead of being rewritten by the build.
cargo metadata --locked --format-version 1 >/dev/null ||
	die "fuzz/Cargo.lock is out of date: run \`cargo update --workspace\` in fuzz/ and commit it"
built=$(date +%s)
# One build of every target shares the dependency builds.
CARGO_BUILD_JOBS=${FUZZ_JOBS:-$(nproc)} cargo +nightly fuzz build --sanitizer "${FUZZ_SANITIZER:-address}" 2>&1 | grep -vE '^\s+(Compiling|Fresh) ' || true
bindir=$root/fuzz/target/x86_64-unknown-linux-gnu/release
for t in $targets; do
	[ -x "$bindir/$t" ] || die "fuzz target $t was not built (see the cargo output above)"
done
printf 'fuzz build: %ss\n' "$(($(date +%s) - built))"

# The value of one of libFuzzer's final `stat::NAME: value` lines.
stat_of() { awk -v k="stat::$1:" '$1 == k { v = $2 } END { print v }' "$2"; }

failed=()
printf '\n%-16s %12s %7s %7s %8s %10s %8s %s\n' target execs secs cov ft exec/s rss_mb result
for t in $targets; do
	mkdir -p "corpus/$t" "artifacts/$t"
	log=artifacts/$t/last-run.log
	t0=$(date +%s)
	rc=0
	"$bindir/$t" "corpus/$t" "seeds/$t" "${caps[@]}" -max_total_time="$secs" -runs="$runs" \
		-artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
	took=$(($(date +%s) - t0))
	done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 || true)
	execs=$(stat_of number_of_executed_units "$log")
	cov=$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$done_line")
	ft=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$done_line")
	speed=$(stat_of average_exec_per_sec "$log")
	rss=$(stat_of peak_rss_mb "$log")
	result=ok
	if [ "$rc" -ne 0 ] || [ -z "$done_line" ]; then
		result="FAILED (exit $rc, see fuzz/$log)"
		failed+=("$t")
	fi
	printf '%-16s %12s %7s %7s %8s %10s %8s %s\n' "$t" "${execs:-?}" "$took" "${cov:-?}" "${ft:-?}" "${speed:-?}" "${rss:-?}" "$result"
done

if [ ${#failed[@]} -gt 0 ]; then
	for t in "${failed[@]}"; do
		printf '\n--- %s ---\n' "$t"
		grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|==[0-9]+==' "artifacts/$t/last-run.log" | head -20 || true
	done
	die "fuzzing found a failure in: ${failed[*]}"
fi
