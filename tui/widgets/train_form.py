"""The training form: corpus, tokenizer, model shape and training settings.

Every input validates as you type (Textual validators that reuse the engine's own
config checks); the reasons for all invalid fields are listed under the form.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, VerticalScroll
from textual.widgets import Button, Input, Label, Select, Static

from cllm.core.recipes import RECIPES, Recipe
from cllm.tui.engine import DEFAULT_VOCAB, QUICK_START, TRAINABLE_KINDS, ConfigError, TrainConfig
from cllm.tui.training_run import RunPlan
from cllm.tui.validators import (
    ConfigValidator,
    CorpusValidator,
    model_check,
    parse_float,
    parse_int,
    train_check,
    try_int,
    vocab_check,
)

INT_CHARS = r"[0-9_]*"
FLOAT_CHARS = r"[0-9eE.+\-]*"
TOKENIZERS = [(kind, kind) for kind in TRAINABLE_KINDS]
RECIPE_CHOICES = [(name, name) for name in RECIPES]

# id -> (label, initial value); order is the order on screen (two per grid row)
INT_FIELDS = {
    "layers": ("Layers", "n_layer"),
    "heads": ("Heads", "n_head"),
    "width": ("Width", "n_embd"),
    "ctx": ("Context", "ctx"),
}
TRAIN_FIELDS = {
    "batch": ("Batch", "batch", "int"),
    "steps": ("Steps", "steps", "int"),
    "lr": ("LR", "lr", "float"),
    "eval": ("Eval every", "eval_interval", "int"),
    "threads": ("Threads", "threads", "int"),
    "dropout": ("Dropout", "dropout", "float"),
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


class TrainForm(VerticalScroll, can_focus=False):
    def __init__(self, builtin_corpora: list[str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.builtin = builtin_corpora
        # The Dropout field as the form last filled it, and whether the rate counts as given
        # (typed, or set by a recipe that has one): untouched, a continued run or a fine-tune
        # keeps the model's own rate, as `cllm train --resume/--init` does without --dropout.
        self._dropout_filled = _fmt(QUICK_START["dropout"])
        self.dropout_given = False

    # -- layout ------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        q = QUICK_START
        yield Static("Corpus (file or built-in name)", classes="form-heading")
        with Horizontal(id="corpus-row"):
            yield Input(q["corpus"], id="corpus", compact=True, validators=[CorpusValidator(self.builtin)])
            yield Button("Browse", id="browse", compact=True)
        with Horizontal(id="recipe-row"):
            yield Label("Recipe")
            yield Select(RECIPE_CHOICES, prompt="none: the fields below", id="recipe", compact=True)
        with Grid(id="form-grid"):
            yield Label("Tokenizer")
            yield Select(TOKENIZERS, value=q["tokenizer"], allow_blank=False, id="tokenizer", compact=True)
            yield Label("Vocab")
            yield Input("", id="vocab", compact=True, placeholder="auto", disabled=True, restrict=INT_CHARS,
                        validators=[ConfigValidator("vocab size", vocab_check(self._tokenizer_kind))])
            for field_id, (label, key) in INT_FIELDS.items():
                yield Label(label)
                yield Input(_fmt(q[key]), id=field_id, compact=True, restrict=INT_CHARS,
                            validators=[ConfigValidator(label.lower(), model_check(key, self._partners))])
            for field_id, (label, key, number) in TRAIN_FIELDS.items():
                yield Label(label)
                yield Input(_fmt(q[key]), id=field_id, compact=True,
                            restrict=FLOAT_CHARS if number == "float" else INT_CHARS,
                            validators=[ConfigValidator(label.lower(), train_check(key), number=number)])
        yield Static("Threads 0 uses every core.", classes="form-hint")
        with Horizontal(id="run-buttons"):
            yield Button("Start", id="start", variant="success", compact=True)
            yield Button("Pause", id="pause", compact=True, disabled=True)
            yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
        yield Static("", id="form-errors", markup=False)

    def on_mount(self) -> None:
        self.refresh_errors()

    # -- validation --------------------------------------------------------------------
    def _tokenizer_kind(self) -> str:
        try:
            value = self.query_one("#tokenizer", Select).value
        except Exception:  # before compose
            return "char"
        return value if isinstance(value, str) else "char"

    def _partners(self) -> dict[str, int | None]:
        try:
            return {"n_head": try_int(self.query_one("#heads", Input).value),
                    "n_embd": try_int(self.query_one("#width", Input).value)}
        except Exception:  # before compose
            return {}

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "dropout" and event.value != self._dropout_filled:
            self.dropout_given = True
        partner = {"heads": "#width", "width": "#heads"}.get(event.input.id or "")
        if partner:
            other = self.query_one(partner, Input)
            other.validate(other.value)
        self.refresh_errors()

    def _recipe(self) -> Recipe | None:
        value = self.query_one("#recipe", Select).value
        return RECIPES.get(value) if isinstance(value, str) else None

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "recipe":
            self._recipe_chosen()
            return
        vocab = self.query_one("#vocab", Input)
        kind = self._tokenizer_kind()
        vocab.disabled = kind == "char"
        vocab.placeholder = "auto" if kind == "char" else str(DEFAULT_VOCAB[kind])
        if kind != "char" and not vocab.value:
            vocab.value = str(DEFAULT_VOCAB[kind])
        if kind == "char":
            vocab.value = ""
        vocab.validate(vocab.value)
        self.refresh_errors()

    def _inputs(self) -> list[Input]:
        return [i for i in self.query(Input) if not i.disabled]

    def errors(self) -> list[str]:
        problems: list[str] = []
        for field in self._inputs():
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                problems.extend(d for d in result.failure_descriptions if d not in problems)
        return problems

    def refresh_errors(self) -> None:
        problems = self.errors()
        box = self.query_one("#form-errors", Static)
        box.update("\n".join(f"• {p}" for p in problems))
        box.display = bool(problems)

    # -- values ------------------------------------------------------------------------
    def _recipe_chosen(self) -> None:
        """Fills the fields with the recipe's settings; what is typed afterwards overrides them."""
        chosen = self._recipe()
        if chosen is not None:
            config = chosen.train_config()
            self.set_values({**chosen.shape(), "batch": config.batch, "steps": config.steps, "lr": config.lr,
                             "eval_interval": config.eval_interval, "dropout": config.dropout})
            self._dropout_filled = _fmt(config.dropout)
            self.dropout_given = "dropout" in chosen.train  # as `--recipe` gives --dropout's default

    def set_values(self, values: dict) -> None:
        """Fill the form (the quick start uses this)."""
        mapping = {"corpus": "corpus", "n_layer": "layers", "n_head": "heads", "n_embd": "width",
                   "ctx": "ctx", "batch": "batch", "steps": "steps", "lr": "lr",
                   "eval_interval": "eval", "threads": "threads", "dropout": "dropout"}
        if "tokenizer" in values:
            self.query_one("#tokenizer", Select).value = values["tokenizer"]
        for key, field_id in mapping.items():
            if key in values:
                self.query_one(f"#{field_id}", Input).value = _fmt(values[key])
        if values.get("vocab_size"):
            self.query_one("#vocab", Input).value = str(values["vocab_size"])

    def plan(self) -> RunPlan:
        """The checked values, or ConfigError listing what is wrong."""
        problems = self.errors()
        if problems:
            raise ConfigError("; ".join(problems))
        value = {i.id: i.value.strip() for i in self.query(Input)}
        kind = self._tokenizer_kind()
        model_config = {"n_layer": parse_int(value["layers"]), "n_head": parse_int(value["heads"]),
                        "n_embd": parse_int(value["width"]), "ctx": parse_int(value["ctx"])}
        settings: dict[str, Any] = dict(
            steps=parse_int(value["steps"]), batch=parse_int(value["batch"]), lr=parse_float(value["lr"]),
            eval_interval=parse_int(value["eval"]), threads=parse_int(value["threads"]),
            dropout=parse_float(value["dropout"]))
        chosen = self._recipe()  # its other settings (final lr, beta2, ...) under the fields'
        # the warm-up and the checkpoints follow core's rules (TrainConfig), as in `cllm train`
        train_config = chosen.train_config(**settings) if chosen is not None else TrainConfig(**settings).validate()
        vocab = parse_int(value["vocab"]) if kind != "char" and value["vocab"] else None
        return RunPlan(corpus=value["corpus"], tokenizer=kind, vocab_size=vocab,
                       model_config=model_config, train_config=train_config, dropout_given=self.dropout_given)

    def set_running(self, running: bool, paused: bool = False) -> None:
        self.query_one("#start", Button).disabled = running
        pause = self.query_one("#pause", Button)
        pause.disabled = not running
        pause.label = "Resume" if paused else "Pause"
        self.query_one("#stop", Button).disabled = not running
