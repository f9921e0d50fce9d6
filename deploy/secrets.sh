#!/usr/bin/env bash
# Creates (or replaces) the Secrets the manifests mount, from `musicrl security init`:
#   musicrl-tls          tls.crt, tls.key, ca.crt   learner, reward servers: the server certificate
#                                                    (server auth only)
#   musicrl-client-tls   tls.crt, tls.key, ca.crt   actors: a client certificate (client auth only),
#                                                    so no actor can pose as a server
#                        (skip both with --no-tls when cert-manager issues them: components/cert-manager)
#   musicrl-tokens       tokens                      learner, reward servers ("ROLE TOKEN" lines)
#   musicrl-reward-keys  reward.keys                 learner, reward servers (never actors)
#   musicrl-actor-token  token                       actors
# and, for deploy/feedback (FEEDBACK_DB_URL=postgres://… deploy/secrets.sh DIR --feedback):
#   musicrl-feedback-db      url     the preference database URL (FEEDBACK_DB_URL; with
#                                    --postgres, the in-namespace StatefulSet's, with a new password)
#   musicrl-feedback-secret  secret  keys rater ids and CSRF tokens (random, 48 bytes)
#   musicrl-postgres         password  (--postgres only)
# Usage: deploy/secrets.sh DIR [--no-tls]   (DIR keeps the credentials; the operator and
# admin tokens in DIR are yours to keep safe). MUSICRL=path/to/musicrl, NAMESPACE=musicrl.
# Rotation: docs/operations.md, "Security".
set -euo pipefail
dir=${1:?usage: deploy/secrets.sh DIR [--no-tls] [--feedback [--postgres]]}
shift
tls="" feedback="" postgres=""
for a in "$@"; do
  case "$a" in
    --no-tls) tls=--no-tls ;;
    --feedback) feedback=1 ;;
    --postgres) postgres=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
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
  apply musicrl-client-tls --from-file=tls.crt="$dir/client.pem" --from-file=tls.key="$dir/client.key" \
    --from-file=ca.crt="$dir/ca.pem"
fi
apply musicrl-tokens --from-file=tokens="$dir/tokens"
apply musicrl-reward-keys --from-file=reward.keys="$dir/reward.keys"
apply musicrl-actor-token --from-file=token="$dir/actor.token"
if [ -n "$feedback" ]; then
  head -c 48 /dev/urandom | base64 > "$dir/feedback.secret"
  if [ -n "$postgres" ]; then
    head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$dir/postgres.password"
    apply musicrl-postgres --from-file=password="$dir/postgres.password"
    url="postgres://musicrl:$(cat "$dir/postgres.password")@musicrl-postgres:5432/musicrl"
  else
    url=${FEEDBACK_DB_URL:?set FEEDBACK_DB_URL to the preference database URL, or pass --postgres}
  fi
  printf '%s' "$url" > "$dir/feedback-db.url"
  apply musicrl-feedback-db --from-file=url="$dir/feedback-db.url"
  apply musicrl-feedback-secret --from-file=secret="$dir/feedback.secret"
fi
echo "Secrets created in namespace $ns; credentials kept in $dir"
