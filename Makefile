# curvechat: `make run` starts a node on the embedded store, `make monitor` the monitor
# that watches it (another terminal), `make test` runs the suite.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA  ?= data
BIND  ?= tcp://127.0.0.1:7700
HTTP  ?= 127.0.0.1:7780
MONITOR_HTTP ?= 127.0.0.1:7790
MONITOR_DATA ?= monitor-data

.PHONY: setup run monitor test bench lint typecheck clean chaos fuzz-trust fuzz-frames canaries

$(STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh
	touch $@

setup: $(STAMP)

run: $(STAMP)
	@echo "monitor: in another terminal, 'make monitor' (curvechat monitor --node http://$(HTTP)) then open http://$(MONITOR_HTTP)/"
	$(BIN)/curvechat serve --data $(DATA) --bind $(BIND) --http $(HTTP)

# The monitoring web application, its own process and port: it outlives the
# node, keeps its history in $(MONITOR_DATA); docs/monitoring.md, The monitor.
monitor: $(STAMP)
	$(BIN)/curvechat monitor --node http://$(HTTP) --http $(MONITOR_HTTP) --data $(MONITOR_DATA)

# Most of the suite waits on real processes (nodes, etcd, terminals, a
# browser): two workers, each taking one test file at a time; then the
# cluster and chaos tests, which measure time under faults, alone.
test: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile -m "not alone"
	$(BIN)/pytest -q -m alone

# curvechat next to its bare limits (pyzmq, SQLite, etcd, PyNaCl): prints a
# table, writes results/bench-<timestamp>.json; docs/performance.md. ~6 min.
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# Fault injection (issue 7): a 10-minute mixed-nemesis run, report in results/.
CHAOS_ARGS ?= --duration 600
chaos: $(STAMP)
	$(BIN)/python scripts/chaos.py $(CHAOS_ARGS)

# The hostile-server harness (tests/security/test_trust_harness.py) with a large
# budget: each family of lies alone, then all together, FUZZ_EXAMPLES each,
# new random examples each run (make test runs the same 40 each time).
FUZZ_EXAMPLES ?= 2000
fuzz-trust: $(STAMP)
	CURVECHAT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) CURVECHAT_FUZZ_SHRINK_SECONDS=120 CURVECHAT_FUZZ_RANDOM=1 \
	  $(BIN)/pytest -q --timeout=0 tests/security/test_trust_harness.py

# Malformed frames thrown at one node, each answered with an error code
# (make test throws 1,500).
FUZZ_FRAMES ?= 10000
fuzz-frames: $(STAMP)
	CURVECHAT_FUZZ_FRAMES=$(FUZZ_FRAMES) CURVECHAT_CODEC_EXAMPLES=5000 $(BIN)/pytest -q --timeout=0 \
	  tests/server/test_fuzz.py::test_thousands_of_bad_frames \
	  tests/protocol/test_codec.py::test_decoders_raise_nothing_but_protocol_errors

# Plaintext canaries through a node, then searched for in its files and memory
# (make test sends 3,000).
CANARIES ?= 10000
canaries: $(STAMP)
	CURVECHAT_CANARIES=$(CANARIES) $(BIN)/pytest -q --timeout=0 tests/server/test_canary.py

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src/curvechat

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
