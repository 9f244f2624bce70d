#!/usr/bin/env bash
# A local kind cluster running KFP standalone (manifests/kfp, pinned to the kfp SDK's version) with the
# project's kind overlay applied after it (`make kind-up`). Idempotent: reuses the cluster when it exists and
# re-applies the manifests. Needs kind, kubectl, git (kustomize fetches the remote KFP base) and a Docker
# engine, and network access to github.com and the KFP images' registries.
#   KIND_CLUSTER_NAME   cluster name (default mangadistill); the kubectl context is kind-$KIND_CLUSTER_NAME
#   KIND_NODE_IMAGE     a kindest/node image (default: the one this kind release pins)
#   KFP_READY_TIMEOUT   how long to wait for KFP's deployments (default 20m)
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER_NAME:-mangadistill}"
CONTEXT="kind-$CLUSTER"
READY_TIMEOUT="${KFP_READY_TIMEOUT:-20m}"

for tool in kind kubectl git docker; do
    command -v "$tool" >/dev/null || { echo "kind-up: $tool not found on PATH" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "kind-up: no Docker engine reachable (docker info fails)" >&2; exit 1; }

if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    echo "kind-up: reusing cluster $CLUSTER"
else
    kind create cluster --name "$CLUSTER" --wait 180s ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
fi
kc() { kubectl --context "$CONTEXT" "$@"; }

# KFP step 1: CRDs and cluster roles; the CRDs must be established before step 2 creates objects of them.
kc apply -k manifests/kfp/cluster-scoped
kc wait --for condition=established --timeout=180s crd --all
# KFP step 2: the namespaced install. A first apply can race admission webhooks that are still starting.
for attempt in 1 2 3; do
    kc apply -k manifests/kfp && break
    [ "$attempt" = 3 ] && { echo "kind-up: applying manifests/kfp failed 3 times" >&2; exit 1; }
    sleep 20
done
# The project's run kit, after KFP: its kfp-launcher ConfigMap replaces the one KFP ships.
kc apply -k manifests/overlays/kind
kc -n kubeflow wait --for=condition=Available deployment --all --timeout="$READY_TIMEOUT"
echo "kind-up: KFP is ready in $CONTEXT"
echo "  API: kubectl --context $CONTEXT -n kubeflow port-forward svc/ml-pipeline 8888:8888"
