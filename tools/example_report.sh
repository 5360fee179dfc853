#!/usr/bin/env bash
# make example-report: the committed example conformance report (examples/report/), made on a live cluster where the
# chart runs (the testenv after `make image testenv-install`): the example platform and its conforming workloads are
# applied as a platform team would (through iotsec's webhook), the operator reconciles them and its background scan
# publishes its PolicyReports, then `iotsec report --cluster` writes the JSON document and the other formats are
# rendered from it (`iotsec report --document`), so all four say the same.
# Env: KUBECONFIG, BIN (.venv/bin), NAMESPACE (iotsec-system), TIMEOUT (seconds to wait for each step, 240).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "example-report: $*"; }
die() { echo "example-report: ERROR: $*" >&2; exit 1; }

BIN=${BIN:-.venv/bin}
export KUBECONFIG=${KUBECONFIG:-${IOTSEC_TESTENV:-/var/cache/iotsec-testenv}/run/kubeconfig}
NAMESPACE=${NAMESPACE:-iotsec-system}
TIMEOUT=${TIMEOUT:-240}
OUT=examples/report
KUBECTL="$BIN/kubectl"
IOTSEC="$BIN/iotsec"

"$KUBECTL" -n "$NAMESPACE" rollout status deployment/iotsec-operator --timeout=10s >/dev/null 2>&1 \
  || die "iotsec is not running in $NAMESPACE (make image testenv-install)"

say "applying examples/platform and examples/workloads/conforming"
if ! errors=$("$KUBECTL" apply -f examples/platform/ 2>&1 >/dev/null); then
  # The testenv's 1.20.2 build stores "" in a custom resource's string list as null and refuses it (README,
  # Development). There, and only there, each tenant rule on the core group is applied as the same verbs on batch
  # Jobs: a group the operator itself holds those verbs on, so granting it is no escalation (the report's RBAC
  # evidence then reads as on a real cluster).
  grep -q 'apiGroups in body must be of type string: "null"' <<<"$errors" || die "$errors"
  say "this API server refuses \"\" in custom resources: the tenants' core-group rules applied on batch/jobs"
  "$BIN/python" - examples/platform/20-tenants.yaml <<'PY' | "$KUBECTL" apply -f - >/dev/null
import sys, yaml
def moved(node):
    if isinstance(node, dict):
        if node.get("apiGroups") == [""]:
            return {**node, "apiGroups": ["batch"], "resources": ["jobs"]}
        return {k: moved(v) for k, v in node.items()}
    return [moved(v) for v in node] if isinstance(node, list) else node
print(yaml.safe_dump_all([moved(d) for d in yaml.safe_load_all(open(sys.argv[1])) if d], sort_keys=False))
PY
fi
if ! errors=$("$KUBECTL" apply -f examples/workloads/conforming/ 2>&1 >/dev/null); then
  # A server before 1.21 serves CronJob and PodDisruptionBudget only as v1beta1: those files again, at that version.
  failed=$(grep -o 'from "[^"]*": no matches for kind "\(CronJob\|PodDisruptionBudget\)"' <<<"$errors" | cut -d'"' -f2 | sort -u)
  [ -n "$failed" ] || die "$errors"
  say "this API server predates batch/v1 CronJob and policy/v1 PodDisruptionBudget: applied as v1beta1"
  for file in $failed; do
    sed -e 's#^apiVersion: batch/v1$#apiVersion: batch/v1beta1#' -e 's#^apiVersion: policy/v1$#apiVersion: policy/v1beta1#' \
      "$file" | "$KUBECTL" apply --validate=false -f - >/dev/null  # a field it does not know (timeZone) is dropped
  done
fi

ready() {  # every iotsec custom resource's Ready condition (True or False: the report says which) is of its spec now
  "$KUBECTL" get securitydomains,tenantisolations,auditpolicies,backuppolicies -A -o json | python3 -c '
import json, sys
def current(item):
    status = item.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    seen = status.get("observedGeneration", ready[0].get("observedGeneration") if ready else None)
    return bool(ready) and seen == item["metadata"].get("generation")
print(all(current(i) for i in json.load(sys.stdin)["items"]))'
}
scanned() {  # the background scan published a report in every namespace the conforming workloads use
  local want have
  want=$(grep -h '^  namespace:' examples/workloads/conforming/*.yaml | awk '{print $2}' | sort -u)
  have=$("$KUBECTL" get policyreports -A -l app.kubernetes.io/managed-by=iotsec -o jsonpath='{range .items[*]}{.metadata.namespace}{"\n"}{end}')
  for ns in $want; do grep -qx "$ns" <<<"$have" || { echo False; return; }; done
  echo True
}
wait_for() {
  local what=$1 check=$2 deadline=$((SECONDS + TIMEOUT))
  until [ "$($check)" = True ]; do
    [ $SECONDS -lt $deadline ] || die "$what not reached within ${TIMEOUT}s"
    sleep 5
  done
  say "$what"
}
wait_for "every custom resource reconciled (Ready condition written)" ready
wait_for "background scan reports published" scanned

mkdir -p "$OUT"
"$IOTSEC" report --cluster -o json --output-file "$OUT/report.json"
for format in markdown:report.md html:report.html text:report.txt; do
  "$IOTSEC" report --document "$OUT/report.json" -o "${format%%:*}" --output-file "$OUT/${format#*:}"
done
say "wrote $OUT/report.json, report.md, report.html, report.txt"
head -n 3 "$OUT/report.txt"
