"""The .cllm model file: a safetensors file with CLLM metadata (see docs/FORMAT.md).

Loading checks everything before building anything, and every problem is reported as a
ModelFileError whose message starts with the file's path.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open

from cllm.core.config import ModelConfig
from cllm.core.errors import ConfigError, ModelFileError, TokenizerError
from cllm.core.layout import Layout, tensor_shapes
from cllm.core.model import GPT
from cllm.core.run_state import RunState
from cllm.core.tokenizer import Tokenizer, tokenizer_from_json

FORMAT = "cllm"
VERSION = 1
OPTIM_PREFIXES = ("optim.m.", "optim.v.")
MAX_HEADER = 100_000_000  # the safetensors library's own limit


@dataclass
class ModelInfo:
    """What the header says about a model; reading it does not touch the tensors."""

    path: Path
    config: ModelConfig
    tokenizer: dict
    training: dict  # the metadata as stored
    run: RunState  # the same, read
    created: str
    updated: str
    n_params: int
    has_optimizer: bool
    file_size: int


@dataclass
class LoadedModel:
    model: GPT
    optimizer: tuple[np.ndarray, np.ndarray] | None  # Adam (m, v), same layout as model.params
    training: dict
    info: ModelInfo


def _error(path: Path, message: str) -> ModelFileError:
    return ModelFileError(f"{path}: {message}")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _non_finite(tensors: dict[str, np.ndarray]) -> str:
    """'' if all values are finite, else which tensors hold NaN or infinity and how many."""
    bad = [(name, v.size - int(np.count_nonzero(np.isfinite(v))))
           for name, v in tensors.items() if not np.isfinite(v).all()]
    parts = [f"tensor {name!r} has {count} non-finite values (NaN or infinity)" for name, count in bad[:3]]
    more = f" (and {len(bad) - 3} more tensors)" if len(bad) > 3 else ""
    return "; ".join(parts) + more


def write_safetensors(f, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Streams `tensors` (float32) to the open binary file `f` in the safetensors layout
    (docs/FORMAT.md): the header, padded with spaces to a multiple of 8 bytes, then each
    tensor's bytes in order. Unlike safetensors' own `save_file` it copies no tensor, and
    a failing write raises the operating system's OSError (a full disk says so)."""
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for name, array in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for array in tensors.values():
        f.write(np.ascontiguousarray(array, dtype="<f4").data.cast("B"))


def save_model(
    path: str | Path,
    model: GPT,
    *,
    optimizer: tuple[np.ndarray, np.ndarray] | None = None,
    training: dict | None = None,
    created: str | None = None,
) -> Path:
    """Write `model` (and optionally the Adam moments) atomically: a temporary file in the
    same folder is written and synced, then renamed over `path`. On failure the temporary
    file is removed and an existing `path` is untouched."""
    path = Path(path).expanduser()
    config, tokenizer = model.config, model.tokenizer
    if tokenizer.vocab_size != config.vocab_size:
        raise _error(path, f"cannot save: the tokenizer has {tokenizer.vocab_size} tokens "
                           f"but the model's vocab_size is {config.vocab_size}")
    tensors = dict(model.tensors())
    if optimizer is not None:
        for prefix, buffer in zip(OPTIM_PREFIXES, optimizer, strict=True):
            if buffer.shape != (model.layout.size,):
                raise ValueError(f"optimizer buffer has shape {buffer.shape}, expected ({model.layout.size},)")
            for name, v in model.layout.named_views(buffer).items():
                tensors[prefix + name] = v
    bad = _non_finite(tensors)
    if bad:
        raise _error(path, f"cannot save: {bad}")
    now = _now()
    try:
        metadata = {
            "format": FORMAT,
            "version": str(VERSION),
            "config": json.dumps(config.to_dict()),
            "tokenizer": json.dumps(tokenizer.to_json()),
            "training": json.dumps(training or {}),
            "created": created or now,
            "updated": now,
        }
    except (TypeError, ValueError) as exc:
        raise _error(path, f"cannot save: the training state is not JSON-serialisable ({exc})") from None

    if path.is_dir():
        raise _error(path, "cannot save: is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise _error(path, f"cannot save: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        with open(tmp, "wb") as f:
            write_safetensors(f, tensors, metadata)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _error(path, f"cannot save: {exc.strerror or exc}") from exc
        raise
    # Make the rename itself durable. Not every platform or file system can sync a
    # folder; the file is already complete and in place, so that is not an error.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _foreign(prefix: bytes) -> str:
    """A guess at what a non-safetensors file is, from its first bytes."""
    kinds = {
        b"PK\x03\x04": "a zip archive (a PyTorch checkpoint?)",
        b"GGUF": "a GGUF model file",
        b"\x93NUMPY": "a NumPy .npy file",
        b"\x89HDF": "an HDF5 file",
    }
    for magic, what in kinds.items():
        if prefix.startswith(magic):
            return f"; it looks like {what}"
    if prefix[:1] == b"\x80" and prefix[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "; it looks like a Python pickle (CLLM never loads pickles)"
    return ""


def _read_header(path: Path) -> tuple[dict, int, int]:
    """The safetensors header as a dict, its length in bytes, and the file size."""
    if not path.exists():
        raise _error(path, "no such file")
    if path.is_dir():
        raise _error(path, "is a directory, not a model file")
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) < 8:
                raise _error(path, f"truncated or not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", prefix)
            if n < 2 or n > MAX_HEADER or n > size - 8:
                raise _error(path, f"truncated or not a safetensors file (the header length field says "
                                   f"{n} bytes, the file has {size - 8} after it){_foreign(prefix)}")
            raw = f.read(n)
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _error(path, f"not a safetensors file: the header is not JSON ({exc}){_foreign(prefix)}") from None
    if not isinstance(header, dict):
        raise _error(path, "not a safetensors file: the header is not a JSON object")
    return header, n, size


def _json_field(path: Path, meta: dict, key: str, what: str, default: dict | None = None) -> dict:
    if key not in meta and default is not None:
        return default
    if key not in meta:
        raise _error(path, f"the metadata has no {what} (key {key!r})")
    try:
        value = json.loads(meta[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise _error(path, f"the {what} is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise _error(path, f"the {what} is not a JSON object")
    return value


def _check_tensors(path: Path, header: dict, expected: dict[str, tuple[int, ...]], data_len: int) -> None:
    """Every tensor `expected` is present, with its shape and dtype, and their bytes tile
    the data section exactly: in order, without gaps or overlaps, within the file."""
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    missing = [name for name in expected if name not in entries]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise _error(path, f"missing tensor {missing[0]!r}{more}")
    unexpected = [name for name in entries if name not in expected]
    if unexpected:
        raise _error(path, f"unexpected tensor {unexpected[0]!r} (not part of a model with this config)")
    spans = []
    for name, shape in expected.items():
        entry = entries[name]
        try:
            found = tuple(int(d) for d in entry["shape"])
            dtype = str(entry["dtype"])
            begin, stop = (int(o) for o in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise _error(path, f"tensor {name!r} has a malformed header entry") from None
        if found != shape:
            raise _error(path, f"tensor {name!r} has shape {list(found)}, expected {list(shape)}")
        if dtype != "F32":
            raise _error(path, f"tensor {name!r} has dtype {dtype}, expected F32 (float32)")
        if begin < 0 or stop - begin != 4 * math.prod(shape):
            raise _error(path, f"tensor {name!r} has data offsets [{begin}, {stop}] that do not fit its shape")
        spans.append((begin, stop, name))
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            what = "overlaps the tensor before it" if begin < end else f"leaves a gap of {begin - end} bytes before it"
            raise _error(path, f"tensor {name!r} at data offset {begin} {what}")
        end = stop
    if end > data_len:
        raise _error(path, f"the file is truncated: its data section has {data_len} bytes, the header describes {end}")
    if end < data_len:
        raise _error(path, f"the data section has {data_len - end} bytes after the last tensor (a damaged file?)")


def _inspect(path: Path) -> tuple[ModelInfo, Tokenizer]:
    """Everything the header can tell, checked: the metadata, the tokenizer, and every
    tensor's name, shape, dtype and place in the file. Reads no tensor data."""
    header, header_len, size = _read_header(path)
    meta = header.get("__metadata__")
    if not isinstance(meta, dict):
        meta = {}
    fmt = meta.get("format")
    if fmt != FORMAT:
        if fmt is not None:
            raise _error(path, f"not a CLLM model file (its format is {fmt!r}, expected {FORMAT!r})")
        names = [k for k in header if k != "__metadata__"]
        example = f", e.g. {names[0]!r}" if names else ""
        count = f"{len(names)} tensor{'' if len(names) == 1 else 's'}"
        raise _error(path, f"not a CLLM model file: a safetensors file without CLLM metadata ({count}{example})")
    version: Any = meta.get("version")  # whatever the file's JSON holds
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise _error(path, f"the format version {version!r} is not a number") from None
    if number > VERSION:
        raise _error(path, f"written by a newer CLLM (file format version {number}; this CLLM reads "
                           f"version {VERSION}): upgrade CLLM to load it")
    if number < 1:
        raise _error(path, f"unknown file format version {number}")
    try:
        config = ModelConfig.from_dict(_json_field(path, meta, "config", "model config")).validate()
    except ConfigError as exc:
        raise _error(path, f"invalid model config: {exc}") from None
    tokenizer_json = _json_field(path, meta, "tokenizer", "tokenizer description")
    try:
        tokenizer = tokenizer_from_json(tokenizer_json)
    except TokenizerError as exc:
        raise _error(path, f"broken tokenizer: {exc}") from None
    if tokenizer.vocab_size != config.vocab_size:
        raise _error(path, f"the tokenizer has {tokenizer.vocab_size} tokens but the model config "
                           f"says vocab_size={config.vocab_size}")
    training = _json_field(path, meta, "training", "training state", default={})
    created = str(meta.get("created", ""))
    try:
        run = RunState.from_training_dict(training, created or None)
    except ValueError as exc:
        raise _error(path, f"invalid training state: {exc}") from None
    shapes = tensor_shapes(config)
    has_optimizer = any(k.startswith(OPTIM_PREFIXES) for k in header)
    expected = dict(shapes)
    if has_optimizer:
        expected |= {prefix + name: shape for prefix in OPTIM_PREFIXES for name, shape in shapes.items()}
    _check_tensors(path, header, expected, size - 8 - header_len)
    info = ModelInfo(
        path=path,
        config=config,
        tokenizer=tokenizer_json,
        training=training,
        run=run,
        created=created,
        updated=str(meta.get("updated", "")),
        n_params=Layout.params(config).size,
        has_optimizer=has_optimizer,
        file_size=size,
    )
    return info, tokenizer


def read_info(path: str | Path) -> ModelInfo:
    """Read and check the header (fast however big the file is): a file this returns for
    can be loaded unless its values are not finite (`check_values`) or it changes."""
    return _inspect(Path(path).expanduser())[0]


def _read_buffers(path: Path, info: ModelInfo,
                  progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
    """The parameters and, if saved, the two Adam moments, as flat buffers.
    `progress(bytes read, bytes in all)` follows the reading."""
    layout = Layout.params(info.config)
    prefixes = ("",) + (OPTIM_PREFIXES if info.has_optimizer else ())
    buffers = [np.empty(layout.size, dtype=np.float32) for _ in prefixes]
    total, done = 4 * layout.size * len(buffers), 0
    try:
        with safe_open(str(path), framework="numpy") as f:
            for prefix, buffer in zip(prefixes, buffers, strict=True):
                for name, view in layout.named_views(buffer).items():
                    view[...] = f.get_tensor(prefix + name)
                    done += view.nbytes
                    if progress is not None:
                        progress(done, total)
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise _error(path, f"not a valid safetensors file ({exc})") from None
    for prefix, buffer in zip(prefixes, buffers, strict=True):
        bad = _non_finite({prefix + k: v for k, v in layout.named_views(buffer).items()})
        if bad:
            raise _error(path, bad)
    return buffers


def check_values(path: str | Path) -> ModelInfo:
    """`read_info`, then every value read and checked to be finite, one tensor at a time
    (so a big file needs little memory). Raises ModelFileError naming the tensors."""
    path = Path(path).expanduser()
    info = read_info(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            for name in f.keys():
                bad = _non_finite({name: f.get_tensor(name)})
                if bad:
                    raise _error(path, bad)
    except OSError as exc:
        raise _error(path, f"cannot be read ({exc.strerror or exc})") from None
    except ModelFileError:
        raise
    except Exception as exc:  # safetensors' own error types
        raise _error(path, f"not a valid safetensors file ({exc})") from None
    return info


def load_model(path: str | Path, progress: Callable[[int, int], None] | None = None) -> LoadedModel:
    """Load and check a model (and its optimiser state, if saved). Raises ModelFileError
    naming the file and the problem; nothing is returned half-built. `progress(bytes
    read, bytes in all)` is called as the tensors are read (for a large model's load)."""
    path = Path(path).expanduser()
    info, tokenizer = _inspect(path)
    buffers = _read_buffers(path, info, progress)
    model = GPT(info.config, tokenizer, buffers[0])
    optimizer = (buffers[1], buffers[2]) if info.has_optimizer else None
    return LoadedModel(model=model, optimizer=optimizer, training=info.training, info=info)
