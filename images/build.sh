#!/usr/bin/env bash
# Build the base image(s) and the stage images (`make images`), tagged exactly as
# components/images.py stage_image(stage) names them: <registry>/mangadistill-<stage>:<package version>,
# the registry from MANGADISTILL_IMAGE_REGISTRY (default ghcr.io/mangaassist), and labelled with the git
# commit and the flavor, from which `make push` makes the immutable tag <version>-<commit>-<flavor>.
#
#   IMAGE_FLAVOR=cpu   (default; local and CI) every stage FROM one base built on CPU_BASE_IMAGE.
#   IMAGE_FLAVOR=cuda  (production) teacher-labeling, distillation-training and quantization FROM a base
#                      built on CUDA_BASE_IMAGE; soft-label-ensemble and gate-check, which need no CUDA,
#                      FROM the CPU base (a CPU torch: a far smaller image).
#   CPU_BASE_IMAGE     default mangadistill-cpu-base:bookworm, made by images/build_cpu_base.sh if missing
#   CUDA_BASE_IMAGE    default pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime (pinned: its torch must be
#                      the 2.13.0 of images/base/requirements.txt, its Python 3.11)
#   PYTHON             the project's interpreter (default .venv/bin/python)
# Needs a Docker engine (images/start_docker.sh). Builds run with --network none: the wheelhouse
# (images/build_wheelhouse.sh, run first) is the only source of packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
IMAGE_FLAVOR="${IMAGE_FLAVOR:-cpu}"
DEFAULT_CPU_BASE_IMAGE=mangadistill-cpu-base:bookworm
CPU_BASE_IMAGE="${CPU_BASE_IMAGE:-$DEFAULT_CPU_BASE_IMAGE}"
CUDA_BASE_IMAGE="${CUDA_BASE_IMAGE:-pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime}"
WHEELHOUSE=images/.wheelhouse
# the base each stage starts from on the production (cuda) flavor
declare -A STAGE_DEVICE=(
    [teacher-labeling]=cuda [soft-label-ensemble]=cpu [distillation-training]=cuda
    [quantization]=cuda [gate-check]=cpu [response-dataset]=cpu [response-curation]=cpu
)

case "$IMAGE_FLAVOR" in
    cpu | cuda) ;;
    *) echo "build.sh: IMAGE_FLAVOR must be cpu or cuda, got '$IMAGE_FLAVOR'" >&2; exit 1 ;;
esac
if ! docker info >/dev/null 2>&1; then
    echo "build.sh: no Docker engine reachable (run images/start_docker.sh as root)" >&2
    exit 1
fi

version="$("$PYTHON" -c 'from mangadistill import __version__; print(__version__)')"
# the commit the images are built from (make push tags them <version>-<revision>-<flavor>)
revision="$(git rev-parse --short=12 HEAD 2>/dev/null || echo 0000000)"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || revision="$revision-dirty"
# "<stage> <tag>" lines, from the one place that names the images
stage_tags="$("$PYTHON" -c 'from mangadistill_components.images import STAGES, stage_image
for stage in STAGES: print(stage, stage_image(stage))')"
declare -A BASE_TAG=([cpu]="mangadistill-base-cpu:$version" [cuda]="mangadistill-base-cuda:$version")
built=()

# $1 tag, $2 Dockerfile, $3 context, then extra docker build arguments
build_image() {
    local tag="$1" dockerfile="$2" context="$3" started=$SECONDS
    shift 3
    docker build --network none --label "org.opencontainers.image.version=$version" \
        --label "org.opencontainers.image.revision=$revision" --label "io.mangadistill.flavor=$IMAGE_FLAVOR" \
        -t "$tag" -f "$dockerfile" "$@" "$context"
    echo "built $tag in $((SECONDS - started)) s"
    built+=("$tag")
}

images/build_wheelhouse.sh
if [ "$CPU_BASE_IMAGE" = "$DEFAULT_CPU_BASE_IMAGE" ]; then
    CPU_BASE_IMAGE="$CPU_BASE_IMAGE" images/build_cpu_base.sh
fi
build_image "${BASE_TAG[cpu]}" images/base/Dockerfile "$WHEELHOUSE/base" \
    --build-arg "BASE_IMAGE=$CPU_BASE_IMAGE"
if [ "$IMAGE_FLAVOR" = cuda ]; then
    build_image "${BASE_TAG[cuda]}" images/base/Dockerfile "$WHEELHOUSE/base" \
        --build-arg "BASE_IMAGE=$CUDA_BASE_IMAGE"
fi

while read -r stage tag; do
    device="${STAGE_DEVICE[$stage]:?no base chosen for stage $stage in images/build.sh}"
    [ "$IMAGE_FLAVOR" = cpu ] && device=cpu
    build_image "$tag" "images/$stage/Dockerfile" "$WHEELHOUSE/$stage" --build-arg "BASE=${BASE_TAG[$device]}"
done <<< "$stage_tags"

echo
for tag in "${built[@]}"; do
    echo "$tag  $(($(docker image inspect --format '{{.Size}}' "$tag") / 1000000)) MB"
done
