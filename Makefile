# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export PORT

.PHONY: run test lint layers format bench bench-scale clean

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing runtime requirements…"
	@$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	@echo "Installing test requirements…"
	@$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

run: $(VENV)/.runtime
	@$(PY) manage.py migrate --noinput
	@$(PY) manage.py bootstrap --port $(PORT)
	@exec $(PY) manage.py serve --port $(PORT)

test: $(VENV)/.dev
	@bash scripts/ensure_chromium.sh
	$(PY) -m pytest

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The one-way layers of .importlinter: any import against them fails.
layers: $(VENV)/.dev
	$(VENV)/bin/lint-imports --no-cache

format: $(VENV)/.dev
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Every benchmark on the embedded profile; BENCH_ARGS="--quick" or "--only throughput".
# bench-scale: the same on a throwaway PostgreSQL + Redis (bench/scale_profile.sh).
bench: $(VENV)/.dev
	$(PY) bench/run_all.py $(BENCH_ARGS)

bench-scale: $(VENV)/.dev
	PY=$(abspath $(PY)) bash bench/scale_profile.sh $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var runs .pytest_cache
