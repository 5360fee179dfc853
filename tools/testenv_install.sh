#!/usr/bin/env bash
# make testenv-install: install the real chart, with the image `make image` built and imported, into the running
# testenv (../shared/k8s-testenv with its node), and wait until the operator and webhook pods are Ready.
#
# It does what the README's install section tells a person to do, plus what a 1.20 test server needs and a real
# cluster does not:
#   - namespaces get the `kubernetes.io/metadata.name` label Kubernetes sets itself from 1.21 (the chart's webhooks
#     leave kube-system and the release namespace out by that label);
#   - CRDs carrying x-kubernetes-validations cannot be server-side applied before 1.25 ("field not declared in
#     schema"): there they are created or replaced, and helm installs with --skip-crds. From 1.25 helm installs them.
# helm installs with server-side apply, as users do. Env: KUBECONFIG, RELEASE (iotsec), NAMESPACE (iotsec-system),
# IMAGE (default: localhost/iotsec/iotsec:<version>, what `make image` builds), TIMEOUT (seconds, 300),
# SCAN_INTERVAL (the background scan's, 20s here so the deployed tests wait seconds, not the default 5 minutes),
# HELM_EXTRA (more helm flags).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "testenv-install: $*"; }
die() { echo "testenv-install: ERROR: $*" >&2; exit 1; }

BIN=${BIN:-.venv/bin}
export KUBECONFIG=${KUBECONFIG:-${IOTSEC_TESTENV:-/var/cache/iotsec-testenv}/run/kubeconfig}
RELEASE=${RELEASE:-iotsec}
NAMESPACE=${NAMESPACE:-iotsec-system}
TIMEOUT=${TIMEOUT:-300}
CHART=charts/iotsec-operator
KUBECTL="$BIN/kubectl"
HELM="$BIN/helm"

[ -x "$KUBECTL" ] && [ -x "$HELM" ] || die "no kubectl/helm in $BIN (make installs them)"
[ -f "$KUBECONFIG" ] || die "no kubeconfig at $KUBECONFIG: start the testenv first (../shared/k8s-testenv/start.sh)"
VERSION=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
IMAGE=${IMAGE:-localhost/iotsec/iotsec:$VERSION}  # what `make image` builds and imports
case "$IMAGE" in *@*|*:latest|*:) die "IMAGE $IMAGE: give a tag, not latest or a digest" ;; esac
REPOSITORY=${IMAGE%:*}
TAG=${IMAGE##*:}

ready_nodes=$("$KUBECTL" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l)
[ "$ready_nodes" -gt 0 ] || die "no Ready node: start it (../shared/k8s-testenv/node-start.sh)"

minor=$("$KUBECTL" version -o json 2>/dev/null | python3 -c 'import json,sys,re; print(re.sub(r"\D", "", json.load(sys.stdin)["serverVersion"]["minor"]))')
say "server 1.$minor, release $RELEASE in $NAMESPACE, image $IMAGE"

label_namespace() {
  "$KUBECTL" get namespace "$1" >/dev/null 2>&1 || "$KUBECTL" create namespace "$1" >/dev/null
  "$KUBECTL" label namespace "$1" "kubernetes.io/metadata.name=$1" --overwrite >/dev/null
}
if [ "$minor" -lt 21 ]; then
  for ns in kube-system kube-public kube-node-lease default "$NAMESPACE"; do label_namespace "$ns"; done
else
  "$KUBECTL" get namespace "$NAMESPACE" >/dev/null 2>&1 || "$KUBECTL" create namespace "$NAMESPACE" >/dev/null
fi

chart="$CHART"
if [ "$minor" -lt 27 ]; then
  # The chart's kubeVersion (>=1.27, what iotsec supports) refuses this test server; helm install has no flag to
  # override it. Install the same chart with only that gate widened, from a copy under build/.
  chart=build/chart-testenv/iotsec-operator
  rm -rf build/chart-testenv && mkdir -p build/chart-testenv && cp -r "$CHART" build/chart-testenv/
  sed -i 's/^kubeVersion:.*/kubeVersion: ">=1.20.0-0"  # testenv copy: see tools\/testenv_install.sh/' "$chart/Chart.yaml"
  say "installing a copy of the chart whose kubeVersion gate admits 1.$minor (nothing else differs)"
fi

crd_flags=()
if [ "$minor" -lt 25 ]; then
  say "CRDs by create/replace (this server cannot server-side apply CRDs with x-kubernetes-validations)"
  for crd in "$chart"/crds/*.yaml; do
    "$KUBECTL" create --validate=false -f "$crd" >/dev/null 2>&1 || "$KUBECTL" replace --validate=false -f "$crd" >/dev/null
  done
  crd_flags=(--skip-crds)
fi

# shellcheck disable=SC2086
"$HELM" upgrade --install "$RELEASE" "$chart" --namespace "$NAMESPACE" "${crd_flags[@]}" \
  --set image.repository="$REPOSITORY" --set image.tag="$TAG" --set image.pullPolicy=IfNotPresent \
  --set scan.interval="${SCAN_INTERVAL:-20s}" \
  --wait --timeout "${TIMEOUT}s" ${HELM_EXTRA:-} \
  || { "$KUBECTL" -n "$NAMESPACE" get pods -o wide >&2 || true; die "helm install did not become Ready"; }
if [ "$minor" -lt 21 ]; then label_namespace "$RELEASE-audit"; fi

# `make image` rebuilds under the same tag, so an upgrade leaves the template and the running pods as they were:
# restart the pods that do not run the image just built (build/iotsec-image.id), or the tests would judge old code.
built=$(cat build/iotsec-image.id 2>/dev/null || true)
for deployment in "$RELEASE-operator" "$RELEASE-webhook"; do
  running=$("$KUBECTL" -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$RELEASE,app.kubernetes.io/component=${deployment#"$RELEASE"-}" \
    -o jsonpath='{range .items[*]}{.status.containerStatuses[*].imageID}{"\n"}{end}' 2>/dev/null || true)
  if [ -n "$built" ] && echo "$running" | grep -v -q "$built"; then
    say "pods of $deployment run an older build of $IMAGE: restarting them"
    "$KUBECTL" -n "$NAMESPACE" rollout restart "deployment/$deployment" >/dev/null
  fi
done
for deployment in "$RELEASE-operator" "$RELEASE-webhook"; do
  "$KUBECTL" -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout="${TIMEOUT}s" >/dev/null \
    || die "deployment $deployment is not Ready: kubectl -n $NAMESPACE describe deployment $deployment"
done
say "operator and webhook Ready:"
"$KUBECTL" -n "$NAMESPACE" get pods -o wide
