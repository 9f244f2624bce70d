#!/usr/bin/env bash
# Delete the local kind cluster (`make kind-down`); nothing to do when it does not exist.
#   KIND_CLUSTER_NAME   cluster name (default mangadistill)
set -euo pipefail
CLUSTER="${KIND_CLUSTER_NAME:-mangadistill}"
command -v kind >/dev/null || { echo "kind-down: kind not found on PATH" >&2; exit 1; }
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    kind delete cluster --name "$CLUSTER"
else
    echo "kind-down: no cluster named $CLUSTER"
fi
