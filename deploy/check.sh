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
for k in overlays/cpu overlays/gpu monitoring/operator monitoring/grafana; do
  out="$work/$(echo "$k" | tr / -).yaml"
  kubectl kustomize "$k" > "$out"
  # --strict: misspelled or unknown fields fail. CRD kinds (PodMonitor, PrometheusRule) have
  # no bundled schema and only warn.
  kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$out"
  echo "  $k: $(grep -c '^kind:' "$out") objects valid"
done

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
  "$bin" local --steps "${SCRAPE_STEPS:-300}" --actors 2 --out runs/local > "$work/local.json" 2> "$work/local.log" &
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
