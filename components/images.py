"""The one setting that names the container image of each stage, and how a cluster pins them.

The checked-in YAML names `<registry>/mangadistill-<stage>:<package version>` (registry from
MANGADISTILL_IMAGE_REGISTRY at compile time, default ghcr.io/mangaassist): what `make images` builds locally and
kind loads. A cluster runs images pinned by digest instead: `make push REGISTRY=REG` pushes each stage under the
immutable tag `<version>-<git sha>-<cpu|cuda>` and writes a pins file, {"registry", "tag", "images": {stage:
"REG/mangadistill-<stage>@sha256:<digest>"}}, which `mangadistill compile --image-registry REG` and `submit
--image-registry REG` read (`pipelines/compile.py`), leaving the checked-in YAML alone.
"""

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from mangadistill import __version__

DEFAULT_REGISTRY = "ghcr.io/mangaassist"
STAGES = (
    "teacher-labeling", "soft-label-ensemble", "distillation-training", "quantization", "gate-check",
    "response-dataset", "response-curation",
)
FLAVORS = ("cpu", "cuda")
DEFAULT_PINS_FILE = Path(__file__).resolve().parent.parent / "build" / "image-pins.json"
IMAGE_LINE = re.compile(r"^\s*image: (\S+)\s*$", re.MULTILINE)
_DIGEST_REF = re.compile(r"^[a-z0-9.:/_-]+/mangadistill-(?P<stage>[a-z-]+)@sha256:[0-9a-f]{64}$")


def stage_image(stage: str) -> str:
    """`<registry>/mangadistill-<stage>:<package version>`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
    registry = os.environ.get("MANGADISTILL_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/mangadistill-{stage}:{__version__}"


def build_tag(git_sha: str, flavor: str) -> str:
    """`<package version>-<git sha>-<cpu|cuda>`: the tag a build is pushed under (one per code and flavor)."""
    if flavor not in FLAVORS:
        raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
    if not re.fullmatch(r"[0-9a-f]{7,40}(-dirty)?", git_sha):
        raise ValueError(f"{git_sha!r} is not a git commit id")
    return f"{__version__}-{git_sha}-{flavor}"


def load_pins(path: str | Path, registry: str) -> dict[str, str]:
    """{stage: REG/mangadistill-<stage>@sha256:...} from a pins file written by `make push REGISTRY=registry`;
    ValueError naming the file when it is missing, for another registry, or lacks a stage or a digest."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no image pins; run `make push REGISTRY={registry}` first (it pushes the stage "
                         "images and writes this file)")
    pins = json.loads(path.read_text())
    if pins.get("registry", "").rstrip("/") != registry.rstrip("/"):
        raise ValueError(f"{path}: pins are for registry {pins.get('registry')!r}, not {registry!r}")
    images = pins.get("images", {})
    problems = [f"no image for stage {stage}" for stage in STAGES if stage not in images]
    for stage, ref in images.items():
        match = _DIGEST_REF.match(str(ref))
        if not match or match["stage"] != stage or not ref.startswith(registry.rstrip("/") + "/"):
            problems.append(f"{stage}: {ref!r} is not {registry}/mangadistill-{stage}@sha256:<64 hex>")
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}")
    return {stage: images[stage] for stage in STAGES}


def pin_images(compiled: str, pins: Mapping[str, str], source: str) -> str:
    """The compiled YAML with each stage image (`images.stage_image`) replaced by its pinned reference; a
    ValueError names `source` if any other image is left."""
    for stage, reference in pins.items():
        compiled = compiled.replace(stage_image(stage), reference)
    unpinned = sorted({image for image in IMAGE_LINE.findall(compiled) if image not in pins.values()})
    if unpinned:
        raise ValueError(f"{source}: images without a pin: {', '.join(unpinned)}")
    return compiled
