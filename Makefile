# The two commands of the README:
#   make quickstart   set everything up, then a Fair DARTS search on the bundled digits
#   make test         set everything up, then the test suite
#   make quicktest    the suite without the tests marked slow (tools in processes, long runs)
# EXTRAS=gpu installs TensorFlow with CUDA instead of the CPU build.
VENV ?= .venv
PY := $(VENV)/bin/python
EXTRAS ?= cpu
# pytest-xdist processes: the suite is mostly single-threaded tracing and tools in their
# own processes, so 2 halve its time on 2 cores.
TEST_WORKERS ?= 2

.PHONY: setup quickstart test quicktest

setup: $(VENV)/.installed-$(EXTRAS)

$(VENV)/.installed-$(EXTRAS): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[$(EXTRAS),test]"
	@# graphviz's `dot` renders cell diagrams (Debian package graphviz).
	command -v dot >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq graphviz >/dev/null; }
	touch $@

quickstart: setup
	$(PY) tools/search.py --flagfile=flags/quickstart.flags --model_dir=runs/quickstart

test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) tests

quicktest: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests
