# The two commands of the README: `make quickstart` and `make test`. Each builds .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: quickstart test venv bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

quickstart: venv
	$(VENV)/bin/gaia2 quickstart

# The page's browser test (tests/test_serve_page.py) runs Debian's chromium headless: install it where missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

test: venv
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
	$(PY) -m pytest tests

bench: venv
	$(PY) benchmarks/shards.py

clean:
	rm -rf $(VENV) .venv-nuscenes-devkit gaia2-quickstart .pytest_cache
