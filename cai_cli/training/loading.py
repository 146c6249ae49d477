"""Loading a model to train (a Hugging Face folder or a GGUF) and writing the trained one.

A GGUF is dequantised by transformers into a plain float model (`GgufConfig(dequantize=True)`,
so that nothing of the quantizer is left to stop training or `save_pretrained`). A trained folder
records where it came from in `cai_training.json`, including the GGUF it started from, so that
`cai export-gguf` can carry that file's tokenizer and chat template back over.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError

PROVENANCE_FILE = "cai_training.json"
# The trainer's log, one JSON object per logged step: what `cai report` draws training curves from.
TRAINING_LOG_FILE = "training_log.jsonl"


@dataclass
class LoadedModel:
    """A model ready to train, its tokenizer, and where it came from."""

    model: Any
    tokenizer: Any
    path: Path
    source_gguf: Path | None


def on_gpu() -> bool:
    """Whether training runs on CUDA (`hardware.torch_device`: a GPU if torch sees one, unless
    CAI_DEVICE says otherwise)."""
    from cai_cli.hardware import torch_device

    return torch_device() == "cuda"


def prepare_libraries(verbose: bool, threads: int | None = None) -> None:
    """No usage pings from the Hugging Face libraries, and, unless --verbose, their progress bars
    and advice kept off stderr: stderr is for what a person needs (our own progress lines).
    Call before transformers, trl or datasets is imported: they read these settings then.
    `threads` sets torch's CPU threads."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    if not verbose:
        os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a bar regardless
    if threads:
        import torch

        # With every core busy, OpenMP threads spin waiting for each other: one thread can train
        # several times faster than two on a shared 2-core machine.
        torch.set_num_threads(threads)
    if verbose:
        return
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    # Deprecation notices and "could not find a config file" advice are for library authors.
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)


def source_gguf_of(path: Path) -> Path | None:
    """The GGUF a model started from: itself, or what a trained folder's provenance says."""
    if path.suffix == ".gguf":
        return path.resolve()
    try:
        recorded = json.loads((path / PROVENANCE_FILE).read_text(encoding="utf-8")).get("source_gguf")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(recorded) if recorded and Path(recorded).is_file() else None


def load_for_training(spec: str | None, kind: str = "causal-lm", padding_side: str = "right",
                      trust_remote_code: bool = False) -> LoadedModel:
    """Load `spec` (a folder, a .gguf, or None for the embedded model) as a causal LM or, with
    `kind="reward"`, as a one-output sequence classifier (the preference model).

    Weights are float32 on any device (on a GPU, bf16 autocast gives the speed), so a full
    fine-tune keeps exact master weights. Folders load safetensors weights only.
    """
    import torch
    import transformers

    from cai_cli.models import read_ggufs_once, resolve_model

    path = resolve_model(spec)
    gguf_kwargs: dict[str, Any] = {}
    where = path
    if path.suffix == ".gguf":
        read_ggufs_once()
        where = path.parent
        gguf_kwargs = {"gguf_file": path.name,
                       "quantization_config": transformers.GgufConfig(gguf_file=path.name, dequantize=True)}
    else:
        check_architecture(path, kind)
    common = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    model_class = (transformers.AutoModelForSequenceClassification if kind == "reward"
                   else transformers.AutoModelForCausalLM)
    extra = {"num_labels": 1} if kind == "reward" else {}
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            where, **common, **({"gguf_file": path.name} if gguf_kwargs else {}))
        weights = gguf_kwargs or {"use_safetensors": True}  # never unpickle a folder's weights
        model = model_class.from_pretrained(where, dtype=torch.float32, **common, **weights, **extra)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, NotImplementedError) as exc:
        raise CaiError(f"cannot load {path} for training: {first_line(exc)}") from None
    if tokenizer.pad_token is None:
        # A GGUF's tokenizer declares no pad token; padding is masked out, so end-of-sequence serves.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    # The sequence classifier reads its score at the last non-pad token, so it must know the pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    # A GGUF names the model after its metadata; trainers that reload the starting policy (the KL
    # reference of a full fine-tune) need the local folder instead.
    model.config._name_or_path = str(where)
    if getattr(model, "generation_config", None) is not None and kind != "reward":
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if not tokenizer.chat_template:
        raise CaiError(f"{path} has no chat template: training renders conversations with the model's own template")
    return LoadedModel(model, tokenizer, path, source_gguf_of(path))


def check_architecture(folder: Path, kind: str) -> None:
    """A preference model is not a policy: loading one as a language model would silently give
    it a random output layer."""
    try:
        architectures = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        return  # transformers' own loading error says what is wrong
    if kind == "causal-lm" and any(a.endswith("ForSequenceClassification") for a in architectures):
        raise CaiError(f"{folder} is a preference model ({', '.join(architectures)}), not a policy to train")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def reference_model_loading(loaded: LoadedModel) -> dict[str, Any] | None:
    """How TRL loads the frozen copy of the starting policy that a full fine-tune needs for its
    KL term: a GGUF needs its file named and dequantised; a folder needs nothing (None)."""
    if loaded.path.suffix != ".gguf":
        return None
    import transformers

    return {"gguf_file": loaded.path.name, "local_files_only": True,
            "quantization_config": transformers.GgufConfig(gguf_file=loaded.path.name, dequantize=True)}


def prepare_output(out: Path, overwrite: bool) -> None:
    """Refuse an existing --out unless --overwrite, before any time is spent training."""
    if out.exists() and not overwrite:
        raise CaiError(f"{out} already exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise CaiError(f"{out} exists and is not a folder")
    out.parent.mkdir(parents=True, exist_ok=True)


def save_trained_model(model, tokenizer, out: Path, provenance: dict[str, Any], keep_adapter: bool = False,
                       log_history: list[dict[str, Any]] | None = None) -> None:
    """Write a standard Hugging Face folder (safetensors, tokenizer, chat template, provenance and
    the trainer's `log_history` as `training_log.jsonl`) atomically: everything goes into a
    temporary folder beside `out`, which is renamed into place only when complete, so a kill
    leaves the old `out` or the new one, never half of one.

    A peft model is merged into its base first; `keep_adapter` also writes the adapter alone
    under `out/adapter/`.
    """
    from accelerate.utils import is_peft_model

    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's private 0700 is not what a model folder wants
        if is_peft_model(model):
            if keep_adapter:
                model.save_pretrained(staging / "adapter")
            model = model.merge_and_unload()
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
        if log_history is not None:
            (staging / TRAINING_LOG_FILE).write_text(training_log_text(log_history), encoding="utf-8")
        replace_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def training_log_text(log_history: list[dict[str, Any]]) -> str:
    """The trainer's log history as JSON lines, one per logged step: `step`, `epoch`, `loss`,
    `learning_rate`, `grad_norm` and what the method adds (`reward`, `kl`, `rewards/margins`, ...).
    The end-of-run totals (`train_runtime`, ...) are left out: `cai_training.json` has them. A
    value that is not a finite number (a NaN loss) is written as null, so every line is JSON."""
    def finite(value: Any) -> Any:
        return value if not isinstance(value, float) or math.isfinite(value) else None

    return "".join(json.dumps({key: finite(value) for key, value in entry.items()}) + "\n"
                   for entry in log_history if "train_runtime" not in entry)


def replace_folder(staging: Path, out: Path) -> None:
    """Move a finished folder to `out`, setting an existing `out` aside until the move is done."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    try:
        os.rename(staging, out)
    except OSError:
        if old is not None:
            os.rename(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
