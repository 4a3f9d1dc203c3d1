# The two commands of the README:
#   make demo   install, then run the whole chain that exists on embedded synthetic data (CPU)
#   make test   install, then run the test suite (CPU; GPU tests skip without a GPU)
#   make test-fresh   what CI does: a fresh clone of HEAD, installed from nothing, runs .ci/run
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup demo test test-fresh lint lock
setup:
	./scripts/setup.sh

demo: setup
	$(PY) launch/demo.py

test: setup
	$(PY) -m pytest -q -n 2 --timeout 900 --durations 10 tests

test-fresh:
	./scripts/test_fresh.sh

lock:
	./scripts/lock.sh

lint: setup
	$(PY) -m flake8 keyvid launch data_prep tests
