"""The one setting that names the container image of each stage.

Tags derive from the package version (immutable tags: KFP's cache keys on the image string). The registry
comes from MANGADISTILL_IMAGE_REGISTRY at compile time; the checked-in YAML uses the default.
"""

import os

from mangadistill import __version__

DEFAULT_REGISTRY = "ghcr.io/mangaassist"
STAGES = (
    "teacher-labeling", "soft-label-ensemble", "distillation-training", "quantization", "gate-check",
    "response-dataset", "response-curation",
)


def stage_image(stage: str) -> str:
    """`<registry>/mangadistill-<stage>:<package version>`."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
    registry = os.environ.get("MANGADISTILL_IMAGE_REGISTRY", DEFAULT_REGISTRY).rstrip("/")
    return f"{registry}/mangadistill-{stage}:{__version__}"
