"""Checks the example manifests: each file parses as YAML, and the fields README.md's
Kubernetes section names are there with the values it gives. Run by
crates/switchyard-server/tests/kubernetes.rs; exits non-zero naming what is wrong."""
import os
import sys

import yaml

here = os.path.dirname(os.path.abspath(__file__))
problems = []


def check(cond, what):
    if not cond:
        problems.append(what)


def load(name):
    with open(os.path.join(here, name)) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    for d in docs:
        check("apiVersion" in d and "kind" in d and "name" in d.get("metadata", {}),
              f"{name}: a document without apiVersion, kind or metadata.name")
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


proxy = load("proxy.yaml")
redis = load("redis.yaml")

dep = proxy.get(("Deployment", "proxy"))
check(dep is not None, "proxy.yaml: Deployment proxy")
if dep:
    spec = dep["spec"]
    check(spec["replicas"] == 2, "proxy: replicas 2")
    check(spec["strategy"]["type"] == "RollingUpdate", "proxy: strategy RollingUpdate")
    check(spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0, "proxy: maxUnavailable 0")
    check(spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(),
          "proxy: the selector matches the pod labels")
    pod = spec["template"]["spec"]
    [c] = pod["containers"]
    check(c["command"][0] == "configurable-http-proxy", "proxy: the chart's command")
    flags = c["command"][1:]
    delay = [f for f in flags if f.startswith("--shutdown-delay=")]
    timeout = [f for f in flags if f.startswith("--shutdown-timeout=")]
    check(len(delay) == 1 and len(timeout) == 1, "proxy: --shutdown-delay and --shutdown-timeout")
    check(any(f.startswith("--storage-backend=redis://proxy-redis:6379/") for f in flags),
          "proxy: --storage-backend on the proxy-redis Service")
    check("lifecycle" not in c, "proxy: no preStop hook (--shutdown-delay does it)")
    if delay and timeout:
        needed = (int(delay[0].split("=")[1]) + int(timeout[0].split("=")[1])) / 1000
        check(pod["terminationGracePeriodSeconds"] > needed,
              "proxy: terminationGracePeriodSeconds above the delay plus the drain")
    ready = c["readinessProbe"]["httpGet"]
    check(ready["path"] == "/_chp_readyz" and ready["port"] == "http",
          "proxy: readinessProbe GET /_chp_readyz on http")
    live = c["livenessProbe"]["httpGet"]
    check(live["path"] == "/_chp_healthz", "proxy: livenessProbe GET /_chp_healthz")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(ports == {"http": 8000, "api": 8001}, "proxy: ports http 8000 and api 8001")
    sc = c["securityContext"]
    for key, want in [("runAsNonRoot", True), ("runAsUser", 65534), ("runAsGroup", 65534),
                      ("allowPrivilegeEscalation", False)]:
        check(sc.get(key) == want, f"proxy: securityContext.{key} {want}")
    check(sc.get("capabilities", {}).get("drop") == ["ALL"], "proxy: capabilities drop ALL")
    env = {e["name"]: e for e in c["env"]}
    check(env.get("CONFIGPROXY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef") is not None,
          "proxy: CONFIGPROXY_AUTH_TOKEN from a secret")
    check("CONFIGPROXY_REDIS_PASSWORD" in env, "proxy: CONFIGPROXY_REDIS_PASSWORD")

for svc, port in [("proxy-public", "http"), ("proxy-api", "api")]:
    s = proxy.get(("Service", svc))
    check(s is not None and s["spec"]["selector"] == {"app.kubernetes.io/name": "proxy"}
          and s["spec"]["ports"][0]["targetPort"] == port, f"proxy.yaml: Service {svc} to port {port}")
check(("PodDisruptionBudget", "proxy") in proxy, "proxy.yaml: PodDisruptionBudget proxy")

check(("Deployment", "proxy-redis") in redis, "redis.yaml: Deployment proxy-redis")
rs = redis.get(("Service", "proxy-redis"))
check(rs is not None and rs["spec"]["ports"][0]["port"] == 6379, "redis.yaml: Service proxy-redis on 6379")
check(("Secret", "proxy-redis") in redis, "redis.yaml: Secret proxy-redis")

if problems:
    print("deploy/kubernetes:", *problems, sep="\n  ")
    sys.exit(1)
print("deploy/kubernetes: ok")
