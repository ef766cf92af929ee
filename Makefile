# retrovue-air: `make run` starts the service, `make test` runs the tests.
# Both set up what they need on a fresh Debian machine (a venv; Debian packages when root).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
# The players and tools the tests drive, and what python-prctl needs to build.
TEST_DEBS := ffmpeg mpv vlc-bin vlc-plugin-base curl fonts-dejavu-core procps chromium systemd haproxy
# The XMLTV DTD (xmltv-util) and xmllint (libxml2-utils) that check the guide.
TEST_DEBS += xmltv-util libxml2-utils nginx-light
BUILD_DEBS := libcap-dev gcc

.PHONY: venv run test bench bench-tools system-test-tools clean cluster-demo

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q -e '.[test]' || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "python-prctl did not build: installing $(BUILD_DEBS) with apt-get"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BUILD_DEBS) \
	      && $(BIN)/pip install -q -e '.[test]'; \
	  else echo "python-prctl needs libcap-dev (apt-get install libcap-dev) and a C compiler" >&2; exit 1; fi; }
	@touch $@

run: venv
	$(BIN)/retrovue-air $(ARGS)

# Installs the real players the tests use, when root and they are missing.
system-test-tools:
	@missing=""; for t in ffmpeg ffprobe mpv cvlc curl chromium systemd-analyze haproxy nginx; do PATH="$$PATH:/usr/sbin" command -v $$t >/dev/null || missing=1; done; \
	[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing=1; \
	command -v xmllint >/dev/null && [ -e /usr/share/xmltv/xmltv.dtd ] || missing=1; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_DEBS); \
	  else echo "some test tools are missing and we are not root: their tests will skip (or fail with CI=true)"; fi; \
	fi

test: venv system-test-tools
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The bench's own: Icecast2 to compare with (installed when root and missing), matplotlib for the plots.
BENCH_DEBS := icecast2
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	@$(BIN)/pip install -q -e '.[test,bench]'
	@touch $@

bench-tools:
	@command -v icecast2 >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_DEBS); \
	  else echo "icecast2 is missing and we are not root: the bench measures our service alone"; fi; }

bench: venv system-test-tools bench-tools $(BENCH_STAMP)
	$(BIN)/python -m bench $(ARGS)

# An origin, two edges relaying it and HAProxy in front, on loopback ports; Ctrl-C stops them.
cluster-demo: venv system-test-tools
	$(BIN)/python deploy/cluster_demo.py $(ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
