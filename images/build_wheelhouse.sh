#!/usr/bin/env bash
# Fill images/.wheelhouse (git-ignored) with every wheel the image builds install, so `docker build` needs
# no network and no certificate or pip configuration ever enters a build context:
#   base/deps/     the pinned runtime closure (images/base/requirements.txt), the CPU torch wheel included
#                  (found through this pip's configured find-links), and that requirements.txt
#   base/project/  the mangadistill wheel, built from a clean copy of the sources
#   <stage>/       the stage's extra wheels (images/<stage>/requirements.txt) and that file; empty if none
# Downloads go through this machine's pip and its configuration. The dependency wheels are fetched again
# only when a requirements file changed; the project wheel is rebuilt every time (reproducibly: same
# sources, same bytes, so Docker's layer cache still hits).
#   PYTHON  a CPython 3.11 on linux x86_64, like the images' (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
WHEELHOUSE=images/.wheelhouse
mapfile -t STAGES < <("$PYTHON" -c 'from mangadistill_components.images import STAGES; print(*STAGES, sep="\n")')

platform="$("$PYTHON" -c 'import platform, sys
print(f"{sys.version_info.major}.{sys.version_info.minor}-{platform.system()}-{platform.machine()}")')"
if [ "$platform" != "3.11-Linux-x86_64" ]; then
    echo "build_wheelhouse.sh: $PYTHON is $platform; the images run CPython 3.11 on linux x86_64" >&2
    exit 1
fi

pip_wheel() { "$PYTHON" -m pip wheel --quiet --no-deps "$@" 2> >(grep -v "is ignored: it is neither" >&2); }

# $1 requirements file, $2 target folder: download its pinned wheels unless the same file was used last time
fetch_pinned() {
    local requirements="$1" target="$2"
    if [ -f "$target/requirements.txt" ] && cmp -s "$requirements" "$target/requirements.txt"; then
        return
    fi
    rm -rf "$target" && mkdir -p "$target"
    pip_wheel --wheel-dir "$target" -r "$requirements"
    cp "$requirements" "$target/requirements.txt"
}

fetch_pinned images/base/requirements.txt "$WHEELHOUSE/base/deps"
if ! ls "$WHEELHOUSE"/base/deps/torch-*+cpu-*.whl >/dev/null 2>&1; then
    echo "build_wheelhouse.sh: no CPU torch wheel in $WHEELHOUSE/base/deps; pip took a CUDA build" >&2
    exit 1
fi

source_copy="$(mktemp -d)"
trap 'rm -rf "$source_copy"' EXIT
cp -r pyproject.toml README.md src components pipelines "$source_copy/"
find "$source_copy" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$WHEELHOUSE/base/project" && mkdir -p "$WHEELHOUSE/base/project"
SOURCE_DATE_EPOCH=315532800 pip_wheel --wheel-dir "$WHEELHOUSE/base/project" "$source_copy"

for stage in "${STAGES[@]}"; do
    if [ -f "images/$stage/requirements.txt" ]; then
        fetch_pinned "images/$stage/requirements.txt" "$WHEELHOUSE/$stage"
    else
        rm -rf "${WHEELHOUSE:?}/$stage" && mkdir -p "$WHEELHOUSE/$stage"
    fi
done
du -sh "$WHEELHOUSE"/* | sed 's/^/wheelhouse: /'
