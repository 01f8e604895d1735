# The two commands a new user runs (see README.md):
#   make demo   - set up and run the demo (broker, hub, one gateway, a simulated building)
#   make test   - set up and run the whole test suite, with the servers it needs
# Each creates .venv and installs what it needs; `make test` also installs Mosquitto from the
# distribution's packages when they are missing (as root, or through sudo), as it does InfluxDB
# and espeak-ng (the speakers' text to speech).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT    := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get

.PHONY: demo test lint typecheck unit system-deps venv-tools schemas clean

demo: $(VENV)/.demo-installed
	$(BIN)/anmin demo

test: $(VENV)/.dev-installed system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	npm ci --prefix tests/browser --no-audit --no-fund
	# A guard over the per-test timeouts: a stuck run fails here, well inside CI's 90 minutes.
	timeout -k 30 4500 $(BIN)/pytest

# Python's venv module is a separate package on Debian and Ubuntu.
venv-tools:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { $(APT) update && $(APT) install -y python3-venv; }

$(VENV)/.demo-installed: pyproject.toml | venv-tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | venv-tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

# Real servers for the integration tests. The tests start their own on free ports.
system-deps:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { $(APT) update && $(APT) install -y mosquitto; }
	@command -v influxd >/dev/null 2>&1 || { $(APT) update && $(APT) install -y influxdb; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(APT) update && $(APT) install -y postgresql; }
	@command -v espeak-ng >/dev/null 2>&1 && command -v sox >/dev/null 2>&1 || { $(APT) update && $(APT) install -y espeak-ng sox; }
	@# Clock skew on one gateway process in the fault tests.
	@command -v faketime >/dev/null 2>&1 || { $(APT) update && $(APT) install -y faketime; }
	@# The web console's tests: Debian's Chromium (never a downloaded browser), a CJK font for
	@# the screenshots, npm for axe-core.
	@# Each only when missing: Debian's npm conflicts with a nodejs that brings its own npm
	@# (NodeSource's), so a machine that has npm keeps it.
	@[ -x /usr/bin/chromium ] || { $(APT) update && $(APT) install -y chromium; }
	@fc-list 2>/dev/null | grep -qi "wenquanyi micro hei" || { $(APT) update && $(APT) install -y fonts-wqy-microhei; }
	@command -v npm >/dev/null 2>&1 || { $(APT) update && $(APT) install -y npm; }

schemas: $(VENV)/.dev-installed
	$(BIN)/anmin wire schemas --out docs/schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
