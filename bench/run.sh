#!/usr/bin/env bash
# One command for the whole load benchmark (Debian 12):
#   bench/run.sh
# Installs or checks wrk, h2load, nginx, curl, Node + configurable-http-proxy
# and python3-aiohttp; builds the release binaries; runs bench/harness.py
# (every scenario, interleaved rounds); writes bench/RESULTS.md and the plots
# with bench/report.py. See bench/README.md.
#
# Environment (defaults in brackets):
#   BENCH_ROUNDS [3]  BENCH_DURATION [10s]  BENCH_WARMUP [1s]  BENCH_WORKERS [1]
#   BENCH_SCENARIOS [http1,h2,routes,api,ws,download,https,wsmsg,newconn,cores]
#   BENCH_ROUTES [100000]  BENCH_API_ROUTES [10000]  BENCH_WS [2000]
#   BENCH_DOWNLOAD_MIB [1024]  CARGO_TARGET_DIR [<repo>/target]
#   CHP [installed with npm under $CARGO_TARGET_DIR/bench-tools/chp]
#   BENCH_NO_INSTALL=1: only check the tools, never call apt-get or npm.
#   BENCH_NO_BUILD=1: use the binaries already in $CARGO_TARGET_DIR/release.
#   BENCH_ALT=0: no second switchyard (rustls on ring) in the https scenario.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$repo/target}"
# shellcheck source=bench/tools.sh
source "$here/tools.sh"

harness_pid=""
cleanup() {
    # The harness stops the proxies and the origin it started (atexit + signal handlers).
    if [[ -n "$harness_pid" ]] && kill -0 "$harness_pid" 2>/dev/null; then
        kill -TERM "$harness_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$harness_pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---------------------------------------------------------------- tools
say "checking tools"
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
command -v taskset >/dev/null || missing+=(util-linux)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
find_python
install_missing
export PATH="$PATH:/usr/sbin:/sbin"

ensure_chp
for t in wrk h2load nginx curl taskset node openssl; do
    command -v "$t" >/dev/null || { echo "still missing: $t" >&2; exit 1; }
done
if (($(nproc) < 2)); then
    echo "needs 2 CPUs: core 0 for the load generator and the origin, core 1 for the proxy" >&2
    exit 1
fi

# ---------------------------------------------------------------- build
if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    say "building release binaries into $target"
    (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release --locked \
        -p switchyard-server --bin switchyard -p switchyard --example bench_pair \
        -p switchyard-loadgen --bin loadgen)
fi
# The same server with rustls on ring instead of aws-lc-rs (the default), measured
# beside it over HTTPS (its own target directory: the features differ). BENCH_ALT=0
# skips it.
alt_args=()
if [[ "${BENCH_ALT:-1}" != 0 ]]; then
    if [[ "${BENCH_NO_BUILD:-0}" != 1 ]]; then
        say "building switchyard with ring into $target/ring"
        (cd "$repo" && CARGO_TARGET_DIR="$target/ring" cargo build --release --locked \
            -p switchyard-server --bin switchyard --no-default-features)
    fi
    alt_args=(--switchyard-alt "$target/ring/release/switchyard" --alt-label "ring")
fi
switchyard="$target/release/switchyard"
bench_pair="$target/release/examples/bench_pair"
loadgen="$target/release/loadgen"
[[ -x "$switchyard" && -x "$bench_pair" && -x "$loadgen" ]] || { echo "binaries missing in $target/release" >&2; exit 1; }

# ---------------------------------------------------------------- measure
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
work="$target/bench-work"
rm -rf "$work"
mkdir -p "$work"
say "measuring (rounds=${BENCH_ROUNDS:-3}, duration=${BENCH_DURATION:-10s}); scratch in $work"
"$python" "$here/harness.py" --switchyard "$switchyard" --bench-pair "$bench_pair" \
    --chp "$chp" --loadgen "$loadgen" "${alt_args[@]}" --work "$work" --out "$here/results" &
harness_pid=$!
wait "$harness_pid"
harness_pid=""

say "writing bench/RESULTS.md"
"$python" "$here/report.py" --results "$here/results" --out "$here/RESULTS.md"
rm -rf "$work"
echo "done: $here/RESULTS.md" >&2
