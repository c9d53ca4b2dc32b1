# Two entry points, see README: `make demo` and `make test`. Both set everything up on a fresh Debian/Ubuntu box.
# Each installs its extras into .venv once: a stamp file, newer than pyproject.toml, says it is done.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test venv mosquitto chromium bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# the demo: runtime + simulator + in-process broker (no torch)
$(VENV)/.stamp-demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[demo]"
	touch $@

# tests and training: everything (torch, dev tools)
$(VENV)/.stamp-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[train,dev]"
	touch $@

venv: $(VENV)/.stamp-test

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq mosquitto)

# headless browser for tests/test_web.py (the live page); Debian's package, nothing else downloaded
chromium:
	@[ -x /usr/bin/chromium ] || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium)

demo: $(VENV)/.stamp-demo mosquitto
	$(BIN)/beatssl-edge demo

test: venv mosquitto chromium
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: venv
	$(BIN)/python bench/beats.py
