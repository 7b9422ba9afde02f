# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test bench system-deps clean

install: $(STAMP)

# PIP_FIND_LINKS= : this machine's pip config points at a local CPU-only torch wheel that cannot
# load torchvision's ops; requirements.lock pins the standard builds (`===`), which run on the CPU.
$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	PIP_FIND_LINKS= $(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	PIP_FIND_LINKS= $(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: install
	BIN=$(BIN) scripts/demo.sh

# Chromium drives the web-page test; buildah builds the serving image. Best effort: without them
# those tests skip and say why.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: chromium not installed; the browser test will be skipped"; }

test: install system-deps
	$(BIN)/python -m pytest -q

bench: install
	@ls bench/*.py

clean:
	rm -rf work .pytest_cache
