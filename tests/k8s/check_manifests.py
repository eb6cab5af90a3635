"""Checks on rendered Warden manifests that a schema cannot express (run by tests/k8s/run.sh).

Usage: check_manifests.py CHECK FILE [ARG]   exit 0 when the check holds, 1 with reasons otherwise.
  security FILE        every container: runAsNonRoot, readOnlyRootFilesystem, no privilege
                       escalation, ALL capabilities dropped, seccomp RuntimeDefault
  probes FILE          readiness on /readyz and liveness on /healthz, both on the admin port
  mounts FILE          ConfigMaps and Secrets mounted as directories: no subPath anywhere
  scrape FILE          prometheus.io annotations on the pod point at the admin port's /metrics
  checksum FILE yes|no the pod template has checksum/secret (yes) or not (no); never a checksum
                       of a ConfigMap
  config FILE          the policy files and key files the config names are mounted; admin on
                       0.0.0.0:<admin port>; io_driver epoll; termination grace > preStop + shutdown_grace
  kinds FILE           Deployment, Service, ConfigMap, policy/v1 PDB (and autoscaling/v2 HPA when
                       the Deployment has no fixed replicas) present
  dockerfile FILE DF   the Dockerfile builds and runs the `warden` binary as the numeric USER that
                       equals the pod's runAsUser:runAsGroup
  extract FILE         print the rendered warden.yaml (for `warden validate`)
  unpack FILE DIR      write the policies ConfigMap's files into DIR and DIR/warden.yaml, the
                       rendered config with policy.files pointing there (for `warden policy show`)
"""

import re
import sys

import yaml


def load(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise SystemExit(f"expected one {kind}, found {len(found)}")
    return found[0]


def pod_spec(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec["containers"]


def config_map(docs, suffix):
    for d in docs:
        if d.get("kind") == "ConfigMap" and d["metadata"]["name"].endswith(suffix):
            return d
    return None


def warden_config(docs):
    cm = config_map(docs, "-config")
    if cm is None or "warden.yaml" not in cm.get("data", {}):
        raise SystemExit("no ConfigMap *-config with warden.yaml")
    return yaml.safe_load(cm["data"]["warden.yaml"])


def port_number(container, name_or_number):
    if isinstance(name_or_number, int):
        return name_or_number
    for p in container.get("ports", []):
        if p.get("name") == name_or_number:
            return p["containerPort"]
    return None


def check_security(docs):
    spec = pod_spec(docs)
    pod = spec.get("securityContext", {})
    errs = []
    if spec.get("automountServiceAccountToken") is not False:
        errs.append("pod: automountServiceAccountToken is not false")
    for c in containers(spec):
        sc = c.get("securityContext", {})

        def eff(key):
            return sc.get(key, pod.get(key))

        n = c["name"]
        if eff("runAsNonRoot") is not True:
            errs.append(f"{n}: runAsNonRoot is not true")
        uid = eff("runAsUser")
        if not isinstance(uid, int) or uid == 0:
            errs.append(f"{n}: runAsUser is not a numeric non-root uid ({uid!r})")
        if sc.get("readOnlyRootFilesystem") is not True:
            errs.append(f"{n}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            errs.append(f"{n}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            errs.append(f"{n}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            errs.append(f"{n}: capabilities.drop lacks ALL")
        if sc.get("capabilities", {}).get("add"):
            errs.append(f"{n}: capabilities.add is not empty")
        seccomp = sc.get("seccompProfile", pod.get("seccompProfile", {}))
        if seccomp.get("type") != "RuntimeDefault":
            errs.append(f"{n}: seccompProfile is not RuntimeDefault")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        if "/tmp" not in mounts:
            errs.append(f"{n}: no writable /tmp (read-only root filesystem)")
    return errs


def check_probes(docs):
    errs = []
    for c in pod_spec(docs)["containers"]:
        admin = port_number(c, "admin")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = c.get(probe, {}).get("httpGet")
            if not get:
                errs.append(f"{c['name']}: {probe} is not an httpGet")
                continue
            if get.get("path") != path:
                errs.append(f"{c['name']}: {probe} path {get.get('path')!r}, want {path}")
            if admin is None or port_number(c, get.get("port")) != admin:
                errs.append(f"{c['name']}: {probe} not on the admin port")
    return errs


def check_mounts(docs):
    spec = pod_spec(docs)
    errs = []
    by_name = {v["name"]: v for v in spec.get("volumes", [])}
    config_volumes = [n for n, v in by_name.items() if "configMap" in v or "secret" in v]
    if not any(v["configMap"]["name"].endswith("-config") for v in by_name.values() if "configMap" in v):
        errs.append("no volume of the *-config ConfigMap")
    for c in containers(spec):
        mounted = set()
        for m in c.get("volumeMounts", []):
            if "subPath" in m or "subPathExpr" in m:
                errs.append(
                    f"{c['name']}: volume {m['name']} mounted with subPath at {m['mountPath']}"
                    " (subPath mounts never receive ConfigMap or Secret updates)"
                )
            mounted.add(m["name"])
        for n in config_volumes:
            if n not in mounted:
                errs.append(f"{c['name']}: ConfigMap or Secret volume {n} not mounted")
    return errs


def check_scrape(docs):
    tmpl = one(docs, "Deployment")["spec"]["template"]
    ann = tmpl["metadata"].get("annotations", {})
    admin = port_number(tmpl["spec"]["containers"][0], "admin")
    errs = []
    if ann.get("prometheus.io/scrape") != "true":
        errs.append("prometheus.io/scrape is not \"true\"")
    if ann.get("prometheus.io/port") != str(admin):
        errs.append(f"prometheus.io/port {ann.get('prometheus.io/port')!r} is not the admin port {admin}")
    if ann.get("prometheus.io/path") != "/metrics":
        errs.append("prometheus.io/path is not /metrics")
    return errs


def check_checksum(docs, want):
    ann = one(docs, "Deployment")["spec"]["template"]["metadata"].get("annotations", {})
    errs = []
    sums = [k for k in ann if k.startswith("checksum/")]
    if want == "yes" and "checksum/secret" not in ann:
        errs.append("no checksum/secret annotation although the chart creates the Secret")
    if want == "no" and "checksum/secret" in ann:
        errs.append("checksum/secret annotation without a chart-created Secret")
    for k in sums:
        if k != "checksum/secret":
            errs.append(f"{k}: only the Secret may be checksummed (config must reload in place)")
    return errs


def duration_seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m)", str(text))
    if not m:
        raise SystemExit(f"cannot read duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": 60 * n}[unit]


def check_config(docs):
    cfg = warden_config(docs)
    spec = pod_spec(docs)
    c = spec["containers"][0]
    errs = []
    mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    args = c.get("args", [])
    cfg_path = args[args.index("-c") + 1] if "-c" in args else None
    if args[:1] != ["serve"] or cfg_path is None:
        errs.append(f"args {args!r} do not run `serve -c FILE`")
    else:
        cm_dir = mounts.get("config")
        cm_name = volumes.get("config", {}).get("configMap", {}).get("name", "")
        if cm_dir is None or cfg_path != f"{cm_dir}/warden.yaml" or not cm_name.endswith("-config"):
            errs.append(f"config file {cfg_path} is not warden.yaml in the mounted config ConfigMap")

    def mounted_from(path, volume_kind):
        for name, mount_path in mounts.items():
            v = volumes.get(name, {})
            if volume_kind in v and path.startswith(mount_path.rstrip("/") + "/"):
                return v[volume_kind], path[len(mount_path.rstrip("/")) + 1:]
        return None, None

    pol_cm = config_map(docs, "-policies")
    for f in (cfg.get("policy") or {}).get("files", []):
        src, key = mounted_from(f, "configMap")
        if src is None or pol_cm is None or src["name"] != pol_cm["metadata"]["name"] or key not in pol_cm["data"]:
            errs.append(f"policy file {f} is not a key of the mounted policies ConfigMap")
    for path in ((cfg.get("state") or {}).get("encryption_key_file"), (cfg.get("sessions") or {}).get("keys_file")):
        if path:
            src, key = mounted_from(path, "secret")
            items = [i["path"] for i in (src or {}).get("items", [])] if src else []
            if src is None or (items and key not in items):
                errs.append(f"key file {path} is not in the mounted Secret")
    # With a root filesystem that is read-only, the default SQLite store must go to a mount.
    st = cfg.get("state") or {}
    if not (st.get("url") or st.get("url_env")):
        data = args[args.index("--data-dir") + 1] if "--data-dir" in args else None
        writable = data and any(
            (data + "/").startswith(mp.rstrip("/") + "/")
            and not any(m.get("readOnly") for m in c.get("volumeMounts", []) if m["name"] == name)
            for name, mp in mounts.items()
        )
        if not writable:
            errs.append(f"no state.url and --data-dir {data!r} is not on a writable mount")
    url_env = (cfg.get("state") or {}).get("url_env")
    if url_env and not any(e["name"] == url_env and "secretKeyRef" in e.get("valueFrom", {}) for e in c.get("env", [])):
        errs.append(f"state.url_env {url_env} is not set from a Secret")
    admin = port_number(c, "admin")
    if (cfg.get("admin") or {}).get("listen") not in (f"0.0.0.0:{admin}", f"[::]:{admin}"):
        errs.append(f"admin.listen {(cfg.get('admin') or {}).get('listen')!r} is not 0.0.0.0:{admin} or [::]:{admin}")
    if cfg["gateway"].get("io_driver") != "epoll":
        errs.append("gateway.io_driver is not epoll (the default seccomp profile blocks io_uring)")
    grace = duration_seconds((cfg.get("limits") or {}).get("shutdown_grace", "15s"))
    pre = c.get("lifecycle", {}).get("preStop", {})
    sleep = 0
    if "exec" in pre:
        sleep = int(pre["exec"]["command"][-1])
    elif "sleep" in pre:
        sleep = int(pre["sleep"]["seconds"])
    else:
        errs.append("no preStop hook")
    tgp = spec.get("terminationGracePeriodSeconds", 30)
    if not tgp > sleep + grace:
        errs.append(f"terminationGracePeriodSeconds {tgp} <= preStop {sleep}s + shutdown_grace {grace}s")
    if (cfg.get("audit") or {}).get("sink") == "file":
        src, _ = mounted_from(cfg["audit"]["dir"].rstrip("/") + "/x", "emptyDir")
        if src is None and mounts.get("audit") != cfg["audit"]["dir"]:
            errs.append(f"audit dir {cfg['audit']['dir']} is not a writable volume")
    return errs


def check_kinds(docs):
    errs = []
    kinds = {(d["apiVersion"], d["kind"]) for d in docs}
    for want in (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"), ("policy/v1", "PodDisruptionBudget")):
        if want not in kinds:
            errs.append(f"no {want[0]} {want[1]}")
    dep = one(docs, "Deployment")
    if "replicas" not in dep["spec"] and ("autoscaling/v2", "HorizontalPodAutoscaler") not in kinds:
        errs.append("Deployment without replicas and no autoscaling/v2 HorizontalPodAutoscaler")
    return errs


def check_dockerfile(docs, dockerfile):
    with open(dockerfile) as f:
        lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
    errs = []
    final = [ln for ln in lines[max(i for i, ln in enumerate(lines) if ln.upper().startswith("FROM ")):]]
    users = [ln.split(None, 1)[1] for ln in final if ln.upper().startswith("USER ")]
    spec = pod_spec(docs)
    sc = spec["containers"][0].get("securityContext", {})
    pod = spec.get("securityContext", {})
    want = f"{sc.get('runAsUser', pod.get('runAsUser'))}:{sc.get('runAsGroup', pod.get('runAsGroup'))}"
    if not users or not re.fullmatch(r"\d+:\d+", users[-1]):
        errs.append(f"final stage USER {users[-1] if users else None!r} is not numeric uid:gid")
    elif users[-1] != want or users[-1].startswith("0:"):
        errs.append(f"final stage USER {users[-1]} differs from the chart's runAsUser:runAsGroup {want}")
    if not any("cargo build --release -p controlplane --bin warden" in ln for ln in lines):
        errs.append("the build stage does not build `-p controlplane --bin warden`")
    if 'ENTRYPOINT ["/usr/local/bin/warden"]' not in final:
        errs.append("the image's entrypoint is not /usr/local/bin/warden")
    if not any(ln.startswith("COPY --from=") and "/release/warden /usr/local/bin/warden" in ln for ln in final):
        errs.append("the final stage does not copy the release `warden` binary")
    return errs


def main():
    check, path = sys.argv[1], sys.argv[2]
    docs = load(path)
    if check == "extract":
        cm = config_map(docs, "-config")
        if cm is None:
            raise SystemExit("no ConfigMap *-config")
        sys.stdout.write(cm["data"]["warden.yaml"])
        return 0
    if check == "unpack":
        out = sys.argv[3]
        cfg = warden_config(docs)
        pol = config_map(docs, "-policies")
        if pol is None:
            raise SystemExit("no ConfigMap *-policies")
        for name, text in pol["data"].items():
            with open(f"{out}/{name}", "w") as f:
                f.write(text)
        cfg["policy"]["files"] = [f"{out}/{f.rsplit('/', 1)[-1]}" for f in cfg["policy"]["files"]]
        with open(f"{out}/warden.yaml", "w") as f:
            yaml.safe_dump(cfg, f, sort_keys=False)
        return 0
    fn = {
        "security": check_security,
        "probes": check_probes,
        "mounts": check_mounts,
        "scrape": check_scrape,
        "config": check_config,
        "kinds": check_kinds,
    }.get(check)
    if check == "checksum":
        errs = check_checksum(docs, sys.argv[3])
    elif check == "dockerfile":
        errs = check_dockerfile(docs, sys.argv[3])
    elif fn is None:
        raise SystemExit(f"unknown check {check}")
    else:
        errs = fn(docs)
    for e in errs:
        print(f"  {path}: {e}", file=sys.stderr)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
