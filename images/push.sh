#!/usr/bin/env bash
# Push the five stage images (`make push REGISTRY=...`): retag each image built by images/build.sh to
# REGISTRY (same name and version tag) and push it. Log in to REGISTRY first (docker login).
# Compile the pipelines against the same registry, or their YAML names the default one:
#   MANGADISTILL_IMAGE_REGISTRY=REGISTRY make compile
#   REGISTRY                     target, e.g. europe-docker.pkg.dev/my-project/mangadistill (required)
#   MANGADISTILL_IMAGE_REGISTRY  the registry the images were built under (default ghcr.io/mangaassist)
#   PYTHON                       the project's interpreter (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
REGISTRY="${REGISTRY:?set REGISTRY, e.g. make push REGISTRY=europe-docker.pkg.dev/my-project/mangadistill}"

# "<built tag> <pushed tag>" per stage, both from components/images.py
pairs="$(TARGET_REGISTRY="$REGISTRY" "$PYTHON" -c 'import os
from mangadistill_components.images import STAGES, stage_image
built = {stage: stage_image(stage) for stage in STAGES}
os.environ["MANGADISTILL_IMAGE_REGISTRY"] = os.environ["TARGET_REGISTRY"]
for stage in STAGES: print(built[stage], stage_image(stage))')"

while read -r built pushed; do
    if ! docker image inspect "$built" >/dev/null 2>&1; then
        echo "push.sh: $built is not built here; run images/build.sh (make images) first" >&2
        exit 1
    fi
    [ "$built" = "$pushed" ] || docker tag "$built" "$pushed"
    docker push "$pushed"
done <<< "$pairs"
