#!/usr/bin/env bash
# Offline checks of everything in deploy/: renders every kustomization and validates it
# against the Kubernetes schemas, checks the alert rules and scrape configs with promtool,
# syntax-checks every dashboard query, and (with --scrape BIN) has a real Prometheus scrape a
# short `musicrl local` run and query the learner's step counter.
# Needs: kubectl (kustomize built in), kubernetes-validate (PyPI), promtool and prometheus
# (Debian's prometheus package), python3 with PyYAML.
set -euo pipefail
mode=${1:-}
bin=""
if [ "$mode" = "--scrape" ]; then
  bin=$(realpath "${2:?usage: deploy/check.sh [--scrape path/to/musicrl]}")
fi
cd "$(dirname "$0")"
K8S_VERSION=${K8S_VERSION:-1.31.0}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== kustomize render + schema validation (Kubernetes $K8S_VERSION) =="
for k in overlays/cpu overlays/cpu-fixed overlays/gpu overlays/musicgen overlays/cpu-cert-manager monitoring/operator monitoring/grafana \
         monitoring/adapter jobs/rl-r jobs/rl-u jobs/rl-ru jobs/joint jobs/experiment \
         feedback/base feedback/postgres; do
  out="$work/$(echo "$k" | tr / -).yaml"
  kubectl kustomize "$k" > "$out"
  # --strict: misspelled or unknown fields fail. CRD kinds (PodMonitor, PrometheusRule) have
  # no bundled schema and only warn.
  kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"
  echo "  $k: $(grep -c '^kind:' "$out") objects valid"
done

echo "== security: Secrets per role, TLS URLs, probes on the plaintext health ports =="
python3 - "$work/overlays-cpu.yaml" "$work/overlays-cpu-cert-manager.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def workload(component):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["labels"].get("app.kubernetes.io/component") == component:
            return d["spec"]["template"]["spec"]
    sys.exit(f"no {component} workload")
def secrets(spec):
    return {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
def env(spec):
    return {e["name"]: e.get("value") for e in spec["containers"][0].get("env", [])}
for role, health in [("learner", 50061), ("reward-server", 50062)]:
    spec = workload(role)
    assert secrets(spec) == {"musicrl-tls", "musicrl-tokens", "musicrl-reward-keys"}, (role, secrets(spec))
    e = env(spec)
    for k in ["TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "TOKENS_FILE", "REWARD_KEYS_FILE"]:
        assert e.get(f"MUSICRL__SECURITY__{k}"), (role, k)
    c = spec["containers"][0]
    for probe in ["readinessProbe", "livenessProbe"]:
        assert c[probe]["grpc"]["port"] == health, (role, probe)
spec = workload("actor")
assert secrets(spec) == {"musicrl-client-tls", "musicrl-actor-token"}, ("actors hold their own client certificate and token, never the servers' key or the reward keys", secrets(spec))
e = env(spec)
assert e["MUSICRL__ACTOR__LEARNER"].startswith("https://") and e["MUSICRL__ACTOR__REWARD"].startswith("https://"), e
assert workload("learner")["containers"][0]["readinessProbe"]["grpc"]["service"] == "musicrl.v1.LearnerService"
cm = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d and d["kind"] == "Certificate" and d["metadata"]["name"] == "musicrl-tls"]
assert cm and cm[0]["spec"]["secretName"] == "musicrl-tls", "cert-manager issues musicrl-tls"
assert "server auth" in cm[0]["spec"]["usages"] and "client auth" not in cm[0]["spec"]["usages"], cm[0]["spec"]["usages"]
assert {"musicrl-learner", "musicrl-reward-server-headless"} <= set(cm[0]["spec"]["dnsNames"])
client = [d for d in yaml.safe_load_all(open(sys.argv[2])) if d and d["kind"] == "Certificate" and d["metadata"]["name"] == "musicrl-client-tls"]
assert client and "client auth" in client[0]["spec"]["usages"] and "server auth" not in client[0]["spec"]["usages"], "cert-manager issues a client-only musicrl-client-tls"
print("  learner, reward server: TLS + tokens + reward keys; actors: their own client certificate + token, https URLs; probes on health ports; cert-manager issues musicrl-tls (server) and musicrl-client-tls (client)")
PY

echo "== no client pod mounts a server's private key =="
python3 check_key_mounts.py "$work"/*.yaml
# The check refuses the mistake it is for: the cpu overlay with the actors mounting musicrl-tls.
mkdir -p "$work/bad-mount"
cp -r . "$work/bad-mount/deploy"
sed -i 's/secretName: musicrl-client-tls/secretName: musicrl-tls/' "$work/bad-mount/deploy/base/actor/deployment.yaml"
kubectl kustomize "$work/bad-mount/deploy/overlays/cpu" > "$work/bad-mount/cpu.yaml"
if python3 check_key_mounts.py "$work/bad-mount/cpu.yaml" > "$work/bad-mount/out.txt" 2>&1; then
  echo "check_key_mounts.py passed an overlay whose actors mount musicrl-tls" >&2; exit 1
fi
grep -q "mounts \['musicrl-tls'\]" "$work/bad-mount/out.txt"
echo "  and it refuses the cpu overlay with the actors mounting musicrl-tls"

echo "== each overlay renders the image it should =="
python3 - "$work" <<'PY'
import sys, yaml, pathlib
work = pathlib.Path(sys.argv[1])
def images(name):
    out = {}
    for doc in yaml.safe_load_all(open(work / f"{name}.yaml")):
        if not doc or doc["kind"] not in ("Deployment", "StatefulSet", "Job"):
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec["containers"]:
            out[f'{doc["kind"]}/{doc["metadata"]["name"]}/{c["name"]}'] = c["image"]
    return out
cpu, gpu, fixed = images("overlays-cpu"), images("overlays-gpu"), images("overlays-cpu-fixed")
assert cpu and all(i == "musicrl:0.1.0" for i in cpu.values()), cpu
assert fixed == cpu, "cpu-fixed renders the cpu overlay's images"
for where, image in gpu.items():
    want = "musicrl:0.1.0" if ("reward-server" in where or "models-seed" in where) else "musicrl:0.1.0-cuda"
    assert image == want, f"gpu overlay: {where} has {image}, expected {want}"
for job in ("rl-r", "rl-u", "rl-ru", "joint", "experiment"):
    assert set(images(f"jobs-{job}").values()) == {"musicrl:0.1.0"}, job
print(f"  cpu: {len(cpu)} containers on musicrl:0.1.0; gpu: learner and actors on -cuda, reward server and seed on the CPU image; recipe jobs on musicrl:0.1.0")
def docs(name):
    return [d for d in yaml.safe_load_all(open(work / f"{name}.yaml")) if d]
# The GPU pods ask for their device by key; nothing sets the retired MUSICRL_DEVICE.
for name in ("overlays-cpu", "overlays-gpu"):
    for d in docs(name):
        if d["kind"] in ("Deployment", "StatefulSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                assert "MUSICRL_DEVICE" not in env, (name, d["metadata"]["name"])
                if name == "overlays-gpu" and c["name"] in ("learner", "actor"):
                    assert env.get(f"MUSICRL__{c['name'].upper()}__DEVICE") == "cuda:0", (c["name"], env)
# Fixed-count mode has no autoscalers; the autoscaled overlays scale on training signals.
assert not [d for d in docs("overlays-cpu-fixed") if d["kind"] == "HorizontalPodAutoscaler"]
hpas = {d["metadata"]["name"]: d for d in docs("overlays-gpu") if d["kind"] == "HorizontalPodAutoscaler"}
names = {n: [m.get("pods", m.get("external", {})).get("metric", {}).get("name") for m in h["spec"]["metrics"]] for n, h in hpas.items()}
assert names == {"musicrl-actor": ["musicrl_learner_actor_demand"], "musicrl-reward-server": ["musicrl_reward_inflight_requests"]}, names
assert hpas["musicrl-actor"]["spec"]["maxReplicas"] <= 4, "GPU actors are a budget"
print("  devices by key on GPU pods; no HPA in cpu-fixed; HPAs on learner demand and reward queue depth")
PY

echo "== the musicgen overlay: GPUs, scorers with probes and resources, a configuration that fits =="
python3 - "$work/overlays-musicgen.yaml" <<'PY'
import sys, tomllib, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def named(kind, name):
    hits = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name)]
    assert hits, f"no {kind} {name}"
    return hits[0]
# The learner, the actors and the reward server: the CUDA image, one GPU, the device by key.
for kind, name, key in [("StatefulSet", "musicrl-learner", "LEARNER"), ("Deployment", "musicrl-actor", "ACTOR"),
                        ("Deployment", "musicrl-reward-server", "REWARD")]:
    spec = named(kind, name)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["image"] == "musicrl:0.1.0-cuda", (name, c["image"])
    assert c["resources"]["limits"].get("nvidia.com/gpu") == 1, (name, c["resources"])
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env.get(f"MUSICRL__{key}__DEVICE") == "cuda:0", (name, env)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, name
    wait = " ".join(spec["initContainers"][0]["command"])
    assert "models/musicgen-small/model.safetensors" in wait, (name, "waits for the model folder")
# The configuration: MusicGen heard through its codec by the two scorers the overlay runs.
cm = named("ConfigMap", "musicrl-config")
config = tomllib.loads(cm["data"]["musicrl.toml"])
assert config["policy"]["family"] == "musicgen" and config["reward"]["codec"] == "", config["policy"]
services = {d["metadata"]["name"]: {p["port"] for p in d["spec"]["ports"]} for d in docs if d["kind"] == "Service"}
scorers = {d["spec"]["template"]["metadata"]["labels"]["musicrl/scorer"]: d for d in docs
           if d["kind"] == "Deployment" and d["metadata"]["labels"].get("app.kubernetes.io/component") == "scorer"}
assert set(scorers) == {"clap", "aesthetics"}, set(scorers)
heard = []
for comp in config["reward"]["components"]:
    assert comp["kind"] == "remote" and comp["send_audio"], comp
    host, port = comp["endpoint"].removeprefix("http://").split(":")
    assert int(port) in services.get(host, set()), f"{comp['name']}: {comp['endpoint']} is no Service port of the overlay"
    heard.append((comp["remote_component"], comp["sample_rate"]))
assert heard == [("clap", 48000), ("PQ", 16000)], heard
for name, d in scorers.items():
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    port = c["ports"][0]["containerPort"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, (name, probe)
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], (name, "resources")
    assert c["image"] == "musicrl-scorer:0.1.0", (name, c["image"])
    assert f"--listen 0.0.0.0:{port}" in c["args"][0] and "/var/lib/musicrl-models/models/rewards/" in c["args"][0], name
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"].get("readOnly") is True, name
policy = named("NetworkPolicy", "musicrl-scorers")["spec"]
assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "reward-server"
loader = named("Deployment", "musicrl-models-loader")
assert loader["spec"]["replicas"] == 0 and not loader["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0].get("readOnly")
size = named("PersistentVolumeClaim", "musicrl-models")["spec"]["resources"]["requests"]["storage"]
assert size.endswith("Gi") and int(size[:-2]) >= 32, size
print(f"  learner, actors, reward server on -cuda with a GPU each; scorers {sorted(scorers)} with gRPC probes, resources and only the reward server as client; models volume {size}, loader at 0 replicas")
PY

echo "== setting the registry as docs/operations.md says keeps each overlay's image =="
cp -r . "$work/deploy-copy"
( cd "$work/deploy-copy/overlays/cpu" && sed -i 's#newName: musicrl$#newName: registry.example/ml/musicrl#' kustomization.yaml )
( cd "$work/deploy-copy/overlays/gpu" && sed -i 's#newName: musicrl$#newName: registry.example/ml/musicrl#' kustomization.yaml )
kubectl kustomize "$work/deploy-copy/overlays/gpu" > "$work/gpu-registry.yaml"
kubectl kustomize "$work/deploy-copy/overlays/cpu" > "$work/cpu-registry.yaml"
grep -q 'image: registry.example/ml/musicrl:0.1.0-cuda' "$work/gpu-registry.yaml"
! grep 'image:' "$work/cpu-registry.yaml" | grep -v 'registry.example/ml/musicrl:0.1.0$'
echo "  both overlays render REGISTRY/musicrl with their own tags"

echo "== Prometheus adapter rules =="
python3 - "$work/adapter-rules.yml" <<'PY'
import sys, yaml
c = yaml.safe_load(open("monitoring/adapter/config.yaml"))
exprs = []
for r in c["rules"] + c["externalRules"]:
    series = r["seriesQuery"].split("{")[0].strip("'")
    q = r["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", 'namespace="musicrl"').replace("<<.GroupBy>>", "namespace")
    exprs.append(q)
rules = yaml.safe_load(open("prometheus/rules.yml"))
recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
assert "musicrl:learner_actor_demand:ratio" in recorded, "the adapter's external series is recorded"
yaml.safe_dump({"groups": [{"name": "adapter", "rules": [{"record": f"musicrl:adapter_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}, open(sys.argv[1], "w"))
print(f"  {len(exprs)} adapter queries")
PY
promtool check rules "$work/adapter-rules.yml" >/dev/null
echo "  every adapter query parses"

echo "== alert rules =="
promtool check rules prometheus/rules.yml
python3 - <<'PY'
import yaml, sys
rules = yaml.safe_load(open("prometheus/rules.yml"))
cr = yaml.safe_load(open("monitoring/operator/prometheusrule.yaml"))
if cr["spec"] != rules:
    sys.exit("monitoring/operator/prometheusrule.yaml's spec differs from prometheus/rules.yml")
print("  PrometheusRule spec == prometheus/rules.yml")
PY

echo "== scrape configs =="
promtool check config prometheus/prometheus-local.yml
# Debian's Prometheus is built without Kubernetes service discovery, so promtool here cannot
# load prometheus.yml; check its structure and its rule file instead.
python3 - <<'PY'
import yaml, sys
c = yaml.safe_load(open("prometheus/prometheus.yml"))
job = c["scrape_configs"][0]
assert job["job_name"] == "musicrl" and job["kubernetes_sd_configs"][0]["role"] == "pod", job
assert any(r.get("target_label") == "role" for r in job["relabel_configs"]), "role label"
assert c["rule_files"] == ["rules.yml"]
print("  prometheus/prometheus.yml: structure ok")
PY

echo "== dashboard queries =="
python3 - "$work/dashboard-rules.yml" <<'PY'
import json, sys, yaml
d = json.load(open("monitoring/grafana/musicrl-dashboard.json"))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert exprs, "no queries"
rules = [{"record": f"musicrl:dashboard_query_{i}", "expr": e.replace("$__rate_interval", "1m")} for i, e in enumerate(exprs)]
yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, open(sys.argv[1], "w"))
print(f"  {len(exprs)} queries")
PY
promtool check rules "$work/dashboard-rules.yml" >/dev/null
echo "  every dashboard query parses"

if [ "$mode" = "--scrape" ]; then
  echo "== a real Prometheus scrapes musicrl local =="
  "$bin" --config base/config/musicrl.toml config > /dev/null
  echo "  deploy/base/config/musicrl.toml is a valid musicrl configuration"
  cd ..
  "$bin" local --steps "${SCRAPE_STEPS:-300}" --actors 2 --overwrite --out runs/local > "$work/local.json" 2> "$work/local.log" &
  local_pid=$!
  for _ in $(seq 1 600); do [ -f runs/local/prometheus-targets.json ] && break; sleep 0.1; done
  [ -f runs/local/prometheus-targets.json ] || { cat "$work/local.log"; echo "no targets file"; exit 1; }
  prometheus --config.file=deploy/prometheus/prometheus-local.yml \
    --storage.tsdb.path="$work/tsdb" --web.listen-address=127.0.0.1:19090 \
    > "$work/prometheus.log" 2>&1 &
  prom_pid=$!
  trap 'kill $prom_pid 2>/dev/null || true; kill $local_pid 2>/dev/null || true; rm -rf "$work"' EXIT
  wait "$local_pid" || { cat "$work/local.log"; exit 1; }
  sleep 3
  query() {
    python3 - "$1" <<'PY'
import json, sys, urllib.parse, urllib.request
q = urllib.parse.quote(sys.argv[1])
r = json.load(urllib.request.urlopen(f"http://127.0.0.1:19090/api/v1/query?query={q}"))
res = r["data"]["result"]
print(res[0]["value"][1] if res else "none")
PY
  }
  steps=$(query 'max(max_over_time(musicrl_learner_steps_total{role="learner"}[10m]))')
  actors=$(query 'count(count_over_time(musicrl_actor_samples_total{role="actor"}[10m]))')
  echo "  Prometheus saw musicrl_learner_steps_total = $steps from the learner, samples from $actors actors"
  python3 -c "import sys; s='$steps'; sys.exit(0 if s != 'none' and float(s) > 0 else 1)" \
    || { tail -20 "$work/prometheus.log"; echo "the learner's step counter was not scraped"; exit 1; }
fi
echo "deploy checks passed"
