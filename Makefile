# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
UV     := $(BIN)/uv

.PHONY: install lock demo test bench bench-list system-deps clean tf tf-lock notebooks

install: $(STAMP)

# uv at the version requirements.lock pins, installed by the venv's own pip. PIP_FIND_LINKS= : this
# machine's pip config offers a local torch "2.13.0+cpu" wheel (/opt/wheels) that cannot load
# torchvision's ops. uv itself reads none of pip's configuration (--no-config: nor any uv.toml), so
# it resolves and installs from PyPI only: the standard torch build, which runs on the CPU.
$(UV): requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	PIP_FIND_LINKS= $(BIN)/pip install --quiet --disable-pip-version-check "$$(grep -E '^uv==' requirements.lock)"
	touch $@

# .venv becomes exactly requirements.lock: `uv pip sync` installs what is missing or at another
# version and uninstalls whatever the lock does not name (gearsight itself is in it, as `-e .`).
# tests/test_lock.py checks the result against `pip freeze`.
$(STAMP): requirements.lock pyproject.toml $(UV)
	$(UV) pip sync --no-config --python $(BIN)/python requirements.lock
	touch $(STAMP)

# Re-resolve requirements.in (which takes its ranges from pyproject.toml) into requirements.lock,
# every transitive package pinned, for this venv's Python (3.11, Linux x86-64). Pins already in the
# lock are kept while they still fit; `make lock UPGRADE=1` moves everything to the newest allowed.
# Then `make install` and commit requirements.in, pyproject.toml and requirements.lock together.
lock: $(UV)
	$(UV) pip compile --no-config --python $(BIN)/python --custom-compile-command "make lock" \
	  $(if $(UPGRADE),--upgrade) requirements.in -o requirements.lock

demo: install
	BIN=$(BIN) scripts/demo.sh

# Chromium drives the web-page test; buildah builds the serving image. Best effort: without them
# those tests skip and say why.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "warning: chromium not installed; the browser test will be skipped"; }
	@command -v buildah >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman debootstrap >/dev/null) || \
	  echo "warning: buildah not installed; the container test will be skipped"; }

test: install system-deps tf
	$(BIN)/python -m pytest -q

# The quick benchmarks: reduced forms of docs/BENCHMARKS.md's commands, seconds to a minute each,
# ~3 minutes in all on 2 cores (nice 10; the detection and serving ones read ../shared/data or
# GEARSIGHT_DATA). Their figures are smaller-sample versions of the documented runs, for a quick look
# at this machine; the full commands, some of them an hour long, are what `make bench-list` prints.
BENCH_NICE := nice -n 10 $(BIN)/python
bench: install
	@echo "== detection training step (bench_detect_step.py)"
	$(BENCH_NICE) bench/bench_detect_step.py --steps 3 --settings cpu2,cpu1,profile
	@echo "== matmul fp32 vs bf16, AirNet 32/128/128 step (bench_flops.py)"
	$(BENCH_NICE) bench/bench_flops.py --steps 2 --widths 32/128/128 --matmul-size 1024 --bf16
	@echo "== EfficientNet-Lite0 step by size and frozen stages (bench_freeze.py)"
	$(BENCH_NICE) bench/bench_freeze.py --cases 128:0,144:2 --repeats 2
	@echo "== CTF reader vs a line-by-line parser (bench_ctf.py)"
	$(BENCH_NICE) bench/bench_ctf.py --samples 1000 --repeats 3
	@echo "== serving: gearsight serve vs FastAPI + eager torch (bench_serve.py)"
	$(BENCH_NICE) bench/bench_serve.py --requests 50 300 --rounds 1 --images 16
	@echo "== serving parts: decode path, ONNX Runtime threads (bench_serve_parts.py)"
	$(BENCH_NICE) bench/bench_serve_parts.py --images 16 --repeats 3 --runs 50

# An index, not a run: each script reproduces a docs/BENCHMARKS.md claim in minutes to an hour on
# 2 cores (bench_cifar 10/30 min, bench_bccd 60), most from ../shared/data, so none starts by
# accident. Printed from each script's docstring: its purpose (first line) and its command lines.
bench-list: install
	@$(BIN)/python -c 'import ast, pathlib, re; \
	  docs = {p: ast.get_docstring(ast.parse(p.read_text())) or "(no docstring)" for p in sorted(pathlib.Path("bench").glob("*.py"))}; \
	  [print(f"{p}: {d.splitlines()[0]}", *[f"    {c.strip()}" for c in d.splitlines() if re.match(r"\s+(nice .*)?(\.venv/bin/)?python ", c)], "", sep="\n") for p, d in docs.items()]'

# Every notebook executed in place, outputs kept (what GitHub shows); each one's first cell prints the
# machine and date. Tens of minutes on 2 cores: gear trains make demo's model unless work/ has it;
# detection shows bench/bench_bccd.py's model when work/bench_bccd has it, else a one-minute toy run.
notebooks: install tf
	$(BIN)/jupyter execute --inplace --timeout=-1 --kernel_name=python3 notebooks/*.ipynb

# TensorFlow in a venv of its own (.venv-tf, git-ignored), pinned by requirements-tf.lock (tensorflow-cpu,
# tf2onnx, scikit-learn): the torch lock above is never touched. `make test` builds it, so
# tests/test_tensorflow.py trains the tutorial CNN there and serves its ONNX export; without
# .venv-tf (pytest run by hand) those tests skip and say so.
TF_VENV := .venv-tf
tf: $(TF_VENV)/.installed

$(TF_VENV)/.installed: requirements-tf.lock $(UV)
	test -x $(TF_VENV)/bin/python || $(UV) venv --no-config --python $(BIN)/python $(TF_VENV)
	$(UV) pip sync --no-config --python $(TF_VENV)/bin/python requirements-tf.lock
	touch $@

tf-lock: $(UV)
	$(UV) pip compile --no-config --python $(BIN)/python --custom-compile-command "make tf-lock" \
	  requirements-tf.in -o requirements-tf.lock

clean:
	rm -rf work .pytest_cache
