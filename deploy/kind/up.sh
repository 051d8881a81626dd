#!/usr/bin/env bash
# Creates a kind cluster with kuberaft on it: builds both images, loads them into the nodes,
# installs the operator with helm (or, without helm, from deploy/operator), applies the
# 3-member example and waits until `kubectl get raftclusters` shows a leader.
#
#   deploy/kind/up.sh            # from anywhere in the repository
#
# Environment: KIND_CLUSTER (default kuberaft), BASE_IMAGE (the images' runtime base, default
# the Dockerfiles'), HELM (default helm), SKIP_BUILD=1 to reuse images already built,
# TIMEOUT (seconds to wait for a leader, default 300).
set -euo pipefail

cd "$(dirname "$0")/../.."
CLUSTER="${KIND_CLUSTER:-kuberaft}"
HELM="${HELM:-helm}"
TIMEOUT="${TIMEOUT:-300}"
# The chart's appVersion is the operator's version, and so the tag of both images.
VERSION="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/kuberaft-operator/Chart.yaml)"
NODE_IMAGE="kuberaft-node:${VERSION}"
OPERATOR_IMAGE="kuberaft-operator:${VERSION}"

need() {
    command -v "$1" >/dev/null 2>&1 || { echo "up.sh: $1 is not on PATH; $2" >&2; exit 1; }
}
need docker "install Docker"
need kind "install kind (https://kind.sigs.k8s.io)"
need kubectl "install kubectl"

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "==> kind cluster $CLUSTER exists; reusing it"
else
    echo "==> creating kind cluster $CLUSTER (1 control plane, 3 workers)"
    kind create cluster --name "$CLUSTER" --config deploy/kind/kind-config.yaml
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

build_args=()
if [ -n "${BASE_IMAGE:-}" ]; then
    build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    echo "==> building $NODE_IMAGE and $OPERATOR_IMAGE"
    docker build ${build_args[@]+"${build_args[@]}"} -f deploy/docker/node.Dockerfile -t "$NODE_IMAGE" .
    docker build ${build_args[@]+"${build_args[@]}"} -f deploy/docker/operator.Dockerfile -t "$OPERATOR_IMAGE" .
fi
echo "==> loading the images into the kind nodes"
kind load docker-image --name "$CLUSTER" "$NODE_IMAGE" "$OPERATOR_IMAGE"

if command -v "$HELM" >/dev/null 2>&1; then
    echo "==> installing the operator with helm"
    "$HELM" upgrade --install kuberaft-operator charts/kuberaft-operator \
        --namespace kuberaft-system --create-namespace --wait --timeout 5m
else
    echo "==> helm not found (set HELM=...): installing the operator from deploy/operator"
    kubectl apply --server-side -f deploy/crds/
    kubectl wait --for condition=Established crd/raftclusters.kuberaft.io --timeout=60s
    kubectl apply --server-side -f deploy/operator/
    kubectl -n kuberaft-system rollout status deployment/kuberaft-operator --timeout=5m
fi

echo "==> applying the 3-member example (RaftCluster demo)"
kubectl apply -f deploy/examples/raftcluster-3.yaml

echo "==> waiting up to ${TIMEOUT}s for a leader"
deadline=$((SECONDS + TIMEOUT))
until leader="$(kubectl get raftcluster demo -o jsonpath='{.status.leader}' 2>/dev/null)" && [ -n "$leader" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "up.sh: no leader after ${TIMEOUT}s. What the cluster says:" >&2
        kubectl get raftcluster demo -o yaml >&2 || true
        kubectl get pods -l app.kubernetes.io/instance=demo -o wide >&2 || true
        kubectl -n kuberaft-system logs deployment/kuberaft-operator --tail=50 >&2 || true
        exit 1
    fi
    sleep 2
done
kubectl get raftclusters
echo
echo "Leader: $leader. Next:"
echo "  kubectl exec demo-0 -- raftctl put hello world"
echo "  kubectl delete pod $leader && kubectl get raftclusters -w"
echo "  deploy/kind/down.sh       # removes the kind cluster"
