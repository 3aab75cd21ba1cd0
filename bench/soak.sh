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
# shellcheck source=bench/tools.sh
source "$here/tools.sh"

missing=()
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
find_python
install_missing
ensure_chp

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
