#!/usr/bin/env bash
# Package verification throughput: `milspecctl verify` against `sha256sum`
# on the same package file, and `sha256sum` on the raw payload.
#
# Builds the release binaries, makes a kernel-module-like ELF object with a
# large random section, packs and signs it with `milspec-repo`, warms the page
# cache, then times each command several times and reports the median.
#
# Usage: tests/bench/verify-throughput.sh [--check] [--runs N] [--size-mib N]
#
#   --check       exit 1 if verify is slower than 0.8 x sha256sum on the package
#   --runs N      timed runs per command (default 5; the median is reported)
#   --size-mib N  size of the random payload section in MiB (default 64)
#
# Needs: cargo, gcc, objcopy (binutils), sha256sum (coreutils), python3.
set -euo pipefail

TARGET_RATIO=0.8
check=0
runs=5
size_mib=64

usage() {
    sed -n '9,13p' "$0" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
    --check) check=1 ;;
    --runs)
        runs="${2:?--runs needs a number}"
        shift
        ;;
    --size-mib)
        size_mib="${2:?--size-mib needs a number}"
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *)
        echo "verify-throughput: unknown argument \`$1\`" >&2
        usage >&2
        exit 2
        ;;
    esac
    shift
done
case "$runs$size_mib" in
*[!0-9]*)
    echo "verify-throughput: --runs and --size-mib take positive whole numbers" >&2
    exit 2
    ;;
esac
if [ "$runs" -lt 1 ] || [ "$size_mib" -lt 1 ]; then
    echo "verify-throughput: --runs and --size-mib must be at least 1" >&2
    exit 2
fi

for tool in cargo gcc objcopy sha256sum python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        hint=""
        [ "$tool" = objcopy ] && hint=" (install binutils)"
        echo "verify-throughput: \`$tool\` not found$hint" >&2
        exit 1
    fi
done

root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

echo "building release binaries..." >&2
cargo build --locked --release --bins --quiet
target_dir="$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
repo="$target_dir/release/milspec-repo"
ctl="$target_dir/release/milspecctl"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/verify-throughput.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

# A relocatable ELF object with a .modinfo section, as kbuild leaves in a .ko,
# plus one large section of random bytes so the payload does not compress.
cat >mod.c <<'EOF'
static const char modinfo[] __attribute__((section(".modinfo"), used)) =
    "name=dell_milspec\0"
    "vermagic=6.12.113+deb12-cloud-amd64 SMP preempt mod_unload modversions \0"
    "srcversion=ABC\0"
    "version=1.0.0";
EOF
gcc -c -o mod.o mod.c
head -c "$((size_mib * 1024 * 1024))" /dev/urandom >big.bin
objcopy --add-section .bigdata=big.bin --set-section-flags .bigdata=alloc,readonly mod.o dell_milspec.ko
rm -f big.bin mod.o

mkdir keys trust
"$repo" keygen --out keys --name bench >/dev/null
cp keys/bench.pub trust/
"$repo" pack --version 1.0.0 --module dell_milspec.ko --key keys/bench.key --out bench.mspkg >/dev/null
"$ctl" verify --keys trust bench.mspkg >/dev/null

pkg_bytes="$(stat -c %s bench.mspkg)"
ko_bytes="$(stat -c %s dell_milspec.ko)"

# Warm the page cache so every command reads from memory.
for _ in 1 2; do
    cat bench.mspkg dell_milspec.ko >/dev/null
done

# time_runs CMD...: runs CMD once untimed, then $runs times timed, and
# prints each wall time in nanoseconds.
time_runs() {
    "$@" >/dev/null
    local t0 t1
    for _ in $(seq "$runs"); do
        t0="$(date +%s%N)"
        "$@" >/dev/null
        t1="$(date +%s%N)"
        printf '%s ' "$((t1 - t0))"
    done
}

echo "timing ($runs runs each)..." >&2
verify_ns="$(time_runs "$ctl" verify --keys trust bench.mspkg)"
sha_pkg_ns="$(time_runs sha256sum bench.mspkg)"
sha_ko_ns="$(time_runs sha256sum dell_milspec.ko)"

python3 - "$pkg_bytes" "$ko_bytes" "$runs" "$TARGET_RATIO" "$check" \
    "$verify_ns" "$sha_pkg_ns" "$sha_ko_ns" <<'EOF'
import statistics
import sys

pkg, ko, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
target, check = float(sys.argv[4]), sys.argv[5] == "1"
samples = [[int(x) for x in s.split()] for s in sys.argv[6:9]]
medians = [statistics.median(s) for s in samples]

def mbps(nbytes, ns):
    return nbytes / (ns / 1e9) / 1e6

rows = [
    ("milspecctl verify", "package", pkg),
    ("sha256sum", "package", pkg),
    ("sha256sum", "payload .ko", ko),
]
print(f"median of {runs} runs, page cache warm; MB = 10^6 bytes")
print(f"{'command':<18} {'input':<12} {'bytes':>11} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'MB/s':>7}")
for (cmd, what, nbytes), med, s in zip(rows, medians, samples):
    print(f"{cmd:<18} {what:<12} {nbytes:>11} {med / 1e6:>10.1f} {min(s) / 1e6:>8.1f} {max(s) / 1e6:>8.1f} {mbps(nbytes, med):>7.0f}")

verify, sha = mbps(pkg, medians[0]), mbps(pkg, medians[1])
ratio = verify / sha
print(f"verify: {verify:.0f} MB/s, sha256sum: {sha:.0f} MB/s, ratio {ratio:.2f} (target >= {target})")
if ratio < target:
    print(f"verify-throughput: ratio {ratio:.2f} is below the target {target}", file=sys.stderr)
    sys.exit(1 if check else 0)
EOF
