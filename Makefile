# Two commands do all set-up: `make demo` and `make test`. Each creates .venv on first use and
# reinstalls only when pyproject.toml or constraints.txt change.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	@# The browser test drives Debian's Chromium; install it where we can (root + apt), else
	@# that one test skips and says why.
	-@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
	@touch $(STAMP)

# The main job: the book's chapter-5 pretraining run on the bundled The Verdict, then a
# continuation of its prompt by the trained model.
demo: $(STAMP)
	$(BIN)/scratchgpt pretrain --preset book-ch5 --out runs/demo --overwrite
	$(BIN)/scratchgpt generate --checkpoint runs/demo --prompt "Every effort moves you" --max-new-tokens 25

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python benchmarks/tokenizers.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/families.py
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/classification.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/threads.py
	$(BIN)/python benchmarks/distributed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
