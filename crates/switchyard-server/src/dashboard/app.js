// The Switchyard dashboard: polls the read-only JSON endpoints of the API with the token
// kept in this tab's sessionStorage, and writes what they say with textContent only.
"use strict";

(() => {
  const KEY = "switchyard-dashboard-token";
  const REFRESH_MS = 2000;
  const $ = (id) => document.getElementById(id);
  const view = { q: "", sort: "path", order: "asc", page: 1, pages: 1 };
  let timer = null;
  let searchTimer = null;

  // A `#token=...` fragment (never sent to the server) is taken, then removed from the URL.
  function tokenFromFragment() {
    const m = /^#token=(.+)$/.exec(location.hash);
    if (m) {
      let value = m[1];
      try {
        value = decodeURIComponent(value);
      } catch (e) {
        // A malformed escape: the token as written (the API will say if it is wrong).
      }
      sessionStorage.setItem(KEY, value);
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function token() {
    return sessionStorage.getItem(KEY);
  }

  function showLogin(message) {
    stop();
    $("main").hidden = true;
    $("forget").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("status").textContent = "not connected";
    $("token").focus();
  }

  function showMain() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("forget").hidden = false;
  }

  class Refused extends Error {}

  async function get(path) {
    // An empty token: the API has none (no CONFIGPROXY_AUTH_TOKEN), send no header.
    const headers = token() ? { Authorization: "token " + token() } : {};
    const res = await fetch(path, {
      headers,
      cache: "no-store",
      credentials: "omit",
    });
    if (res.status === 403) throw new Refused("token refused");
    if (!res.ok) throw new Error(path + ": " + res.status + " " + (await res.text()));
    return res.json();
  }

  function routesQuery() {
    const p = new URLSearchParams({
      q: view.q, sort: view.sort, order: view.order, page: String(view.page),
    });
    return "/api/dashboard/routes?" + p.toString();
  }

  async function refresh() {
    try {
      const [summary, traffic, routes] = await Promise.all([
        get("/api/dashboard/summary"),
        get("/api/dashboard/traffic"),
        get(routesQuery()),
      ]);
      showMain();
      renderHealth(summary);
      renderTraffic(traffic);
      renderRoutes(routes);
      $("status").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (e) {
      if (e instanceof Refused) {
        sessionStorage.removeItem(KEY);
        showLogin("The token was refused.");
        return;
      }
      $("status").textContent = "cannot reach the API (" + e.message + "), retrying";
    }
    schedule();
  }

  function schedule() {
    stop();
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function stop() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  }

  // ---- formatting

  function ago(iso) {
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 10) return "just now";
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " days ago";
  }

  function duration(seconds) {
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    if (d > 0) return d + " d " + h + " h";
    if (h > 0) return h + " h " + m + " min";
    return m + " min " + (seconds % 60) + " s";
  }

  function num(x, digits) {
    return x === null || x === undefined ? "–" : x.toFixed(digits);
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  // ---- health

  function renderHealth(s) {
    const dl = $("health-list");
    const rows = [];
    rows.push(["Version", s.version]);
    rows.push(["Uptime", duration(s.uptime_seconds) + " (since " + new Date(s.started).toLocaleString() + ")"]);
    rows.push(["Listeners", s.listeners.map((l) => l.name + " " + l.address).join(" · ")]);
    let store = s.store.kind;
    if (s.store.connected !== null) {
      store += s.store.connected ? " (connected" : " (NOT connected";
      store += ", " + s.store.reconnects + " reconnects)";
    }
    if (s.store.replicas !== null) store += " · " + s.store.replicas + " replica(s) sharing it";
    rows.push(["Route store", store, s.store.ready ? "" : "error"]);
    rows.push(["Routes", String(s.routes)]);
    rows.push(["Connections", (s.client_connections ?? "–") + " open, " + s.websockets + " WebSockets"]);
    if (s.certificates.length === 0) {
      rows.push(["Certificates", "none (plain HTTP)"]);
    }
    for (const c of s.certificates) {
      const days = Math.floor(c.expires_in_seconds / 86400);
      const cls = c.expires_in_seconds < 0 ? "expired" : days < 14 ? "expiring" : "";
      const when = c.expires_in_seconds < 0 ? "EXPIRED" : "expires in " + days + " days";
      rows.push(["Certificate (" + c.listener + ")", when + " (" + c.not_after + ")", cls]);
    }
    rows.push(["Access log", s.access_log.enabled ? s.access_log.dropped + " entries dropped" : "off",
      s.access_log.dropped > 0 ? "expiring" : ""]);
    dl.replaceChildren(...rows.flatMap(([k, v, cls]) => [el("dt", k), el("dd", v, cls)]));
  }

  // ---- traffic

  const SVG = "http://www.w3.org/2000/svg";

  function chart(id, series) {
    const svg = $(id);
    const n = Math.max(2, ...series.map((s) => s.values.length));
    const max = Math.max(1e-9, ...series.flatMap((s) => s.values.filter((v) => v !== null)));
    const lines = series.map((s) => {
      const line = document.createElementNS(SVG, "polyline");
      const pts = [];
      s.values.forEach((v, i) => {
        if (v === null) return;
        const x = (i / (n - 1)) * 300;
        const y = 78 - (v / max) * 74;
        pts.push(x.toFixed(1) + "," + y.toFixed(1));
      });
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("class", s.cls);
      return line;
    });
    const top = document.createElementNS(SVG, "text");
    top.setAttribute("x", "2");
    top.setAttribute("y", "10");
    top.setAttribute("font-size", "9");
    top.setAttribute("fill", "#6b7480");
    top.textContent = "max " + (max < 10 ? max.toFixed(2) : Math.round(max));
    svg.replaceChildren(top, ...lines);
  }

  function renderTraffic(t) {
    const s = t.samples;
    const pick = (f) => s.map(f);
    chart("chart-rps", [{ cls: "s2", values: pick((x) => x.rps) }]);
    chart("chart-status", ["2xx", "3xx", "4xx", "5xx"].map((c) => ({
      cls: "s" + c[0], values: pick((x) => x.status[c]),
    })));
    chart("chart-latency", [
      { cls: "s2", values: pick((x) => x.p50_ms) },
      { cls: "s5", values: pick((x) => x.p99_ms) },
    ]);
    chart("chart-conn", [{ cls: "s3", values: pick((x) => x.connections) }]);
    const last = s[s.length - 1];
    $("now-rps").textContent = last ? num(last.rps, 1) : "";
    $("now-lat").textContent = last ? "p99 " + num(last.p99_ms, 1) : "";
    $("now-conn").textContent = last ? String(last.connections) : "";
  }

  // ---- routes

  function renderRoutes(r) {
    view.pages = r.pages;
    if (view.page > r.pages) view.page = r.pages;
    $("routes-count").textContent = "(" + r.total + ")";
    $("page-info").textContent = "page " + r.page + " of " + r.pages;
    $("prev").disabled = r.page <= 1;
    $("next").disabled = r.page >= r.pages;
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.classList.toggle("sorted-asc", th.dataset.sort === r.sort && r.order === "asc");
      th.classList.toggle("sorted-desc", th.dataset.sort === r.sort && r.order === "desc");
    }
    const rows = r.routes.map((route) => {
      const tr = el("tr");
      tr.dataset.path = route.path;
      const errors = route.error_rate === null ? "–" : (route.error_rate * 100).toFixed(1) + " %";
      const cells = [
        el("td", route.path, "wrap path"),
        el("td", route.target, "wrap target"),
        el("td", route.user ?? ""),
        el("td", route.server_name ?? ""),
        el("td", ago(route.last_activity)),
        el("td", num(route.rps, 2), "num"),
        el("td", errors, "num"),
        el("td", String(route.websockets), "num"),
        el("td", route.state.replace("_", " "), "state state-" + route.state),
      ];
      cells[4].title = route.last_activity;
      tr.replaceChildren(...cells);
      return tr;
    });
    $("route-rows").replaceChildren(...rows);
  }

  // ---- wiring

  function start() {
    tokenFromFragment();
    // A script may also open `#token=...` in a tab that already shows the page.
    window.addEventListener("hashchange", () => {
      if (location.hash.startsWith("#token=")) {
        tokenFromFragment();
        refresh();
      }
    });
    $("login").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, $("token").value.trim());
      $("token").value = "";
      refresh();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showLogin("");
    });
    $("search").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        view.q = $("search").value;
        view.page = 1;
        refresh();
      }, 250);
    });
    $("prev").addEventListener("click", () => { view.page = Math.max(1, view.page - 1); refresh(); });
    $("next").addEventListener("click", () => { view.page = Math.min(view.pages, view.page + 1); refresh(); });
    for (const th of document.querySelectorAll("th[data-sort]")) {
      th.addEventListener("click", () => {
        const key = th.dataset.sort;
        view.order = view.sort === key && view.order === "asc" ? "desc" : "asc";
        view.sort = key;
        refresh();
      });
    }
    // Nothing is asked of the API before there is a token (or an empty one, entered).
    if (token() === null) showLogin(""); else refresh();
  }

  start();
})();
