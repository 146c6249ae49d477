"""Options shared by several commands, declared once as typer `Annotated` aliases."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Optional

import typer

from cai_cli.backends import BackendOptions
from cai_cli.prompts import COMPARISON_LAYOUTS

MODEL_PANEL = "Model"
SERVER_PANEL = "Server (--backend openai)"
SAMPLING_PANEL = "Sampling"
IO_PANEL = "Input and output"
FEEDBACK_PANEL = "Feedback"

InputArg = Annotated[Optional[Path], typer.Argument(
    help="JSONL input file; '-' or none reads stdin.", show_default=False, allow_dash=True)]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "-o", "--output", help="Write records to FILE instead of stdout, a whole line at a time; "
    "FILE starts afresh unless --resume.",
    rich_help_panel=IO_PANEL, show_default=False)]
ResumeOpt = Annotated[bool, typer.Option(
    "--resume", help="With -o: skip input records whose id is already in the output file.",
    rich_help_panel=IO_PANEL)]
SkipInvalidOpt = Annotated[bool, typer.Option(
    "--skip-invalid", help="Report bad input lines on stderr and go on, instead of stopping.",
    rich_help_panel=IO_PANEL)]

ModelOpt = Annotated[Optional[str], typer.Option(
    "-m", "--model", envvar="CAI_MODEL", rich_help_panel=MODEL_PANEL, show_default=False,
    help="A .gguf file or a Hugging Face model folder (default: the embedded SmolLM2-135M-Instruct); "
         "with --backend openai, the name the server serves the model under.")]
BackendOpt = Annotated[str, typer.Option(
    "--backend", help="auto (a --base-url -> openai, GGUF -> llama-cpp, folder -> transformers), llama-cpp, "
    "transformers or openai (any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, ollama).",
    rich_help_panel=MODEL_PANEL)]
ChatFormatOpt = Annotated[Optional[str], typer.Option(
    "--chat-format", rich_help_panel=MODEL_PANEL, show_default=False,
    help="Override the model's chat template: a Jinja file, or a llama.cpp format name (chatml, ...).")]
NCtxOpt = Annotated[Optional[int], typer.Option(
    "--n-ctx", min=64, rich_help_panel=MODEL_PANEL, show_default=False,
    help="Context size in tokens (default: the model's, at most 4096 on llama.cpp).")]
ParallelOpt = Annotated[int, typer.Option(
    "--parallel", min=1, rich_help_panel=MODEL_PANEL,
    help="llama.cpp: sequences generated at once.")]
BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", min=1, rich_help_panel=MODEL_PANEL, help="transformers: prompts per batch, generated or scored (compare/eval) together.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", min=1, envvar="CAI_THREADS", rich_help_panel=MODEL_PANEL, show_default=False,
    help="llama.cpp: CPU threads (default: all cores). In a pipe of several cai commands, give each "
         "fewer (e.g. CAI_THREADS=1) so they do not fight over the cores.")]
RepackOpt = Annotated[str, typer.Option(
    "--repack", envvar="CAI_REPACK", metavar="auto|on|off", rich_help_panel=MODEL_PANEL,
    help="llama.cpp: repack weights for this CPU's vector units at load. auto: on, except on CPUs with "
         "AMX, where llama.cpp's repacked path crashes (see `cai doctor`).")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", rich_help_panel=MODEL_PANEL,
    help="transformers: run Python code shipped in the model folder. Only for folders you trust.")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", help="Show the inference libraries' own logs.", rich_help_panel=MODEL_PANEL)]
BaseUrlOpt = Annotated[Optional[list[str]], typer.Option(
    "--base-url", envvar="CAI_BASE_URL", rich_help_panel=SERVER_PANEL, show_default=False,
    help="An OpenAI-compatible server, such as http://127.0.0.1:8000/v1; repeat it (or separate URLs with "
         "commas) to spread requests over several. The API key comes from CAI_API_KEY or OPENAI_API_KEY.")]
ConcurrencyOpt = Annotated[int, typer.Option(
    "--concurrency", min=1, rich_help_panel=SERVER_PANEL,
    help="Requests in flight per server (servers that batch, such as vLLM, want many).")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=1.0, rich_help_panel=SERVER_PANEL,
    help="Seconds a request may take before it is given up and tried again.")]
RetriesOpt = Annotated[int, typer.Option(
    "--retries", min=0, rich_help_panel=SERVER_PANEL,
    help="More attempts for a request that met a timeout, a lost connection, HTTP 429 or 5xx (with backoff, "
         "on another server when there is one) before the run stops with an error.")]
TokenizerOpt = Annotated[Optional[str], typer.Option(
    "--tokenizer", rich_help_panel=SERVER_PANEL, show_default=False,
    help="A local copy of the served model's tokenizer (.gguf file, Hugging Face folder, or hub id in the "
         "local cache): its chat template lets compare/eval read answer letters, and it counts tokens. "
         "Default: -m when that is a local path.")]

MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", min=1, help="Most new tokens per completion.",
                                           rich_help_panel=SAMPLING_PANEL)]
TemperatureOpt = Annotated[float, typer.Option("--temperature", min=0.0, help="0 means greedy.",
                                               rich_help_panel=SAMPLING_PANEL)]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold.",
                                        rich_help_panel=SAMPLING_PANEL)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed for sampling and principle draws: same seed, same output.",
                                      rich_help_panel=SAMPLING_PANEL)]

ConstitutionOpt = Annotated[Optional[list[str]], typer.Option(
    "-c", "--constitution", show_default=False,
    help="Constitution file (own YAML/JSON, the paper's JSON, Hugging Face's JSON) or a built-in name; "
         "repeat to combine files (default: harmlessness).")]
PrincipleOpt = Annotated[Optional[str], typer.Option(
    "--principle", show_default=False, help="Always use this principle instead of drawing one at random.")]
FewShotOpt = Annotated[bool, typer.Option(
    "--few-shot/--no-few-shot", help="Put the constitution's worked examples in front of the conversation.")]

# How the feedback model is asked: the options `compare`, `eval` and `elo` share.
FeedbackPrincipleOpt = Annotated[Optional[str], typer.Option(
    "--principle", show_default=False, rich_help_panel=FEEDBACK_PANEL,
    help="Judge every pair under this comparison principle instead of drawing at random.")]
PrinciplesOpt = Annotated[int, typer.Option(
    "--principles", min=1, rich_help_panel=FEEDBACK_PANEL,
    help="Draw K different principles per pair (seeded) and average their labels: the ensemble.")]
SwapOpt = Annotated[bool, typer.Option(
    "--swap/--no-swap", rich_help_panel=FEEDBACK_PANEL,
    help="Ask each question in both orderings, (A)/(B) and (B)/(A), and average: cancels letter bias.")]
CotOpt = Annotated[bool, typer.Option(
    "--cot", rich_help_panel=FEEDBACK_PANEL,
    help="Chain of thought: the model reasons step by step (generated), then the letter is scored.")]
ClampOpt = Annotated[Optional[str], typer.Option(
    "--clamp", metavar="LO,HI", show_default=False, rich_help_panel=FEEDBACK_PANEL,
    help="Clamp each judgement's probability to [LO, HI] ('none': off). Default: 0.4,0.6 with --cot, off without.")]
ReasoningTokensOpt = Annotated[int, typer.Option(
    "--max-tokens", min=1, rich_help_panel=FEEDBACK_PANEL, help="--cot: most tokens of reasoning.")]
ReasoningTemperatureOpt = Annotated[float, typer.Option(
    "--temperature", min=0.0, rich_help_panel=FEEDBACK_PANEL, help="--cot: sampling temperature; 0 is greedy.")]
LayoutOpt = Annotated[str, typer.Option(
    "--layout", metavar="|".join(COMPARISON_LAYOUTS), rich_help_panel=FEEDBACK_PANEL,
    help="Where the principle's question goes. responses-first: after both responses, so the principles "
         "of a pair share one read of them (--principles K costs little more than 1); paper: before them.")]


# The model options every model-using command takes, with their defaults.
MODEL_OPTIONS: dict[str, tuple[object, object]] = {
    "model": (ModelOpt, None),
    "backend": (BackendOpt, "auto"),
    "chat_format": (ChatFormatOpt, None),
    "n_ctx": (NCtxOpt, None),
    "parallel": (ParallelOpt, BackendOptions.parallel),
    "batch_size": (BatchSizeOpt, BackendOptions.batch_size),
    "threads": (ThreadsOpt, None),
    "repack": (RepackOpt, "auto"),
    "verbose": (VerboseOpt, False),
    "trust_remote_code": (TrustRemoteCodeOpt, False),
    "base_urls": (BaseUrlOpt, None),
    "concurrency": (ConcurrencyOpt, BackendOptions.concurrency),
    "timeout": (TimeoutOpt, BackendOptions.timeout),
    "retries": (RetriesOpt, BackendOptions.retries),
    "tokenizer": (TokenizerOpt, None),
}


def with_model_options(command: Callable) -> Callable:
    """Give a command the shared model options; it receives them as one `model_options:
    BackendOptions` argument (the option-bundle pattern, declared once for every command)."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # resolves postponed annotations
    own = [p.replace(annotation=hints.get(p.name, p.annotation))
           for p in signature.parameters.values() if p.name != "model_options"]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
             for name, (annotation, default) in MODEL_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = {name: kwargs.pop(name) for name in MODEL_OPTIONS}
        values["base_urls"] = tuple(values["base_urls"] or ())
        options = BackendOptions(**values)
        return command(**kwargs, model_options=options)

    wrapper.__signature__ = signature.replace(parameters=own + extra)
    wrapper.__annotations__ = {p.name: p.annotation for p in own + extra}
    return wrapper
