# curvechat: `make run` starts a node on the embedded store, `make test` runs the suite.
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA  ?= data
BIND  ?= tcp://127.0.0.1:7700
HTTP  ?= 127.0.0.1:7780

.PHONY: setup run test lint typecheck clean

$(STAMP): pyproject.toml scripts/setup.sh
	scripts/setup.sh
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/curvechat serve --data $(DATA) --bind $(BIND) --http $(HTTP)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

typecheck: $(STAMP)
	$(BIN)/mypy src/curvechat

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
