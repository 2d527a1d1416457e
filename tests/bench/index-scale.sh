#!/usr/bin/env bash
# How the mirror's index grows as releases pick up kernel builds
# (docs/benchmarks.md, "Index growth with kernels").
#
# For a small index (10 releases x 4 kernels), today's shape at the old
# per-entry cap (1,000 x 32), 1,000 releases x 64 kernels and the largest
# index the count caps allow: the index size (plain and gzip -9), the
# median time to verify and parse it (milspec_format::index::verify_index,
# release build), the peak memory that takes, and the bytes of a full fetch
# and of a no-change poll (a conditional GET with If-None-Match and
# If-Modified-Since, as the daemon's transport sends, answered 304 by a
# real nginx on 127.0.0.1).
#
# Usage: tests/bench/index-scale.sh
#
# Needs: cargo, nginx (apt-get install nginx-light), curl, gzip, python3.
# Opt-in: not part of any test run. Starts one nginx and stops it at the end.
set -euo pipefail

case "${1:-}" in
"") ;;
-h | --help)
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "index-scale: takes no arguments (see --help)" >&2
    exit 2
    ;;
esac

cd "$(dirname "$0")/../.."
nginx_bin=""
for p in /usr/sbin/nginx /usr/bin/nginx /usr/local/sbin/nginx; do
    if [ -x "$p" ]; then
        nginx_bin=$p
        break
    fi
done
if [ -z "$nginx_bin" ]; then
    echo "index-scale: nginx is not installed: apt-get install -y nginx-light" >&2
    exit 1
fi
for tool in cargo curl gzip python3; do
    command -v "$tool" >/dev/null || {
        echo "index-scale: needs $tool" >&2
        exit 1
    }
done

work=$(mktemp -d)
nginx_pid=""
cleanup() {
    if [ -n "$nginx_pid" ]; then
        kill "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

bench() {
    nice cargo test --locked --release -q -p milspec-format --test index_scale -- --ignored --nocapture --exact "$@"
}

echo "== building and timing (release build; median of 9 verify runs per index)"
INDEX_SCALE_OUT="$work/idx" bench index_size_and_verify_time | grep -v '^$\|^\.$\|^running\|^test '

# Smallest first, as the timing table lists them.
shapes=()
for s in 10x4 1000x32 1000x64 1024x64; do
    if [ -d "$work/idx/$s" ]; then
        shapes+=("$s")
    fi
done

echo
echo "== peak memory of one verify (VmHWM, one process per index)"
for s in "${shapes[@]}"; do
    line=$(INDEX_SCALE_FILE="$work/idx/$s/index.json" INDEX_SCALE_PUB="$work/idx/bench.pub" \
        bench verify_peak_memory | grep peak_rss || true)
    echo "$s: ${line:-not measured (over the cap?)}"
done

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/nginx/tmp"
user=""
if [ "$(id -u)" = 0 ]; then
    user="user root;"
fi
cat >"$work/nginx/nginx.conf" <<EOF
$user
worker_processes 1;
error_log $work/nginx/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 64; }
http {
    log_format sizes '\$status \$request_length \$bytes_sent \$request_uri';
    access_log $work/nginx/access.log sizes;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
    types { application/json json; }
    default_type application/octet-stream;
    sendfile on;
    etag on;
    server {
        listen 127.0.0.1:$port;
        root $work/idx;
    }
}
EOF
"$nginx_bin" -e "$work/nginx/error.log" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 50); do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        break
    fi
    sleep 0.1
done

# The daemon's transport (ureq, no compression features) sends no
# Accept-Encoding: a full fetch is the plain index.
agent="ureq/3"
echo
echo "== nginx on 127.0.0.1:$port (bytes as nginx logs them: request_length, bytes_sent)"
printf '%-9s %10s %10s %12s %12s %12s %12s\n' shape index_B gzip9_B full_req_B full_resp_B poll_req_B poll_resp_B
for s in "${shapes[@]}"; do
    url="http://127.0.0.1:$port/$s/index.json"
    size=$(stat -c %s "$work/idx/$s/index.json")
    gz=$(gzip -9 -c "$work/idx/$s/index.json" | wc -c)
    : >"$work/nginx/access.log"
    curl -s -A "$agent" -o /dev/null -D "$work/headers" "$url"
    etag=$(sed -n 's/^[Ee][Tt][Aa][Gg]: *//p' "$work/headers" | tr -d '\r')
    modified=$(sed -n 's/^[Ll]ast-[Mm]odified: *//p' "$work/headers" | tr -d '\r')
    code=$(curl -s -A "$agent" -o /dev/null -w '%{http_code}' \
        -H "If-None-Match: $etag" -H "If-Modified-Since: $modified" "$url")
    if [ "$code" != 304 ]; then
        echo "index-scale: the conditional GET of $s got $code, not 304" >&2
        exit 1
    fi
    # nginx writes the log line after the response; give it a moment.
    for _ in $(seq 20); do
        [ "$(wc -l <"$work/nginx/access.log")" -ge 2 ] && break
        sleep 0.05
    done
    full=$(sed -n 1p "$work/nginx/access.log")
    poll=$(sed -n 2p "$work/nginx/access.log")
    printf '%-9s %10s %10s %12s %12s %12s %12s\n' "$s" "$size" "$gz" \
        "$(echo "$full" | cut -d' ' -f2)" "$(echo "$full" | cut -d' ' -f3)" \
        "$(echo "$poll" | cut -d' ' -f2)" "$(echo "$poll" | cut -d' ' -f3)"
done
echo
echo "(1,000 x 32 and larger: over the old 1 MiB cap; the largest row is over the 4 MiB cap: hosts refuse it)"
