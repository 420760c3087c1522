# The README's two commands: `make demo` and `make test`. Both set up a fresh machine first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_ARGS ?=
PYTEST_ARGS ?=
# The analysis environments jobs run in, apart from the service's own packages: one
# virtual environment per deploy/analysis/<name>/requirements.txt (pinned in full), built in
# var/analysis-env/<name>. "statistics" is the default one (SPE_SANDBOX_PYTHON); a job
# names another (e.g. "imaging") and the node finds it in SPE_ANALYSIS_ENVIRONMENTS.
ANALYSIS ?= var/analysis-env
ANALYSIS_ENVS := $(patsubst deploy/analysis/%/requirements.txt,%,$(wildcard deploy/analysis/*/requirements.txt))
export SPE_ANALYSIS_ENVIRONMENTS ?= $(abspath $(ANALYSIS))
export SPE_SANDBOX_PYTHON ?= $(abspath $(ANALYSIS))/statistics/bin/python

.PHONY: setup analysis-env system-packages oidc-provider demo test lint bench clean-demo

# A virtual environment with the project and its test tools, rebuilt when pyproject changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip || echo "pip could not upgrade itself; going on with $$($(BIN)/pip --version)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# Each environment afresh from its pins alone (--no-deps: nothing unpinned comes in, and a
# package dropped from the file is gone), so that the same file builds the same environment.
# A var/analysis-env of an older version (one environment, a venv itself) is removed first.
$(ANALYSIS)/%/.installed: deploy/analysis/%/requirements.txt
	@if [ -f $(ANALYSIS)/pyvenv.cfg ]; then rm -rf $(ANALYSIS); fi
	rm -rf $(ANALYSIS)/$*
	$(PYTHON) -m venv $(ANALYSIS)/$*
	$(ANALYSIS)/$*/bin/pip install --quiet --no-deps -r $<
	touch $@

analysis-env: $(foreach env,$(ANALYSIS_ENVS),$(ANALYSIS)/$(env)/.installed)

# Orthanc (with DICOMweb), bubblewrap, Chromium (the catalogue's browser test), systemd
# (`systemd-analyze verify` of deploy/systemd), nginx and Caddy (deploy/proxy run) are Debian
# packages; installed when missing and root.
system-packages:
	@if command -v Orthanc >/dev/null && command -v bwrap >/dev/null \
	    && [ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] \
	    && [ -x /usr/bin/chromium ] && command -v systemd-analyze >/dev/null \
	    && command -v nginx >/dev/null && command -v caddy >/dev/null \
	    && command -v ip >/dev/null && command -v nft >/dev/null \
	    && command -v socat >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    orthanc orthanc-dicomweb bubblewrap chromium systemd nginx-light caddy \
	    iproute2 nftables socat >/dev/null; \
	else echo "note: install the Debian packages orthanc orthanc-dicomweb bubblewrap chromium" \
	  "systemd nginx-light caddy iproute2 nftables socat for the Orthanc, sandbox, browser," \
	  "deployment and across-hosts tests (they are skipped without them)"; fi

# The OpenID Connect provider the identity tests run locally (tests/oidc: panva's
# oidc-provider, pinned by its lock file); needs Node.js 20 or later and npm.
tests/oidc/node_modules/.package-lock.json: tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

oidc-provider:
	@if command -v npm >/dev/null; then $(MAKE) --no-print-directory \
	    tests/oidc/node_modules/.package-lock.json; \
	else echo "note: install Node.js 20+ and npm for the identity tests against a real" \
	  "OpenID Connect provider (they are skipped without them)"; fi

demo: setup analysis-env
	$(BIN)/spe demo $(DEMO_ARGS)

test: setup analysis-env system-packages oidc-provider
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

bench: setup analysis-env
	$(BIN)/python benchmarks/sync_throughput.py
	$(BIN)/python benchmarks/synth_throughput.py
	$(BIN)/python benchmarks/deid_dicom.py
	$(BIN)/python benchmarks/catalogue_search.py
	$(BIN)/python benchmarks/federated_query.py
	$(BIN)/python benchmarks/federated_rounds.py
	$(BIN)/python benchmarks/statistics_utility.py
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/staging_pacs.py
	$(BIN)/python benchmarks/observability_overhead.py
	$(BIN)/python benchmarks/throughput.py

clean-demo:
	rm -rf var/demo
