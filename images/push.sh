#!/usr/bin/env bash
# Push the stage images (`make push REGISTRY=...`) under immutable tags and pin them by digest: each image
# built by images/build.sh is tagged REGISTRY/mangadistill-<stage>:<version>-<git commit>-<cpu|cuda> (from
# the labels build.sh set), pushed, and its registry digest written to the pins file, which
# `mangadistill compile --image-registry REGISTRY` and `mangadistill submit --image-registry REGISTRY` read.
# The checked-in YAML is never rewritten. Log in to REGISTRY first (docker login).
#   REGISTRY     target, e.g. europe-docker.pkg.dev/my-project/mangadistill (required)
#   PINS_FILE    where the pins go (default build/image-pins.json)
#   MANGADISTILL_IMAGE_REGISTRY  the registry the images were built under (default ghcr.io/mangaassist)
#   PYTHON       the project's interpreter (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
REGISTRY="${REGISTRY:?set REGISTRY, e.g. make push REGISTRY=europe-docker.pkg.dev/my-project/mangadistill}"
REGISTRY="${REGISTRY%/}"
PINS_FILE="${PINS_FILE:-build/image-pins.json}"

stages="$("$PYTHON" -c 'from mangadistill_components.images import STAGES, stage_image
for stage in STAGES: print(stage, stage_image(stage))')"
pins=()
tag=""
while read -r stage built; do
    if ! docker image inspect "$built" >/dev/null 2>&1; then
        echo "push.sh: $built is not built here; run images/build.sh (make images) first" >&2
        exit 1
    fi
    revision="$(docker image inspect --format '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$built")"
    flavor="$(docker image inspect --format '{{index .Config.Labels "io.mangadistill.flavor"}}' "$built")"
    tag="$(REVISION="$revision" FLAVOR="$flavor" "$PYTHON" -c 'import os
from mangadistill_components.images import build_tag
print(build_tag(os.environ["REVISION"], os.environ["FLAVOR"]))')"
    pushed="$REGISTRY/mangadistill-$stage:$tag"
    docker tag "$built" "$pushed"
    docker push "$pushed"
    digest="$(docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$pushed" \
        | grep -m1 "^$REGISTRY/mangadistill-$stage@sha256:")" \
        || { echo "push.sh: the registry returned no digest for $pushed" >&2; exit 1; }
    echo "pinned $stage: $digest"
    pins+=("$stage=$digest")
done <<< "$stages"

mkdir -p "$(dirname "$PINS_FILE")"
REGISTRY="$REGISTRY" TAG="$tag" "$PYTHON" - "${pins[@]}" > "$PINS_FILE" <<'PY'
import json, os, sys
images = dict(pin.split("=", 1) for pin in sys.argv[1:])
print(json.dumps({"registry": os.environ["REGISTRY"], "tag": os.environ["TAG"], "images": images}, indent=2))
PY
"$PYTHON" -c 'import sys
from mangadistill_components.images import load_pins
load_pins(sys.argv[1], sys.argv[2])' "$PINS_FILE" "$REGISTRY"
echo "wrote $PINS_FILE: mangadistill compile --image-registry $REGISTRY (or submit --image-registry $REGISTRY)"
