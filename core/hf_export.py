"""Exporting a CLLM model as a Hugging Face GPT-2 folder that `transformers` loads with no
extra code: `GPT2LMHeadModel.from_pretrained(DIR)` and `AutoTokenizer.from_pretrained(DIR)`.

The folder holds `config.json`, `generation_config.json`, `model.safetensors` (GPT-2's
names with the `transformer.` prefix, as `save_pretrained` writes them; the tied
`lm_head.weight` is not stored) and the tokenizer files of core/hf_tokenizer.py.

The files are written into a hidden temporary folder beside the target, synced, and the
folder is renamed into place, so a crash leaves either no folder, or the old one, and at
most a hidden `.NAME.*.tmp` folder, never a half-written folder under the target's name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from cllm.core.config import NO_DROPOUT_RATES, DropoutRates
from cllm.core.errors import HuggingFaceFolderError, TokenizerError
from cllm.core.hf_import import CONFIG_FILE, PREFIX, WEIGHTS_FILE
from cllm.core.hf_tokenizer import TOKENIZER_CONFIG, TOKENIZER_FILE, to_hf
from cllm.core.model import GPT

GENERATION_CONFIG = "generation_config.json"
FILES = (CONFIG_FILE, GENERATION_CONFIG, WEIGHTS_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG)


@dataclass
class ExportResult:
    folder: Path
    files: list[str]
    bos_token_id: int
    eos_token_id: int


def start_token_id(model: GPT) -> int:
    """The id a text begins with: the tokenizer's beginning-of-text token (gpt2 kind), else
    the newline CLLM's sampler starts an empty prompt from, else 0."""
    bos = getattr(model.tokenizer, "bos_id", None)
    if bos is not None:
        return bos
    try:
        ids = model.tokenizer.encode("\n")
    except TokenizerError:
        return 0
    return int(ids[0]) if len(ids) == 1 else 0


def hf_config(model: GPT, dropout: DropoutRates = NO_DROPOUT_RATES) -> dict:
    """config.json for `model`: GPT-2's own keys, as GPT2Config.to_dict writes them;
    `dropout` the rates it was trained with."""
    c = model.config
    start = start_token_id(model)
    eos = getattr(model.tokenizer, "eos_id", None)
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": c.vocab_size, "n_positions": c.ctx, "n_embd": c.n_embd, "n_layer": c.n_layer,
        "n_head": c.n_head, "n_inner": None, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": dropout.resid, "embd_pdrop": dropout.embd, "attn_pdrop": dropout.attn,
        "summary_first_dropout": 0.0,
        "initializer_range": 0.02, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False, "add_cross_attention": False, "tie_word_embeddings": True,
        "use_cache": True, "bos_token_id": start, "eos_token_id": start if eos is None else eos,
        "dtype": "float32",
    }


def generation_config(model: GPT) -> dict:
    """generation_config.json: the start token; an end token only where the tokenizer has
    a real one (GPT-2's <|endoftext|>), so that `generate` does not stop at the newline
    that config.json's eos_token_id names for a tokenizer without special tokens."""
    config = {"bos_token_id": start_token_id(model)}
    eos = getattr(model.tokenizer, "eos_id", None)
    if eos is not None:
        config["eos_token_id"] = eos
    return config


def _tensors(model: GPT) -> dict[str, np.ndarray]:
    return {PREFIX + name: np.ascontiguousarray(view) for name, view in model.tensors().items()}


def _sync(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system can sync a folder
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_target(folder: Path, force: bool, keep: Path | None) -> None:
    if folder.exists() and not folder.is_dir():
        raise HuggingFaceFolderError(f"{folder}: exists and is not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        if not force:
            raise HuggingFaceFolderError(f"{folder}: the folder is not empty; pass --force to replace it")
        here = Path.cwd().resolve()
        resolved = folder.resolve()
        if resolved == here or resolved in here.parents:
            raise HuggingFaceFolderError(f"{folder}: refusing to replace the current folder or one above it")
        if keep is not None and resolved in keep.resolve().parents:
            raise HuggingFaceFolderError(f"{folder}: refusing to replace a folder that holds the model being "
                                         f"exported ({keep})")


def export_gpt(model: GPT, folder: str | Path, *, force: bool = False, source: Path | None = None,
               dropout: DropoutRates = NO_DROPOUT_RATES) -> ExportResult:
    """Writes `model` as a Hugging Face GPT-2 folder, with the dropout rates it was trained
    with. Refuses a non-empty folder unless `force`, which replaces it whole (never a
    folder holding `source`, the model file)."""
    folder = Path(folder).expanduser()
    _check_target(folder, force, source)
    files = to_hf(model.tokenizer, model.config.ctx)
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as exc:
        raise HuggingFaceFolderError(f"{folder}: cannot write ({exc.strerror or exc})") from None
    old = None
    try:
        texts = {
            CONFIG_FILE: hf_config(model, dropout), GENERATION_CONFIG: generation_config(model),
            TOKENIZER_CONFIG: files.tokenizer_config,
        }
        for name, data in texts.items():
            (tmp / name).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        (tmp / TOKENIZER_FILE).write_text(files.tokenizer_json, encoding="utf-8")
        save_file(_tensors(model), tmp / WEIGHTS_FILE, metadata={"format": "pt"})
        for name in FILES:
            os.chmod(tmp / name, 0o644)
            fd = os.open(tmp / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.chmod(tmp, 0o755)
        if folder.is_dir():
            if any(folder.iterdir()):
                old = Path(tempfile.mkdtemp(dir=parent, prefix=f".{folder.name}.", suffix=".old"))
                os.replace(folder, old / folder.name)
            else:
                folder.rmdir()
        os.replace(tmp, folder)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not folder.exists():
            os.replace(old / folder.name, folder)  # put the old folder back
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if isinstance(exc, OSError):
            raise HuggingFaceFolderError(f"{folder}: cannot write ({exc.strerror or exc})") from None
        raise
    _sync(parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    config = hf_config(model)
    return ExportResult(folder, list(FILES), config["bos_token_id"], config["eos_token_id"])


def export_model(model_path: str | Path, folder: str | Path, *, force: bool = False) -> ExportResult:
    """Exports the .cllm file `model_path` (its weights and tokenizer) to `folder`."""
    from cllm.core.model_file import load_model

    model_path = Path(model_path).expanduser()
    loaded = load_model(model_path)
    return export_gpt(loaded.model, folder, force=force, source=model_path, dropout=loaded.info.run.dropout_rates)
