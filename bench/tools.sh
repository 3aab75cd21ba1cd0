# Sourced by bench/run.sh and bench/soak.sh, once `repo` and `target` are set: the
# tool checks and installs both need (Debian 12). BENCH_NO_INSTALL=1 makes a missing
# tool an error instead of an install.

tools="$target/bench-tools"
chp_version="5.3.0"

say() { printf '\n== %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

# Sets `python`: $PYTHON (default python3) if it has aiohttp, else the system's
# python3, whose package is added to the `missing` array if it lacks aiohttp too.
find_python() {
    python="${PYTHON:-python3}"
    if ! "$python" -c 'import aiohttp' 2>/dev/null; then
        python=/usr/bin/python3
        /usr/bin/python3 -c 'import aiohttp' 2>/dev/null || missing+=(python3-aiohttp)
    fi
}

# Installs the Debian packages named in the `missing` array, if any.
install_missing() {
    ((${#missing[@]})) || return 0
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        echo "missing: ${missing[*]} (BENCH_NO_INSTALL=1)" >&2
        exit 1
    fi
    say "installing ${missing[*]} with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# Sets `chp`: $CHP, or configurable-http-proxy $chp_version under $tools/chp,
# installed there with npm when absent.
ensure_chp() {
    chp="${CHP:-$tools/chp/node_modules/.bin/configurable-http-proxy}"
    [[ -x "$chp" ]] && return 0
    if [[ "${BENCH_NO_INSTALL:-0}" == 1 ]]; then
        echo "configurable-http-proxy not found at $chp (BENCH_NO_INSTALL=1)" >&2
        exit 1
    fi
    say "installing configurable-http-proxy@$chp_version with npm into $tools/chp"
    mkdir -p "$tools/chp"
    npm install --no-audit --no-fund --silent --prefix "$tools/chp" \
        "configurable-http-proxy@$chp_version"
}
