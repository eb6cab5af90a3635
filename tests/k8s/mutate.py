"""Break one property of a rendered manifest, so run.sh can prove each check catches it.

Usage: mutate.py WHAT IN OUT
  subpath        mount the config ConfigMap with subPath (a file mount that never updates)
  rootfs         readOnlyRootFilesystem: false
  root           runAsNonRoot: false, runAsUser: 0
  probe          readiness probe on /healthz instead of /readyz
  checksum       a checksum/config annotation on the pod (config edits would roll every pod)
  schema         an unknown field in the container (the schema must reject it)
"""

import sys

import yaml


def main():
    what, src, dst = sys.argv[1:4]
    with open(src) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    tmpl = dep["spec"]["template"]
    c = tmpl["spec"]["containers"][0]
    if what == "subpath":
        m = next(m for m in c["volumeMounts"] if m["name"] == "config")
        m["mountPath"] += "/warden.yaml"
        m["subPath"] = "warden.yaml"
    elif what == "rootfs":
        c["securityContext"]["readOnlyRootFilesystem"] = False
    elif what == "root":
        c["securityContext"]["runAsNonRoot"] = False
        c["securityContext"]["runAsUser"] = 0
    elif what == "probe":
        c["readinessProbe"]["httpGet"]["path"] = "/healthz"
    elif what == "checksum":
        tmpl["metadata"].setdefault("annotations", {})["checksum/config"] = "0" * 64
    elif what == "schema":
        c["readinessProbes"] = c["readinessProbe"]
    else:
        raise SystemExit(f"unknown mutation {what}")
    with open(dst, "w") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


if __name__ == "__main__":
    main()
