#!/usr/bin/env bash
# Load images from the local Docker engine into the kind cluster's nodes (`make kind-load`). Pods then use
# them without pulling: a versioned tag gets imagePullPolicy IfNotPresent.
#   hack/kind-load-images.sh [IMAGE ...]   default: the five stage images as components/images.py names
#                                          them (build them first: make images)
#   KIND_CLUSTER_NAME   cluster name (default mangadistill)
#   PYTHON              the project's interpreter (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER="${KIND_CLUSTER_NAME:-mangadistill}"
PYTHON="${PYTHON:-.venv/bin/python}"
command -v kind >/dev/null || { echo "kind-load-images: kind not found on PATH" >&2; exit 1; }

images=("$@")
if [ "${#images[@]}" -eq 0 ]; then
    mapfile -t images < <("$PYTHON" -c 'from mangadistill_components.images import STAGES, stage_image
print("\n".join(map(stage_image, STAGES)))')
fi
for image in "${images[@]}"; do
    docker image inspect "$image" >/dev/null 2>&1 \
        || { echo "kind-load-images: $image is not in the local Docker engine (make images)" >&2; exit 1; }
done
kind load docker-image --name "$CLUSTER" "${images[@]}"
