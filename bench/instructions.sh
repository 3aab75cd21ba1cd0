#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: deterministic where
# wall-clock CPU time is not (on a shared VM, run-to-run noise is ±10-30 %),
# so two builds can be compared one change at a time. User space only: the
# kernel's share (about two thirds of the proxy's CPU) is not counted.
#
#   bench/instructions.sh [BINARY...]     # default: $CARGO_TARGET_DIR/release/switchyard
#
# For each binary: starts it under valgrind --tool=callgrind with
# --worker-threads 1 in front of `bench_pair origin` (13-byte answers), warms
# up with 2,000 requests, zeroes the counters, sends BENCH_IR_REQUESTS [20000]
# requests over BENCH_IR_CONNS [64] keep-alive connections (h2load --h1),
# dumps, and prints instructions per request; then the functions with the most
# instructions of their own for the first binary (BENCH_IR_TOP [25] lines).
# BENCH_IR_ARGS adds flags to every binary's command line (e.g. --no-request-id).
# Needs valgrind and h2load (apt-get install valgrind nghttp2-client).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$repo/target}"
requests="${BENCH_IR_REQUESTS:-20000}"
conns="${BENCH_IR_CONNS:-64}"
top="${BENCH_IR_TOP:-25}"

for tool in valgrind callgrind_control h2load curl; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is missing (apt-get install valgrind nghttp2-client curl)" >&2; exit 1; }
done
pair="$target/release/examples/bench_pair"
[[ -x "$pair" ]] || { echo "instructions.sh: build it first: cargo build --release -p switchyard --example bench_pair" >&2; exit 1; }
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
"$pair" origin "127.0.0.1:$origin_port" &
pids+=($!)
until curl -s -o /dev/null "http://127.0.0.1:$origin_port/"; do sleep 0.1; done

first=""
for bin in "${binaries[@]}"; do
    port="$(free_port)"
    api="$(free_port)"
    valgrind --tool=callgrind --callgrind-out-file="$scratch/cg.%p" "$bin" --worker-threads 1 \
        --ip 127.0.0.1 --port "$port" --api-ip 127.0.0.1 --api-port "$api" \
        --default-target "http://127.0.0.1:$origin_port" --log-level warn ${BENCH_IR_ARGS:-} >/dev/null 2>&1 &
    pid=$!
    pids+=("$pid")
    until curl -s -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.2; done
    h2load --h1 -n 2000 -c "$conns" "http://127.0.0.1:$port/" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    h2load --h1 -n "$requests" -c "$conns" "http://127.0.0.1:$port/" | grep -q "$requests succeeded" \
        || { echo "instructions.sh: not every request succeeded through $bin" >&2; exit 1; }
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    dump="$(ls -t "$scratch"/cg."$pid".* | head -1)"
    total="$(sed -n 's/^summary: //p' "$dump")"
    echo "$bin: $((total / requests)) instructions per request ($requests requests, $conns connections)"
    [[ -n "$first" ]] || first="$dump"
    [[ -z "${BENCH_IR_KEEP:-}" ]] || cp "$dump" "$BENCH_IR_KEEP.$(basename "$bin")"
done

echo
echo "Most instructions of their own, per request, in ${binaries[0]}:"
python3 "$here/callgrind_top.py" "$first" "$requests" "$top"
