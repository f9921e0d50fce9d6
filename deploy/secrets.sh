#!/usr/bin/env bash
# Creates (or replaces) the Secrets the manifests mount, from `musicrl security init`:
#   musicrl-tls          tls.crt, tls.key, ca.crt   every role (skip with --no-tls when
#                                                    cert-manager issues it: components/cert-manager)
#   musicrl-tokens       tokens                      learner, reward servers ("ROLE TOKEN" lines)
#   musicrl-reward-keys  reward.keys                 learner, reward servers (never actors)
#   musicrl-actor-token  token                       actors
# Usage: deploy/secrets.sh DIR [--no-tls]   (DIR keeps the credentials; the operator and
# admin tokens in DIR are yours to keep safe). MUSICRL=path/to/musicrl, NAMESPACE=musicrl.
# Rotation: docs/operations.md, "Security".
set -euo pipefail
dir=${1:?usage: deploy/secrets.sh DIR [--no-tls]}
tls=${2:-}
bin=${MUSICRL:-musicrl}
ns=${NAMESPACE:-musicrl}
names=()
for svc in musicrl-learner musicrl-reward-server musicrl-reward-server-headless; do
  names+=(--name "$svc" --name "$svc.$ns.svc")
done
"$bin" security init "$dir" "${names[@]}" > "$dir/security.toml"
apply() { kubectl -n "$ns" create secret generic "$@" --dry-run=client -o yaml | kubectl apply -f -; }
if [ "$tls" != "--no-tls" ]; then
  apply musicrl-tls --from-file=tls.crt="$dir/server.pem" --from-file=tls.key="$dir/server.key" \
    --from-file=ca.crt="$dir/ca.pem"
fi
apply musicrl-tokens --from-file=tokens="$dir/tokens"
apply musicrl-reward-keys --from-file=reward.keys="$dir/reward.keys"
apply musicrl-actor-token --from-file=token="$dir/actor.token"
echo "Secrets created in namespace $ns; credentials kept in $dir"
