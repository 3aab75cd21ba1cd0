#!/usr/bin/env bash
# The leak soak, switchyard and configurable-http-proxy side by side (Debian 12):
#   bench/soak.sh                 # 30 minutes
#   bench/soak.sh --minutes 3 --warmup 60
# Installs or checks Node, npm, configurable-http-proxy 5.3.0 and python3-aiohttp
# as bench/run.sh does, builds the release switchyard, then runs bench/soak.py
# with the arguments given here. See bench/README.md, "Leak soak".
#
# Environment: CARGO_TARGET_DIR [<repo>/target], SWITCHYARD [its release binary],
#   CHP [installed with npm under $CARGO_TARGET_DIR/bench-tools/chp],
#   BENCH_NO_INSTALL=1 (only check the tools), BENCH_NO_BUILD=1, PYTHON.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
target="${CARGO_TARGET_DIR:-$repo/target}"
tools="$target/bench-tools"
chp_version="5.3.0"

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
python="${PYTHON:-python3}"
if ! "$python" -c 'import aiohttp' 2>/dev/null; then
    python=/usr/bin/python3
    /usr/bin/python3 -c 'import aiohttp' 2>/dev/null || missing+=(python3-aiohttp)
fi
if ((${#missing[@]})); then
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        echo "missing: ${missing[*]} (BENCH_NO_INSTALL=1)" >&2
        exit 1
    fi
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

chp="${CHP:-$tools/chp/node_modules/.bin/configurable-http-proxy}"
if [[ ! -x "$chp" ]]; then
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        echo "configurable-http-proxy not found at $chp (BENCH_NO_INSTALL=1)" >&2
        exit 1
    fi
    mkdir -p "$tools/chp"
    npm install --no-audit --no-fund --silent --prefix "$tools/chp" \
        "configurable-http-proxy@$chp_version"
fi

switchyard="${SWITCHYARD:-$target/release/switchyard}"
if [[ -z "${SWITCHYARD:-}" && "${BENCH_NO_BUILD:-0}" != 1 ]]; then
    (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release --locked \
        -p switchyard-server --bin switchyard)
fi
[[ -x "$switchyard" ]] || { echo "no switchyard binary at $switchyard" >&2; exit 1; }

work="$target/soak-work"
mkdir -p "$work"
# soak.py stops the proxies it started on exit, on Ctrl-C and on TERM/HUP.
exec "$python" "$here/soak.py" --switchyard "$switchyard" --chp "$chp" --workdir "$work" "$@"
