"""Refuses rendered manifests in which a client pod mounts a server's secrets.

Clients (actors: any pod that runs `musicrl actor`) must never mount the servers' certificate
Secret (its key would let them pose as the learner or a reward server), the servers' token
table or the reward-seal keys. Usage: python3 check_key_mounts.py RENDERED.yaml ...
(deploy/check.sh runs it on every rendered overlay, and on one made to fail).
"""

import sys

import yaml

SERVER_SECRETS = {"musicrl-tls", "musicrl-reward-keys", "musicrl-tokens"}
WORKLOADS = ("Deployment", "StatefulSet", "Job", "DaemonSet")


def main(paths):
    bad, seen = [], 0
    for path in paths:
        for d in yaml.safe_load_all(open(path)):
            if not d or d.get("kind") not in WORKLOADS:
                continue
            spec = d["spec"]["template"]["spec"]
            words = {
                a
                for c in spec.get("containers", []) + spec.get("initContainers", [])
                for a in (c.get("args") or []) + (c.get("command") or [])
            }
            if "actor" not in words:
                continue
            seen += 1
            mounted = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
            projected = {
                s["secret"]["name"]
                for v in spec.get("volumes", [])
                if "projected" in v
                for s in v["projected"].get("sources", [])
                if "secret" in s
            }
            held = (mounted | projected) & SERVER_SECRETS
            if held:
                bad.append(f"{path}: {d['kind']}/{d['metadata']['name']} mounts {sorted(held)}")
    if bad:
        sys.exit("a client pod mounts a server's secret:\n  " + "\n  ".join(bad))
    if not seen:
        sys.exit("no actor workload in " + " ".join(paths))
    print(f"  {seen} actor workloads mount no server key, token table or reward key")


if __name__ == "__main__":
    main(sys.argv[1:])
