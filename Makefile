# The doors a newcomer uses: make demo, make test (make docs, make bench, make lint).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: demo test test-fast lint docs bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,examples]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

# Which transfer strategy wins on the bundled Fashion-MNIST sample (200 images,
# ImageNet EfficientNet-Lite0 shipped offline, 3-fold CV), FineTunedClassifier()'s
# defaults included; each strategy at its own input size (224 px: no --input-size,
# which would apply to all). 20 per class x 3 folds keeps it near a minute on 2
# cores; report in demo-report/, the output in benchmarks/results/demo.txt.
demo: $(STAMP)
	MPLBACKEND=Agg $(PY) -m sktransfer compare fashion-mnist-sample \
		--model efficientnet_lite0 --per-class 20 --cv 3 --seed 0 \
		--out demo-report

test: $(STAMP)
	$(PY) -m pytest -n 2 $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check sktransfer tests benchmarks examples
	$(VENV)/bin/ruff format --check sktransfer tests benchmarks examples

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(MAKE) -C docs html SPHINXBUILD="$(abspath $(PY)) -m sphinx"

bench: $(STAMP)
	for f in benchmarks/*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf build dist *.egg-info demo-report docs/_build docs/auto_examples docs/generated docs/sg_execution_times.rst docs/_mathjax docs/_perf
