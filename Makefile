# The two commands of the README. Both create (once) and reuse a virtual environment in .venv,
# installing the package, the adapter distributions under adapters/, the example plugin and the
# test tools with torch/torchvision pinned by constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pgm-installed
SETUP_LOG := $(VENV)/setup.log
# QUIET CMD...: run CMD with its output appended to $(SETUP_LOG); on failure show that log
QUIET = sh -c 'log="$$1"; shift; "$$@" >>"$$log" 2>&1 || { s=$$?; cat "$$log" >&2; \
        echo "make setup: failed: $$* (full output above and in $$log)" >&2; exit $$s; }' quiet $(SETUP_LOG)
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

# pip's and the build backends' chatter goes to $(SETUP_LOG); a failing step prints it whole.
$(STAMP): $(INSTALL_INPUTS)
	@echo "make setup: installing into $(VENV) (about 2 minutes; pip's output: $(SETUP_LOG))"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@: > $(SETUP_LOG)
	@$(QUIET) $(PY) -m pip install -q --disable-pip-version-check --upgrade pip "setuptools>=68" wheel
	@$(QUIET) $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,bench,hf,lightning,ray]'
	@for d in adapters/*/ examples/*/; do \
	  if [ -x $$d/install.sh ]; then $(QUIET) env PY=$(abspath $(PY)) $$d/install.sh || exit 1; \
	  elif [ -f $$d/pyproject.toml ]; then $(QUIET) $(PY) -m pip install -q --disable-pip-version-check -c constraints.txt --no-build-isolation -e $$d || exit 1; fi; \
	done
	@touch $(STAMP)
	@echo "make setup: done"

clean:
	rm -rf $(VENV)
