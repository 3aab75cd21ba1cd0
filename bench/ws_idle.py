#!/usr/bin/env python3
"""Memory and file descriptors of idle WebSocket connections through a proxy.

Usage: bench/ws_idle.py [--connections N] [--proxy switchyard|chp] [--binary PATH]

Starts an aiohttp WebSocket echo backend, starts the proxy (the `switchyard`
binary, or Node's configurable-http-proxy when installed) with the backend as
its default target, opens N WebSocket connections through it, checks each
echoes once, and then reads the proxy's RSS and open file descriptors from
/proc. It closes them all, waits until the proxy's descriptor count is back
to its baseline (or 30 s pass), and prints one JSON line with the figures.
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
import time

from aiohttp import ClientSession, TCPConnector, WSMsgType, web


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


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
    if args.proxy == "switchyard":
        cmd = [args.binary]
    else:
        chp = shutil.which("configurable-http-proxy")
        if not chp:
            sys.exit("configurable-http-proxy is not installed (npm i -g configurable-http-proxy)")
        cmd = [chp]
    cmd += ["--ip", "127.0.0.1", "--port", str(port), "--api-ip", "127.0.0.1",
            "--api-port", str(api_port), "--default-target", target, "--log-level", "warn"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard)))
    try:
        await wait_port(port)
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
        proc.wait()
        await runner.cleanup()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--connections", type=int, default=2000)
    p.add_argument("--proxy", choices=["switchyard", "chp"], default="switchyard")
    p.add_argument("--binary", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "switchyard"))
    asyncio.run(main(p.parse_args()))
