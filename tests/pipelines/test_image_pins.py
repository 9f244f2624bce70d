"""Images a cluster can trust: immutable build tags, pins by digest, pinned YAML written beside (never over) the
checked-in YAML."""

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from kfp import components

from mangadistill import __version__
from mangadistill_components.images import STAGES, build_tag, load_pins, pin_images, stage_image
from mangadistill_pipelines.cli import main
from mangadistill_pipelines.compile import compile_pinned

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = "europe-docker.pkg.dev/shop/mangadistill"


def _digest(stage: str) -> str:
    return hashlib.sha256(stage.encode()).hexdigest()


def write_pins(path: Path, registry: str = REGISTRY, images: dict | None = None) -> Path:
    images = images if images is not None else {
        stage: f"{registry}/mangadistill-{stage}@sha256:{_digest(stage)}" for stage in STAGES}
    path.write_text(json.dumps({"registry": registry, "tag": build_tag("0123456789ab", "cuda"), "images": images}))
    return path


def test_build_tags_name_the_version_the_commit_and_the_flavor():
    assert build_tag("0123456789ab", "cuda") == f"{__version__}-0123456789ab-cuda"
    assert build_tag("0123456789ab-dirty", "cpu") == f"{__version__}-0123456789ab-dirty-cpu"
    with pytest.raises(ValueError, match="flavor"):
        build_tag("0123456789ab", "rocm")
    with pytest.raises(ValueError, match="not a git commit"):
        build_tag("main", "cpu")


def test_bad_pins_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"no image pins; run `make push REGISTRY="):
        load_pins(tmp_path / "missing.json", REGISTRY)
    with pytest.raises(ValueError, match="pins are for registry"):
        load_pins(write_pins(tmp_path / "other.json", registry="ghcr.io/someone"), REGISTRY)
    good = json.loads(write_pins(tmp_path / "good.json").read_text())["images"]
    del good["gate-check"]
    good["quantization"] = f"{REGISTRY}/mangadistill-quantization:0.1.0"  # a tag, not a digest
    with pytest.raises(ValueError) as raised:
        load_pins(write_pins(tmp_path / "bad.json", images=good), REGISTRY)
    assert "no image for stage gate-check" in str(raised.value)
    assert "quantization: " in str(raised.value) and "@sha256:<64 hex>" in str(raised.value)


def test_compile_with_a_registry_pins_every_image_and_leaves_the_checked_in_yaml_alone(tmp_path):
    checked_in = sorted([*ROOT.glob("pipelines/*.yaml"), *ROOT.glob("components/*/*/component.yaml")])
    before = {path: path.read_bytes() for path in checked_in}
    pins = write_pins(tmp_path / "pins.json")
    code = main(["compile", "--image-registry", REGISTRY, "--image-pins", str(pins), "--out", str(tmp_path / "out")])
    assert code == 0
    assert {path: path.read_bytes() for path in checked_in} == before

    written = sorted((tmp_path / "out").rglob("*.yaml"))
    assert [path.relative_to(tmp_path / "out") for path in written] == [path.relative_to(ROOT) for path in checked_in]
    pinned = {f"{REGISTRY}/mangadistill-{stage}@sha256:{_digest(stage)}" for stage in STAGES}
    for path in written:
        images = {executor["container"]["image"]
                  for document in yaml.safe_load_all(path.read_text()) if document and "deploymentSpec" in document
                  for executor in document["deploymentSpec"]["executors"].values() if "container" in executor}
        assert images and images <= pinned, path
    component = components.load_component_from_file(str(tmp_path / "out/components/intent/gate_check/component.yaml"))
    assert component.component_spec.implementation.container.image in pinned


def test_an_image_without_a_pin_is_named():
    compiled = f"  image: {stage_image('gate-check')}\n  image: docker.io/library/busybox:1\n"
    pins = {"gate-check": f"{REGISTRY}/mangadistill-gate-check@sha256:{_digest('gate-check')}"}
    with pytest.raises(ValueError, match=r"x\.yaml: images without a pin: docker\.io/library/busybox:1"):
        pin_images(compiled, pins, "x.yaml")


def test_compile_pinned_refuses_before_writing_anything(tmp_path):
    with pytest.raises(ValueError, match="pins are for registry"):
        compile_pinned(tmp_path / "out", REGISTRY, write_pins(tmp_path / "pins.json", registry="ghcr.io/x"))
    assert not (tmp_path / "out").exists()
