"""Importing a Hugging Face GPT-2 folder (`config.json`, safetensors weights, tokenizer).

`inspect_hf_folder` reads what a folder holds without loading a weight: the shape, the
tokenizer kind, the parameter count, the weights' dtypes, and every reason CLLM cannot
import it, each a complete message naming the file. `load_hf_folder` builds the model
(weights read straight into the flat parameter buffer), `import_hf_folder` also saves it
as a .cllm file. Pickle checkpoints are refused, never opened. docs/HUGGING_FACE.md lists
what is accepted.
"""

from __future__ import annotations

import json
import re
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cllm.core.checkpoint import file_sha256
from cllm.core.config import NO_DROPOUT_RATES, DropoutRates, ModelConfig, TrainConfig
from cllm.core.errors import ConfigError, HuggingFaceFolderError
from cllm.core.hf_tokenizer import load_tokenizer, tokenizer_files, tokenizer_kind
from cllm.core.layout import Layout, tensor_shapes
from cllm.core.model import GPT

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PREFIX = "transformer."  # what GPT2LMHeadModel.save_pretrained puts before the GPT-2 names
PICKLES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
OTHER_FORMATS = {"tf_model.h5": "a TensorFlow checkpoint", "flax_model.msgpack": "a Flax checkpoint"}
ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model")
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # GELU with the tanh approximation, as CLLM computes
CONVERTED = {"F16": "float16", "BF16": "bfloat16"}  # widened to float32 exactly
MAX_HEADER = 100_000_000
# Buffers of old checkpoints that are not parameters: the causal mask and its fill value.
_MASK_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")

Progress = Callable[[int, int], None]  # (bytes read so far, bytes in all)


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file, from its header."""

    file: Path
    name: str  # as stored (perhaps with the transformer. prefix)
    dtype: str
    shape: tuple[int, ...]
    start: int  # byte offsets in the file
    end: int


@dataclass
class HfFolderInfo:
    """What a Hugging Face folder holds, read without loading the weights. `problems`
    lists every reason it cannot be imported (empty: it can), each naming the file."""

    path: Path
    hf_config: dict  # config.json as read
    config: ModelConfig | None  # the CLLM shape, if config.json describes one CLLM runs
    tokenizer_kind: str | None  # the CLLM kind the tokenizer becomes
    tokenizer_files: list[str]
    weight_files: list[str]
    dtypes: list[str]  # the weights' safetensors dtypes, e.g. ["F32"]
    n_params: int | None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. float16 weights are converted
    tensors: dict[str, TensorEntry] = field(default_factory=dict, repr=False)  # GPT-2 name -> entry

    @property
    def importable(self) -> bool:
        return not self.problems

    @property
    def dtype(self) -> str | None:
        """"float32", "float16", "bfloat16", a mix like "float16+float32", or None."""
        names = sorted({CONVERTED.get(d, "float32" if d == "F32" else d) for d in self.dtypes})
        return "+".join(names) or None


@dataclass
class LoadedHfModel:
    model: GPT
    info: HfFolderInfo
    imported: dict  # the provenance record stored in the .cllm file's training metadata


@dataclass
class ImportResult:
    path: Path
    info: HfFolderInfo
    seconds: float


def _at(file: Path, message: str) -> str:
    return f"{file}: {message}"


def is_hf_gpt2_folder(path: str | Path) -> bool:
    """A folder with a `config.json` whose model_type is gpt2 (cheap: reads that file
    only; never raises). Such a folder is worth listing; `inspect_hf_folder` says whether
    it can be imported."""
    config = Path(path).expanduser() / CONFIG_FILE
    try:
        return config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("model_type") == "gpt2"
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


# -- config.json --------------------------------------------------------------------

def _read_config(folder: Path) -> dict:
    file = folder / CONFIG_FILE
    if not folder.exists():
        raise HuggingFaceFolderError(_at(folder, "no such folder"))
    if not folder.is_dir():
        raise HuggingFaceFolderError(_at(folder, "is not a folder (a Hugging Face model is a folder with "
                                                 f"{CONFIG_FILE} and {WEIGHTS_FILE})"))
    if not file.is_file():
        raise HuggingFaceFolderError(_at(folder, f"has no {CONFIG_FILE}: not a Hugging Face model folder"))
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HuggingFaceFolderError(_at(file, f"cannot be read as JSON ({exc})")) from None
    if not isinstance(data, dict):
        raise HuggingFaceFolderError(_at(file, "is not a JSON object"))
    return data


def _config_problems(file: Path, hf: dict) -> tuple[ModelConfig | None, list[str]]:
    """The CLLM shape config.json describes, and what in it CLLM cannot run."""
    model_type = hf.get("model_type")
    if model_type != "gpt2":
        return None, [_at(file, f"model_type is {model_type!r}, not 'gpt2': CLLM imports GPT-2 models only")]
    problems = []
    architectures = hf.get("architectures") or []
    other = [a for a in architectures if a not in ARCHITECTURES]
    if other:
        problems.append(_at(file, f"architecture {other[0]} is not a GPT-2 language model "
                                  f"({' or '.join(ARCHITECTURES)})"))
    sizes: dict[str, Any] = {"vocab_size": hf.get("vocab_size"), "n_layer": hf.get("n_layer"),
                             "n_head": hf.get("n_head"), "n_embd": hf.get("n_embd"),
                             "ctx": hf.get("n_positions", hf.get("n_ctx"))}
    bad = [k if k != "ctx" else "n_positions" for k, v in sizes.items()
           if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        return None, problems + [_at(file, f"{', '.join(bad)} missing or not a whole number")]
    try:
        config = ModelConfig(**sizes).validate()
    except ConfigError as exc:
        return None, problems + [_at(file, f"a shape CLLM cannot run: {exc}")]
    C = config.n_embd
    checks = [
        (hf.get("n_inner") in (None, 4 * C),
         f"n_inner is {hf.get('n_inner')}: CLLM's MLP is 4 x n_embd = {4 * C} wide"),
        (hf.get("activation_function", "gelu_new") in TANH_GELUS,
         f"activation_function is {hf.get('activation_function')!r}: CLLM computes GELU with the tanh "
         "approximation (gelu_new)"),
        (hf.get("layer_norm_epsilon", 1e-5) == 1e-5,
         f"layer_norm_epsilon is {hf.get('layer_norm_epsilon')}: CLLM's LayerNorm uses 1e-5"),
        (hf.get("scale_attn_weights", True) is True,
         "scale_attn_weights is false: CLLM always scales attention by 1/sqrt(head size)"),
        (not hf.get("scale_attn_by_inverse_layer_idx", False),
         "scale_attn_by_inverse_layer_idx is true: CLLM does not scale attention by the layer index"),
        (not hf.get("add_cross_attention", False), "add_cross_attention is true: CLLM has no cross-attention"),
        (hf.get("tie_word_embeddings", True) is True,
         "tie_word_embeddings is false: CLLM's output layer is always tied to wte"),
    ]
    problems += [_at(file, message) for ok, message in checks if not ok]
    return config, problems


# -- weights ------------------------------------------------------------------------

DROPOUT_KEYS = ("embd_pdrop", "attn_pdrop", "resid_pdrop")
HF_DEFAULT_DROPOUT = 0.1  # GPT2Config's, for a key config.json leaves out


def read_dropout(file: Path, hf: dict) -> tuple[DropoutRates, list[str]]:
    """config.json's three dropout rates (what a fine-tune of the import keeps unless told
    otherwise), and a note where they are not rates."""
    rates = {key: hf.get(key, HF_DEFAULT_DROPOUT) for key in DROPOUT_KEYS}
    bad = [key for key, rate in rates.items()
           if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1]
    if bad:
        return NO_DROPOUT_RATES, [_at(file, f"{', '.join(bad)} not a rate in [0, 1): a fine-tune trains "
                                                       "without dropout unless told otherwise")]
    return DropoutRates(*(float(rates[key]) for key in DROPOUT_KEYS)), []


def _safetensors_header(file: Path) -> dict[str, TensorEntry]:
    """The tensors a safetensors file holds, from its header; HuggingFaceFolderError if
    it is not one."""
    try:
        with open(file, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            prefix = f.read(8)
            if len(prefix) < 8:
                raise HuggingFaceFolderError(_at(file, f"truncated: {size} bytes is not a safetensors file"))
            (n,) = struct.unpack("<Q", prefix)
            if n < 2 or n > MAX_HEADER or n > size - 8:
                raise HuggingFaceFolderError(_at(file, f"not a safetensors file (its header length field says "
                                                       f"{n} bytes, the file has {size - 8} after it)"))
            header = json.loads(f.read(n).decode("utf-8"))
    except OSError as exc:
        raise HuggingFaceFolderError(_at(file, f"cannot be read ({exc.strerror or exc})")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HuggingFaceFolderError(_at(file, f"not a safetensors file: the header is not JSON ({exc})")) from None
    if not isinstance(header, dict):
        raise HuggingFaceFolderError(_at(file, "not a safetensors file: the header is not a JSON object"))
    entries = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = (int(o) for o in entry["data_offsets"])
            entries[name] = TensorEntry(file, name, str(entry["dtype"]), tuple(int(d) for d in entry["shape"]),
                                        8 + n + begin, 8 + n + end)
        except (TypeError, KeyError, ValueError):
            raise HuggingFaceFolderError(_at(file, f"tensor {name!r} has a malformed header entry")) from None
        if entries[name].end > size:
            raise HuggingFaceFolderError(_at(file, f"truncated: tensor {name!r} ends at byte {entries[name].end}, "
                                                   f"the file has {size}"))
    return entries


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files holding the weights; HuggingFaceFolderError if there are none
    (naming what there is instead: pickles are refused, never opened)."""
    if (folder / WEIGHTS_FILE).is_file():
        return [folder / WEIGHTS_FILE]
    index = folder / WEIGHTS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise HuggingFaceFolderError(_at(index, f"not a safetensors index (no readable weight_map: {exc})")) \
                from None
        files = [folder / name for name in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise HuggingFaceFolderError(_at(index, f"names {missing[0]}, which is missing"))
        return files
    for name in PICKLES:
        if (folder / name).exists():
            raise HuggingFaceFolderError(_at(
                folder / name, "a PyTorch pickle checkpoint, which CLLM never loads (unpickling can run any code). "
                "Convert it to safetensors where you trust it, for example with transformers: "
                "GPT2LMHeadModel.from_pretrained(DIR).save_pretrained(DIR) writes model.safetensors"))
    for name, what in OTHER_FORMATS.items():
        if (folder / name).exists():
            raise HuggingFaceFolderError(_at(folder / name, f"{what}; CLLM imports safetensors weights "
                                                            f"({WEIGHTS_FILE}) only"))
    raise HuggingFaceFolderError(_at(folder, f"has no weights: no {WEIGHTS_FILE} or {WEIGHTS_INDEX}"))


def _match_tensors(files: list[Path], expected: dict[str, tuple[int, ...]], hf_file: Path
                   ) -> tuple[dict[str, TensorEntry], list[str], list[str]]:
    """Each expected GPT-2 tensor's entry (stored with or without the transformer.
    prefix), what does not fit the config, and notes."""
    found: dict[str, TensorEntry] = {}
    problems, notes = [], []
    for file in files:
        for stored, entry in _safetensors_header(file).items():
            name = stored[len(PREFIX):] if stored.startswith(PREFIX) else stored
            if _MASK_BUFFER.fullmatch(name):
                continue
            if name == "lm_head.weight":
                notes.append(f"{file.name}: lm_head.weight is tied to wte.weight (as transformers ties it); "
                             "it was not read")
                continue
            if name in found:
                problems.append(_at(file, f"tensor {name!r} is stored twice ({found[name].name!r} and {stored!r})"))
            elif name not in expected:
                problems.append(_at(file, f"unexpected tensor {stored!r}: it does not belong to the model "
                                          f"{hf_file.name} describes"))
            else:
                found[name] = entry
    for name, shape in expected.items():
        tensor = found.get(name)
        if tensor is None:
            problems.append(_at(files[0] if len(files) == 1 else files[0].parent / WEIGHTS_INDEX,
                                f"missing tensor {name!r} that {hf_file.name} implies"))
        elif tensor.shape != shape:
            problems.append(_at(tensor.file, f"tensor {tensor.name!r} has shape {list(tensor.shape)}, but "
                                            f"{hf_file.name} implies {list(shape)}"))
        elif tensor.dtype not in ("F32", *CONVERTED):
            problems.append(_at(tensor.file, f"tensor {tensor.name!r} is {tensor.dtype}: CLLM imports float32 "
                                            "weights (float16 and bfloat16 are converted to float32)"))
        elif tensor.end - tensor.start != int(np.prod(shape)) * (4 if tensor.dtype == "F32" else 2):
            problems.append(_at(tensor.file, f"tensor {tensor.name!r} has data offsets that do not fit its shape"))
    for dtype, label in CONVERTED.items():
        if any(e.dtype == dtype for e in found.values()):
            notes.append(f"{label} weights are converted to float32 (exactly: every {label} value is a "
                         "float32 value)")
    return found, problems, notes


# -- the folder ---------------------------------------------------------------------

def inspect_hf_folder(path: str | Path) -> HfFolderInfo:
    """Everything about a Hugging Face folder an import needs to know, without loading a
    weight. Raises HuggingFaceFolderError only when it is not such a folder at all (no
    such folder, no readable config.json); every other problem is listed in `problems`."""
    folder = Path(path).expanduser()
    hf = _read_config(folder)
    config_file = folder / CONFIG_FILE
    config, problems = _config_problems(config_file, hf)
    info = HfFolderInfo(path=folder, hf_config=hf, config=config, tokenizer_kind=None,
                        tokenizer_files=tokenizer_files(folder), weight_files=[], dtypes=[],
                        n_params=Layout.params(config).size if config else None, problems=problems,
                        notes=read_dropout(config_file, hf)[1])
    try:
        files = _weight_files(folder)
        info.weight_files = [f.name for f in files]
        if config is not None:
            info.tensors, weight_problems, notes = _match_tensors(files, tensor_shapes(config), config_file)
            info.notes += notes
            info.problems += weight_problems
            info.dtypes = sorted({e.dtype for e in info.tensors.values()})
    except HuggingFaceFolderError as exc:
        info.problems.append(str(exc))
    try:
        info.tokenizer_kind = tokenizer_kind(folder)
    except HuggingFaceFolderError as exc:
        info.problems.append(str(exc))
    return info


def _read_into(view: np.ndarray, entry: TensorEntry, f) -> None:
    """The tensor's bytes from the open file `f`, as float32, into `view` (contiguous)."""
    f.seek(entry.start)
    if entry.dtype == "F32" and sys.byteorder == "little":
        target = view.reshape(-1).data.cast("B")
        if f.readinto(target) != entry.end - entry.start:
            raise HuggingFaceFolderError(_at(entry.file, f"truncated in tensor {entry.name!r}"))
        return
    raw = f.read(entry.end - entry.start)
    if len(raw) != entry.end - entry.start:
        raise HuggingFaceFolderError(_at(entry.file, f"truncated in tensor {entry.name!r}"))
    if entry.dtype == "F32":
        view[...] = np.frombuffer(raw, "<f4").reshape(view.shape)
    elif entry.dtype == "F16":
        view[...] = np.frombuffer(raw, "<f2").reshape(view.shape)
    else:  # BF16: the upper half of a float32
        view[...] = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(view.shape)


def load_hf_folder(path: str | Path, progress: Progress | None = None) -> LoadedHfModel:
    """The folder's model in memory. Raises HuggingFaceFolderError with the first problem
    `inspect_hf_folder` finds, or one found while reading. `progress(done, total)` is
    called with bytes of weights read."""
    info = inspect_hf_folder(path)
    if info.problems:
        raise HuggingFaceFolderError(info.problems[0])
    config = info.config
    assert config is not None  # inspect_hf_folder reports a problem whenever it has no config
    tokenizer = load_tokenizer(info.path)
    if tokenizer.vocab_size > config.vocab_size:
        file = info.path / info.tokenizer_files[0]
        raise HuggingFaceFolderError(_at(file, f"the tokenizer has {tokenizer.vocab_size} tokens, but "
                                               f"{CONFIG_FILE} says vocab_size {config.vocab_size}"))
    layout = Layout.params(config)
    flat = np.empty(layout.size, np.float32)
    views = layout.named_views(flat)
    total = sum(e.end - e.start for e in info.tensors.values())
    done = 0
    by_file: dict[Path, list[tuple[str, TensorEntry]]] = {}
    for name, entry in info.tensors.items():
        by_file.setdefault(entry.file, []).append((name, entry))
    for file, entries in by_file.items():
        try:
            with open(file, "rb") as f:
                for name, entry in sorted(entries, key=lambda item: item[1].start):
                    _read_into(views[name], entry, f)
                    done += entry.end - entry.start
                    if progress is not None:
                        progress(done, total)
        except OSError as exc:
            raise HuggingFaceFolderError(_at(file, f"cannot be read ({exc.strerror or exc})")) from None
    for name, view in views.items():
        if not np.isfinite(view).all():
            entry = info.tensors[name]
            count = view.size - int(np.count_nonzero(np.isfinite(view)))
            raise HuggingFaceFolderError(_at(entry.file, f"tensor {entry.name!r} has {count} non-finite values "
                                                         "(NaN or infinity)"))
    imported: dict[str, Any] = {
        "format": "hugging-face-gpt2", "folder": str(info.path.resolve()),
        "files": {name: file_sha256(info.path / name) for name in info.weight_files},
        "tokenizer_files": info.tokenizer_files, "dtype": info.dtype,
        **TrainConfig().with_dropout_rates(read_dropout(info.path / CONFIG_FILE, info.hf_config)[0]).dropout_settings(),
    }
    padded = config.vocab_size
    if tokenizer.vocab_size < padded:
        config, flat = _trim_vocabulary(config, flat, tokenizer.vocab_size)
        imported["vocab_trimmed_from"] = padded
        info.notes.append(f"{CONFIG_FILE} says vocab_size {padded}, the tokenizer has {tokenizer.vocab_size} "
                          f"tokens: the embedding's last {padded - tokenizer.vocab_size} rows (padding, as nanoGPT "
                          "pads GPT-2's 50257 to 50304) are dropped, so no token is ever drawn from them")
    return LoadedHfModel(GPT(config, tokenizer, flat), info, imported)


def _trim_vocabulary(config: ModelConfig, flat: np.ndarray, vocab_size: int) -> tuple[ModelConfig, np.ndarray]:
    """The model with only the embedding's first `vocab_size` rows: a padded vocabulary's
    extra rows belong to no token."""
    trimmed = replace(config, vocab_size=vocab_size)
    layout, old = Layout.params(trimmed), Layout.params(config)
    out = np.empty(layout.size, np.float32)
    sources = old.named_views(flat)
    for name, view in layout.named_views(out).items():
        view[...] = sources[name][:vocab_size] if name == "wte.weight" else sources[name]
    return trimmed, out


def import_hf_folder(path: str | Path, out: str | Path, *, force: bool = False,
                     progress: Progress | None = None) -> ImportResult:
    """Reads the folder and saves its model as the .cllm file `out` (atomically; with no
    optimiser state: a fine-tune starts a fresh one). Refuses to replace an existing file
    unless `force`, or a file a live run or import writes (FileBusyError)."""
    from cllm.core.file_lock import LockHolder, lock_model_file
    from cllm.core.model_file import save_model

    started = time.perf_counter()
    out = Path(out).expanduser()
    with lock_model_file(out, LockHolder.this_process(f"import of {Path(path).name}")):
        if out.exists() and not force:
            raise HuggingFaceFolderError(f"{out} already exists; pass --force to replace it")
        loaded = load_hf_folder(path, progress)
        save_model(out, loaded.model, training={"imported": loaded.imported})
    return ImportResult(out, loaded.info, time.perf_counter() - started)
