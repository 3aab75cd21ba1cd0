#!/usr/bin/env python3
"""Turn bench/results/{raw.jsonl,meta.json} into bench/RESULTS.md and SVG plots.

Standard library only: the plots are SVG written by hand, so the report can be
regenerated anywhere (`python3 bench/report.py`).

Every figure is the median over rounds with the min-max range. Ratios are
taken per round (switchyard's figure divided by nginx's, or CHP's, from the
same round, a few seconds apart) and then summarised the same way, so a slow
moment of the shared machine affects both sides of a ratio.
"""

import argparse
import json
import os
import statistics
from collections import defaultdict

PROXIES = ["direct", "nginx", "switchyard", "switchyard-alt", "floor", "chp"]
COLORS = {"direct": "#7f7f7f", "nginx": "#2ca02c", "switchyard": "#1f77b4", "chp": "#ff7f0e",
          "floor": "#9467bd", "switchyard-alt": "#17becf"}
LABEL = {"direct": "direct (no proxy)", "nginx": "nginx", "switchyard": "switchyard",
         "chp": "CHP", "floor": "hyper floor", "switchyard-alt": "switchyard, other provider"}
# What one operation is, per scenario (the unit of "CPU per ...").
UNIT = {"http1": "req", "h2": "req", "routes": "req", "https": "req", "wsmsg": "msg",
        "newconn": "conn", "cores": "req"}


def get(rec, key):
    cur = rec
    for part in key.split(".", 1):  # "lat_us.p99.9": one level of nesting
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def fmt(v, digits=3):
    if v is None:
        return "–"
    a = abs(v)
    if a == 0:
        return "0"
    if a >= 10 ** digits:
        return f"{v:,.0f}"
    for d in range(digits):
        if a >= 10 ** (digits - 1 - d):
            return f"{v:.{d}f}"
    return f"{v:.{digits}g}"


def spread(vals, digits=3):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med, digits)
    return f"{fmt(med, digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})"


def ratio_spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:.2f}×"
    return f"**{med:.2f}×** ({min(vals):.2f}–{max(vals):.2f})"


class Data:
    def __init__(self, recs):
        self.by = defaultdict(dict)  # (scenario, variant) -> proxy -> round -> rec
        for r in recs:
            self.by[(r["scenario"], r["variant"])].setdefault(r["proxy"], {})[r["round"]] = r

    def variants(self, scenario):
        return [v for (s, v) in self.by if s == scenario]

    def values(self, scen, var, proxy, key):
        rounds = self.by.get((scen, var), {}).get(proxy, {})
        return [get(rec, key) for _, rec in sorted(rounds.items())]

    def median(self, scen, var, proxy, key):
        vals = [v for v in self.values(scen, var, proxy, key) if v is not None]
        return statistics.median(vals) if vals else None

    def ratios(self, scen, var, proxy, ref, key):
        mine = self.by.get((scen, var), {}).get(proxy, {})
        theirs = self.by.get((scen, var), {}).get(ref, {})
        out = []
        for rnd, rec in mine.items():
            if rnd in theirs:
                a, b = get(rec, key), get(theirs[rnd], key)
                if a is not None and b:
                    out.append(a / b)
        return out


# ---------------------------------------------------------------- SVG

def svg_doc(w, h, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="{w}" height="{h}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def nice_log_ticks(lo, hi):
    ticks = []
    d = 10 ** int(f"{lo:e}".split("e")[1])
    while d <= hi * 10:
        for m in (1, 2, 5):
            t = m * d
            if lo <= t <= hi:
                ticks.append(t)
        d *= 10
    return ticks


def latency_panel(x0, y0, w, h, title, series, pcts):
    """series: proxy -> [latency in ms per percentile]; log-scale y."""
    body = [f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-weight="bold">{esc(title)}</text>']
    vals = [v for s in series.values() for v in s if v]
    if not vals:
        return body
    lo, hi = min(vals) / 1.5, max(vals) * 1.5
    import math
    ly = lambda v: y0 + h - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * h
    lx = lambda i: x0 + (i + 0.5) * w / len(pcts)
    body.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    for t in nice_log_ticks(lo, hi):
        y = ly(t)
        body.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        body.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
    for i, p in enumerate(pcts):
        body.append(f'<text x="{lx(i):.1f}" y="{y0 + h + 14}" text-anchor="middle" font-size="10">p{p}</text>')
    for proxy, s in series.items():
        pts = [(lx(i), ly(v)) for i, v in enumerate(s) if v]
        if not pts:
            continue
        body.append(f'<polyline fill="none" stroke="{COLORS[proxy]}" stroke-width="2" points="' +
                    " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for x, y in pts:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[proxy]}"/>')
    body.append(f'<text x="{x0 - 36}" y="{y0 + h / 2}" font-size="10" transform="rotate(-90 {x0 - 36} {y0 + h / 2})" '
                f'text-anchor="middle">latency, ms (log)</text>')
    return body


def legend(x, y, proxies):
    body = []
    for i, p in enumerate(proxies):
        body.append(f'<rect x="{x + i * 150}" y="{y - 10}" width="12" height="12" fill="{COLORS[p]}"/>')
        body.append(f'<text x="{x + i * 150 + 18}" y="{y}">{esc(LABEL[p])}</text>')
    return body


def plot_latency(d, path):
    pcts = ["50", "75", "90", "99", "99.9"]
    variants = d.variants("http1")
    cols = 2
    rows = (len(variants) + cols - 1) // cols
    pw, ph = 330, 210
    W, H = 60 + cols * (pw + 70), 60 + rows * (ph + 60)
    body = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
            f'HTTP/1.1 latency percentiles (wrk -t1, median over rounds)</text>']
    for k, var in enumerate(variants):
        x0, y0 = 70 + (k % cols) * (pw + 70), 60 + (k // cols) * (ph + 60)
        series = {}
        for p in PROXIES:
            s = [d.median("http1", var, p, f"lat_us.p{q}") for q in pcts]
            if any(s):
                series[p] = [v / 1000 if v else None for v in s]
        body_size, conns = var.split("-c")
        title = {"13b": "13 B", "16k": "16 KiB"}.get(body_size, body_size) + f" body, {conns} connections"
        body += latency_panel(x0, y0, pw, ph, title, series, pcts)
    body += legend(70, H - 12, [p for p in PROXIES])
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body))


def plot_cpu(d, path):
    groups = [("http1", v) for v in d.variants("http1")] + [("h2", v) for v in d.variants("h2")] + \
             [("routes", v) for v in d.variants("routes")]
    proxies = ["nginx", "switchyard", "floor", "chp"]
    vals = {(g, p): d.values(g[0], g[1], p, "cpu_us_per_req") for g in groups for p in proxies}
    top = max([v for vs in vals.values() for v in vs if v] or [1]) * 1.1
    gw, bw = 150, 30
    W, H, x0, y0, ph = 80 + len(groups) * gw, 360, 60, 40, 240
    y = lambda v: y0 + ph - v / top * ph
    body = [f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
            f'Proxy CPU per request, µs (user+system; bar = median, whisker = min–max)</text>',
            f'<line x1="{x0}" x2="{W - 10}" y1="{y0 + ph}" y2="{y0 + ph}" stroke="#999"/>']
    step = 10 ** len(str(int(top))) / 10
    if top / step < 4:
        step /= 2
    t = 0.0
    while t <= top:
        body.append(f'<line x1="{x0}" x2="{W - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{x0 - 4}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="10">{t:g}</text>')
        t += step
    for gi, g in enumerate(groups):
        gx = x0 + 10 + gi * gw
        for pi, p in enumerate(proxies):
            vs = [v for v in vals[(g, p)] if v is not None]
            if not vs:
                continue
            med = statistics.median(vs)
            bx = gx + pi * bw
            body.append(f'<rect x="{bx}" y="{y(med):.1f}" width="{bw - 4}" height="{y0 + ph - y(med):.1f}" '
                        f'fill="{COLORS[p]}"/>')
            cx = bx + (bw - 4) / 2
            body.append(f'<line x1="{cx}" x2="{cx}" y1="{y(min(vs)):.1f}" y2="{y(max(vs)):.1f}" stroke="black"/>')
            body.append(f'<text x="{cx}" y="{y(med) - 3:.1f}" text-anchor="middle" font-size="9">{fmt(med, 2)}</text>')
        name = {"http1": "h1", "h2": "h2", "routes": "routes"}[g[0]]
        label = f"{name} {g[1]}" if g[0] != "routes" else f"{int(g[1]):,} route(s)"
        body.append(f'<text x="{gx + 2 * bw}" y="{y0 + ph + 16}" text-anchor="middle" font-size="10">'
                    f'{esc(label)}</text>')
    body += legend(x0, H - 12, proxies)
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body))


def plot_ratios(d, path):
    """Proxy CPU per operation divided by nginx's in the same round, every case, log scale."""
    scens = ["http1", "h2", "https", "wsmsg", "newconn", "cores"]
    groups = [(s, v) for s in scens for v in d.variants(s)]
    proxies = [p for p in ["switchyard", "switchyard-alt", "floor", "chp"]
               if any(d.ratios(s, v, p, "nginx", "cpu_us_per_req") for s, v in groups)]
    groups = [g for g in groups if any(d.ratios(g[0], g[1], p, "nginx", "cpu_us_per_req")
                                       for p in proxies)]
    if not groups:
        return False
    import math
    vals = {(g, p): d.ratios(g[0], g[1], p, "nginx", "cpu_us_per_req") for g in groups for p in proxies}
    allv = [v for vs in vals.values() for v in vs if v] + [0.5, 2.0]
    lo, hi = min(allv) / 1.2, max(allv) * 1.2
    bw = 14
    gw = bw * len(proxies) + 16
    W, H, x0, y0, ph = 90 + len(groups) * gw, 420, 70, 40, 260
    y = lambda v: y0 + ph - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) * ph
    body = [f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
            f'Proxy CPU per operation ÷ nginx\'s, same round (log scale; bar = median, whisker = '
            f'min–max; below 1 is cheaper than nginx)</text>']
    for t in nice_log_ticks(lo, hi):
        body.append(f'<line x1="{x0}" x2="{W - 10}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>')
        body.append(f'<text x="{x0 - 4}" y="{y(t) + 4:.1f}" text-anchor="end" font-size="10">{t:g}×</text>')
    body.append(f'<line x1="{x0}" x2="{W - 10}" y1="{y(1):.1f}" y2="{y(1):.1f}" stroke="#2ca02c" '
                f'stroke-width="1.5"/>')
    body.append(f'<line x1="{x0}" x2="{W - 10}" y1="{y(0.9):.1f}" y2="{y(0.9):.1f}" stroke="#2ca02c" '
                f'stroke-dasharray="4 3"/>')
    body.append(f'<text x="{W - 12}" y="{y(0.9) + 12:.1f}" text-anchor="end" font-size="10" '
                f'fill="#2ca02c">0.9×</text>')
    for gi, g in enumerate(groups):
        gx = x0 + 8 + gi * gw
        for pi, p in enumerate(proxies):
            vs = [v for v in vals[(g, p)] if v]
            if not vs:
                continue
            med = statistics.median(vs)
            bx = gx + pi * bw
            top, base = min(y(med), y(1)), max(y(med), y(1))
            body.append(f'<rect x="{bx}" y="{top:.1f}" width="{bw - 2}" height="{base - top:.1f}" '
                        f'fill="{COLORS[p]}"/>')
            cx = bx + (bw - 2) / 2
            body.append(f'<line x1="{cx}" x2="{cx}" y1="{y(min(vs)):.1f}" y2="{y(max(vs)):.1f}" '
                        f'stroke="black"/>')
        name = {"http1": "h1", "h2": "h2", "https": "tls", "wsmsg": "ws", "newconn": "new conn",
                "cores": "2 cores"}[g[0]]
        lx, ly = gx + gw / 2 - 8, y0 + ph + 8
        body.append(f'<text x="{lx}" y="{ly}" font-size="10" text-anchor="end" '
                    f'transform="rotate(-45 {lx} {ly})">{esc(name + " " + g[1])}</text>')
    body += legend(x0, H - 12, proxies)
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body))
    return True


def plot_ws_latency(d, path):
    """WebSocket echo round trips: percentiles per proxy, one panel per case."""
    pcts = ["50", "75", "90", "99", "99.9"]
    variants = [v for v in d.variants("wsmsg") if v.startswith("echo")]
    if not variants:
        return False
    pw, ph = 330, 210
    W, H = 60 + len(variants) * (pw + 70), 60 + ph + 60
    body = [f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">'
            f'WebSocket echo round trip, 100 B messages (median over rounds)</text>']
    for k, var in enumerate(variants):
        x0, y0 = 70 + k * (pw + 70), 60
        series = {}
        for p in PROXIES:
            s = [d.median("wsmsg", var, p, f"lat_us.p{q}") for q in pcts]
            if any(s):
                series[p] = [v / 1000 if v else None for v in s]
        title = f"{var.split('-c')[1]} connections"
        body += latency_panel(x0, y0, pw, ph, title, series, pcts)
    body += legend(70, H - 12, [p for p in PROXIES if d.by.get(("wsmsg", variants[0]), {}).get(p)])
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body))
    return True


# ---------------------------------------------------------------- Markdown

def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def kib_to_mib(v):
    return None if v is None else v / 1024


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--results", default=os.path.join(here, "results"))
    ap.add_argument("--out", default=os.path.join(here, "RESULTS.md"))
    a = ap.parse_args()
    with open(os.path.join(a.results, "raw.jsonl")) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    meta = {}
    mp = os.path.join(a.results, "meta.json")
    if os.path.exists(mp):
        with open(mp) as f:
            meta = json.load(f)
    d = Data(recs)
    alt = meta.get("params", {}).get("switchyard_alt")
    if alt:
        LABEL["switchyard-alt"] = f"switchyard ({alt})"
    rel = os.path.relpath(a.results, os.path.dirname(os.path.abspath(a.out)))
    plot_latency(d, os.path.join(a.results, "latency-http1.svg"))
    plot_cpu(d, os.path.join(a.results, "cpu-per-request.svg"))
    have_ratios = plot_ratios(d, os.path.join(a.results, "cpu-ratio-to-nginx.svg"))
    have_ws = plot_ws_latency(d, os.path.join(a.results, "latency-wsmsg.svg"))

    P = meta.get("params", {})
    V = meta.get("versions", {})
    md = ["# Benchmark results", "",
          f"Written by `bench/report.py` from `{rel}/raw.jsonl` (one line per measurement). "
          f"Run on {meta.get('date', '?')}: {P.get('rounds', '?')} interleaved rounds, "
          f"`wrk -t1 -d{P.get('duration', '?')}` after a {P.get('warmup', '?')} warm-up, "
          f"switchyard with TOKIO_WORKER_THREADS={P.get('workers', '?')}, nginx with 1 worker. "
          "Every figure is **median (min–max)** over rounds; a ratio is computed per round "
          "against the other proxy measured in the same round, then summarised the same way. "
          "Method and caveats: [README.md](README.md).", ""]
    if meta.get("crates_dirty"):
        md += ["> The worktree had uncommitted changes under `crates/` when this ran.", ""]

    md += ["## Machine and versions", "",
           table(["", ""], [
               ["CPUs (nproc)", meta.get("nproc", "?")], ["CPU model", meta.get("cpu", "?")],
               ["memory", f"{meta.get('mem_gib', '?')} GiB"], ["kernel", meta.get("kernel", "?")],
               ["OS", meta.get("os", "?")],
               ["load average (1, 5, 15 min) at start / end",
                f"{' '.join(meta.get('loadavg_start', '?').split()[:3])} / "
                f"{' '.join(meta.get('loadavg_end', '?').split()[:3])}"],
               ["wall time", f"{meta.get('wall_seconds', '?')} s"],
               ["switchyard commit", f"`{meta.get('commit', '?')}`"
                + "".join(f"; {r['scenarios']} measured again at `{r['commit']}` ({r['why']})"
                          for r in meta.get("reruns", []))],
               ["rustc", V.get("rustc", "?")], ["nginx", V.get("nginx", "?")],
               ["node", V.get("node", "?")],
               ["configurable-http-proxy", V.get("configurable-http-proxy", "?")],
               ["wrk", V.get("wrk", "?")], ["h2load", V.get("h2load", "?")],
               ["curl", V.get("curl", "?").split(" (")[0]], ["python", V.get("python", "?")],
               ["OpenSSL (nginx, wrk)", V.get("openssl", "?")],
           ]), ""]

    # ------------------------------------------------ headline ratios
    rows = []

    def head(scen, var, label, key, better, scale=1.0, name=None):
        if (scen, var) not in d.by:
            return
        sw = [v * scale if v is not None else None for v in d.values(scen, var, "switchyard", key)]
        ng = [v * scale if v is not None else None for v in d.values(scen, var, "nginx", key)]
        ch = [v * scale if v is not None else None for v in d.values(scen, var, "chp", key)]
        rows.append([f"{label}", f"{name or key} ({better})", spread(sw), spread(ng),
                     spread(ch), ratio_spread(d.ratios(scen, var, "switchyard", "nginx", key)),
                     ratio_spread(d.ratios(scen, var, "switchyard", "chp", key))])

    for var in d.variants("http1"):
        lab = f"HTTP/1.1 {var}"
        head("http1", var, lab, "rps", "↑", 1, "req/s")
        head("http1", var, lab, "lat_us.p99", "↓", 1e-3, "p99 ms")
        head("http1", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/req")
    for var in d.variants("h2"):
        lab = f"HTTP/2 {var}"
        head("h2", var, lab, "rps", "↑", 1, "req/s")
        head("h2", var, lab, "lat_us.mean", "↓", 1e-3, "mean latency ms")
        head("h2", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/req")
    for var in d.variants("routes"):
        lab = f"{int(var):,} route(s), 13 B, c64"
        head("routes", var, lab, "rps", "↑", 1, "req/s")
        head("routes", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/req")
    for var in d.variants("api"):
        head("api", var, f"API: add {var[3:]} routes one by one", "add_seconds", "↓", 1, "total s")
        head("api", var, f"API: list {var[3:]} routes", "list_ms", "↓", 1, "GET /api/routes ms")
    for var in d.variants("ws"):
        head("ws", var, f"{var[4:]} idle WebSockets", "kib_per_connection", "↓", 1, "RSS KiB per connection")
    for var in d.variants("download"):
        head("download", var, f"download {var}", "peak_rss_kib", "↓", 1 / 1024, "peak RSS MiB")
        head("download", var, f"download {var}", "mib_per_s", "↑", 1, "MiB/s")
    for var in d.variants("http1")[:1]:
        head("http1", var, "fresh process, idle", "idle_rss_kib", "↓", 1 / 1024, "RSS MiB")
    for var in d.variants("https"):
        lab = f"HTTPS {var}"
        kept = var.startswith("ka-")
        head("https", var, lab, "rps", "↑", 1, "req/s" if kept else "connections/s")
        if kept:
            head("https", var, lab, "lat_us.p99", "↓", 1e-3, "p99 ms")
        head("https", var, lab, "cpu_us_per_req", "↓", 1,
             "proxy CPU µs/req" if kept else "proxy CPU µs/connection")
    for var in d.variants("wsmsg"):
        lab = f"WebSocket {var}"
        head("wsmsg", var, lab, "rps", "↑", 1, "messages/s")
        if var.startswith("echo"):
            head("wsmsg", var, lab, "lat_us.p99", "↓", 1e-3, "p99 round trip ms")
        head("wsmsg", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/message")
    for var in d.variants("newconn"):
        lab = f"new connection per request {var}"
        head("newconn", var, lab, "rps", "↑", 1, "req/s")
        head("newconn", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/connection")
    for var in d.variants("cores"):
        lab = f"both cores {var}"
        head("cores", var, lab, "rps", "↑", 1, "req/s")
        head("cores", var, lab, "cpu_us_per_req", "↓", 1, "proxy CPU µs/req")

    md += ["## Headline: switchyard against nginx and CHP", "",
           "↑ higher is better, ↓ lower is better. A ratio is switchyard ÷ the other, per round.", "",
           table(["scenario", "metric", "switchyard", "nginx", "CHP", "switchyard ÷ nginx",
                  "switchyard ÷ CHP"], rows), ""]

    # ------------------------------------------------ HTTP/1.1
    if d.variants("http1"):
        rows = []
        for var in d.variants("http1"):
            for p in PROXIES:
                if p not in d.by[("http1", var)]:
                    continue
                rows.append([var, LABEL[p], spread(d.values("http1", var, p, "rps")),
                             spread([v / 1e3 for v in d.values("http1", var, p, "lat_us.p50")]),
                             spread([v / 1e3 for v in d.values("http1", var, p, "lat_us.p99")]),
                             spread(d.values("http1", var, p, "cpu_us_per_req")),
                             spread([v * 100 if v is not None else None
                                     for v in d.values("http1", var, p, "proxy_busy")], 2),
                             spread(d.values("http1", var, p, "origin_cpu_us_per_req")),
                             ratio_spread(d.ratios("http1", var, p, "nginx", "rps")) if p != "nginx" else "1",
                             ratio_spread(d.ratios("http1", var, p, "nginx", "cpu_us_per_req"))
                             if p not in ("nginx", "direct") else "–",
                             sum(v or 0 for v in d.values("http1", var, p, "errors"))])
        md += ["## HTTP/1.1: `GET` through each proxy (wrk)", "",
               "`13b` is `GET /` answered with the 13-byte body, `16k` a 16 KiB body; `cN` is the number "
               "of wrk connections. *busy* is the proxy's CPU time over the run's wall time (100 % = "
               "core 1 saturated); below 100 % the shared core 0 (wrk + origin) limited the rate. "
               "*origin µs/req* is the origin nginx's own CPU per request. *hyper floor* is "
               "`bench_pair bare`: one thread, one upstream connection per client connection, requests "
               "and responses passed through untouched (no routing, pool, header pass or timers; not a "
               "correct proxy). It is what any proxy built on hyper and tokio costs before it does a "
               "proxy's work.", "",
               table(["case", "proxy", "req/s", "p50 ms", "p99 ms", "proxy CPU µs/req", "busy %",
                      "origin µs/req", "req/s ÷ nginx", "CPU ÷ nginx", "errors"], rows), "",
               f"![latency percentiles]({rel}/latency-http1.svg)", "",
               f"![CPU per request]({rel}/cpu-per-request.svg)", ""]

    # ------------------------------------------------ HTTP/2
    if d.variants("h2"):
        rows = []
        for var in d.variants("h2"):
            for p in PROXIES:
                if p not in d.by[("h2", var)]:
                    continue
                rows.append([var, LABEL[p], spread(d.values("h2", var, p, "rps")),
                             spread([v / 1e3 for v in d.values("h2", var, p, "lat_us.mean")]),
                             spread([v / 1e3 for v in d.values("h2", var, p, "lat_us.max")]),
                             spread(d.values("h2", var, p, "cpu_us_per_req")),
                             ratio_spread(d.ratios("h2", var, p, "nginx", "rps")) if p != "nginx" else "1",
                             ratio_spread(d.ratios("h2", var, p, "nginx", "cpu_us_per_req"))
                             if p not in ("nginx", "direct") else "–",
                             sum(v or 0 for v in d.values("h2", var, p, "errors"))])
        md += ["## HTTP/2 clients (h2load, cleartext with prior knowledge)", "",
               "`h2load -t1 -c64 -m10`: 64 connections with 10 concurrent streams each. nginx takes h2c "
               "on a `listen … http2` port (no TLS needed for prior knowledge) and speaks HTTP/1.1 with "
               "keep-alive to the origin, as switchyard does; *direct* is the origin nginx's own h2c "
               "port. CHP has no HTTP/2. h2load reports no percentiles: mean and max per request.", "",
               table(["case", "proxy", "req/s", "mean ms", "max ms", "proxy CPU µs/req",
                      "req/s ÷ nginx", "CPU ÷ nginx", "errors"], rows), ""]

    # ------------------------------------------------ user space and kernel
    def has_split(scen, var, p):
        return any(v is not None for v in d.values(scen, var, p, "sys_us_per_req"))

    split = [(scen, var) for scen in ("http1", "h2") for var in d.variants(scen)
             if has_split(scen, var, "switchyard")]
    if split:
        rows = []
        for scen, var in split:
            for p in ["nginx", "switchyard", "floor", "chp"]:
                if not has_split(scen, var, p):
                    continue
                users = d.values(scen, var, p, "user_us_per_req")
                syss = d.values(scen, var, p, "sys_us_per_req")
                shares = [s / (u + s) * 100 if u is not None and s is not None and u + s else None
                          for u, s in zip(users, syss)]
                rows.append([f"{'HTTP/1.1' if scen == 'http1' else 'HTTP/2'} {var}", LABEL[p],
                             spread(users), spread(syss), spread(shares, 2),
                             ratio_spread(d.ratios(scen, var, p, "nginx", "user_us_per_req"))
                             if p != "nginx" else "–",
                             ratio_spread(d.ratios(scen, var, p, "nginx", "sys_us_per_req"))
                             if p != "nginx" else "–"])
        md += ["## Where the proxy's CPU goes: user space and kernel", "",
               "The *proxy CPU µs/req* above, split into the time the proxy's own code ran (user) "
               "and the time the kernel ran on its behalf (system: the system calls, loopback TCP "
               "to the client and the origin, wake-ups), from `/proc/PID/stat` over the same runs. "
               "The kernel part follows the system calls a proxy makes per request (the same "
               "calls cost about the same); the user part is the proxy's own code.", "",
               table(["case", "proxy", "user µs/req", "kernel µs/req", "kernel %",
                      "user ÷ nginx", "kernel ÷ nginx"], rows), ""]

    # ------------------------------------------------ routes
    if d.variants("routes"):
        rows = []
        vs = d.variants("routes")
        for var in vs:
            for p in ["nginx", "switchyard", "chp"]:
                if p not in d.by[("routes", var)]:
                    continue
                rows.append([f"{int(var):,}", LABEL[p], spread(d.values("routes", var, p, "rps")),
                             spread([v / 1e3 for v in d.values("routes", var, p, "lat_us.p99")]),
                             spread(d.values("routes", var, p, "cpu_us_per_req")),
                             spread([kib_to_mib(v) for v in d.values("routes", var, p, "idle_rss_kib")]),
                             spread(d.values("routes", var, p, "load_seconds")),
                             spread(d.values("routes", var, p, "list_ms")),
                             ratio_spread(d.ratios("routes", var, p, "nginx", "cpu_us_per_req"))
                             if p != "nginx" else "–"])
        md += [f"## Route table size: {' against '.join(f'{int(v):,}' for v in vs)} routes", "",
               "Each proxy gets the default route `/` and, in the large case, routes `/user/u0` … "
               f"`/user/u{int(vs[-1]) - 2}` (switchyard and CHP through the REST API, 4 keep-alive connections; "
               "nginx as `location /user/uN/` blocks). wrk (c64) requests "
               f"`/user/u{int(vs[-1]) - 2}/`, "
               "which in the 1-route case falls through to `/`. *RSS* is after the routes were added, "
               "before the load (nginx: master + worker). *load s* is the time to add the routes, "
               "*list ms* one `GET /api/routes` of all of them.", "",
               table(["routes", "proxy", "req/s", "p99 ms", "proxy CPU µs/req", "RSS MiB",
                      "load s", "list ms", "CPU ÷ nginx"], rows), ""]
        if len(vs) == 2:
            rows = []
            for p in ["nginx", "switchyard", "chp"]:
                for key, lab in (("cpu_us_per_req", "CPU µs/req"), ("rps", "req/s")):
                    small = d.by[("routes", vs[0])].get(p, {})
                    big = d.by[("routes", vs[1])].get(p, {})
                    rs = [get(big[r], key) / get(small[r], key) for r in big
                          if r in small and get(small[r], key) and get(big[r], key) is not None]
                    rows.append([LABEL[p], lab, ratio_spread(rs)])
            md += [f"Same proxy, {int(vs[1]):,} routes ÷ {int(vs[0]):,} route, per round:", "",
                   table(["proxy", "metric", "ratio"], rows), ""]

    # ------------------------------------------------ API
    if d.variants("api"):
        rows = []
        for var in d.variants("api"):
            for p in ["switchyard", "chp"]:
                if p not in d.by[("api", var)]:
                    continue
                rows.append([var[3:], LABEL[p], spread(d.values("api", var, p, "add_seconds")),
                             spread(d.values("api", var, p, "add_us_per_route")),
                             spread(d.values("api", var, p, "add_cpu_us_per_route")),
                             spread(d.values("api", var, p, "add_seconds_same_core")),
                             spread(d.values("api", var, p, "list_ms")),
                             spread([v / 1024 for v in d.values("api", var, p, "list_bytes")]),
                             spread([kib_to_mib(v) for v in d.values("api", var, p, "rss_growth_kib")]),
                             ratio_spread(d.ratios("api", var, p, "chp", "add_seconds")) if p != "chp" else "1",
                             ratio_spread(d.ratios("api", var, p, "chp", "list_ms")) if p != "chp" else "1"])
        md += ["## REST API: adding routes one by one, then listing them", "",
               "The client is `bench_pair api` (Rust, hyper, one keep-alive connection, one request at a "
               "time, on core 0): `POST /api/routes/user/u<i>` with `{\"target\": …}` for each route, then "
               "five `GET /api/routes` (the median is shown; the time includes reading the whole body). "
               "nginx has no such API. *Proxy CPU µs per route* is the proxy's user+system time "
               "over the adds; *add all, same core* repeats the adds on a fresh proxy with the "
               "client on the proxy's core: one request at a time is bound by wake-up latency, and "
               "waking an idle core (in a VM, an idle vCPU) costs more than the work itself.", "",
               table(["routes", "proxy", "add all, s", "µs per route", "proxy CPU µs per route",
                      "add all, same core, s", "list, ms", "list body KiB",
                      "RSS growth MiB", "add ÷ CHP", "list ÷ CHP"], rows), ""]

    # ------------------------------------------------ WebSockets
    if d.variants("ws"):
        rows = []
        for var in d.variants("ws"):
            for p in ["nginx", "switchyard", "chp"]:
                if p not in d.by[("ws", var)]:
                    continue
                rows.append([var[4:], LABEL[p],
                             spread([kib_to_mib(v) for v in d.values("ws", var, p, "baseline_rss_kib")]),
                             spread([kib_to_mib(v) for v in d.values("ws", var, p, "open_rss_kib")]),
                             spread(d.values("ws", var, p, "kib_per_connection")),
                             spread(d.values("ws", var, p, "baseline_fds")),
                             spread(d.values("ws", var, p, "open_fds")),
                             spread(d.values("ws", var, p, "fds_after_close")),
                             ratio_spread(d.ratios("ws", var, p, "nginx", "kib_per_connection"))
                             if p != "nginx" else "1"])
        md += ["## Idle WebSockets (bench/ws_idle.py)", "",
               "An aiohttp echo backend and client (core 0) open the connections through the proxy (core 1), "
               "each echoes one message, and the proxy's RSS and descriptors are read from /proc "
               "(summed over nginx's master and worker). Then all close, and the descriptors must return "
               "to the baseline.", "",
               table(["connections", "proxy", "RSS before MiB", "RSS open MiB", "KiB per WebSocket",
                      "fds before", "fds open", "fds after close", "KiB/WS ÷ nginx"], rows), ""]

    # ------------------------------------------------ download
    if d.variants("download"):
        rows = []
        for var in d.variants("download"):
            for p in PROXIES:
                if p not in d.by[("download", var)]:
                    continue
                rows.append([var, LABEL[p], spread(d.values("download", var, p, "mib_per_s")),
                             spread([kib_to_mib(v) for v in d.values("download", var, p, "base_rss_kib")]),
                             spread([kib_to_mib(v) for v in d.values("download", var, p, "peak_rss_kib")]),
                             spread([kib_to_mib(v) for v in d.values("download", var, p, "rss_growth_kib")]),
                             spread(d.values("download", var, p, "cpu_s"))])
        md += ["## One large download", "",
               "`curl -o /dev/null` (core 0) of a sparse file from the origin through the proxy (core 1). "
               "Peak RSS is the larger of VmHWM and a 20 ms sampling of VmRSS; nginx streams without "
               "spooling to disk (`proxy_max_temp_file_size 0`).", "",
               table(["size", "proxy", "MiB/s", "RSS before MiB", "peak RSS MiB", "growth MiB",
                      "proxy CPU s"], rows), ""]

    # ------------------------------------------------ the scenarios of JupyterHub's traffic
    def ops_table(scen, extra=()):
        """Rows for one loadgen- or wrk-driven scenario: rate, latency, CPU and its split."""
        rows = []
        unit = UNIT[scen]
        for var in d.variants(scen):
            for p in PROXIES:
                if p not in d.by[(scen, var)]:
                    continue
                def r(ref, key="cpu_us_per_req"):
                    if p in (ref, "direct"):
                        return "–"
                    return ratio_spread(d.ratios(scen, var, p, ref, key))
                row = [var, LABEL[p], spread(d.values(scen, var, p, "rps")),
                       spread([v / 1e3 if v is not None else None
                               for v in d.values(scen, var, p, "lat_us.p50")]),
                       spread([v / 1e3 if v is not None else None
                               for v in d.values(scen, var, p, "lat_us.p99")]),
                       spread(d.values(scen, var, p, "cpu_us_per_req")),
                       spread(d.values(scen, var, p, "user_us_per_req")),
                       spread(d.values(scen, var, p, "sys_us_per_req")),
                       spread([v * 100 if v is not None else None
                               for v in d.values(scen, var, p, "proxy_busy")], 2)]
                for key, fn in extra:
                    row.append(fn(var, p))
                row += [r("nginx"), r("chp"),
                        ratio_spread(d.ratios(scen, var, p, "nginx", "lat_us.p99"))
                        if p not in ("nginx", "direct") else "–",
                        sum(v or 0 for v in d.values(scen, var, p, "errors"))]
                rows.append(row)
        head = ["case", "proxy", f"{unit}/s", "p50 ms", "p99 ms", f"CPU µs/{unit}", "user µs",
                "kernel µs", "busy %"] + [k for k, _ in extra] + \
               ["CPU ÷ nginx", "CPU ÷ CHP", "p99 ÷ nginx", "errors"]
        return table(head, rows)

    if d.variants("https"):
        def resumed(var, p):
            return spread([v * 100 if v is not None else None
                           for v in d.values("https", var, p, "resumed_share")], 2) \
                if not var.startswith("ka-") else "–"
        md += ["## HTTPS termination", "",
               "The proxy serves TLS on its public port and speaks plain HTTP/1.1 to the origin. Every "
               "proxy has the same certificate files (self-signed; `ecdsa` is P-256, `rsa` RSA-2048). "
               "`ka-*`: `wrk -t1 -c64` over kept-alive TLS 1.3 connections (OpenSSL client, "
               "TLS_AES_256_GCM_SHA384, X25519), 13 B or 16 KiB answers; the handshakes happen before "
               "the measured run. `full-*` and `resume-*`: `loadgen tls` (core 0), 32 loops each making "
               "a new connection, a TLS 1.3 handshake (X25519, ALPN http/1.1), one `GET` with "
               "`Connection: close`, and reading the answer until the server closes: a full handshake "
               "every time (`full`: key exchange and the certificate's signature), or one resuming "
               "the loop's previous session with a ticket (`resume`: each loop keeps its own tickets, "
               "as each browser does). There *req* is one connection, handshake included; *resumed %* "
               "is the share of handshakes in the window that did resume.", "",
               ops_table("https", [("resumed %", resumed)]), ""]
    if d.variants("wsmsg"):
        md += ["## WebSocket messages", "",
               "`loadgen` (core 0) opens the connections through the proxy (core 1) to its own "
               "WebSocket backend (core 0, tokio-tungstenite). `echo100-cN`: N connections, each "
               "sending a 100-byte binary message and waiting for its echo, in a loop (p50/p99 are "
               "the round trips). `stream64k-c1`: the backend sends 64 KiB binary messages as fast "
               "as one connection takes them. *direct* is the backend without a proxy. On two cores "
               "the load generator and the backend bound the message rate, so the CPU per message "
               "is the measure of a proxy. *msg* is one message through the proxy (an echo is two: "
               "there and back; the rate counts round trips).", "",
               ops_table("wsmsg"), ""]
        if have_ws:
            md += [f"![WebSocket round trips]({rel}/latency-wsmsg.svg)", ""]
    if d.variants("newconn"):
        md += ["## A new connection per request", "",
               "`wrk -t1 -c64 -H 'Connection: close'`: every request opens a new client connection "
               "(the proxy closes it after the answer); the proxies keep their upstream connections. "
               "*conn* is one connection with its one request.", "",
               ops_table("newconn"), ""]
    if d.variants("cores"):
        def machine(var, p):
            return spread([v * 100 if v is not None else None
                           for v in d.values("cores", var, p, "machine_busy")], 2)
        md += ["## Both cores", "",
               "Nothing pinned: the proxy, `wrk -t2 -c256` and the origin share both cores. "
               "switchyard runs its default workers (one per CPU), nginx `worker_processes 2`. "
               "*busy %* is the proxy's CPU over wall time (200 % = both cores), *machine %* "
               "the whole machine's (100 % = both cores). `https` is TLS 1.3 with the ECDSA "
               "certificate, kept alive.", "",
               ops_table("cores", [("machine %", machine)]), ""]
    if have_ratios:
        md += ["## CPU per operation against nginx, every case", "",
               "Each bar is a proxy's CPU per request, message or connection divided by nginx's in "
               "the same round (median, whisker min–max).", "",
               f"![CPU ratio to nginx]({rel}/cpu-ratio-to-nginx.svg)", ""]

    if meta.get("failures"):
        md += ["## Failures", "", "These measurements failed and are missing from the tables:", ""]
        md += [f"- {f}" for f in meta["failures"]] + [""]
    kept = kept_soak_section(a.out)
    if kept:
        md += [kept]
    with open(a.out, "w") as f:
        f.write("\n".join(md))
    print(f"wrote {a.out}")


def kept_soak_section(path):
    """The block bench/soak.py writes between `<!-- soak -->` and `<!-- /soak -->`, kept
    from the RESULTS.md being replaced (the soak runs on its own, 30 minutes)."""
    if not os.path.exists(path):
        return ""
    with open(path) as f:
        old = f.read()
    start, end = old.find("<!-- soak -->"), old.find("<!-- /soak -->")
    if start < 0 or end < start:
        return ""
    return old[start:end + len("<!-- /soak -->")] + "\n"


if __name__ == "__main__":
    main()
