# frugalml: `make demo` runs the example study, `make test` runs the tests.
# Both set up a virtual environment in .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install install-demo system-deps demo test bench reproduce-quick clean lock

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Two stamps: `make demo` installs the package with the `report` extra only (the demo's
# own imports are the core; `frugalml report demo` draws it); `make test` installs every
# extra. `make test` after `make demo` adds the rest to the same .venv; `make demo` after
# `make test` installs nothing.
# Both install the versions in constraints.txt (pip's -c), the set `make test` last passed with here: a fresh
# clone (CI's) then gets what was tested, not whatever was released since (MLflow 3.18 renamed a helper
# frugalml used, and CI took it first). `make lock` moves the set to the newest versions pyproject.toml
# allows (pip-compile); run `make test` before committing the new constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt | $(PY)
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"
	touch $@

$(VENV)/.installed-demo: pyproject.toml constraints.txt | $(PY)
	[ $(VENV)/.installed -nt pyproject.toml ] && [ $(VENV)/.installed -nt constraints.txt ] || \
		$(PY) -m pip install -q -c constraints.txt -e ".[report]"
	touch $@

install: $(VENV)/.installed

install-demo: $(VENV)/.installed-demo

demo: install-demo
	$(VENV)/bin/frugalml tune examples/demo.toml --fresh

# Headless Chromium renders the HTML report in its test; promtool (the prometheus package) lints /metrics.
# Debian packages; needs root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the report rendering test will be skipped"; }
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq prometheus >/dev/null) || echo "prometheus (promtool) not installed: the metrics lint test will fail"; }
	@command -v wrk >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq wrk >/dev/null) || echo "wrk not installed: benchmarks/serve_scale.py falls back to its Python load generator"; }

# Three pytest processes share the tests file by file (pytest-xdist, `--dist loadfile`: a module's
# fixtures, such as its Ray cluster or server, are made once); most tests wait on worker
# processes, servers and clusters: on 2 cores, two at once take ~0.65x the time of one, and a third
# fills most of the idle time left (back to back on one tree: idle CPU-s 166 -> 74, the suite 662 -> 632 s).
# The longest files go first (tests/durations.json, refreshed by `pytest --store-file-durations`; xdist's own
# reorder, by test count, is off), so that the workers finish together.
# The isolated files (Ray Serve) run in a pytest process of their own beside the three, which fills the
# CPU they leave idle while a cluster starts and a rolling update settles (their Ray workers are not
# niced): back to back, 642 s run after the three, 601 s beside them. Its output follows theirs. It
# collects only the files that use the marker (collecting all of tests/ takes ~10 s).
# compileall first: where PYTHONDONTWRITEBYTECODE is set (as on this project's machines), every
# process the tests start (CLIs, servers, spawned workers) would otherwise compile frugalml from source.
test: install system-deps
	$(PY) -m compileall -q src tests
	@log=$$(mktemp); $(PY) -m pytest -q -m isolated $$(grep -rl --include='*.py' 'mark.isolated' tests) > $$log 2>&1 & \
	isolated=$$!; trap 'kill $$isolated 2>/dev/null; rm -f $$log' EXIT; \
	$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder -m "not isolated"; rest=$$?; \
	wait $$isolated; own=$$?; echo "--- isolated tests (their own pytest process):"; cat $$log; \
	exit $$((rest || own))

reproduce-quick: install
	$(VENV)/bin/frugalml reproduce thesis --quick --out docs/thesis-quick --fresh

bench: install
	$(PY) benchmarks/instrumentation_overhead.py

# pip-tools in a venv of its own (installed into .venv it could move what the stamps say is installed);
# an unchanged set keeps constraints.txt's time, so the stamps stay valid.
lock:
	[ -x $(VENV)-lock/bin/pip-compile ] || { $(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install -q pip-tools; }
	cp -p constraints.txt $(VENV)-lock/previous.txt
	$(VENV)-lock/bin/pip-compile -q --upgrade --extra all --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links -o constraints.txt pyproject.toml
	sed -i '/^frugalml @ /d' constraints.txt  # the `all` extra names frugalml itself, pinned to this clone's path
	! cmp -s constraints.txt $(VENV)-lock/previous.txt || touch -r $(VENV)-lock/previous.txt constraints.txt

clean:
	rm -rf studies .pytest_cache
