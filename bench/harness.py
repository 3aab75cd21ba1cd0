#!/usr/bin/env python3
"""Load benchmark of switchyard against nginx, configurable-http-proxy and a direct baseline.

Over HTTP/1.1 it also measures the floor of a proxy built on hyper and tokio
(`bench_pair bare`: requests pass untouched over one upstream connection per
client connection), to show what part of the cost is those libraries'.

Besides wrk and h2load, the scenarios that those tools cannot drive (WebSocket
messages, TLS handshakes full or resumed) use `loadgen` (bench/loadgen), which
also serves the WebSocket backend.

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
import ssl
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CLK = os.sysconf("SC_CLK_TCK")
LOAD_CPU = "0"   # load generator, origin, API and WebSocket clients
PROXY_CPU = "1"  # the proxy under test, alone
ALL_CPUS = f"0-{(os.cpu_count() or 2) - 1}"  # the both-cores scenario: nothing pinned

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


def wait_http(port, path="/", deadline=30.0, proc=None, tls=False):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before serving")
        try:
            if tls:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                c = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=ctx)
            else:
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


def wait_port(port, deadline=30.0, proc=None):
    """Waits until something accepts TCP connections on the port."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def pin(pid, cpus):
    """Moves a process tree (every thread) to the given CPUs."""
    for p in tree(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", cpus, str(p)], capture_output=True, check=False)


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
        self.ws_backend = None
        self.serial = 0
        self.certs = {}

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

    def make_certs(self):
        """One self-signed certificate per key type, for 127.0.0.1 and localhost;
        every proxy serves the same files."""
        for kind, newkey in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
                             ("rsa", ["-newkey", "rsa:2048"])):
            key = os.path.join(self.work, f"{kind}.key")
            crt = os.path.join(self.work, f"{kind}.crt")
            subprocess.run(["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", key, "-out", crt,
                            "-days", "30", "-subj", "/CN=localhost", "-addext",
                            "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                           check=True, capture_output=True)
            self.certs[kind] = (key, crt)
        log("certificates: ECDSA P-256 and RSA-2048, self-signed")

    def start_ws_backend(self):
        self.ws_port = free_port()
        self.ws_backend = start([self.a.loadgen, "ws-backend", f"127.0.0.1:{self.ws_port}"], LOAD_CPU,
                                stderr_path=os.path.join(self.work, "ws-backend.log"))
        wait_port(self.ws_port, proc=self.ws_backend)
        log(f"WebSocket backend: loadgen on 127.0.0.1:{self.ws_port}")

    @staticmethod
    def fill(text, **kv):
        for k, v in kv.items():
            text = text.replace(f"@{k}@", str(v))
        assert "@" not in re.sub(r"#.*", "", text), "unfilled placeholder"
        return text

    # -- proxies

    def start_proxy(self, name, upstream=None, routes=1, tls=None, cores=False, ready="http"):
        """Start a fresh proxy; returns a dict with pid (None for direct), port, h2_port, api_port.

        tls: None, "ecdsa" or "rsa": the public port serves TLS with that certificate.
        cores: the both-cores placement (any CPU, switchyard's default workers, 2 nginx workers).
        ready: "http" waits for a 200 on "/", "port" only for the port to accept.
        """
        upstream = upstream or self.origin_port
        self.serial += 1
        if name == "direct":
            port = self.ws_port if upstream == getattr(self, "ws_port", None) else self.origin_port
            return {"name": name, "proc": None, "pid": None, "port": port,
                    "h2_port": self.origin_h2, "api_port": None}
        port = free_port()
        cpu = ALL_CPUS if cores else PROXY_CPU
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
            tls_conf = ""
            if tls:
                key, crt = self.certs[tls]
                tls_conf = (f"ssl_certificate {crt}; ssl_certificate_key {key}; "
                            "ssl_protocols TLSv1.2 TLSv1.3;")
            conf = self.fill(self.nginx_conf, DIR=d, UPSTREAM_PORT=upstream, PORT=port,
                             H2_PORT=h2, LOCATIONS=locs, WORKERS=2 if cores else 1,
                             SSL=" ssl" if tls else "", TLS=tls_conf)
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf)
            proc = start(["nginx", "-p", d, "-c", path, "-e", "stderr"], cpu,
                         stderr_path=os.path.join(self.work, "nginx.log"))
            api = None
        else:
            api = free_port()
            env = dict(os.environ)
            env.pop("CONFIGPROXY_AUTH_TOKEN", None)  # unauthenticated API, both proxies
            if name in ("switchyard", "switchyard-alt"):
                binary = self.a.switchyard if name == "switchyard" else self.a.switchyard_alt
                cmd = [binary] if cores else [binary, "--worker-threads", str(self.a.workers)]
                h2 = port  # HTTP/2 with prior knowledge on the public port
            else:
                cmd = [self.a.chp]
                h2 = None  # CHP has no HTTP/2
            cmd += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
                    "--api-port", str(api), "--default-target",
                    f"http://127.0.0.1:{upstream}", "--log-level", "warn"]
            if tls:
                key, crt = self.certs[tls]
                cmd += ["--ssl-key", key, "--ssl-cert", crt]
            proc = start(cmd, cpu, env=env,
                         stderr_path=os.path.join(self.work, f"{name}.log"))
        if ready == "http":
            wait_http(port, proc=proc, tls=bool(tls))
        else:
            wait_port(port, proc=proc)
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

    def wrk(self, port, path, conns, duration, scheme="http", close=False, threads=1, cpu=LOAD_CPU):
        url = f"{scheme}://127.0.0.1:{port}{path}"
        extra = ["-H", "Connection: close"] if close else []
        r = run(["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}", "--timeout", "10s",
                 *extra, "-s", os.path.join(HERE, "wrk_json.lua"), url],
                timeout=parse_seconds(duration) + 60, cpu=cpu)
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

    def http_run(self, h, path, conns, h2_streams=None, **wrk):
        """Warm up, then measure one load run; returns metrics incl. proxy CPU per request.

        wrk: scheme ("https"), close (a new connection per request), threads, cpu."""
        pid = h["pid"]
        idle = status_kib(pid, "VmRSS") if pid else None
        if h2_streams:
            self.h2load(h["h2_port"], path, conns, h2_streams, self.a.warmup)
        else:
            self.wrk(h["port"], path, conns, self.a.warmup, **wrk)
        u0, s0 = cpu_split(pid) if pid else (0, 0)
        o0 = ticks(self.origin.pid)
        if h2_streams:
            res = self.h2load(h["h2_port"], path, conns, h2_streams, self.a.duration)
        else:
            res = self.wrk(h["port"], path, conns, self.a.duration, **wrk)
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

    def loadgen(self, h, args):
        """One loadgen client run (warm-up, then the window); its JSON plus proxy CPU per item."""
        secs = parse_seconds(self.a.duration)
        cmd = [self.a.loadgen, *args, "--warmup", str(parse_seconds(self.a.warmup)),
               "--duration", str(secs)]
        if h["pid"]:
            cmd += ["--pid", str(h["pid"])]
        res = json.loads(run(cmd, timeout=secs + 120).stdout.strip().splitlines()[-1])
        n = max(1, res["count"])
        # "req" is one operation here: a message, or a connection with its handshake.
        m = {"rps": res["rate"], "requests": res["count"], "errors": res["errors"],
             "lat_us": res["lat_us"], "mib_per_s": res["bytes"] / 1048576 / res["seconds"]}
        if "last_error" in res:
            m["last_error"] = res["last_error"]
        if h["pid"]:
            u, s = res["user_ticks"], res["sys_ticks"]
            m["cpu_us_per_req"] = (u + s) / CLK * 1e6 / n
            m["user_us_per_req"] = u / CLK * 1e6 / n
            m["sys_us_per_req"] = s / CLK * 1e6 / n
            m["proxy_busy"] = (u + s) / CLK / res["seconds"]
            m["rss_kib"] = status_kib(h["pid"], "VmRSS")
        return m, res

    def scen_https(self, proxy, rnd, body, conns):
        """Kept-alive HTTPS (wrk over TLS 1.3, ECDSA certificate)."""
        h = self.start_proxy(proxy, tls="ecdsa")
        try:
            m = self.http_run(h, "/" if body == "13b" else "/16k", conns, scheme="https")
        finally:
            self.stop_proxy(h)
        self.record("https", f"ka-{body}-c{conns}", proxy, rnd, m)

    def scen_handshake(self, proxy, rnd, kind, cert, conns):
        """A new TLS connection per request (loadgen tls): full or resumed handshakes."""
        h = self.start_proxy(proxy, tls=cert)
        try:
            m, res = self.loadgen(h, ["tls", f"https://localhost:{h['port']}/", "--handshake", kind,
                                      "--conns", str(conns)])
            m["resumed_share"] = res["resumed"] / max(1, res["count"])
        finally:
            self.stop_proxy(h)
        self.record("https", f"{kind}-{cert}-c{conns}", proxy, rnd, m)

    def scen_wsmsg(self, proxy, rnd, mode, size, conns):
        """WebSocket messages through the proxy to loadgen's backend: echo loops or a stream."""
        h = self.start_proxy(proxy, upstream=self.ws_port, ready="port")
        try:
            path = "/stream" if mode == "stream" else "/echo"
            m, _ = self.loadgen(h, [f"ws-{mode}", f"ws://127.0.0.1:{h['port']}{path}", "--size",
                                    str(size), "--conns", str(conns)])
        finally:
            self.stop_proxy(h)
        label = f"{mode}{size if size < 1024 else str(size // 1024) + 'k'}-c{conns}"
        self.record("wsmsg", label, proxy, rnd, m)

    def scen_newconn(self, proxy, rnd, conns):
        """A new client connection per request: wrk with `Connection: close`."""
        h = self.start_proxy(proxy)
        try:
            m = self.http_run(h, "/", conns, close=True)
        finally:
            self.stop_proxy(h)
        self.record("newconn", f"13b-c{conns}", proxy, rnd, m)

    def scen_cores(self, proxy, rnd, scheme, conns):
        """Both cores: nothing pinned, switchyard's default workers, nginx with 2 workers."""
        pin(self.origin.pid, ALL_CPUS)
        h = self.start_proxy(proxy, tls="ecdsa" if scheme == "https" else None, cores=True)
        try:
            t0 = cpu_times()
            m = self.http_run(h, "/", conns, scheme=scheme, threads=2, cpu=ALL_CPUS)
            t1 = cpu_times()
            busy, total = t1[0] - t0[0], t1[1] - t0[1]
            m["machine_busy"] = busy / total if total else None
        finally:
            self.stop_proxy(h)
            pin(self.origin.pid, LOAD_CPU)
        self.record("cores", f"{scheme}-13b-c{conns}", proxy, rnd, m)

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


def cpu_times():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


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
            "openssl": version(["openssl", "version"]),
            "python": platform.python_version(),
        },
        "commit": commit, "crates_dirty": dirty,
        "params": {"rounds": a.rounds, "duration": a.duration, "warmup": a.warmup,
                   "workers": a.workers, "routes": a.routes, "api_routes": a.api_routes,
                   "ws": a.ws, "download_mib": a.download_mib, "scenarios": a.scenarios,
                   "load_cpu": LOAD_CPU, "proxy_cpu": PROXY_CPU, "wsmsg_conns": a.wsmsg_conns,
                   "switchyard_alt": a.alt_label if a.switchyard_alt else None},
    }


def main():
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--switchyard", required=True)
    p.add_argument("--bench-pair", required=True)
    p.add_argument("--chp", required=True)
    p.add_argument("--loadgen", required=True, help="bench/loadgen's binary")
    p.add_argument("--switchyard-alt", help="switchyard built with the other rustls crypto provider: "
                   "measured beside it in the HTTPS scenarios")
    p.add_argument("--alt-label", default="other provider", help="what --switchyard-alt differs in")
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
    p.add_argument("--wsmsg-conns", default=env("BENCH_WSMSG_CONNS", "64,1024"),
                   help="connections of the WebSocket echo scenario")
    p.add_argument("--scenarios", default=env(
        "BENCH_SCENARIOS", "http1,h2,routes,api,ws,download,https,wsmsg,newconn,cores"))
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
    if {"https", "cores"} & set(a.scenarios):
        b.make_certs()
    if "wsmsg" in a.scenarios:
        b.start_ws_backend()

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
    tls_proxies = ["nginx", "switchyard", "chp"] + (["switchyard-alt"] if a.switchyard_alt else [])
    if "https" in a.scenarios:
        for body in ("13b", "16k"):
            cases.append(("https", f"ka-{body}-c64", tls_proxies,
                          lambda px, r, body=body: b.scen_https(px, r, body, 64)))
        for kind, cert in (("full", "ecdsa"), ("full", "rsa"), ("resume", "ecdsa")):
            cases.append(("https", f"{kind}-{cert}-c32", tls_proxies,
                          lambda px, r, kind=kind, cert=cert: b.scen_handshake(px, r, kind, cert, 32)))
    if "wsmsg" in a.scenarios:
        for conns in [int(c) for c in a.wsmsg_conns.split(",") if c]:
            cases.append(("wsmsg", f"echo100-c{conns}", http_proxies,
                          lambda px, r, conns=conns: b.scen_wsmsg(px, r, "echo", 100, conns)))
        cases.append(("wsmsg", "stream64k-c1", http_proxies,
                      lambda px, r: b.scen_wsmsg(px, r, "stream", 65536, 1)))
    if "newconn" in a.scenarios:
        cases.append(("newconn", "13b-c64", http_proxies,
                      lambda px, r: b.scen_newconn(px, r, 64)))
    if "cores" in a.scenarios:
        for scheme in ("http", "https"):
            cases.append(("cores", f"{scheme}-13b-c256", ["nginx", "switchyard"],
                          lambda px, r, scheme=scheme: b.scen_cores(px, r, scheme, 256)))

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
