# Everything a fresh machine needs: `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
export TF_CPP_MIN_LOG_LEVEL := 2
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD := 1

.PHONY: setup demo test test-fast bench typecheck clean system-deps

# The package, editable, with its pinned dependencies (constraints.txt) from PyPI.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,explore]'
	touch $@

# Graphviz's dot (reports) and Chromium (the HTML report's browser test), from Debian, when missing.
system-deps:
	@missing=""; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing from Debian"; \
		$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

setup: $(STAMP) system-deps

demo: setup
	$(VENV)/bin/flowcheck analyze examples/seed_stop_gradient.py --optimizer sgd --learning-rate 1 -o reports/seed.svg -o reports/seed.html
	@echo; echo "--- the same post in its own TensorFlow 1 form (exit status 1: w1 gets no gradient, as the post means it to)"
	$(VENV)/bin/flowcheck run examples/seed_tf1.py || test $$? -eq 1

# Both make the most of the two cores (pytest-xdist: each test to the free worker, the tests sharing a
# module fixture together; tests/conftest.py).
test: setup
	$(VENV)/bin/python -m pytest -n 2 --dist loadgroup

# The quick loop: everything but the real models.
test-fast: setup
	$(VENV)/bin/python -m pytest -m "not slow" -n 2 --dist loadgroup

typecheck: setup
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/run.py
	$(PY) benchmarks/render.py
	$(PY) benchmarks/run_command.py
	$(PY) benchmarks/growth.py
	$(PY) benchmarks/memory.py
	$(PY) benchmarks/cold.py

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache
