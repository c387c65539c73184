# Call-group dispatcher: one entry point for setup, running, tests and benchmarks.
# Kamailio's app_python3 embeds Debian's /usr/bin/python3, so the venv and the
# compiled core are built with that interpreter, never with a python3 on PATH.

PYTHON_SYS  := /usr/bin/python3
VENV        := .venv
PY          := $(VENV)/bin/python
APT_PACKAGES := kamailio kamailio-python3-modules kamailio-extra-modules kamailio-redis-modules \
                rtpengine-daemon sip-tester redis-server python3-venv python3-dev gcc \
                faketime espeak-ng sox sipvicious chromium chromium-driver baresip-core
# What only `make bench` needs besides: callgrind for bench/router.py --instructions, perf for
# bench/sip_load.py --perf.
BENCH_APT_PACKAGES := valgrind linux-perf
RUN_DIR     := .run
STAMP       := $(VENV)/.installed
EXT_STAMP   := $(VENV)/.ext-built

.PHONY: setup apt venv ext run up down test bench lint clean constraints

setup: apt $(STAMP) $(EXT_STAMP)

# Installs only the Debian packages that are missing, so a second run is a no-op.
apt:
	@missing=""; for p in $(APT_PACKAGES) $(EXTRA_APT_PACKAGES); do \
	    dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# constraints.txt pins every Python package to the versions the tests last passed with: a
# fresh clone must not meet a release nobody has tested (redis-py 8 turned a warning into a
# failing test). Refresh it on purpose: `make constraints`, then `make test`.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,admin,bench]'
	touch $@

constraints:
	rm -rf .venv-fresh && $(PYTHON_SYS) -m venv .venv-fresh
	.venv-fresh/bin/python -m pip install -q --upgrade pip
	.venv-fresh/bin/python -m pip install -q -e '.[dev,admin,bench]'
	.venv-fresh/bin/python -m pip freeze --exclude-editable > constraints.txt
	rm -rf .venv-fresh $(STAMP)

$(EXT_STAMP): $(STAMP) dispatcher/_core.pyx dispatcher/_core.pxd setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

run: setup
	$(PY) -m dispatcher.run.stack run

up: setup
	$(PY) -m dispatcher.run.stack up

down:
	@test -x $(PY) && $(PY) -m dispatcher.run.stack down || true

# Every test, then the time-sensitive ones (marker timeshift) again with the whole process
# tree a year ahead - pytest and the redis-server and Kamailio it starts - so a fixed date that
# a real server's clock also sees fails here, not a year from now; then the suites that talk
# to Redis most again on a real three-primary Redis Cluster (the tests start it; marker ha:
# tests with HA sets of their own run in the first pass only). Fails if any run fails.
CLUSTER_SUITES := tests/state tests/sip/test_decider.py tests/api tests/admin tests/reports \
                  tests/sip/test_redis_ha.py
test: setup
	@status=0; $(PY) -m pytest -q || status=$$?; \
	echo "== the time-sensitive tests again, every process a year ahead (faketime +365d)"; \
	DISPATCHER_TEST_REAL_EPOCH=$$(date +%s) faketime -f +365d $(PY) -m pytest -q -m timeshift \
	    || status=$$?; \
	echo "== the state, decision, API, admin, report and SIP smoke suites again on a Redis Cluster"; \
	$(PY) -m pytest -q --redis-cluster -m "not ha" $(CLUSTER_SUITES) || status=$$?; \
	exit $$status

# Core and Redis figures and the router's instructions per call (about 2 min), the wait
# estimator (about 1 min), SIP load against Kamailio's native dispatcher and with 10,000
# tenants (at most about 42 min), callers waiting with music (5-9 min); results and plots in
# bench/results/.
bench: EXTRA_APT_PACKAGES := $(BENCH_APT_PACKAGES)
bench: setup
	$(PY) bench/core.py
	$(PY) bench/router.py --instructions 1000
	$(PY) bench/ewt.py
	$(PY) bench/sip_load.py
	$(PY) bench/sip_load.py --floor --no-tenants --budget 900
	$(PY) bench/queue_load.py
	$(PY) bench/dialog_timer.py
	$(PY) bench/chaos.py

lint: setup
	$(VENV)/bin/ruff check dispatcher tests bench kamailio
	$(VENV)/bin/ruff format --check dispatcher tests bench kamailio
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH cython-lint dispatcher/_core.pyx dispatcher/_core.pxd
	$(VENV)/bin/mypy dispatcher

clean:
	rm -rf build $(VENV) dispatcher/*.so dispatcher/_core.c dispatcher/_core.html $(RUN_DIR)
