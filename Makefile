# The two commands of the README. Both create (once) and reuse a virtual environment in .venv,
# installing the package, the adapter distributions under adapters/, the example plugin and the
# test tools with torch/torchvision pinned by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pgm-installed
export HF_HUB_OFFLINE := 1
export PGM_DATA_DIR ?= $(abspath ../shared/data)
INSTALL_INPUTS := pyproject.toml constraints.txt $(wildcard adapters/*/pyproject.toml) \
                  $(wildcard adapters/*/install.sh) \
                  $(wildcard examples/*/pyproject.toml)

.PHONY: bench test lint setup clean wheel-check

bench: $(STAMP)  ## the main job: the quick transfer suite (arms x seeds) on embedded synthetic data
	$(VENV)/bin/pgm bench run quick --threads 2

test: $(STAMP)  ## ruff, mypy and pytest
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

setup: $(STAMP)

wheel-check: $(STAMP)  ## the wheel, installed with [bench] into a fresh venv, runs the main job elsewhere
	.ci/wheel-check

$(STAMP): $(INSTALL_INPUTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip "setuptools>=68" wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench,hf,lightning]'
	for d in adapters/*/ examples/*/; do \
	  if [ -x $$d/install.sh ]; then PY=$(abspath $(PY)) $$d/install.sh || exit 1; \
	  elif [ -f $$d/pyproject.toml ]; then $(PY) -m pip install -q -c constraints.txt --no-build-isolation -e $$d || exit 1; fi; \
	done
	touch $(STAMP)

clean:
	rm -rf $(VENV)
