# chexpert_nb: every command a user or CI needs. `make demo` and `make test` work on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SAMPLE := data/CheXpert-SYNTHETIC-sample
RUNS := runs
APP_PORT ?= 8866

.PHONY: install sync-check lint test test-slow demo docs app bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Notebooks are the source: fail when exporting or cleaning them would change a tracked file.
sync-check: $(STAMP)
	$(BIN)/nbdev-export
	$(BIN)/nbdev-clean
	@if [ -n "$$(git status --porcelain -- nbs chexpert_nb)" ]; then \
	  git status --short -- nbs chexpert_nb; \
	  echo "nbdev-export/nbdev-clean changed the files above: export and clean the notebooks, then commit both."; \
	  exit 1; fi

# One torch/OpenMP thread per process: nbdev-test runs notebooks in parallel, and on a small machine threads that
# outnumber the cores stall each other (an epoch took 10x longer with 2 threads per process on 2 shared cores).
# The notebooks write their bundles to temporary folders and pytest keeps its last runs: here both go to one folder
# made for this run and removed at its end (before, repeated runs left gigabytes in /tmp and filled the disk). Within
# a run pytest removes a passing test's tmp_path at once (pyproject.toml): one run had peaked at 11.8 GB, which a CI
# machine's disk did not hold.
# nbdev-test runs beside pytest, so that each fills the other's waits (servers starting, browsers loading, locks).
# pytest runs one worker per core (pytest-xdist), a test file per worker at a time (`--dist loadfile`): a file's module
# fixtures (a bundle, a server, a browser) are built once; the disk-cached tiny model is trained by one worker, under a lock.
# pyflakes' checks and a line-length rule ([tool.ruff] in pyproject.toml) on the library, the tests and the benchmarks.
lint: $(STAMP)
	$(BIN)/ruff check chexpert_nb tests bench

test: sync-check lint
	@tmp=$$(mktemp -d -t chexpert-test.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	echo "TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/nbdev-test --timing (beside pytest; its output follows pytest's)"; \
	TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/nbdev-test --timing > $$tmp/nbdev-test.log 2>&1 & nb=$$!; \
	echo "TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n auto --dist loadfile --durations=15"; \
	TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -n auto --dist loadfile --durations=15; py=$$?; \
	wait $$nb; nbrc=$$?; echo "== nbdev-test (exit $$nbrc)"; cat $$tmp/nbdev-test.log; \
	test $$py -eq 0 -a $$nbrc -eq 0

# What `make test` leaves out for time (minutes of CPU for little more coverage): notebook cells tagged `#| slow` and
# tests marked `slow` (every architecture of the table through a bundle, ONNX and both engines; `make test` builds
# every row and takes one row per family that far).
test-slow: sync-check
	@tmp=$$(mktemp -d -t chexpert-test.XXXXXX); trap 'rm -rf "$$tmp"' EXIT; \
	TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/nbdev-test --flags slow && \
	TMPDIR=$$tmp OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests -m slow

$(SAMPLE)/train.csv: $(STAMP)
	$(BIN)/chexpert-sample $(SAMPLE)

demo: $(STAMP) $(SAMPLE)/train.csv
	mkdir -p $(RUNS)
	@echo "== running nbs/tutorial.ipynb (executed copy in $(RUNS)/tutorial.ipynb)"
	$(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 --output-dir $(RUNS) nbs/tutorial.ipynb
	$(BIN)/chexpert-app --port $(APP_PORT)

# The outputs kept in the committed notebooks (plots, tables, pictures), executed in place: the data notebook on the
# real train.csv, the sample's pictures, the policy tables, the metrics and evaluation on simulated studies, the
# learner's batch, training's lr_find and curve, Grad-CAM, the app's screenshot and the tutorial on the data at hand.
DOC_NBS := nbs/01_data.ipynb nbs/01a_sample.ipynb nbs/03_labels.ipynb nbs/07a_metrics.ipynb nbs/11b_card.ipynb \
  nbs/11c_learner.ipynb nbs/12_train.ipynb nbs/15_heatmaps.ipynb nbs/16_evaluate.ipynb nbs/17_report.ipynb \
  nbs/18_app.ipynb nbs/tutorial.ipynb
docs: $(STAMP) $(SAMPLE)/train.csv
	for nb in $(DOC_NBS); do \
	  OMP_NUM_THREADS=1 $(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 "$$nb" || exit 1; done
	$(BIN)/python nbs/images/screenshot_app.py
	$(BIN)/nbdev-clean

# The Voila app on 127.0.0.1:$(APP_PORT) (preheated kernel, newest model in models/); Ctrl-C stops it.
app: $(STAMP)
	$(BIN)/chexpert-app --port $(APP_PORT)

# Benchmarks (bench/, figures in bench/RESULTS.md): each compares with a baseline timed in the same run and ends with
# a RATIO line; the target exits 1 when any ratio misses its target (after running them all).
BENCHES := bench_csv bench_data bench_train bench_predict bench_predict_folder bench_startup bench_onnx bench_app
bench: $(STAMP)
	@failed=""; for b in $(BENCHES); do \
	  if [ ! -f bench/$$b.py ]; then echo "== bench/$$b.py: not there, skipped"; continue; fi; \
	  $(BIN)/python bench/$$b.py || failed="$$failed $$b"; echo; done; \
	if [ -n "$$failed" ]; then echo "missed their targets:$$failed (see bench/RESULTS.md)"; exit 1; fi

clean:
	rm -rf $(RUNS) $(SAMPLE) .pytest_cache
