"""Back to llama.cpp: write a trained Hugging Face folder (Llama or Qwen2 architecture) as a GGUF.

Written with the `gguf` package's own writer, name map and quantizer:

- hyperparameters from `config.json` become the `llama.*` / `qwen2.*` keys llama.cpp reads;
- tensor names map from Hugging Face's to GGUF's with `gguf.get_tensor_name_map`, biases
  included (Qwen2 has them on the query, key and value projections);
- for Llama the query and key projections are reordered: Hugging Face's Llama applies rotary
  embeddings to the two halves of each head ("rotate half"), llama.cpp's llama architecture to
  adjacent pairs of dimensions, so each head's rows are interleaved back
  (`interleave_rotary_rows`). llama.cpp's qwen2 architecture rotates halves like Hugging Face
  (NeoX style), so Qwen2 weights go as they are;
- tied embeddings (Qwen2.5-0.5B, SmolLM2) write no output matrix: llama.cpp reuses token_embd;
- 2-D weights are stored as f16 or q8_0 (`gguf.quants`), norms and biases stay f32;
- the tokenizer and chat template come from the GGUF the model started as (recorded in the
  folder's `cai_training.json` by the training commands, or named with `tokenizer_from`), so the
  exported model tokenizes exactly as the original did. A folder with no GGUF behind it gets its
  tokenizer from its own `tokenizer.json` (byte-level BPE only).

Two more kinds of input go through the same writer, by way of a full-precision folder built in
a temporary place (`materialise`): a GGUF (dequantised by transformers, as training loads it: the
base model exported this way is the control that shares the trained model's quantisation), and
a LoRA adapter folder (`adapter_config.json`, as `train-sft --keep-adapter` writes it) merged
onto the GGUF named with `base` (so a small adapter kept in a repository rebuilds the model);
an adapter trained from a fine-tune of `base` names the fine-tune's own adapters in
`base_adapters`, merged first (RL-CAI's adapter on SL-CAI's on the policy).

The file is written beside its destination and renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai_cli.errors import CaiError

EXPORT_TYPES = ("f16", "q8_0")
# Hugging Face model_type -> (gguf architecture, whether q/k rows need interleaving for llama.cpp).
ARCHITECTURES = {"llama": ("LLAMA", True), "qwen2": ("QWEN2", False)}
SUPPORTED_MODEL_TYPES = tuple(ARCHITECTURES)
# Keys that describe the trained model itself; everything else under tokenizer.* is copied.
TOKENIZER_PREFIX = "tokenizer."


def interleave_rotary_rows(weights, n_heads: int):
    """Reorder a q/k projection's output rows from Hugging Face's half-split rotary layout to
    llama.cpp's interleaved one: within each head, row i of the first half and row i of the
    second half become rows 2i and 2i+1."""
    rows, columns = weights.shape
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise CaiError(f"cannot reorder a {rows}-row projection into {n_heads} heads of even size")
    return (weights.reshape(n_heads, 2, head_dim // 2, columns)
            .swapaxes(1, 2)
            .reshape(rows, columns))


def read_model_config(folder: Path) -> dict[str, Any]:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CaiError(f"{folder} is not a Hugging Face model folder (no config.json)")
    config = json.loads(config_file.read_text(encoding="utf-8"))
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise CaiError(f"export-gguf writes the {', '.join(SUPPORTED_MODEL_TYPES)} architecture; "
                       f"{folder} is {model_type!r}")
    architectures = config.get("architectures") or []
    if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
        raise CaiError(f"{folder} is a {', '.join(architectures)}, not a language model: only policies "
                       "(train-sft, train-rl outputs) can be exported, not preference models")
    return config


def rope_theta(config: dict[str, Any]) -> float:
    """The rotary base, from transformers 5's `rope_parameters` or the older `rope_theta`;
    scaled rotary variants are refused rather than exported wrong."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    rope_type = parameters.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise CaiError(f"export-gguf does not handle rope scaling of type {rope_type!r}")
    return float(parameters.get("rope_theta") or config.get("rope_theta") or 10000.0)


def load_tensors(folder: Path) -> dict[str, Any]:
    """Every tensor of the folder's safetensors files, as float32 numpy arrays."""
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CaiError(f"{folder} holds no .safetensors weights")
    tensors = {}
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                tensors[name] = handle.get_tensor(name).float().numpy()
    return tensors


def source_gguf_for(folder: Path, tokenizer_from: Path | None) -> Path | None:
    from cai_cli.training.loading import source_gguf_of

    if tokenizer_from is not None:
        if not tokenizer_from.is_file():
            raise CaiError(f"--tokenizer-from {tokenizer_from}: file not found")
        return tokenizer_from
    return source_gguf_of(folder)


def copy_tokenizer_metadata(writer, source: Path, vocab_size: int, skip: tuple[str, ...] = ()) -> None:
    """The source GGUF's tokenizer.* keys (vocabulary, merges, token types, special ids, chat
    template), value for value and type for type; `skip` names keys written otherwise."""
    from gguf import GGUFValueType

    from cai_cli.models import open_gguf

    reader = open_gguf(source)
    fields = {name: field for name, field in reader.fields.items()
              if name.startswith(TOKENIZER_PREFIX) and name not in skip}
    if "tokenizer.ggml.tokens" not in fields:
        raise CaiError(f"{source} carries no tokenizer to copy")
    tokens = len(fields["tokenizer.ggml.tokens"].data)
    if tokens != vocab_size:
        raise CaiError(f"{source}'s tokenizer has {tokens} tokens but the model has {vocab_size} embeddings: "
                       "it is not the GGUF this model came from")
    for name, field in fields.items():
        main_type = field.types[0]
        value = field.contents()
        if main_type == GGUFValueType.ARRAY:
            writer.add_key_value(name, value, main_type, sub_type=field.types[-1])
        else:
            writer.add_key_value(name, value, main_type)


def add_tokenizer_from_folder(writer, folder: Path, vocab_size: int) -> None:
    """A byte-level BPE tokenizer.json turned into GGUF tokenizer keys with gguf's vocab readers.

    tokenizer.json's added tokens are typed as llama.cpp needs them to find them in text (a
    special one as a control token, `<|im_start|>` say): gguf's reader types an added token that
    is also in the vocabulary, as most chat models' are, as an ordinary one, and the chat template's
    markers were then read as a dozen characters each."""
    import gguf

    try:
        vocab = gguf.vocab.BpeVocab(folder)
        described = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError, KeyError):
        raise CaiError(f"{folder} did not start from a GGUF and its tokenizer is not byte-level BPE: name a GGUF "
                       "with the same tokenizer with --tokenizer-from FILE.gguf") from None
    tokens, types = [], []
    for text, _score, token_type in vocab.all_tokens():
        tokens.append(text)
        types.append(token_type)
    if len(tokens) > vocab_size:
        raise CaiError(f"{folder}'s tokenizer has {len(tokens)} tokens for {vocab_size} embeddings")
    for filler in range(len(tokens), vocab_size):  # embedding rows past the vocabulary
        tokens.append(f"[PAD{filler}]".encode())
        types.append(gguf.TokenType.UNUSED)
    for added in described.get("added_tokens") or []:
        if 0 <= added["id"] < vocab_size:
            types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(described.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(writer, quiet=True)


def pre_tokenizer_name(pre_tokenizer: dict | None) -> str:
    """llama.cpp's name for how a tokenizer.json splits text before BPE: GPT-2's split (a plain
    byte-level pre-tokenizer with its regex), the same with every digit apart (SmolLM's,
    StarCoder's), or llama.cpp's default, which is close to GPT-2's; `--tokenizer-from` a GGUF of
    the same model keeps that model's own."""
    def gpt2_split(step: dict) -> bool:
        return step.get("type") == "ByteLevel" and step.get("use_regex", True)

    described = pre_tokenizer or {}
    steps = (described.get("pretokenizers") or []) if described.get("type") == "Sequence" else [described]
    if len(steps) == 1 and gpt2_split(steps[0]):
        return "gpt-2"
    if (len(steps) == 2 and steps[0].get("type") == "Digits" and steps[0].get("individual_digits")
            and gpt2_split(steps[1])):
        return "smollm"
    return "default"


def is_adapter_folder(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def merge_adapter(model: Any, adapter: Path, base: Path) -> Any:
    """`model` with the LoRA adapter folder `adapter` (checked by `export_gguf`) merged into its weights."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CaiError(f"cannot apply the adapter {adapter} to {base}: {str(exc).splitlines()[0]}") from None


def materialise(model: Path, base: Path | None, into: Path, base_adapters: Sequence[Path] = ()) -> Path:
    """A full-precision Hugging Face folder under `into` for a GGUF `model`, or for a LoRA adapter
    folder merged onto `base` (a GGUF or a folder) after `base_adapters`; `model` itself when it is
    a folder already."""
    from cai_cli.training.loading import load_for_training, prepare_libraries, save_trained_model

    prepare_libraries(verbose=False)

    if model.suffix == ".gguf":
        if not model.is_file():
            raise CaiError(f"{model}: file not found")
        loaded = load_for_training(str(model))
        provenance = {"command": "export-gguf", "source_gguf": str(model.resolve())}
    elif is_adapter_folder(model):
        if base is None:
            raise CaiError(f"{model} is a LoRA adapter: name the model it was trained from with --base")
        loaded = load_for_training(str(base))
        merged = loaded.model
        for adapter in [*base_adapters, model]:
            merged = merge_adapter(merged, adapter, base)
        loaded = dataclasses.replace(loaded, model=merged)
        provenance = {"command": "export-gguf", "adapter": str(model.resolve()),
                      **({"base_adapters": [str(a.resolve()) for a in base_adapters]} if base_adapters else {}),
                      **({"source_gguf": str(base.resolve())} if base.suffix == ".gguf" else {"base": str(base)})}
    else:
        if base is not None:
            raise CaiError(f"--base is for a LoRA adapter folder; {model} is not one")
        return model
    folder = into / "model"
    save_trained_model(loaded.model, loaded.tokenizer, folder, provenance)
    return folder


def export_gguf(folder: str | Path, out: str | Path, export_type: str = "q8_0",
                tokenizer_from: str | Path | None = None, overwrite: bool = False,
                base: str | Path | None = None, base_adapters: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write `folder` to `out` as a GGUF of `export_type` (f16 or q8_0); returns a summary.

    `folder` is a Llama- or Qwen2-architecture Hugging Face folder, a GGUF (re-exported through
    full precision), or a LoRA adapter folder merged onto `base` (after `base_adapters`) first."""
    folder, out = Path(folder).expanduser(), Path(out).expanduser()
    if export_type not in EXPORT_TYPES:
        raise CaiError(f"unknown --type {export_type!r}: choose one of {', '.join(EXPORT_TYPES)}")
    if out.exists() and not overwrite:
        raise CaiError(f"{out} already exists; pass --overwrite to replace it")
    if not folder.exists():
        raise CaiError(f"{folder} not found (give the output folder of a training command, an adapter or a GGUF)")
    base = Path(base).expanduser() if base is not None else None
    adapters = [Path(a).expanduser() for a in base_adapters]
    if adapters and not is_adapter_folder(folder):
        raise CaiError(f"--base-adapter is for exporting a LoRA adapter trained on top of it; {folder} is not one")
    for adapter in adapters:  # before --base is loaded, which takes a while
        if not is_adapter_folder(adapter):
            raise CaiError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if folder.is_dir() and not is_adapter_folder(folder) and base is None:
        return export_folder(folder, out, export_type, tokenizer_from)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=out.parent if out.parent.exists() else None) as scratch:
        summary = export_folder(materialise(folder, base, Path(scratch), adapters), out, export_type, tokenizer_from)
    return {**summary, "model": str(folder), **({"base": str(base)} if base is not None else {}),
            **({"base_adapters": [str(a) for a in adapters]} if adapters else {})}


def export_folder(folder: Path, out: Path, export_type: str, tokenizer_from: str | Path | None) -> dict[str, Any]:
    """Write the Hugging Face folder `folder` to `out` (checked by `export_gguf`)."""
    import gguf
    import numpy as np

    from cai_cli.training.loading import PROVENANCE_FILE

    if not folder.is_dir():
        raise CaiError(f"{folder} is not a folder (give the output folder of a training command)")
    config = read_model_config(folder)
    source = source_gguf_for(folder, Path(tokenizer_from).expanduser() if tokenizer_from else None)
    n_layers, n_heads = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv_heads = config.get("num_key_value_heads") or n_heads
    hidden = config["hidden_size"]
    head_dim = config.get("head_dim") or hidden // n_heads
    vocab_size = config["vocab_size"]
    tied = config.get("tie_word_embeddings", False)
    tensors = load_tensors(folder)

    arch_name, interleave = ARCHITECTURES[config["model_type"]]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    name_map = gguf.get_tensor_name_map(arch, n_layers)
    file_type = gguf.LlamaFileType.MOSTLY_F16 if export_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.partial-", dir=out.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(partial, gguf.MODEL_ARCH_NAMES[arch])
        writer.add_name(model_name(folder, PROVENANCE_FILE))
        writer.add_file_type(file_type)
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(config.get("max_position_embeddings", 2048))
        writer.add_embedding_length(hidden)
        writer.add_block_count(n_layers)
        writer.add_feed_forward_length(config["intermediate_size"])
        writer.add_head_count(n_heads)
        writer.add_head_count_kv(n_kv_heads)
        writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
        writer.add_rope_freq_base(rope_theta(config))
        writer.add_rope_dimension_count(head_dim)
        if head_dim != hidden // n_heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        writer.add_vocab_size(vocab_size)
        # The template the model was trained with (saved beside its weights) wins over the source's.
        template_file = folder / "chat_template.jinja"
        own_template = template_file.read_text(encoding="utf-8") if template_file.is_file() else None
        if source is not None:
            copy_tokenizer_metadata(writer, source, vocab_size,
                                    skip=("tokenizer.chat_template",) if own_template else ())
        else:
            add_tokenizer_from_folder(writer, folder, vocab_size)
        if own_template:
            writer.add_key_value("tokenizer.chat_template", own_template, gguf.GGUFValueType.STRING)

        written = 0
        for name, weights in tensors.items():
            if tied and name == "lm_head.weight":
                continue  # llama.cpp reuses token_embd when the file has no output.weight
            target = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
            if target is None:
                raise CaiError(f"export-gguf does not know where the tensor {name} goes in a "
                               f"{gguf.MODEL_ARCH_NAMES[arch]} GGUF")
            if interleave and name.endswith("self_attn.q_proj.weight"):
                weights = interleave_rotary_rows(weights, n_heads)
            elif interleave and name.endswith("self_attn.k_proj.weight"):
                weights = interleave_rotary_rows(weights, n_kv_heads)
            add_weights(writer, target, weights, export_type, gguf, np)
            written += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.chmod(partial, 0o644)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return {"command": "export-gguf", "model": str(folder), "out": str(out), "type": export_type,
            "tensors": written, "bytes": out.stat().st_size,
            "tokenizer_from": str(source) if source else str(folder / "tokenizer.json")}


def add_weights(writer, name: str, weights, export_type: str, gguf, np) -> None:
    """Norms (1-D) stay f32; matrices become f16, or q8_0 where rows split into whole blocks."""
    if weights.ndim == 1:
        writer.add_tensor(name, weights.astype(np.float32))
        return
    block = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]
    if export_type == "q8_0" and weights.shape[-1] % block == 0:
        quantized = gguf.quants.quantize(weights.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, weights.astype(np.float16))


def model_name(folder: Path, provenance_file: str) -> str:
    """The folder's name, with the command that made it when known."""
    try:
        command = json.loads((folder / provenance_file).read_text(encoding="utf-8")).get("command")
    except (OSError, ValueError, AttributeError):
        command = None
    name = folder.resolve().name
    return f"{name} ({command})" if command else name
