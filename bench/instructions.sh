#!/usr/bin/env bash
# Instructions per proxied request (or WebSocket message), counted by
# callgrind: deterministic where wall-clock CPU time is not (on a shared VM,
# run-to-run noise is ±10-30 %), so two builds can be compared one change at a
# time. User space only: the kernel's share (about two thirds of the proxy's
# CPU over HTTP/1.1, more for WebSocket messages) is not counted.
#
#   bench/instructions.sh [BINARY...]        # default: $CARGO_TARGET_DIR/release/switchyard
#   BENCH_IR_MODE=ws bench/instructions.sh   # 100-byte WebSocket echoes instead of GETs
#   BENCH_IR_MODE=https bench/instructions.sh   # the GETs over TLS 1.3
#
# A BINARY named `nginx` runs nginx (bench/nginx.conf, one process: master_process
# off) for reference; `floor` runs `bench_pair bare` (hyper and tokio passing
# requests through untouched) and `engine` runs `bench_pair proxy` (the engine
# crate's `Proxy::listen` with default options, one worker), to split the
# server's cost into the floor, the engine's share and the server's share (http
# mode only); any other is a switchyard binary.
#
# http (default): each proxy runs under valgrind --tool=callgrind with
# --worker-threads 1 in front of `bench_pair origin` (13-byte answers), is
# warmed up with 2,000 requests, its counters are zeroed, BENCH_IR_REQUESTS
# [20000] requests go over BENCH_IR_CONNS [64] keep-alive connections (h2load
# --h1), and it dumps: instructions per request.
# ws: the same in front of `loadgen ws-backend`; `loadgen ws-echo` with
# BENCH_IR_CONNS connections sends 100-byte messages for BENCH_IR_SECONDS [5]
# after the zeroing: instructions per echoed message (there and back).
# https: as http, with the proxy terminating TLS 1.3 (an ECDSA P-256 certificate made
# with openssl) and h2load speaking HTTP/1.1 over it (ALPN http/1.1), kept alive.
# newconn: the same origin as http; wrk with `Connection: close` over BENCH_IR_CONNS
# connections for BENCH_IR_SECONDS: instructions per connection (one request
# each, accept to close). Needs wrk.
# Then the functions with the most instructions of their own for the first
# binary (BENCH_IR_TOP [25] lines). BENCH_IR_ARGS adds flags to every
# switchyard command line (e.g. --no-request-id). Needs valgrind, h2load and curl.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$repo/target}"
mode="${BENCH_IR_MODE:-http}"
requests="${BENCH_IR_REQUESTS:-20000}"
conns="${BENCH_IR_CONNS:-64}"
seconds="${BENCH_IR_SECONDS:-5}"
top="${BENCH_IR_TOP:-25}"

for tool in valgrind callgrind_control h2load curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing (apt-get install valgrind nghttp2-client curl)" >&2; exit 1; }
done
pair="$target/release/examples/bench_pair"
loadgen="$target/release/loadgen"
[[ -x "$pair" ]] || { echo "instructions.sh: build it first: cargo build --release -p switchyard --example bench_pair" >&2; exit 1; }
[[ "$mode" != ws || -x "$loadgen" ]] || { echo "instructions.sh: build it first: cargo build --release -p switchyard-loadgen" >&2; exit 1; }
binaries=("$@")
[[ ${#binaries[@]} -gt 0 ]] || binaries=("$target/release/switchyard")

scratch="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$scratch"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

origin_port="$(free_port)"
if [[ "$mode" == ws ]]; then
    "$loadgen" ws-backend "127.0.0.1:$origin_port" >/dev/null &
    pids+=($!)
    until python3 -c "import socket; socket.create_connection(('127.0.0.1', $origin_port))" 2>/dev/null; do sleep 0.1; done
else
    "$pair" origin "127.0.0.1:$origin_port" >/dev/null &
    pids+=($!)
    until curl -s -o /dev/null "http://127.0.0.1:$origin_port/"; do sleep 0.1; done
fi

scheme=http
tls_args=()
nginx_ssl=""
nginx_tls=""
if [[ "$mode" == https ]]; then
    command -v openssl >/dev/null || { echo "instructions.sh: https needs openssl" >&2; exit 1; }
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -keyout "$scratch/key.pem" -out "$scratch/cert.pem" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
    scheme=https
    tls_args=(--ssl-key "$scratch/key.pem" --ssl-cert "$scratch/cert.pem")
    nginx_ssl=" ssl"
    nginx_tls="ssl_certificate $scratch/cert.pem; ssl_certificate_key $scratch/key.pem; ssl_protocols TLSv1.3;"
fi

first=""
for bin in "${binaries[@]}"; do
    port="$(free_port)"
    if [[ ("$bin" == floor || "$bin" == engine) && "$mode" != http ]]; then
        echo "instructions.sh: $bin runs in http mode only" >&2
        exit 1
    elif [[ "$bin" == floor || "$bin" == engine ]]; then
        # bench_pair: `bare` is the hyper/tokio floor, `proxy` the engine alone
        # (`Proxy::listen`, default options, no CHP routing or server features).
        [[ "$bin" == floor ]] && how=bare || how=proxy
        WORKERS=1 valgrind --tool=callgrind --callgrind-out-file="$scratch/cg.%p" \
            "$pair" "$how" "127.0.0.1:$port" "http://127.0.0.1:$origin_port" >/dev/null 2>&1 &
    elif [[ "$bin" == nginx ]]; then
        mkdir -p "$scratch/nginx"
        sed -e "s|@DIR@|$scratch/nginx|g; s|@UPSTREAM_PORT@|$origin_port|; s|@PORT@|$port|; s|@H2_PORT@|$(free_port)|" \
            -e "s|@LOCATIONS@||; s|@WORKERS@|1; master_process off|; s|@SSL@|$nginx_ssl|; s|@TLS@|$nginx_tls|" \
            "$here/nginx.conf" >"$scratch/nginx/nginx.conf"
        valgrind --tool=callgrind --callgrind-out-file="$scratch/cg.%p" \
            nginx -p "$scratch/nginx" -c "$scratch/nginx/nginx.conf" -e stderr >/dev/null 2>&1 &
    else
        # The memory reclaim (`reclaim.rs`) fires more often under valgrind's slowdown
        # than at full speed (every few seconds instead of about once per load), adding a
        # varying amount per request: its allocations are left out of the count
        # (`--toggle-collect` turns collecting off at the start: `--collect-atstart`
        # after it turns it back on).
        valgrind --tool=callgrind --callgrind-out-file="$scratch/cg.%p" \
            --toggle-collect='*reclaim::collect' --collect-atstart=yes "$bin" --worker-threads 1 \
            --ip 127.0.0.1 --port "$port" --api-ip 127.0.0.1 --api-port "$(free_port)" \
            --default-target "http://127.0.0.1:$origin_port" --log-level warn "${tls_args[@]}" \
            ${BENCH_IR_ARGS:-} >/dev/null 2>&1 &
    fi
    pid=$!
    pids+=("$pid")
    if [[ "$mode" == ws ]]; then
        until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.2; done
        "$loadgen" ws-echo "ws://127.0.0.1:$port/echo" --conns "$conns" --warmup 0 --duration 2 >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        count="$("$loadgen" ws-echo "ws://127.0.0.1:$port/echo" --conns "$conns" --warmup 0 \
            --duration "$seconds" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["count"] if not d["errors"] else 0)')"
        [[ "$count" -gt 0 ]] || { echo "instructions.sh: echoes through $bin failed" >&2; exit 1; }
        unit="message"
    elif [[ "$mode" == newconn ]]; then
        until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
        wrk -t1 -c"$conns" -d2s -H "Connection: close" "http://127.0.0.1:$port/" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        count="$(wrk -t1 -c"$conns" -d"${seconds}s" -H "Connection: close" "http://127.0.0.1:$port/" \
            | awk '/requests in/ {print $1} /Non-2xx|Socket errors/ {bad=1} END {if (bad) print 0}' | tail -1)"
        [[ "$count" -gt 0 ]] || { echo "instructions.sh: new-connection requests through $bin failed" >&2; exit 1; }
        unit="connection"
    else
        until curl -sk -o /dev/null "$scheme://127.0.0.1:$port/"; do sleep 0.2; done
        h2load --h1 -n 2000 -c "$conns" "$scheme://127.0.0.1:$port/" >/dev/null
        callgrind_control -z "$pid" >/dev/null 2>&1
        h2load --h1 -n "$requests" -c "$conns" "$scheme://127.0.0.1:$port/" | grep -q "$requests succeeded" \
            || { echo "instructions.sh: not every request succeeded through $bin" >&2; exit 1; }
        count="$requests"
        unit="request"
    fi
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    dump="$(ls -t "$scratch"/cg."$pid".* | head -1)"
    total="$(sed -n 's/^summary: //p' "$dump")"
    echo "$bin: $((total / count)) instructions per $unit ($count, $conns connections)"
    [[ -n "$first" ]] || { first="$dump"; first_count="$count"; }
    [[ -z "${BENCH_IR_KEEP:-}" ]] || cp "$dump" "$BENCH_IR_KEEP.$(basename "$bin")"
done

echo
echo "Most instructions of their own, per $unit, in ${binaries[0]}:"
python3 "$here/callgrind_top.py" "$first" "$first_count" "$top"
