# The two commands of the README. Both build .venv/ when needed.
PY      := .venv/bin/python
DE      := .venv/bin/dataengine
DVC     := .venv/bin/dvc
STAMP   := .venv/.installed
CORPUS  := data/demo-corpus
TOKS    := tokenizers/demo
OUT     := out/demo
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test env clean bench

env: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# headless Chromium for the report's browser test (Debian's package; best effort, as root only)
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	    echo "note: chromium is not installed; tests/report/test_report_chromium.py will be skipped"
	touch $(STAMP)

# The demo is the DVC pipeline in dvc.yaml (tunables in params.yaml): `dvc repro` runs
# only the stages whose inputs changed, so a second `make demo` does nothing.
demo: $(STAMP)
	PATH="$(CURDIR)/.venv/bin:$$PATH" $(DVC) repro
	@echo ""
	@echo "demo done (dvc repro). Results:"
	@echo "  shards      $(OUT)/parquet/  $(OUT)/wds/"
	@echo "  manifest    $(OUT)/manifest.json"
	@echo "  rejects     $(OUT)/rejects.parquet"
	@echo "  stats       $(OUT)/stats.json"
	@echo "  decoded     $(OUT)/decoded/  (tokens turned back into PNG, GIF, WAV, CSV, TXT)"
	@echo "  tokenizers  $(TOKS)/  (held-out eval in $(TOKS)/*/eval.json; all metrics in out/demo-tokenizer-eval.json)"
	@echo "  report      $(OUT)/report.html  (open it in a browser)"
	@echo "  training    $(OUT)/train/tiny/ and $(OUT)/train/tiny-sft/  (metrics.jsonl, loss_curve.png, checkpoints)"
	@echo "  generation  $(OUT)/generated/  (a sample from the instruction-tuned model, decoded to text and media)"
	@echo "  DVC         dvc metrics show ; dvc plots show ; dvc exp run --set-param curate.filters.text_chars.min=50"

test: $(STAMP)
	$(PY) -m pytest -q

# Benchmarks (not part of `make test`): one table of ratios, results in bench/results/*.json.
# About 15-25 minutes on 2 cores; `$(PY) bench/run_all.py --quick` is a few minutes.
bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf $(OUT) $(CORPUS) $(TOKS)
