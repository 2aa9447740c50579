"""Input validators for the training form and the sampling settings.

They reuse the engine's own checks (ModelConfig, TrainConfig and SampleConfig's validate
raise ConfigError with a readable message), so a form says exactly what the engine would.
Each validator builds a config in which only its own field (and a field it depends on,
such as width for heads) comes from the form; the rest are known-good values, so one
wrong field does not turn every other field red.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.validation import ValidationResult, Validator

from cllm.tui.engine import ConfigError, ModelConfig, SampleConfig, TrainConfig, check_vocab_size

SAFE_MODEL = {"vocab_size": 256, "n_layer": 1, "n_head": 1, "n_embd": 64, "ctx": 16}


def parse_int(text: str) -> int:
    return int(text.strip().replace("_", ""))


def parse_float(text: str) -> float:
    return float(text.strip())


def try_int(text: str | None) -> int | None:
    try:
        return parse_int(text or "")
    except ValueError:
        return None


class ConfigValidator(Validator):
    """Parse the value, then let `check(value)` raise ConfigError with the reason."""

    def __init__(self, label: str, check: Callable[[Any], None], *, number: str = "int",
                 allow_empty: bool = False) -> None:
        super().__init__()
        self.label = label
        self.check = check
        self.number = number
        self.allow_empty = allow_empty  # an empty field means the engine's default (None)

    def validate(self, value: str) -> ValidationResult:
        if not value.strip() and self.allow_empty:
            return self.success()
        if not value.strip():
            return self.failure(f"{self.label}: enter a value")
        try:
            parsed = parse_int(value) if self.number == "int" else parse_float(value)
        except ValueError:
            kind = "a whole number" if self.number == "int" else "a number (e.g. 1e-3)"
            return self.failure(f"{self.label} must be {kind}, got {value.strip()!r}")
        try:
            self.check(parsed)
        except ConfigError as exc:
            return self.failure(str(exc))
        return self.success()


def model_check(field: str, partner: Callable[[], dict[str, int | None]] | None = None) -> Callable[[int], None]:
    """A check for one ModelConfig field; `partner` supplies the fields it depends on."""

    def check(value: int) -> None:
        values = dict(SAFE_MODEL)
        values[field] = value
        others = partner() if partner else {}
        if field == "n_head":
            width = others.get("n_embd")
            values["n_embd"] = width if width is not None and 1 <= width <= 4096 else max(value, 1)
        elif field == "n_embd":
            heads = others.get("n_head")
            values["n_head"] = heads if heads is not None and 1 <= heads <= 64 else 1
        ModelConfig(**values).validate()

    return check


def train_check(field: str) -> Callable[[int | float], None]:
    def check(value: int | float) -> None:
        settings: dict[str, Any] = {field: value}
        TrainConfig(**settings).validate()

    return check


def sample_check(field: str) -> Callable[[int | float], None]:
    """A check for one SampleConfig field (the Generate screen's settings)."""

    def check(value: int | float) -> None:
        settings: dict[str, Any] = {field: value}
        SampleConfig(**settings).validate()

    return check


def vocab_check(tokenizer: Callable[[], str]) -> Callable[[int], None]:
    """The tokenizer's own limits (core.tokenizer.check_vocab_size)."""

    def check(value: int) -> None:
        check_vocab_size(tokenizer(), value)

    return check


class CorpusValidator(Validator):
    """A built-in corpus name or a path to an existing file (a cheap stat per keystroke)."""

    def __init__(self, builtin: list[str]) -> None:
        super().__init__()
        self.builtin = builtin

    def validate(self, value: str) -> ValidationResult:
        text = value.strip()
        if not text:
            return self.failure(f"corpus: type a file path or a built-in name ({', '.join(self.builtin)})")
        if text in self.builtin:
            return self.success()
        path = Path(text).expanduser()
        if path.is_dir():
            return self.failure(f"{path}: is a folder; choose a text file")
        if not path.is_file():
            return self.failure(f"{path}: no such file (built-in: {', '.join(self.builtin)})")
        return self.success()


def free_name(models_dir: Path, base: str) -> str:
    """A name for a new model file from `base`: `base`, or `base-2`, `base-3`, ...
    whichever has no file yet."""
    base = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in base).strip("-") or "model"
    name, n = base, 1
    while (models_dir / f"{name}.cllm").exists():
        n += 1
        name = f"{base}-{n}"
    return name


class NewModelName(Validator):
    """A name for a new model file: a plain file name that does not exist yet."""

    def __init__(self, models_dir: Path) -> None:
        super().__init__()
        self.models_dir = models_dir

    def validate(self, value: str) -> ValidationResult:
        name = value.strip()
        if name.endswith(".cllm"):
            name = name[: -len(".cllm")]
        if not name:
            return self.failure("type a name for the new model")
        if any(ch in name for ch in "/\\\0") or name.startswith("."):
            return self.failure(f"{name!r}: use a plain name without slashes or a leading dot")
        if (self.models_dir / f"{name}.cllm").exists():
            return self.failure(f"{self.models_dir / (name + '.cllm')} already exists; choose another name")
        return self.success()
