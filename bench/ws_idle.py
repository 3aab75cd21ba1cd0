#!/usr/bin/env python3
"""Memory and file descriptors of idle WebSocket connections through a proxy.

Usage: bench/ws_idle.py [--connections N] [--proxy switchyard|chp|nginx]
                        [--binary PATH] [--chp PATH] [--cpu N] [--workdir DIR]

Starts an aiohttp WebSocket echo backend, starts the proxy (the `switchyard`
binary, Node's configurable-http-proxy, or nginx with bench/nginx.conf) with
the backend as its default target, pinned with taskset when --cpu is given, opens N WebSocket connections through it, checks each
echoes once, and then reads the proxy's RSS and open file descriptors from
/proc. It closes them all, waits until the proxy's descriptor count is back
to its baseline (or 30 s pass), and prints one JSON line with the figures.
RSS and descriptors are summed over the proxy's process tree (nginx: master
and worker).
"""

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from aiohttp import ClientSession, TCPConnector, WSMsgType, web


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid):
    pids, todo = [], [pid]
    while todo and len(pids) < 64:
        p = todo.pop()
        pids.append(p)
        for tid in os.listdir(f"/proc/{p}/task"):
            with open(f"/proc/{p}/task/{tid}/children") as f:
                todo += [int(c) for c in f.read().split()]
    return pids


def rss_kib(pid):
    total = 0
    for p in tree(pid):
        with open(f"/proc/{p}/status") as f:
            total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return total


def fds(pid):
    return sum(len(os.listdir(f"/proc/{p}/fd")) for p in tree(pid))


async def wait_port(port, deadline=20.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"port {port} never accepted")


async def main(args):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.connections + 256))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    async def echo(request):
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await ws.send_str(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    backend_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", backend_port).start()

    port, api_port = free_port(), free_port()
    target = f"http://127.0.0.1:{backend_port}"
    if args.proxy == "nginx":
        workdir = args.workdir or tempfile.mkdtemp(prefix="ws_idle_nginx_")
        os.makedirs(workdir, exist_ok=True)
        conf = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "nginx.conf")).read()
        for k, v in {"DIR": workdir, "UPSTREAM_PORT": backend_port, "PORT": port,
                     "H2_PORT": free_port(), "LOCATIONS": "", "WORKERS": 1, "SSL": "",
                     "TLS": ""}.items():
            conf = conf.replace(f"@{k}@", str(v))
        conf_path = os.path.join(workdir, "nginx.conf")
        with open(conf_path, "w") as f:
            f.write(conf)
        cmd = ["nginx", "-p", workdir, "-c", conf_path, "-e", "stderr"]
    else:
        if args.proxy == "switchyard":
            cmd = [args.binary]
        else:
            chp = args.chp or shutil.which("configurable-http-proxy")
            if not chp:
                sys.exit("configurable-http-proxy is not installed (npm i -g configurable-http-proxy)")
            cmd = [chp]
        cmd += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
                "--api-port", str(api_port), "--default-target", target, "--log-level", "warn"]
    if args.cpu is not None:
        cmd = ["taskset", "-c", str(args.cpu)] + cmd
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard)))
    try:
        await wait_port(port)
        await asyncio.sleep(0.2)  # let nginx fork its worker
        base_rss, base_fds = rss_kib(proc.pid), fds(proc.pid)
        session = ClientSession(connector=TCPConnector(limit=0))
        conns = []
        for i in range(args.connections):
            ws = await session.ws_connect(f"ws://127.0.0.1:{port}/ws/{i}", autoping=False)
            await ws.send_str("hi")
            msg = await ws.receive(timeout=10)
            assert msg.type == WSMsgType.TEXT and msg.data == "hi", msg
            conns.append(ws)
        open_rss, open_fds = rss_kib(proc.pid), fds(proc.pid)
        for ws in conns:
            await ws.close()
        await session.close()
        end = time.monotonic() + 30
        while fds(proc.pid) > base_fds and time.monotonic() < end:
            await asyncio.sleep(0.05)
        after_fds, after_rss = fds(proc.pid), rss_kib(proc.pid)
        n = args.connections
        print(json.dumps({
            "proxy": args.proxy,
            "connections": n,
            "baseline_rss_kib": base_rss,
            "open_rss_kib": open_rss,
            "kib_per_connection": round((open_rss - base_rss) / n, 2),
            "connections_per_gib": int(n * 1024 * 1024 / max(1, open_rss - base_rss)),
            "baseline_fds": base_fds,
            "open_fds": open_fds,
            "fds_after_close": after_fds,
            "rss_after_close_kib": after_rss,
        }))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--proxy", choices=["switchyard", "chp", "nginx"], default="switchyard")
    p.add_argument("--chp", help="configurable-http-proxy executable (default: from PATH)")
    p.add_argument("--cpu", type=int, help="pin the proxy to this CPU with taskset")
    p.add_argument("--workdir", help="nginx: directory for its config, pid and temp files")
    p.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "switchyard"))
    asyncio.run(main(p.parse_args()))
