#!/usr/bin/env bash
# Mirror fleet simulation: N hosts, as lightweight tasks of the pull client
# (conditional index GET, signature check, selection, capped hashed
# download; no engine, no kernel), polling one nginx on loopback.
#
# Reports, per host count: requests/s and bytes served for a first contact,
# a no-update poll (304) and a release every host takes at once; then when
# each wave of a `1%,10%@1h,100%@24h` schedule completes, on a simulated
# clock with a poll every 15 minutes.
#
# Usage: tests/bench/fleet-sim.sh [HOSTS...]      (default: 1000 10000)
#
# Needs: cargo, nginx (apt-get install -y nginx-light).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    echo "fleet-sim: nginx is not installed; apt-get install -y nginx-light" >&2
    exit 1
fi
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || hosts=(1000 10000)

# Enough file descriptors for 64 client threads and nginx's connections.
ulimit -n 65536 2>/dev/null || true

cargo build --locked --release -p milspecd --bins --quiet
for n in "${hosts[@]}"; do
    FLEET_HOSTS="$n" cargo test --locked --release -p milspecd --test mirror_fleet --quiet \
        -- --ignored --nocapture fleet_simulation 2>&1 | sed -n '/^### /,/^test /p' | grep -v -e '^test ' -e '^\.$'
done
