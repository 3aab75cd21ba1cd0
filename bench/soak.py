#!/usr/bin/env python3
"""The leak soak: switchyard and configurable-http-proxy side by side, on the
failure paths where CHP leaked (CHP #388, #434, #557).

Usage: bench/soak.py --switchyard PATH --chp PATH [--minutes 30] [--rate 15]
                     [--warmup 120] [--out bench/results] [--results-md bench/RESULTS.md]

Normally started by bench/soak.sh, which installs CHP and builds switchyard.

Both proxies run at the same time, each with `--error-target` and its own set of
targets on 127.0.0.1 (so that the sockets on each proxy's side can be told apart by
port): an aiohttp app (`/ok`, a WebSocket echo on `/ws` whose sessions end as the
client asks, upgrades refused with 404, 426 and 500 on `/u404`, `/u426`, `/u500`,
a 64 MiB download on `/dl`), a target that reads and never answers (`/hang`), the
error-page server and a route to a port where nothing listens (`/dead`). The same
routes are added through each proxy's REST API. The same mix of patterns is then
started against both at a fixed rate (open loop, `--rate` per second per proxy),
one pattern after the other in a fixed order:

  ws-dead          WebSocket upgrade to the stopped target (status recorded)
  ws-404/426/500   WebSocket upgrade answered without a 101
  ws-target-close  WebSocket session closed by the target (close frame)
  ws-client-close  WebSocket session closed by the client (close frame)
  ws-client-rst    WebSocket session cut by the client (SO_LINGER 0: RST)
  ws-target-rst    WebSocket session cut by the target (RST)
  dl-abort         64 MiB download, the client leaves after 256 KiB
  hang-abandon     request to the hanging target, the client leaves after 1 s
  get-ok           plain GET, must answer 200
  get-dead         plain GET to the stopped target: 503 with the error target's page

Every --interval seconds (10) both drivers stop starting patterns, the patterns
in flight finish, and one second later each proxy is sampled: VmRSS, open
descriptors, its TCP sockets by state (from its descriptors' inodes in
/proc/net/tcp{,6}), the TIME_WAIT and CLOSE_WAIT sockets on its side (local port =
its public or API port, or remote port = one of its targets), its CPU time, and
the pattern counts, statuses and errors so far. Samples go to <out>/soak.jsonl as
they are taken. At the end: <out>/soak.svg and the section between `<!-- soak -->`
and `<!-- /soak -->` in RESULTS.md (replaced if present, appended if not).

Sampling at rest (nothing in flight) is on purpose: a pattern in flight holds two
to four descriptors, so a live count moves by tens with the timing of the sample;
at rest, what is left open is what the proxy keeps (idle pooled connections to
targets, and leaks).
"""

import argparse
import asyncio
import base64
import json
import math
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from aiohttp import WSMsgType, web

HERE = os.path.dirname(os.path.abspath(__file__))
PATTERNS = ["ws-dead", "ws-404", "ws-426", "ws-500", "ws-target-close", "ws-client-close",
            "ws-client-rst", "ws-target-rst", "dl-abort", "hang-abandon", "get-ok", "get-dead"]
# What each pattern should see from a proxy that does its job; anything else counts
# as an error of that pattern (the statuses are recorded either way).
EXPECT = {"ws-404": 404, "ws-426": 426, "ws-500": 500, "get-ok": 200, "get-dead": 503}
DOWNLOAD = 64 << 20
ABORT_AFTER = 256 << 10
HANG_FOR = 1.0
IO_TIMEOUT = 10.0
ERROR_PAGE = b"<html><body>soak error page</body></html>"

PROCS = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
    for p in PROCS:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(5)
    PROCS.clear()


# ---------------------------------------------------------------- /proc

def proc_status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fd_inodes(pid):
    """(descriptor count, socket inodes) of a process."""
    n, inodes = 0, set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        n += 1
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed between listdir and readlink
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return n, inodes


def tcp_table():
    """[(local port, remote port, state hex, inode)] over IPv4 and IPv6."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    p = line.split()
                    rows.append((int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16),
                                 p[3], p[9]))
        except FileNotFoundError:
            pass
    return rows


STATES = {"01": "established", "02": "syn_sent", "03": "syn_recv", "04": "fin_wait1",
          "05": "fin_wait2", "06": "time_wait", "07": "close", "08": "close_wait",
          "09": "last_ack", "0A": "listen", "0B": "closing"}


def netstat_ext():
    """TcpExt ListenOverflows and ListenDrops (machine-wide)."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            d = dict(zip(names.split()[1:], (int(v) for v in values.split()[1:])))
            return {"listen_overflows": d.get("ListenOverflows", 0),
                    "listen_drops": d.get("ListenDrops", 0)}
    return {}


# ---------------------------------------------------------------- targets

class Targets:
    """One proxy's targets: the app, the hanging target, the error server, a dead port."""

    def __init__(self):
        self.runners = []
        self.hang_server = None
        self.hang_open = 0
        self.ws_open = 0
        self.error_pages = 0

    async def start(self):
        app = web.Application()
        app.router.add_get("/ok", self.ok)
        app.router.add_get("/ws/{tail:.*}", self.ws)
        app.router.add_get("/u404/{tail:.*}", self.refuse(404))
        app.router.add_get("/u426/{tail:.*}", self.refuse(426))
        app.router.add_get("/u500/{tail:.*}", self.refuse(500))
        app.router.add_get("/dl/{tail:.*}", self.download)
        self.app_port = await self.serve(app)
        err = web.Application()
        err.router.add_get("/{code}", self.error_page)
        self.error_port = await self.serve(err)
        self.hang_server = await asyncio.start_server(self.hang, "127.0.0.1", 0)
        self.hang_port = self.hang_server.sockets[0].getsockname()[1]
        self.dead_port = free_port()  # bound, then closed: nothing listens there
        return self

    async def serve(self, app):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        self.runners.append(runner)
        return site._server.sockets[0].getsockname()[1]

    def ports(self):
        return {self.app_port, self.error_port, self.hang_port, self.dead_port}

    async def stop(self):
        if self.hang_server:
            self.hang_server.close()
        for r in self.runners:
            await r.cleanup()

    async def ok(self, _request):
        return web.Response(text="ok")

    def refuse(self, code):
        async def handler(_request):
            return web.Response(status=code, text=f"no upgrade here ({code})")
        return handler

    async def error_page(self, _request):
        self.error_pages += 1
        return web.Response(body=ERROR_PAGE, content_type="text/html")

    async def download(self, request):
        resp = web.StreamResponse()
        resp.content_length = DOWNLOAD
        await resp.prepare(request)
        chunk = b"x" * (64 << 10)
        try:
            for _ in range(DOWNLOAD // len(chunk)):
                await resp.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the proxy closed its side: what we want after an abort
        return resp

    async def ws(self, request):
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        self.ws_open += 1
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    break
                if msg.data == "close":
                    await ws.close(code=1000)
                    break
                if msg.data == "rst":
                    transport = request.transport
                    if transport is not None:
                        sock = transport.get_extra_info("socket")
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        transport.abort()
                    break
                await ws.send_str(msg.data)
        finally:
            self.ws_open -= 1
        return ws

    async def hang(self, reader, writer):
        self.hang_open += 1
        try:
            while await reader.read(4096):
                pass  # read what comes, never answer
        except ConnectionError:
            pass
        finally:
            self.hang_open -= 1
            writer.close()


# ---------------------------------------------------------------- client side

class Failed(Exception):
    pass


async def open_conn(port):
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), IO_TIMEOUT)


async def read_head(reader):
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT)
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    m = re.match(r"HTTP/1\.[01] (\d{3})", line)
    if not m:
        raise Failed(f"bad status line {line!r}")
    headers = {}
    for h in head.split(b"\r\n")[1:]:
        if b":" in h:
            k, v = h.split(b":", 1)
            headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    return int(m.group(1)), headers


async def read_body(reader, headers):
    if "content-length" in headers:
        return await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), IO_TIMEOUT)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while True:
            size = int((await asyncio.wait_for(reader.readline(), IO_TIMEOUT)).split(b";")[0], 16)
            if size == 0:
                await asyncio.wait_for(reader.readline(), IO_TIMEOUT)
                return out
            out += await asyncio.wait_for(reader.readexactly(size + 2), IO_TIMEOUT)
    return await asyncio.wait_for(reader.read(), IO_TIMEOUT)


def upgrade_request(path, port):
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: Upgrade\r\n"
            f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
            ).encode()


def frame(opcode, payload):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


async def read_frame(reader):
    b0, b1 = await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT)


async def wait_eof(reader):
    """True when the peer closed (FIN or RST) within IO_TIMEOUT."""
    try:
        while await asyncio.wait_for(reader.read(4096), IO_TIMEOUT):
            pass
    except ConnectionError:
        pass
    except asyncio.TimeoutError:
        return False
    return True


def rst(writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def run_pattern(name, port):
    """Runs one pattern; returns the status the proxy answered (or None)."""
    reader, writer = await open_conn(port)
    try:
        if name.startswith("ws-") and name[3:] in ("dead", "404", "426", "500"):
            path = {"dead": "/dead/ws"}.get(name[3:], f"/u{name[3:]}/ws")
            writer.write(upgrade_request(path, port))
            status, headers = await read_head(reader)
            if status == 101:
                raise Failed("101 for an upgrade that must fail")
            await read_body(reader, headers)  # then we close, kept alive or not
            return status
        if name.startswith("ws-"):
            writer.write(upgrade_request("/ws/session", port))
            status, _ = await read_head(reader)
            if status != 101:
                raise Failed(f"upgrade answered {status}")
            writer.write(frame(0x1, b"hello"))
            op, data = await read_frame(reader)
            if (op, data) != (0x1, b"hello"):
                raise Failed(f"echo {op} {data!r}")
            if name == "ws-client-close":
                writer.write(frame(0x8, struct.pack("!H", 1000)))
                op, _ = await read_frame(reader)
                if op != 0x8:
                    raise Failed(f"answer to a close: opcode {op}")
                if not await wait_eof(reader):
                    raise Failed("no close after the close handshake")
            elif name == "ws-target-close":
                writer.write(frame(0x1, b"close"))
                op, _ = await read_frame(reader)
                if op != 0x8:
                    raise Failed(f"target close: opcode {op}")
                writer.write(frame(0x8, struct.pack("!H", 1000)))
                if not await wait_eof(reader):
                    raise Failed("the proxy kept the client side open after the target closed")
            elif name == "ws-client-rst":
                rst(writer)
            elif name == "ws-target-rst":
                writer.write(frame(0x1, b"rst"))
                if not await wait_eof(reader):
                    raise Failed("the proxy kept the client side open after the target's RST")
            return status
        if name == "dl-abort":
            writer.write(f"GET /dl/64m HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            status, _ = await read_head(reader)
            got = 0
            while got < ABORT_AFTER:
                chunk = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT)
                if not chunk:
                    raise Failed(f"download ended after {got} bytes")
                got += len(chunk)
            writer.transport.abort()  # unread data: the kernel answers with RST
            return status
        if name == "hang-abandon":
            writer.write(f"GET /hang/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            try:
                status, _ = await asyncio.wait_for(read_head(reader), HANG_FOR)
                raise Failed(f"the hanging target answered {status}")
            except asyncio.TimeoutError:
                return None
        if name in ("get-ok", "get-dead"):
            path = "/ok" if name == "get-ok" else "/dead/page"
            writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())
            status, headers = await read_head(reader)
            body = await read_body(reader, headers)
            if name == "get-ok" and body != b"ok":
                raise Failed(f"/ok body {body[:60]!r}")
            if name == "get-dead" and ERROR_PAGE not in body:
                raise Failed(f"not the error target's page: {body[:60]!r}")
            return status
        raise ValueError(name)
    finally:
        if not writer.transport.is_closing():
            writer.close()


class Driver:
    """Starts one pattern every 1/rate seconds against one proxy."""

    def __init__(self, name, port, rate):
        self.name, self.port, self.rate = name, port, rate
        self.inflight = set()
        self.cycles = dict.fromkeys(PATTERNS, 0)
        self.errors = dict.fromkeys(PATTERNS, 0)
        self.statuses = {p: {} for p in PATTERNS}
        self.last_error = {}
        self.next = 0

    async def one(self, pattern):
        try:
            status = await asyncio.wait_for(run_pattern(pattern, self.port), 3 * IO_TIMEOUT)
            key = str(status)
            self.statuses[pattern][key] = self.statuses[pattern].get(key, 0) + 1
            if pattern in EXPECT and status != EXPECT[pattern]:
                raise Failed(f"status {status}, expected {EXPECT[pattern]}")
        except Exception as e:  # noqa: BLE001 - every failure is counted, the soak goes on
            self.errors[pattern] += 1
            self.last_error[pattern] = f"{type(e).__name__}: {e}"[:200]
        self.cycles[pattern] += 1

    async def run(self, gate):
        period = 1.0 / self.rate
        at = time.monotonic()
        while True:
            await gate.wait()
            now = time.monotonic()
            at = max(at + period, now - period)  # after a pause, do not catch up
            await asyncio.sleep(max(0.0, at - now))
            if not gate.is_set():
                continue  # a sample began while we slept
            pattern = PATTERNS[self.next % len(PATTERNS)]
            self.next += 1
            t = asyncio.create_task(self.one(pattern))
            self.inflight.add(t)
            t.add_done_callback(self.inflight.discard)


# ---------------------------------------------------------------- proxies

def start_proxy(name, binary, targets, workdir):
    port, api = free_port(), free_port()
    env = dict(os.environ)
    env.pop("CONFIGPROXY_AUTH_TOKEN", None)  # unauthenticated API on loopback, both proxies
    cmd = [binary, "--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
           "--api-port", str(api), "--default-target", f"http://127.0.0.1:{targets.app_port}",
           "--error-target", f"http://127.0.0.1:{targets.error_port}", "--log-level", "warn"]
    err = open(os.path.join(workdir, f"soak-{name}.log"), "ab")
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                         start_new_session=True)
    PROCS.append(p)
    return {"name": name, "proc": p, "pid": p.pid, "port": port, "api": api, "cmd": cmd}


async def http(port, method, path, body=b""):
    reader, writer = await open_conn(port)
    try:
        writer.write(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status, headers = await read_head(reader)
        return status, await read_body(reader, headers)
    finally:
        writer.close()


async def wait_ready(h):
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if h["proc"].poll() is not None:
            raise RuntimeError(f"{h['name']} exited with {h['proc'].returncode}")
        try:
            if (await http(h["api"], "GET", "/api/routes"))[0] == 200:
                return
        except (OSError, asyncio.TimeoutError, Failed, asyncio.IncompleteReadError):
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{h['name']} never answered on its API port")


async def add_routes(h, t):
    routes = {"/ws": t.app_port, "/u404": t.app_port, "/u426": t.app_port, "/u500": t.app_port,
              "/dl": t.app_port, "/hang": t.hang_port, "/dead": t.dead_port}
    for prefix, port in routes.items():
        status, body = await http(h["api"], "POST", f"/api/routes{prefix}",
                                  json.dumps({"target": f"http://127.0.0.1:{port}"}).encode())
        if status not in (200, 201):
            raise RuntimeError(f"{h['name']}: POST /api/routes{prefix} -> {status} {body[:200]!r}")


def sample(h, t, drv, table, elapsed):
    pid = h["pid"]
    nfds, inodes = fd_inodes(pid)
    mine = {h["port"], h["api"]}
    theirs = t.ports()
    by_state, tw_client, tw_upstream, cw = {}, 0, 0, 0
    for lport, rport, st, inode in table:
        if inode in inodes:
            by_state[STATES.get(st, st)] = by_state.get(STATES.get(st, st), 0) + 1
        # The proxy's side of a connection: its listening ports locally, or one of its
        # targets remotely (TIME_WAIT sockets have no owner left, hence ports).
        client_side = lport in mine
        upstream_side = rport in theirs and lport not in theirs
        if st == "06":
            tw_client += client_side
            tw_upstream += upstream_side
        elif st == "08" and (client_side or upstream_side):
            cw += 1
    return {"kind": "sample", "t": round(elapsed, 1), "proxy": h["name"],
            "rss_kib": proc_status(pid, "VmRSS"), "hwm_kib": proc_status(pid, "VmHWM"),
            "fds": nfds, "sockets": len(inodes), "tcp": by_state, "time_wait": tw_client + tw_upstream,
            "time_wait_client_side": tw_client, "time_wait_upstream_side": tw_upstream, "close_wait": cw,
            "close_wait_own": by_state.get("close_wait", 0), "cpu_s": round(cpu_seconds(pid), 2),
            "cycles": sum(drv.cycles.values()), "errors": sum(drv.errors.values()),
            "by_pattern": {p: [drv.cycles[p], drv.errors[p]] for p in PATTERNS},
            "statuses": drv.statuses, "last_error": dict(drv.last_error),
            "target_ws_open": t.ws_open, "target_hang_open": t.hang_open,
            "error_pages_served": t.error_pages}


async def soak(a):
    os.makedirs(a.out, exist_ok=True)
    workdir = a.workdir or tempfile.mkdtemp(prefix="soak-")
    jsonl = os.path.join(a.out, "soak.jsonl")
    names = ["switchyard", "chp"]
    binaries = {"switchyard": a.switchyard, "chp": a.chp}
    targets = {n: await Targets().start() for n in names}
    handles = {n: start_proxy(n, binaries[n], targets[n], workdir) for n in names}
    for n in names:
        await wait_ready(handles[n])
        await add_routes(handles[n], targets[n])
    drivers = {n: Driver(n, handles[n]["port"], a.rate) for n in names}
    net0 = netstat_ext()
    meta = {"kind": "meta", "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "minutes": a.minutes, "rate_per_proxy": a.rate, "warmup_s": a.warmup,
            "interval_s": a.interval, "patterns": PATTERNS, "download_bytes": DOWNLOAD,
            "abort_after_bytes": ABORT_AFTER, "hang_abandon_s": HANG_FOR,
            "commit": git_commit(), "versions": versions(a), "nproc": os.cpu_count(),
            "kernel": platform.release(), "loadavg_start": loadavg(), "netstat_start": net0,
            "proxies": {n: {"pid": handles[n]["pid"], "cmd": handles[n]["cmd"],
                            "targets": sorted(targets[n].ports())} for n in names}}
    log(f"switchyard pid {handles['switchyard']['pid']} port {handles['switchyard']['port']}, "
        f"CHP pid {handles['chp']['pid']} port {handles['chp']['port']}; "
        f"{a.minutes} min at {a.rate}/s each")
    gate = asyncio.Event()
    gate.set()
    tasks = [asyncio.create_task(d.run(gate)) for d in drivers.values()]
    start = time.monotonic()
    end = start + a.minutes * 60
    samples = []
    with open(jsonl, "w") as out:
        out.write(json.dumps(meta) + "\n")
        try:
            tick = 0
            while True:
                tick += 1
                next_at = min(end, start + tick * a.interval)
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                gate.clear()  # stop starting patterns, let those in flight finish
                pending = [t for d in drivers.values() for t in d.inflight]
                if pending:
                    await asyncio.wait(pending, timeout=4 * IO_TIMEOUT)
                await asyncio.sleep(1.0)  # the proxies' own teardown after the last byte
                table = tcp_table()
                elapsed = time.monotonic() - start
                net = netstat_ext()
                for n in names:
                    if handles[n]["proc"].poll() is not None:
                        raise RuntimeError(f"{n} exited with {handles[n]['proc'].returncode}")
                    s = sample(handles[n], targets[n], drivers[n], table, elapsed)
                    s["listen_overflows"] = net["listen_overflows"] - net0["listen_overflows"]
                    samples.append(s)
                    out.write(json.dumps(s) + "\n")
                out.flush()
                sy = samples[-2]
                ch = samples[-1]
                log(f"t={elapsed:6.0f}s  switchyard rss {sy['rss_kib'] / 1024:6.1f} MiB fds {sy['fds']:4d} "
                    f"tw {sy['time_wait']:4d} cw {sy['close_wait']} err {sy['errors']} | "
                    f"CHP rss {ch['rss_kib'] / 1024:6.1f} MiB fds {ch['fds']:4d} tw {ch['time_wait']:4d} "
                    f"cw {ch['close_wait']} err {ch['errors']} | cycles {sy['cycles']}/{ch['cycles']}")
                if time.monotonic() >= end:
                    break
                gate.set()
        finally:
            for t in tasks:
                t.cancel()
            summary = {"kind": "end", "loadavg_end": loadavg(), "netstat_end": netstat_ext(),
                       "wall_s": round(time.monotonic() - start, 1)}
            out.write(json.dumps(summary) + "\n")
            for t in targets.values():
                await t.stop()
    return jsonl


def git_commit():
    try:
        return subprocess.run(["git", "-C", HERE, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    except OSError:
        return "?"


def versions(a):
    out = {"python": platform.python_version()}
    for name, cmd in (("switchyard", [a.switchyard, "--version"]),
                      ("configurable-http-proxy", [a.chp, "--version"]), ("node", ["node", "--version"])):
        try:
            out[name] = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
        except OSError as e:
            out[name] = f"? ({e})"
    try:
        import aiohttp
        out["aiohttp"] = aiohttp.__version__
    except ImportError:
        pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------- report

COLORS = {"switchyard": "#1f77b4", "chp": "#ff7f0e"}
LABEL = {"switchyard": "switchyard", "chp": "CHP 5.3.0"}


def load(path):
    meta, samples, end = {}, [], {}
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            if r["kind"] == "meta":
                meta = r
            elif r["kind"] == "sample":
                samples.append(r)
            elif r["kind"] == "end":
                end = r
    return meta, samples, end


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_step(span, n=4):
    raw = max(span, 1e-9) / n
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def panel(x0, y0, w, h, title, series, tmax, warmup, band=None, unit="", integer=False, min_span=0):
    """series: [(color, [(t, v)])]; band: (lo, hi) shaded."""
    body = [f'<text x="{x0 + w / 2}" y="{y0 - 6}" text-anchor="middle" font-weight="bold">{esc(title)}</text>',
            f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>']
    vals = [v for _, pts in series for _, v in pts if v is not None]
    if band:
        vals += list(band)
    if not vals:
        return body
    lo, hi = min(vals), max(vals)
    nonneg = lo >= 0
    if hi - lo < max(min_span, 1e-9):  # a step of one descriptor is not a cliff
        mid, half = (hi + lo) / 2, max(min_span, 2) / 2
        lo, hi = mid - half, mid + half
        if nonneg and lo < 0:
            lo, hi = 0, hi - lo
    pad = (hi - lo) * 0.08
    lo, hi = lo - pad, hi + pad
    if nonneg:
        lo = max(0, lo)
    sx = lambda t: x0 + t / max(tmax, 1) * w
    sy = lambda v: y0 + h - (v - lo) / (hi - lo) * h
    if warmup:
        body.append(f'<rect x="{x0}" y="{y0}" width="{sx(min(warmup, tmax)) - x0:.1f}" height="{h}" '
                    f'fill="#f2f2f2"/>')
    if band:
        body.append(f'<rect x="{sx(warmup):.1f}" y="{sy(band[1]):.1f}" width="{x0 + w - sx(warmup):.1f}" '
                    f'height="{sy(band[0]) - sy(band[1]):.1f}" fill="#1f77b4" fill-opacity="0.08"/>')
    step = max(1, nice_step(hi - lo)) if integer else nice_step(hi - lo)
    v = math.ceil(lo / step - 1e-9) * step
    while v < hi:
        y = sy(v)
        body.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        body.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:g}{unit}</text>')
        v += step
    tstep = nice_step(tmax / 60, 5) * 60
    t = 0.0
    while t <= tmax + 1e-6:
        body.append(f'<text x="{sx(t):.1f}" y="{y0 + h + 13}" text-anchor="middle" font-size="10">'
                    f'{t / 60:g}</text>')
        t += tstep
    for color, pts in series:
        pts = [(sx(t), sy(v)) for t, v in pts if v is not None]
        if pts:
            body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="' +
                        " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    return body


def plot(samples, meta, path):
    names = ["switchyard", "chp"]
    rows = [("RSS, MiB", lambda s: s["rss_kib"] / 1024), ("open descriptors", lambda s: s["fds"]),
            ("TCP sockets in TIME_WAIT (its side)", lambda s: s["time_wait"]),
            ("TCP sockets in CLOSE_WAIT (its side)", lambda s: s["close_wait"])]
    pw, ph = 360, 150
    W, H = 80 + 2 * (pw + 70), 70 + len(rows) * (ph + 55)
    tmax = max([s["t"] for s in samples] or [1])
    warm = meta.get("warmup_s", 0)
    body = [f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
            f'Leak soak: {meta.get("minutes", "?")} min, {meta.get("rate_per_proxy", "?")} patterns/s '
            f'per proxy, sampled at rest every {meta.get("interval_s", "?")} s (grey: warm-up; x: minutes)</text>']
    for ci, n in enumerate(names):
        mine = [s for s in samples if s["proxy"] == n]
        for ri, (title, f) in enumerate(rows):
            x0, y0 = 70 + ci * (pw + 70), 55 + ri * (ph + 55)
            band = None
            after = [s for s in mine if s["t"] >= warm]
            if n == "switchyard" and after and ri < 2:
                ref = f(after[0])
                band = (ref * 0.95, ref * 1.05) if ri == 0 else (ref - 10, ref + 10)
            body += panel(x0, y0, pw, ph, f"{LABEL[n]}: {title}",
                          [(COLORS[n], [(s["t"], f(s)) for s in mine])], tmax, warm, band,
                          integer=ri > 0, min_span=(0, 20, 0, 10)[ri])
    body.append(f'<text x="70" y="{H - 10}" font-size="10">Shaded band (switchyard): the target, '
                f'RSS within 5 % and descriptors within 10 of the first sample after the warm-up.</text>')
    with open(path, "w") as fobj:
        fobj.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
                   f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">\n'
                   f'<rect width="{W}" height="{H}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def figures(samples, name, warm):
    mine = [s for s in samples if s["proxy"] == name]
    after = [s for s in mine if s["t"] >= warm] or mine[-1:]
    out = {}
    # The level at the start and at the end: the highest sample in the first and in the
    # last window of 5 minutes (a third of the run after the warm-up, if shorter), which
    # a sawtooth (switchyard's allocator reclaim, Node's garbage collector) does not move.
    w = max(1, min(30, len(after) // 3))
    out["window_s"] = round(after[w - 1]["t"] - after[0]["t"] + (after[1]["t"] - after[0]["t"]
                                                                  if len(after) > 1 else 0))
    for key in ("rss_kib", "fds", "time_wait", "close_wait"):
        first, last = after[0][key], after[-1][key]
        vals = [s[key] for s in after]
        lo_w, hi_w = max(s[key] for s in after[:w]), max(s[key] for s in after[-w:])
        out[key] = {"before": mine[0][key], "start": first, "end": last, "min": min(vals),
                    "max": max(vals), "drift": last - first,
                    "drift_pct": (last - first) / first * 100 if first else None,
                    "spread_pct": max(abs(v - first) for v in vals) / first * 100 if first else None,
                    "spread": max(abs(v - first) for v in vals), "level_start": lo_w,
                    "level_end": hi_w, "level_drift": hi_w - lo_w,
                    "level_drift_pct": (hi_w - lo_w) / lo_w * 100 if lo_w else None}
    out["t_start"], out["t_end"] = after[0]["t"], after[-1]["t"]
    out["last"] = mine[-1]
    return out


def section(meta, samples, end, svg_rel):
    warm = meta.get("warmup_s", 0)
    fig = {n: figures(samples, n, warm) for n in ("switchyard", "chp")}
    sy = fig["switchyard"]
    rss_ok = sy["rss_kib"]["spread_pct"] is not None and sy["rss_kib"]["spread_pct"] <= 5
    fds_ok = sy["fds"]["spread"] <= 10
    cw_ok = sy["close_wait"]["max"] == 0
    verdict = "**pass**" if rss_ok and fds_ok else "**fail**"
    level_ok = abs(sy["rss_kib"]["level_drift_pct"] or 0) <= 5 and abs(sy["fds"]["level_drift"]) <= 10
    level = "**pass**" if level_ok else "**fail**"
    V = meta.get("versions", {})
    md = ["<!-- soak -->", "## Leak soak: switchyard and CHP side by side (bench/soak.py)", "",
          f"Run on {meta.get('date', '?')}, commit `{meta.get('commit', '?')[:12]}`, "
          f"{meta.get('minutes')} minutes ({end.get('wall_s', '?')} s wall), both proxies at the same "
          f"time on {meta.get('nproc')} shared cores, {meta.get('rate_per_proxy')} patterns started per "
          f"second on each, in the order {', '.join(f'`{p}`' for p in meta.get('patterns', []))} "
          "(what each does: `bench/soak.py`'s head and [README.md](README.md#leak-soak)). "
          f"{V.get('switchyard', 'switchyard')}, configurable-http-proxy "
          f"{V.get('configurable-http-proxy', '?')} on Node {V.get('node', '?')}; both with "
          "`--error-target`. Samples every "
          f"{meta.get('interval_s')} s with nothing in flight; the figures below are from the first "
          f"sample after the {warm} s warm-up (*start*) to the last (*end*). Load average "
          f"{meta.get('loadavg_start', '?')} at start, {end.get('loadavg_end', '?')} at the end.", "",
          f"Target (issue 23): switchyard's RSS within 5 % and its descriptors within 10 after the "
          f"warm-up. Read strictly, every sample against the first: {verdict} (RSS at most "
          f"{sy['rss_kib']['spread_pct']:.1f} % from the start, descriptors at most "
          f"{sy['fds']['spread']} from it). Read as the level, the highest sample of the last "
          f"{sy['window_s']} s against that of the first {sy['window_s']} s: {level} (RSS "
          f"{sy['rss_kib']['level_drift_pct']:+.1f} %, descriptors {sy['fds']['level_drift']:+d}). "
          f"CLOSE_WAIT on switchyard's side: "
          f"{'never seen' if cw_ok else 'seen, max ' + str(sy['close_wait']['max'])}.", ""]
    rows = []
    for n in ("switchyard", "chp"):
        f = fig[n]
        for key, label, scale, unit in (("rss_kib", "RSS", 1 / 1024, " MiB"), ("fds", "descriptors", 1, ""),
                                        ("time_wait", "TIME_WAIT (its side)", 1, ""),
                                        ("close_wait", "CLOSE_WAIT (its side)", 1, "")):
            g = f[key]
            fmtv = (lambda v: f"{v * scale:.1f}") if scale != 1 else str
            pct = f" ({g['drift_pct']:+.1f} %)" if g["drift_pct"] is not None and key == "rss_kib" else ""
            rows.append([LABEL[n], label + unit, fmtv(g["before"]), fmtv(g["start"]), fmtv(g["end"]),
                         f"{fmtv(g['min'])}–{fmtv(g['max'])}",
                         (f"{g['drift'] * scale:+.1f}" if scale != 1 else f"{g['drift']:+d}") + pct,
                         f"{fmtv(g['level_start'])} / {fmtv(g['level_end'])}" +
                         (f" ({g['level_drift_pct']:+.1f} %)" if key == "rss_kib" and g["level_drift_pct"] is not None else "")])
    md += [f"| proxy | metric | first sample | start (after warm-up) | end | min–max after warm-up | drift end − start | level: max of first / last {sy['window_s']} s |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    md += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    md += ["", f"![soak: RSS, descriptors, TIME_WAIT and CLOSE_WAIT over time]({svg_rel})", ""]
    rows = []
    for p in meta.get("patterns", PATTERNS):
        cells = [f"`{p}`"]
        for n in ("switchyard", "chp"):
            last = fig[n]["last"]
            c, e = last["by_pattern"][p]
            st = ", ".join(f"{k}: {v}" for k, v in sorted(last["statuses"][p].items()))
            cells += [str(c), st or "–", str(e) + (f" ({esc(last['last_error'][p]).replace('|', '/')})" if e else "")]
        rows.append(cells)
    md += ["Patterns run, the statuses each proxy answered (`None`: no answer, as expected for "
           "`hang-abandon` and the cut sessions) and the errors (an unexpected status, a timeout, a "
           "connection the proxy did not close; the last error's text in brackets):", "",
           "| pattern | switchyard runs | switchyard statuses | switchyard errors | CHP runs | CHP statuses | CHP errors |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    n0, n1 = meta.get("netstat_start", {}), end.get("netstat_end", {})
    md += ["", f"Machine-wide TCP listen-queue overflows during the run: "
           f"{n1.get('listen_overflows', 0) - n0.get('listen_overflows', 0)} "
           f"(drops {n1.get('listen_drops', 0) - n0.get('listen_drops', 0)}; other work on the machine "
           "counts too). Raw samples: `results/soak.jsonl`.", "<!-- /soak -->"]
    return "\n".join(md) + "\n", fig


def put_section(md_path, text):
    """Replaces the `<!-- soak -->` block of md_path, or appends it."""
    old = open(md_path).read() if os.path.exists(md_path) else ""
    m = re.search(r"<!-- soak -->.*?<!-- /soak -->\n?", old, re.S)
    new = old[:m.start()] + text + old[m.end():] if m else old.rstrip("\n") + "\n\n" + text
    with open(md_path, "w") as f:
        f.write(new)


def report(jsonl, out_dir, md_path):
    meta, samples, end = load(jsonl)
    if not samples:
        raise RuntimeError(f"no samples in {jsonl}")
    svg = os.path.join(out_dir, "soak.svg")
    plot(samples, meta, svg)
    rel = os.path.relpath(svg, os.path.dirname(os.path.abspath(md_path)))
    text, fig = section(meta, samples, end, rel)
    put_section(md_path, text)
    for n in ("switchyard", "chp"):
        f = fig[n]
        log(f"{n}: RSS {f['rss_kib']['start'] / 1024:.1f} -> {f['rss_kib']['end'] / 1024:.1f} MiB "
            f"({f['rss_kib']['drift_pct']:+.1f} %, max spread {f['rss_kib']['spread_pct']:.1f} %, "
            f"level {f['rss_kib']['level_drift_pct']:+.1f} %), "
            f"fds {f['fds']['start']} -> {f['fds']['end']} (max spread {f['fds']['spread']}, "
            f"level {f['fds']['level_drift']:+d}), "
            f"errors {f['last']['errors']}")
    log(f"wrote {svg} and the soak section of {md_path}")


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--switchyard")
    ap.add_argument("--chp")
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=15, help="patterns started per second, per proxy")
    ap.add_argument("--warmup", type=float, default=120, help="seconds left out of the drift figures")
    ap.add_argument("--interval", type=float, default=10, help="seconds between samples")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--workdir", help="where the proxies' logs go (default: a new temporary directory)")
    ap.add_argument("--report-only", action="store_true", help="only rewrite the SVG and the section")
    a = ap.parse_args()
    jsonl = os.path.join(a.out, "soak.jsonl")
    if not a.report_only:
        if not a.switchyard or not a.chp:
            ap.error("--switchyard and --chp are needed (bench/soak.sh finds them)")
        signal.signal(signal.SIGTERM, lambda s, _f: sys.exit(128 + s))
        signal.signal(signal.SIGHUP, lambda s, _f: sys.exit(128 + s))
        try:
            asyncio.run(soak(a))
        except KeyboardInterrupt:
            log("interrupted: stopping the proxies")
            stop_all()
            sys.exit(130)
        finally:
            stop_all()
    report(jsonl, a.out, a.results_md)


if __name__ == "__main__":
    main()
