#!/usr/bin/env python3
"""Drive the `switchyard` binary with JupyterHub's own proxy class.

Usage: jupyterhub_driver.py <path to switchyard binary> <path|host>

JupyterHub's `jupyterhub.proxy.ConfigurableHTTPProxy` starts the binary with
the argv and environment it gives configurable-http-proxy, waits for both
ports, then adds, reads and deletes routes through the REST API exactly as
the Hub does. Real aiohttp backends answer HTTP and WebSocket requests that
go through the proxy. Any failed check raises, and the exit code is non-zero.
"""

import asyncio
import os
import signal
import socket
import sys
import tempfile
from types import SimpleNamespace

from aiohttp import ClientSession, WSMsgType, web
from jupyterhub.proxy import ConfigurableHTTPProxy


def free_port():
    """A port that was free a moment ago, for the proxy's public and API ports.

    JupyterHub is given both as URLs and builds the proxy's command line from them
    (`--port`, `--api-port`), then starts the proxy again on the same ports after a
    kill: a port the binary picked itself could not be handed to JupyterHub. Every
    backend here binds port 0 instead.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_backend(name):
    async def handler(request):
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(f"{name}:{msg.data}")
            return ws
        return web.json_response(
            {"backend": name, "path": request.raw_path, "host": request.headers.get("Host")}
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    return runner, f"http://127.0.0.1:{port}"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


async def main(binary, mode):
    host_routing = mode == "host"
    public_port, api_port = free_port(), free_port()
    hub_runner, hub_url = await start_backend("hub")
    user_runner, user_url = await start_backend("user")
    tmp = tempfile.mkdtemp()
    app = SimpleNamespace(
        subdomain_host="http://hub.test" if host_routing else "",
        internal_ssl=False,
    )
    hub = SimpleNamespace(url=hub_url + "/hub/", host=hub_url, routespec="/")
    # What `restore_routes` reads after a restart: the hub, no running users
    # or services (the user routes are re-added below, as the Hub's spawners would).
    app.hub = hub
    app.users = {}
    app._service_map = {}
    proxy = ConfigurableHTTPProxy(
        app=app,
        hub=hub,
        public_url=f"http://127.0.0.1:{public_port}/",
        api_url=f"http://127.0.0.1:{api_port}/",
        auth_token="s3cret-token",
        command=[binary],
        host_routing=host_routing,
        pid_file=os.path.join(tmp, "proxy.pid"),
        check_running_interval=1,
    )
    public = f"http://127.0.0.1:{public_port}"
    prefix = "alice.hub.test/" if host_routing else "/"
    host = "alice.hub.test" if host_routing else f"127.0.0.1:{public_port}"
    # Route specs as JupyterHub writes them: already URL-escaped.
    specs = {
        f"{prefix}user/%E7%A7%80%E6%A8%B9/": {"user": "秀樹", "server_name": ""},
        f"{prefix}user/has@/": {"user": "has@", "server_name": ""},
        f"{prefix}has%20space/foo/": {"extra": True},
    }
    await proxy.start()
    try:
        await proxy.add_route("/", hub_url, {"hub": True})
        for spec, data in specs.items():
            await proxy.add_route(spec, user_url, dict(data))
        routes = await proxy.get_all_routes()
        check(set(routes) == {"/", *specs}, f"get_all_routes keys round-trip ({mode})")
        for spec, data in specs.items():
            r = routes[spec]
            check(r["target"] == user_url, f"target unchanged for {spec}")
            got = {k: v for k, v in r["data"].items() if k not in ("last_activity", "host")}
            check(got == data, f"data unchanged for {spec}")
            if host_routing:
                # CHP adds the route's host in host-routing mode.
                check(r["data"].get("host") == "alice.hub.test", f"host added for {spec}")
            check("last_activity" in r["data"], f"last_activity present for {spec}")
        check(routes["/"]["data"].get("hub") is True, "hub route data")

        async with ClientSession() as http:
            path = "/user/%E7%A7%80%E6%A8%B9/api/x?y=1"
            async with http.get(public + path, headers={"Host": host}) as resp:
                body = await resp.json()
                check(resp.status == 200 and body["backend"] == "user", "HTTP to a user route")
                check(body["path"] == path, "path and query forwarded raw")
            async with http.get(public + "/hub/home", headers={"Host": "hub.test"}) as resp:
                body = await resp.json()
                check(body["backend"] == "hub", "catch-all goes to the hub")
            ws_url = public.replace("http", "ws") + "/user/has@/api/kernels/k/channels"
            async with http.ws_connect(ws_url, headers={"Host": host}) as ws:
                await ws.send_str("ping")
                msg = await ws.receive(timeout=10)
                check(msg.type == WSMsgType.TEXT and msg.data == "user:ping", "WebSocket through the proxy")
                await ws.close()

            # kill -9, then JupyterHub restarts the proxy and restores routes.
            os.kill(proxy.proxy_process.pid, signal.SIGKILL)
            proxy.proxy_process.wait()
            await proxy.check_running()  # JupyterHub's liveness check: restart + restore_routes
            for spec, data in specs.items():
                await proxy.add_route(spec, user_url, dict(data))
            routes = await proxy.get_all_routes()
            check(set(routes) == {"/", *specs}, "routes restored after kill -9 and restart")
            async with http.get(public + "/has%20space/foo/bar", headers={"Host": host}) as resp:
                body = await resp.json()
                check(body["backend"] == "user", "route with an escaped space after restart")

        for spec in specs:
            await proxy.delete_route(spec)
            await proxy.delete_route(spec)  # again: 404 is tolerated
        routes = await proxy.get_all_routes()
        check(set(routes) == {"/"}, "routes deleted")
    finally:
        proxy.stop()
        await hub_runner.cleanup()
        await user_runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
    print("jupyterhub driver: all checks passed", flush=True)
