#!/usr/bin/env python3
"""Load benchmark of switchyard against nginx, configurable-http-proxy and a direct baseline.

Over HTTP/1.1 it also measures the floor of a proxy built on hyper and tokio
(`bench_pair bare`: requests pass untouched over one upstream connection per
client connection), to show what part of the cost is those libraries'.

Run through bench/run.sh, which installs the tools and builds the binaries; this
script only measures. Every scenario starts a fresh proxy process per
measurement, pinned alone on core 1 (`taskset -c 1`); the load generator and
the origin share core 0. Rounds are interleaved: each round runs every
scenario once for every proxy (in an order rotated per round), so a ratio to
nginx compares two measurements taken a few seconds apart.

Each measurement is appended as one JSON line to <out>/raw.jsonl as soon as it
is taken; <out>/meta.json holds the machine, the versions and the parameters.
bench/report.py turns both into bench/RESULTS.md.
"""

import argparse
import atexit
import http.client
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK = os.sysconf("SC_CLK_TCK")
LOAD_CPU = "0"   # load generator, origin, API and WebSocket clients
PROXY_CPU = "1"  # the proxy under test, alone

PROCS = []  # every process we started and have not stopped yet


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

def start(cmd, cpu, env=None, stderr_path=None):
    err = open(stderr_path, "ab") if stderr_path else subprocess.DEVNULL
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=err, env=env,
                         start_new_session=True)
    PROCS.append(p)
    return p


def stop(p, grace=10.0):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    if p in PROCS:
        PROCS.remove(p)


def cleanup():
    for p in list(PROCS):
        try:
            stop(p, grace=5.0)
        except Exception as e:  # keep cleaning the others
            log(f"cleanup of {p.pid}: {e}")


def on_signal(signum, _frame):
    log(f"signal {signum}: stopping")
    sys.exit(128 + signum)  # runs atexit -> cleanup()


def run(cmd, timeout, cpu=LOAD_CPU, env=None, check=True):
    r = subprocess.run(["taskset", "-c", cpu] + cmd, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(c) for c in f.read().split()]
    except FileNotFoundError:
        pass
    return out


def tree(pid):
    pids, todo = [], [pid]
    while todo and len(pids) < 64:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def cpu_split(pid):
    """(user, system) CPU ticks of a process and its children (nginx: master + worker)."""
    user = system = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except FileNotFoundError:
            pass
    return user, system


def ticks(pid):
    """user+system CPU ticks of a process and its children."""
    return sum(cpu_split(pid))


def status_kib(pid, key):
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def wait_http(port, path="/", deadline=30.0, proc=None):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return
            last = r.status
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise RuntimeError(f"port {port} never answered 200 on {path}: {last}")


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# ---------------------------------------------------------------- the setup

class Bench:
    def __init__(self, a):
        self.a = a
        self.work = a.work
        os.makedirs(self.work, exist_ok=True)
        self.www = os.path.join(self.work, "www")
        os.makedirs(self.www, exist_ok=True)
        self.raw = open(os.path.join(a.out, "raw.jsonl"), "a")
        self.nginx_conf = open(os.path.join(HERE, "nginx.conf")).read()
        self.origin_conf = open(os.path.join(HERE, "nginx-origin.conf")).read()
        self.origin = None
        self.serial = 0

    # -- origin

    def start_origin(self):
        with open(os.path.join(self.www, "13b"), "wb") as f:
            f.write(b"Hello, world!")
        with open(os.path.join(self.www, "16k"), "wb") as f:
            f.write(b"x" * 16384)
        with open(os.path.join(self.www, "1g"), "wb") as f:
            f.truncate(self.a.download_mib * 1024 * 1024)  # sparse: no disk used
        self.origin_port, self.origin_h2 = free_port(), free_port()
        conf = self.fill(self.origin_conf, DIR=self.work, WWW=self.www,
                         ORIGIN_PORT=self.origin_port, ORIGIN_H2_PORT=self.origin_h2)
        path = os.path.join(self.work, "origin.conf")
        with open(path, "w") as f:
            f.write(conf)
        self.origin = start(["nginx", "-p", self.work, "-c", path, "-e", "stderr"], LOAD_CPU,
                            stderr_path=os.path.join(self.work, "origin.log"))
        wait_http(self.origin_port, proc=self.origin)
        for name, size in (("/", 13), ("/16k", 16384)):
            c = http.client.HTTPConnection("127.0.0.1", self.origin_port, timeout=5)
            c.request("GET", name)
            body = c.getresponse().read()
            assert len(body) == size, (name, len(body))
        log(f"origin: nginx on 127.0.0.1:{self.origin_port} (h2c {self.origin_h2})")

    @staticmethod
    def fill(text, **kv):
        for k, v in kv.items():
            text = text.replace(f"@{k}@", str(v))
        assert "@" not in re.sub(r"#.*", "", text), "unfilled placeholder"
        return text

    # -- proxies

    def start_proxy(self, name, upstream=None, routes=1):
        """Start a fresh proxy; returns a dict with pid (None for direct), port, h2_port, api_port."""
        upstream = upstream or self.origin_port
        self.serial += 1
        if name == "direct":
            return {"name": name, "proc": None, "pid": None, "port": self.origin_port,
                    "h2_port": self.origin_h2, "api_port": None}
        port = free_port()
        if name == "floor":
            # The cheapest forwarder hyper and tokio allow (bench_pair bare): what
            # any proxy built on them costs before doing a proxy's work.
            proc = start([self.a.bench_pair, "bare", f"127.0.0.1:{port}",
                          f"http://127.0.0.1:{upstream}"], PROXY_CPU,
                         stderr_path=os.path.join(self.work, "floor.log"))
            wait_http(port, proc=proc)
            return {"name": name, "proc": proc, "pid": proc.pid, "port": port, "h2_port": None,
                    "api_port": None}
        if name == "nginx":
            h2 = free_port()
            d = os.path.join(self.work, f"nginx-{self.serial}")
            os.makedirs(d, exist_ok=True)
            locs = "\n".join(f"        location /user/u{i}/ {{ proxy_pass http://origin; }}"
                             for i in range(routes - 1)) if routes > 1 else ""
            conf = self.fill(self.nginx_conf, DIR=d, UPSTREAM_PORT=upstream, PORT=port,
                             H2_PORT=h2, LOCATIONS=locs)
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            proc = start(["nginx", "-p", d, "-c", path, "-e", "stderr"], PROXY_CPU,
                         stderr_path=os.path.join(self.work, "nginx.log"))
            api = None
        else:
            api = free_port()
            env = dict(os.environ)
            env.pop("CONFIGPROXY_AUTH_TOKEN", None)  # unauthenticated API, both proxies
            if name == "switchyard":
                cmd = [self.a.switchyard, "--worker-threads", str(self.a.workers)]
                h2 = port  # HTTP/2 with prior knowledge on the public port
            else:
                cmd = [self.a.chp]
                h2 = None  # CHP has no HTTP/2
            cmd += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
                    "--api-port", str(api), "--default-target",
                    f"http://127.0.0.1:{upstream}", "--log-level", "warn"]
            proc = start(cmd, PROXY_CPU, env=env,
                         stderr_path=os.path.join(self.work, f"{name}.log"))
        wait_http(port, proc=proc)
        if api:
            wait_http(api, "/api/routes", proc=proc)
        return {"name": name, "proc": proc, "pid": proc.pid, "port": port, "h2_port": h2,
                "api_port": api}

    def stop_proxy(self, h):
        if h["proc"] is not None:
            stop(h["proc"])

    def record(self, scenario, variant, proxy, rnd, metrics):
        rec = {"scenario": scenario, "variant": variant, "proxy": proxy, "round": rnd,
               "time": time.time(), "loadavg": loadavg(), **metrics}
        self.raw.write(json.dumps(rec) + "\n")
        self.raw.flush()
        brief = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        log(f"  {scenario}/{variant} {proxy} r{rnd}: " +
            ", ".join(f"{k}={v:.4g}" for k, v in list(brief.items())[:6]))

    # -- load generators

    def wrk(self, port, path, conns, duration):
        url = f"http://127.0.0.1:{port}{path}"
        r = run(["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--timeout", "10s",
                 "-s", os.path.join(HERE, "wrk_json.lua"), url],
                timeout=parse_seconds(duration) + 60)
        for line in r.stdout.splitlines():
            if line.startswith("WRKJSON "):
                return json.loads(line[len("WRKJSON "):])
        raise RuntimeError(f"no WRKJSON in wrk output: {r.stdout[-500:]}")

    def h2load(self, port, path, conns, streams, duration):
        url = f"http://127.0.0.1:{port}{path}"
        secs = parse_seconds(duration)
        r = run(["h2load", "-t1", "-c", str(conns), "-m", str(streams), "-D", str(secs), url],
                timeout=secs + 60)
        out = r.stdout
        m = re.search(r"finished in ([\d.]+)(s|ms), ([\d.]+) req/s", out)
        q = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
        t = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+"
                      r"([\d.]+)(us|ms|s)", out)
        if not (m and q and t):
            raise RuntimeError(f"cannot parse h2load output: {out[-800:]}")
        unit = {"us": 1, "ms": 1e3, "s": 1e6}
        dur = float(m.group(1)) * (1 if m.group(2) == "s" else 1e-3)
        ok = int(q.group(4))
        return {"requests": ok, "duration_us": int(dur * 1e6),
                "failed": int(q.group(5)) + int(q.group(6)) + int(q.group(7)),
                "latency_us": {"min": float(t.group(1)) * unit[t.group(2)],
                               "max": float(t.group(3)) * unit[t.group(4)],
                               "mean": float(t.group(5)) * unit[t.group(6)]}}

    # -- scenarios

    def http_run(self, h, path, conns, h2_streams=None):
        """Warm up, then measure one load run; returns metrics incl. proxy CPU per request."""
        pid = h["pid"]
        idle = status_kib(pid, "VmRSS") if pid else None
        if h2_streams:
            self.h2load(h["h2_port"], path, conns, h2_streams, self.a.warmup)
        else:
            self.wrk(h["port"], path, conns, self.a.warmup)
        u0, s0 = cpu_split(pid) if pid else (0, 0)
        o0 = ticks(self.origin.pid)
        if h2_streams:
            res = self.h2load(h["h2_port"], path, conns, h2_streams, self.a.duration)
        else:
            res = self.wrk(h["port"], path, conns, self.a.duration)
        u1, s1 = cpu_split(pid) if pid else (0, 0)
        t0, t1 = u0 + s0, u1 + s1
        o1 = ticks(self.origin.pid)
        n = max(1, res["requests"])
        secs = res["duration_us"] / 1e6
        m = {"rps": res["requests"] / secs,
             "origin_cpu_us_per_req": (o1 - o0) / CLK * 1e6 / n,
             "lat_us": res["latency_us"]}
        if pid:
            m["cpu_us_per_req"] = (t1 - t0) / CLK * 1e6 / n
            # Split: the kernel's part follows the system calls made per request,
            # the user part is the proxy's own code.
            m["user_us_per_req"] = (u1 - u0) / CLK * 1e6 / n
            m["sys_us_per_req"] = (s1 - s0) / CLK * 1e6 / n
            m["proxy_busy"] = (t1 - t0) / CLK / secs
            m["idle_rss_kib"] = idle
            m["rss_kib"] = status_kib(pid, "VmRSS")
        errs = res.get("errors")
        m["errors"] = sum(errs.values()) if errs else res.get("failed", 0)
        m["requests"] = res["requests"]
        return m

    def scen_http(self, proxy, rnd, body, conns):
        h = self.start_proxy(proxy)
        try:
            m = self.http_run(h, "/" if body == "13b" else "/16k", conns)
        finally:
            self.stop_proxy(h)
        self.record("http1", f"{body}-c{conns}", proxy, rnd, m)

    def scen_h2(self, proxy, rnd, body, conns, streams):
        h = self.start_proxy(proxy)
        try:
            m = self.http_run(h, "/" if body == "13b" else "/16k", conns, h2_streams=streams)
        finally:
            self.stop_proxy(h)
        self.record("h2", f"{body}-c{conns}-m{streams}", proxy, rnd, m)

    def api(self, h, count, conc, lists, cpu=LOAD_CPU):
        r = run([self.a.bench_pair, "api", f"http://127.0.0.1:{h['api_port']}", str(count),
                 str(conc), f"http://127.0.0.1:{self.origin_port}", str(lists)],
                timeout=600, cpu=cpu)
        return json.loads(r.stdout.strip().splitlines()[-1])

    def scen_routes(self, proxy, rnd, routes):
        h = self.start_proxy(proxy, routes=routes)
        try:
            extra = {}
            if routes > 1 and proxy != "nginx":
                res = self.api(h, routes - 1, 4, 3)
                extra = {"load_seconds": res["add_seconds"],
                         "list_ms": sorted(res["list_ms"])[len(res["list_ms"]) // 2]}
            # the same deep path in both variants; with 1 route it falls to "/"
            path = f"/user/u{self.a.routes - 2}/"
            m = self.http_run(h, path, 64)
            m.update(extra)
        finally:
            self.stop_proxy(h)
        self.record("routes", f"{routes}", proxy, rnd, m)

    def scen_api(self, proxy, rnd, count):
        h = self.start_proxy(proxy)
        try:
            rss0 = status_kib(h["pid"], "VmRSS")
            t0 = ticks(h["pid"])
            res = self.api(h, count, 1, 0)
            t1 = ticks(h["pid"])
            lst = sorted(self.api(h, 0, 1, 5)["list_ms"])
            m = {"add_seconds": res["add_seconds"], "add_us_per_route": res["add_seconds"] / count * 1e6,
                 "add_cpu_us_per_route": (t1 - t0) / CLK * 1e6 / count,
                 "list_ms": lst[len(lst) // 2], "list_ms_min": lst[0],
                 "rss_growth_kib": status_kib(h["pid"], "VmRSS") - rss0}
            m["list_bytes"] = self.api(h, 0, 1, 1)["list_bytes"]
        finally:
            self.stop_proxy(h)
        # The same adds with the client on the proxy's core: one request at a time is
        # bound by wake-up latency, and waking an idle core costs more than the work.
        h = self.start_proxy(proxy)
        try:
            m["add_seconds_same_core"] = self.api(h, count, 1, 0, cpu=PROXY_CPU)["add_seconds"]
        finally:
            self.stop_proxy(h)
        self.record("api", f"add{count}", proxy, rnd, m)

    def scen_ws(self, proxy, rnd, n):
        env = dict(os.environ)
        env["TOKIO_WORKER_THREADS"] = str(self.a.workers)
        env.pop("CONFIGPROXY_AUTH_TOKEN", None)
        d = os.path.join(self.work, f"ws-{rnd}-{proxy}")
        os.makedirs(d, exist_ok=True)
        r = run([sys.executable, os.path.join(HERE, "ws_idle.py"), "--proxy", proxy,
                 "--connections", str(n), "--binary", self.a.switchyard, "--chp", self.a.chp,
                 "--cpu", PROXY_CPU, "--workdir", d],
                timeout=600, env=env)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        m.pop("proxy", None)
        self.record("ws", f"idle{n}", proxy, rnd, m)

    def scen_download(self, proxy, rnd):
        h = self.start_proxy(proxy)
        try:
            pid = h["pid"]
            base = status_kib(pid, "VmRSS") if pid else None
            peak = [base or 0]
            done = threading.Event()

            def sample():
                while not done.wait(0.02):
                    peak[0] = max(peak[0], status_kib(pid, "VmRSS"))
            th = threading.Thread(target=sample, daemon=True)
            if pid:
                th.start()
            t0 = ticks(pid) if pid else 0
            r = run(["curl", "-sS", "--max-time", "300", "-o", "/dev/null", "-w",
                     "%{size_download} %{time_total} %{http_code}",
                     f"http://127.0.0.1:{h['port']}/1g"], timeout=330)
            done.set()
            if pid:
                th.join()
            size, secs, code = r.stdout.split()
            want = self.a.download_mib * 1024 * 1024
            if int(size) != want or code != "200":
                raise RuntimeError(f"download: {size} bytes, status {code}")
            m = {"seconds": float(secs), "mib_per_s": int(size) / 1048576 / float(secs)}
            if pid:
                hwm = status_kib(pid, "VmHWM")
                m.update({"base_rss_kib": base, "peak_rss_kib": max(peak[0], hwm),
                          "rss_growth_kib": max(peak[0], hwm) - base,
                          "cpu_s": (ticks(pid) - t0) / CLK})
        finally:
            self.stop_proxy(h)
        self.record("download", f"{self.a.download_mib}MiB", proxy, rnd, m)


def parse_seconds(d):
    m = re.fullmatch(r"([\d.]+)\s*(ms|s|m)?", str(d).strip())
    if not m:
        raise ValueError(f"bad duration {d!r}")
    v = float(m.group(1))
    return max(1, int(round(v * {"ms": 1e-3, "s": 1, "m": 60, None: 1}[m.group(2)])))


def version(cmd, pattern=None):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        out = (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    if pattern:
        m = re.search(pattern, out)
        return m.group(0) if m else out.splitlines()[0] if out else "?"
    return out.splitlines()[0] if out else "?"


def meta(a):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    repo = os.path.dirname(HERE)
    commit = version(["git", "-C", repo, "rev-parse", "HEAD"])
    dirty = bool(version(["git", "-C", repo, "status", "--porcelain", "--", "crates"]) not in ("?", ""))
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem_kib / 1048576, 1),
        "kernel": platform.release(), "os": version(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]),
        "loadavg_start": open("/proc/loadavg").read().strip(),
        "versions": {
            "nginx": version(["nginx", "-v"], r"nginx/[\d.]+"),
            "node": version(["node", "--version"]),
            "configurable-http-proxy": version([a.chp, "--version"]),
            "rustc": version(["rustc", "-V"]),
            "wrk": version(["wrk", "-v"], r"wrk [\d.]+\S*"),
            "h2load": version(["h2load", "--version"]),
            "curl": version(["curl", "--version"]),
            "python": platform.python_version(),
        },
        "commit": commit, "crates_dirty": dirty,
        "params": {"rounds": a.rounds, "duration": a.duration, "warmup": a.warmup,
                   "workers": a.workers, "routes": a.routes, "api_routes": a.api_routes,
                   "ws": a.ws, "download_mib": a.download_mib, "scenarios": a.scenarios,
                   "load_cpu": LOAD_CPU, "proxy_cpu": PROXY_CPU},
    }


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--switchyard", required=True)
    p.add_argument("--bench-pair", required=True)
    p.add_argument("--chp", required=True)
    p.add_argument("--work", required=True, help="scratch directory (configs, sparse 1 GiB file)")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    p.add_argument("--rounds", type=int, default=int(env("BENCH_ROUNDS", "3")))
    p.add_argument("--duration", default=env("BENCH_DURATION", "10s"))
    p.add_argument("--warmup", default=env("BENCH_WARMUP", "1s"))
    p.add_argument("--workers", type=int, default=int(env("BENCH_WORKERS", "1")))
    p.add_argument("--routes", type=int, default=int(env("BENCH_ROUTES", "100000")))
    p.add_argument("--api-routes", type=int, default=int(env("BENCH_API_ROUTES", "10000")))
    p.add_argument("--ws", type=int, default=int(env("BENCH_WS", "2000")))
    p.add_argument("--download-mib", type=int, default=int(env("BENCH_DOWNLOAD_MIB", "1024")))
    p.add_argument("--scenarios", default=env("BENCH_SCENARIOS", "http1,h2,routes,api,ws,download"))
    a = p.parse_args()
    a.scenarios = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs at least 2 CPUs (core 0: load + origin, core 1: proxy)")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    atexit.register(cleanup)

    os.makedirs(a.out, exist_ok=True)
    raw = os.path.join(a.out, "raw.jsonl")
    if os.path.exists(raw):
        os.remove(raw)
    info = meta(a)
    b = Bench(a)
    b.start_origin()

    http_proxies = ["direct", "nginx", "switchyard", "chp"]
    cases = []  # (scenario, label, proxies, fn(proxy, round))
    if "http1" in a.scenarios:
        for body in ("13b", "16k"):
            for conns in (64, 256):
                cases.append(("http1", f"{body}-c{conns}", http_proxies + ["floor"],
                              lambda px, r, body=body, conns=conns: b.scen_http(px, r, body, conns)))
    if "h2" in a.scenarios:
        for body in ("13b", "16k"):
            cases.append(("h2", f"{body}-c64-m10", ["direct", "nginx", "switchyard"],
                          lambda px, r, body=body: b.scen_h2(px, r, body, 64, 10)))
    if "routes" in a.scenarios:
        for n in (1, a.routes):
            cases.append(("routes", str(n), ["nginx", "switchyard", "chp"],
                          lambda px, r, n=n: b.scen_routes(px, r, n)))
    if "api" in a.scenarios:
        cases.append(("api", f"add{a.api_routes}", ["switchyard", "chp"],
                      lambda px, r: b.scen_api(px, r, a.api_routes)))
    if "ws" in a.scenarios:
        cases.append(("ws", f"idle{a.ws}", ["nginx", "switchyard", "chp"],
                      lambda px, r: b.scen_ws(px, r, a.ws)))
    if "download" in a.scenarios:
        cases.append(("download", f"{a.download_mib}MiB", http_proxies,
                      lambda px, r: b.scen_download(px, r)))

    failures = []
    t_start = time.monotonic()
    for rnd in range(1, a.rounds + 1):
        log(f"round {rnd}/{a.rounds}")
        for scen, label, proxies, fn in cases:
            k = (rnd - 1) % len(proxies)
            for px in proxies[k:] + proxies[:k]:  # rotate the order every round
                try:
                    fn(px, rnd)
                except Exception as e:  # record and go on: one broken proxy must not stop the run
                    msg = f"{scen}/{label} {px} round {rnd}: {type(e).__name__}: {e}"
                    log("FAILED " + msg)
                    failures.append(msg)
    info["loadavg_end"] = open("/proc/loadavg").read().strip()
    info["wall_seconds"] = round(time.monotonic() - t_start)
    info["failures"] = failures
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(info, f, indent=2)
    log(f"done in {info['wall_seconds']} s, {len(failures)} failures; raw data in {raw}")


if __name__ == "__main__":
    main()
