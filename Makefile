# The two commands of the README. Both build .venv/ when needed.
PY      := .venv/bin/python
DE      := .venv/bin/dataengine
STAMP   := .venv/.installed
CORPUS  := data/demo-corpus
TOKS    := tokenizers/demo
OUT     := out/demo
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	@test -d $(CORPUS) || $(DE) demo-corpus $(CORPUS)
	$(DE) fit pipelines/demo.yaml --input $(CORPUS) --tokenizers $(TOKS)
	$(DE) run pipelines/demo.yaml --input $(CORPUS) --tokenizers $(TOKS) --output $(OUT)
	$(DE) inspect $(OUT) --decode 8 --to $(OUT)/decoded
	$(DE) tokenizers eval --tokenizers $(TOKS) --input $(CORPUS) --json $(OUT)/tokenizer_eval.json
	$(DE) train trainer/tiny.yaml --shards $(OUT) --out $(OUT)/train/tiny --overwrite
	$(DE) train trainer/sft.yaml --shards $(OUT) --out $(OUT)/train/tiny-sft --overwrite --set run.init_from=$(OUT)/train/tiny
	$(DE) generate $(OUT)/train/tiny-sft --chat --prompt-text "Describe this image." \
	    --prompt-file $(CORPUS)/images/astronaut.jpg --max-new 64 --to $(OUT)/generated
	@echo ""
	@echo "demo done. Results:"
	@echo "  shards      $(OUT)/parquet/  $(OUT)/wds/"
	@echo "  manifest    $(OUT)/manifest.json"
	@echo "  rejects     $(OUT)/rejects.parquet"
	@echo "  stats       $(OUT)/stats.json"
	@echo "  decoded     $(OUT)/decoded/  (tokens turned back into PNG, GIF, WAV, CSV, TXT)"
	@echo "  tokenizers  $(TOKS)/  (held-out eval in $(TOKS)/*/eval.json; all metrics in $(OUT)/tokenizer_eval.json)"
	@echo "  report      $(OUT)/report.html  (open it in a browser)"
	@echo "  training    $(OUT)/train/tiny/ and $(OUT)/train/tiny-sft/  (metrics.jsonl, loss_curve.png, checkpoints)"
	@echo "  generation  $(OUT)/generated/  (a sample from the instruction-tuned model, decoded to text and media)"

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT) $(CORPUS) $(TOKS)
