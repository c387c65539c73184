# Call-group dispatcher: one entry point for setup, running, tests and benchmarks.
# Kamailio's app_python3 embeds Debian's /usr/bin/python3, so the venv and the
# compiled core are built with that interpreter, never with a python3 on PATH.

PYTHON_SYS  := /usr/bin/python3
VENV        := .venv
PY          := $(VENV)/bin/python
APT_PACKAGES := kamailio kamailio-python3-modules kamailio-extra-modules \
                rtpengine-daemon sip-tester redis-server python3-venv python3-dev \
                chromium chromium-driver
RUN_DIR     := .run
STAMP       := $(VENV)/.installed
EXT_STAMP   := $(VENV)/.ext-built

.PHONY: setup apt venv ext run up down test bench lint clean

setup: apt $(STAMP) $(EXT_STAMP)

# Installs only the Debian packages that are missing, so a second run is a no-op.
apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,admin,bench]'
	touch $@

$(EXT_STAMP): $(STAMP) dispatcher/_core.pyx dispatcher/_core.pxd setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

run: setup
	$(PY) -m dispatcher.run.stack run

up: setup
	$(PY) -m dispatcher.run.stack up

down:
	@test -x $(PY) && $(PY) -m dispatcher.run.stack down || true

test: setup
	$(PY) -m pytest -q

# Core and Redis figures (about 30 s), then SIP load against Kamailio's native dispatcher
# (about 8 min); results and plots in bench/results/.
bench: setup
	$(PY) bench/core.py
	$(PY) bench/router.py
	$(PY) bench/sip_load.py

lint: setup
	$(VENV)/bin/ruff check dispatcher tests bench kamailio
	$(VENV)/bin/ruff format --check dispatcher tests bench kamailio
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cython-lint dispatcher/_core.pyx dispatcher/_core.pxd
	$(VENV)/bin/mypy dispatcher

clean:
	rm -rf build $(VENV) dispatcher/*.so dispatcher/_core.c dispatcher/_core.html $(RUN_DIR)
