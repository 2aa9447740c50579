"""`cllm`: train, generate, evaluate and inspect models from the shell."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import fields
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cllm.core.cli_cache import add_cache, cmd_cache
from cllm.core.cli_data import add_prepare, add_source_args, cmd_prepare, dataset_info, run_data, training_data
from cllm.core.config import DROPOUT_SETTINGS, WEIGHTS, ModelConfig, SampleConfig, TrainConfig
from cllm.core.dataset import is_dataset
from cllm.core.errors import CllmError, ConfigError, TokenizerError
from cllm.core.mpi_world import DEFAULT_TIMEOUT as MPI_TIMEOUT
from cllm.core.recipes import RECIPES, Recipe
from cllm.core.run_commands import add_runs_parser, add_train_options, cmd_runs, origin, start_background
from cllm.core.stop_signals import flush_or_drop_output, stop_on_signals
from cllm.core.tokenizer import TRAINABLE_KINDS

DEFAULT_MODEL = Path("models") / "saved_model.cllm"
CLI_RECIPE = "shakespeare-char-cpu"  # the settings of `cllm train` without --recipe: TrainConfig's defaults

err = Console(stderr=True)

EXIT_CODES = """exit codes:
  0  training finished, or was stopped (Ctrl-C, SIGTERM, SIGHUP) and saved
  1  the loss became NaN or infinite: stopped, the last checkpoint kept
  2  bad input (a file, the corpus, a setting): nothing was trained
  3  the model file could not be written: the run was saved to a fallback file (printed)
  4  the run could not be saved anywhere (every place tried is printed)
  5  under mpiexec: a rank was lost (died, left, or no answer in --mpi-timeout seconds;
     rank 0 saved the last finished step) or the ranks' parameters differ"""


def _add_train(sub, base: Recipe) -> None:
    """The train command, its defaults those of `base` (the recipe given, else CLI_RECIPE)."""
    p = sub.add_parser("train", help="train a model on a text file (or the built-in corpus)",
                       description="Train a model. Ctrl-C, SIGTERM or SIGHUP stops at the next step and saves.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="*", default=[], metavar="PATH",
                   help="UTF-8 text files and folders (read recursively), a dataset folder from `cllm prepare`, "
                        "or 'python-docs' (the default: CPython's documentation)")
    add_source_args(p)
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_MODEL, help=f"model file (default {DEFAULT_MODEL})")
    p.add_argument("--recipe", choices=list(RECIPES), default=None,
                   help="named settings, which the flags given beside it override: " +
                        "; ".join(f"{r.name}: {r.description}" for r in RECIPES.values()))
    d, t = ModelConfig(vocab_size=2, **base.shape()), base.train_config()
    # The shape flags default to None so that --init can tell whether they were given.
    p.add_argument("--layers", type=int, default=None, help=f"default {d.n_layer}")
    p.add_argument("--heads", type=int, default=None, help=f"default {d.n_head}")
    p.add_argument("--embd", type=int, default=None, help=f"width, default {d.n_embd}")
    p.add_argument("--ctx", type=int, default=None, help=f"context length in tokens, default {d.ctx}")
    p.add_argument("--tokenizer", choices=TRAINABLE_KINDS, default=None, help="default char")
    p.add_argument("--vocab-size", type=int, default=None, help="for word and bpe tokenizers")
    p.add_argument("--batch", type=int, default=t.batch)
    p.add_argument("--steps", type=int, default=t.steps, help="total steps (with --resume: the total to reach)")
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--min-lr", type=float, default=t.min_lr,
                   help="final learning rate (default " + ("lr/10)" if t.min_lr is None else f"{t.min_lr:g})"))
    p.add_argument("--warmup", type=int, default=t.warmup,
                   help="learning-rate warm-up steps (default: " +
                        ("a tenth of --steps, at most 100)" if t.warmup is None else f"{t.warmup})"))
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip)
    p.add_argument("--grad-accum", type=int, default=t.grad_accum)
    p.add_argument("--dropout", type=float, default=base.train.get("dropout"), metavar="P",
                   help=f"drop rate on the embeddings, attention and residual branches, 0 <= P < 1 (default "
                        f"{t.dropout:g}; --resume and --init keep the model's own unless a rate is given)")
    for site, where in (("embd", "the embeddings"), ("attn", "the attention probabilities"),
                        ("resid", "the residual branches")):
        p.add_argument(f"--{site}-dropout", type=float, default=base.train.get(f"{site}_dropout"), metavar="P",
                       help=f"the rate on {where} alone (GPT-2's {site}_pdrop; default --dropout's)")
    p.add_argument("--eval-interval", type=int, default=t.eval_interval)
    p.add_argument("--eval-chunks", type=int, default=t.eval_chunks,
                   help=f"held-out chunks each evaluation reads, spread over the split (default {t.eval_chunks}; "
                        "0: every one)")
    p.add_argument("--eval-all", action="store_true", help="every evaluation reads the whole validation split")
    p.add_argument("--checkpoint-interval", type=int, default=t.checkpoint_interval,
                   help="save every N steps (default: with each evaluation; 0: only at the end)")
    p.add_argument("--checkpoint-minutes", type=float, default=t.checkpoint_minutes,
                   help=f"also save when this many minutes passed since the last save (default "
                        f"{t.checkpoint_minutes:g}; 0: never), so even kill -9 loses at most that much")
    p.add_argument("--threads", type=int, default=t.threads,
                   help="0: all cores (under mpiexec, per rank: a machine's cores shared among its ranks)")
    p.add_argument("--mpi-timeout", type=float, default=MPI_TIMEOUT,
                   help=f"under mpiexec: seconds a rank waits for the others before it gives up on them "
                        f"(default {MPI_TIMEOUT:g}; docs/MPI.md)")
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--resume", action="store_true", help="continue training the model in --output")
    p.add_argument("--new-data", action="store_true",
                   help="with --resume: continue although the corpus changed since the run started")
    p.add_argument("--init", type=Path, default=None, metavar="MODEL",
                   help="fine-tune: start from MODEL's weights and tokenizer (a new run saved to --output)")
    p.add_argument("--force", action="store_true", help="replace an existing model file")
    p.add_argument("--json", action="store_true", help="print one JSON line of results")
    add_train_options(p)


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="stream text from a model")
    p.add_argument("model", type=Path, help="the .cllm model file")
    p.add_argument("--prompt", default="", help="text to continue (default: the start of a text)")
    s = SampleConfig()
    p.add_argument("--max-tokens", type=int, default=s.max_tokens, help=f"tokens to draw per sample ({s.max_tokens})")
    p.add_argument("--temperature", type=float, default=s.temperature,
                   help=f"0: always the most likely token ({s.temperature})")
    p.add_argument("--top-k", type=int, default=s.top_k, help="draw among the k most likely tokens (0: no limit)")
    p.add_argument("--top-p", type=float, default=s.top_p,
                   help="draw among the most likely tokens holding this much probability (1: no nucleus cut)")
    p.add_argument("--seed", type=int, default=s.seed, help="seed of the draws (none: random); sample n uses SEED + n")
    p.add_argument("--stop", default=s.stop, help="end generation before this text")
    p.add_argument("--samples", type=int, default=s.samples,
                   help="continuations of the prompt drawn at once, in one decoding loop (1)")
    p.add_argument("--threads", type=int, default=s.threads,
                   help="threads for the prompt pass and decoding (0: every core)")
    p.add_argument("--weights", choices=WEIGHTS, default=s.weights,
                   help="int8: quantize the weights at load and decode with them (an int8 model file always is)")
    p.add_argument("--past-end-of-text", action="store_true", default=s.past_end_of_text,
                   help="go on after the tokenizer's end-of-text token (GPT-2's <|endoftext|>) instead of stopping")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line: the text(s), prompt_tokens, first_token_ms, decode_tokens_per_s")


def _add_quantize(sub) -> None:
    p = sub.add_parser("quantize", help="write an int8 copy of a model (smaller, faster to generate from)")
    p.add_argument("model", type=Path, help="the float32 .cllm model file")
    p.add_argument("-o", "--output", type=Path, required=True, help="the int8 model file to write")
    p.add_argument("--force", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true", help="print one JSON line of results")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="validation loss on the held-out part of a corpus")
    p.add_argument("model", type=Path)
    p.add_argument("corpus", nargs="*", default=[], metavar="PATH", help="as for train")
    add_source_args(p, sample=False)
    p.add_argument("--eval-chunks", type=int, default=0, help="chunks spread over the split (default 0: every one)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe and check a model file, a prepared dataset, or a Hugging Face folder "
                                    "an import would read")
    p.add_argument("model", type=Path)
    p.add_argument("--header-only", action="store_true",
                   help="check what the header says but not the values (quicker for a huge file)")
    p.add_argument("--json", action="store_true")


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write a model as a Hugging Face GPT-2 folder (transformers loads it)")
    p.add_argument("model", type=Path)
    p.add_argument("folder", type=Path)
    p.add_argument("--force", action="store_true", help="replace a folder that is not empty")
    p.add_argument("--json", action="store_true")


def _add_import(sub) -> None:
    p = sub.add_parser("import", help="read a Hugging Face GPT-2 folder into a model file")
    p.add_argument("folder", type=Path)
    p.add_argument("-o", "--output", type=Path, default=None, help="model file (default models/FOLDER.cllm)")
    p.add_argument("--force", action="store_true", help="replace an existing model file")
    p.add_argument("--json", action="store_true")


def build_parser(base: Recipe | None = None) -> argparse.ArgumentParser:
    """The command line; `cllm train`'s defaults are those of `base` (a recipe) if given."""
    parser = argparse.ArgumentParser(prog="cllm", description="Train and sample small GPT models on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub, base or RECIPES[CLI_RECIPE])
    _add_generate(sub)
    _add_quantize(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_export(sub)
    _add_import(sub)
    add_prepare(sub)
    add_cache(sub)
    add_runs_parser(sub)
    return parser


def _train_config(a) -> TrainConfig:
    """The recipe's settings (the flags' defaults are its values) with the flags on top."""
    return RECIPES[a.recipe or CLI_RECIPE].train_config(
        steps=a.steps, batch=a.batch, lr=a.lr, min_lr=a.min_lr, warmup=a.warmup, weight_decay=a.weight_decay,
        grad_clip=a.grad_clip, grad_accum=a.grad_accum, dropout=_given(a.dropout, TrainConfig.dropout),
        embd_dropout=a.embd_dropout, attn_dropout=a.attn_dropout, resid_dropout=a.resid_dropout,
        eval_interval=a.eval_interval,
        eval_chunks=0 if a.eval_all else a.eval_chunks, checkpoint_interval=a.checkpoint_interval,
        checkpoint_minutes=a.checkpoint_minutes, threads=a.threads, seed=a.seed,
    )





def cmd_train(a) -> int:
    from cllm.core import mpi_world
    from cllm.core.runs import RunSession

    if a.background:
        return start_background(a, a.argv)
    world = mpi_world.join(a.mpi_timeout)  # None unless an MPI launcher started this as one of several ranks
    session = None
    if world is None or world.is_root:  # the process that writes the model file
        session = RunSession.start(a.output, origin=origin(world), corpus=a.corpus,
                                   steps=a.steps, run_id=a.run_id)
        for note in session.notes:
            _say(f"note: {escape(note)}")
    try:
        return _train(a, world, session)
    except CllmError as exc:
        if session is not None:
            session.fail(str(exc))
        raise
    finally:
        if session is not None:
            session.close()


def _train(a, world, session) -> int:
    """`cllm train` once the model file is this process's (session: None on MPI ranks but 0)."""
    from cllm.core.events import CheckpointEvent, DoneEvent, EndReason, EvalEvent, SaveFailedEvent, StepEvent
    from cllm.core.outcome import describe_end
    from cllm.core.precompile import compile_kernels, kernels_cached
    from cllm.core.trainer import Trainer, with_saved_dropout

    if world is not None:
        from cllm.core import distributed
        from cllm.core.distributed import DistributedTrainer as Trainer  # one rank of the run
    config = _train_config(a)
    out = a.output
    _check_init(a)
    if a.resume and not out.exists():
        raise ConfigError(f"{out}: no such model to resume")
    dropout_given = any(getattr(a, name) is not None for name in DROPOUT_SETTINGS)
    if not dropout_given and (a.resume or a.init is not None):
        config = with_saved_dropout(config, a.init if a.init is not None else out)
    if out.exists() and not (a.force or a.resume):
        raise ConfigError(f"{out} already exists; pass --force to replace it or --resume to continue training it")
    corpus = run_data(a, console=err, quiet=a.json or not _speaks(world))
    if a.resume:
        trainer = Trainer.resume(out, corpus, config, out_path=out, new_data=a.new_data)
    elif a.init is not None:
        trainer = Trainer.fine_tune(a.init, corpus, config, out_path=out)
    else:
        d = ModelConfig(vocab_size=2, **RECIPES[a.recipe or CLI_RECIPE].shape())
        shape = dict(n_layer=_given(a.layers, d.n_layer), n_head=_given(a.heads, d.n_head),
                     n_embd=_given(a.embd, d.n_embd), ctx=_given(a.ctx, d.ctx))
        trainer = Trainer.new(corpus, shape, config, tokenizer=a.tokenizer or "char", vocab_size=a.vocab_size,
                              out_path=out)
    rank_threads = distributed.start(world, trainer) if world else [trainer.n_threads]  # every rank ready
    if session is not None:
        session.describe_trainer(trainer)
        session.on_request = lambda what: _obey(session, what, trainer, request_stop)
    speaks = _speaks(world)  # under MPI rank 0 alone shows the run
    quiet = a.json or not speaks

    notices: list[str] = []  # a stop request's words, printed by _watch: never inside a signal handler,
    # which runs between any two bytecodes of the main thread (once inside rich's own half-done import)

    def request_stop(why: str) -> None:
        first = not trainer.stopping
        trainer.stop(why)
        if not quiet:
            notices.append(f"{why}: stopping at the next step boundary, then saving…" if first
                           else f"{why}: already stopping; the save goes on, please wait")

    started = time.perf_counter()
    events: list = []
    first_step: list[float] = []
    result: dict = {}

    def on_event(event) -> None:
        if isinstance(event, StepEvent) and not first_step:
            first_step.append(time.perf_counter() - started)
        events.append(event)
        if session is not None:
            session.record(event)

    def work() -> None:
        try:
            result["done"] = trainer.run(on_event)
        except BaseException as exc:  # handed to the main thread
            result["error"] = exc

    with stop_on_signals(request_stop):
        if not kernels_cached():
            with err.status("compiling kernels (first run only; cached afterwards)…") if not quiet else nullcontext():
                seconds = compile_kernels()
            if not quiet:
                _say(f"compiled kernels in {seconds:.1f} s")
        else:
            compile_kernels()
        m = trainer.model
        if not quiet:
            _say(f"[bold]{m.n_params:,}[/] parameters, {m.config.n_layer} layers, {m.config.n_head} heads, "
                 f"width {m.config.n_embd}, ctx {m.config.ctx}, {m.tokenizer.kind} tokenizer "
                 f"({m.config.vocab_size} tokens); {len(trainer.train_tokens):,} training tokens; "
                 + (f"{trainer.n_threads} threads" if world is None else
                    f"{world.size} MPI ranks, threads per rank {', '.join(map(str, rank_threads))}"))
            if trainer.state.parent is not None:
                _say(f"fine-tuning {escape(str(a.init))} ({trainer.state.parent.step} steps) into {escape(str(out))}: "
                     "fresh optimiser, schedule and step count")
        # Not a daemon: however the main thread ends, the interpreter waits for the save.
        thread = threading.Thread(target=work, name="cllm-train")
        thread.start()
        _watch(trainer, thread, events, notices, quiet)
    if "error" in result:
        raise result["error"]
    done: DoneEvent = result["done"]
    last = next((e for e in reversed(events) if isinstance(e, StepEvent)), None)
    val = next((e for e in reversed(events) if isinstance(e, EvalEvent)), None)
    failed = [e for e in events if isinstance(e, SaveFailedEvent)]
    summary = {
        "reason": done.reason, "step": done.step, "model": str(out),
        "saved_to": str(done.saved_to) if done.saved_to else None,
        "loss": last.loss if last else None, "val_loss": val.val_loss if val else None,
        "best_val_loss": trainer.state.best_val_loss,
        "tokens_per_s": _throughput([e for e in events if isinstance(e, StepEvent)]),
        "elapsed": time.perf_counter() - started,
        "time_to_first_step": first_step[0] if first_step else None,
        "checkpoints": sum(1 for e in events if isinstance(e, CheckpointEvent)),
        "failed_saves": [e.message for e in failed],
        "parent": trainer.state.parent.to_dict() if trainer.state.parent else None,
    }
    if world is not None:
        summary.update(ranks=world.size, threads_per_rank=rank_threads)
    if a.json and speaks:
        _say(json.dumps(summary), out=True)
    outcome = describe_end(done, trainer.state.best_val_loss)
    if (speaks and not a.json) or done.reason is EndReason.LOST:  # each rank tells why it lost the others
        _say(escape(outcome.notice))
    return outcome.exit_code


def _speaks(world) -> bool:
    return world is None or world.is_root


def _obey(session, what: str, trainer, request_stop) -> None:
    from cllm.core.runs import obey

    state = obey(what, trainer, request_stop)
    if state:
        session.set_state(state)
        _say(f"{what}d (cllm runs {what})")


def _say(text: str, *, out: bool = False) -> None:
    """A line for the user (standard error, or `out`: standard output). A terminal that
    went away must not cost the run: a failed write is dropped."""
    try:
        if out:
            print(text, flush=True)
        else:
            err.print(text, highlight=False, soft_wrap=True)  # a path stays on one line
    except (OSError, ValueError):
        pass


def _given(value, default):
    return default if value is None else value


SHAPE_FLAGS = {"layers": "--layers", "heads": "--heads", "embd": "--embd", "ctx": "--ctx",
               "tokenizer": "--tokenizer", "vocab_size": "--vocab-size"}


def _check_init(a) -> None:
    """--init takes the model's shape and tokenizer from MODEL, and starts a new run."""
    if a.init is None:
        return
    if a.resume:
        raise ConfigError("--init starts a new run from a model and --resume continues one: choose one")
    given = [flag for name, flag in SHAPE_FLAGS.items() if getattr(a, name) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} cannot be used with --init: the shape and tokenizer come from "
                          f"{a.init}")


def _throughput(steps: list) -> float | None:
    """Tokens per second from the first finished step to the last (the first step, which
    may include loading the kernels, is left out)."""
    if len(steps) < 2 or steps[-1].elapsed <= steps[0].elapsed:
        return None
    return (steps[-1].tokens_seen - steps[0].tokens_seen) / (steps[-1].elapsed - steps[0].elapsed)


PHASE_LABELS = {"train": "", "eval": "eval", "save": "saving"}


def _watch(trainer, thread: threading.Thread, events: list, notices: list[str], quiet: bool) -> None:
    """Rich progress while the trainer thread runs: the run, then one bar per core, which
    follows the evaluations too; and the `notices` that stop requests add."""
    from cllm.core.events import CheckpointEvent, EvalEvent, SaveFailedEvent, StepEvent

    if quiet:
        while thread.is_alive():
            thread.join(0.2)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    seen = said = 0
    try:
        with Progress(*columns, console=err, refresh_per_second=8) as progress:
            run = progress.add_task("train", total=trainer.config.steps, completed=trainer.step, info="")
            cores = [progress.add_task(f"core {i}", total=int(n), info="")
                     for i, n in enumerate(trainer.phase_totals)]
            while thread.is_alive():
                thread.join(0.1)
                phase = trainer.phase
                totals, done = trainer.phase_totals, trainer.shard_progress
                for i, task in enumerate(cores):
                    progress.update(task, total=int(totals[i]), completed=int(done[i]), info=PHASE_LABELS[phase])
                for event in events[seen:]:
                    if isinstance(event, StepEvent):
                        progress.update(run, completed=event.step, info=(
                            f"loss {event.loss:.4f}  lr {event.lr:.2e}  {event.tokens_per_s:,.0f} tok/s  "
                            f"ETA {event.eta:.0f}s"))
                    elif isinstance(event, EvalEvent):
                        progress.console.print(f"step {event.step}: val loss {event.val_loss:.4f}")
                    elif isinstance(event, CheckpointEvent):
                        progress.console.print(f"step {event.step}: saved {escape(str(event.path))}")
                    elif isinstance(event, SaveFailedEvent):
                        then = ("; saving elsewhere" if event.final
                                else "; training goes on, the next checkpoint tries again")
                        progress.console.print(f"[bold red]step {event.step}: {escape(event.message)}[/]{then}")
                seen = len(events)
                for text in notices[said:]:
                    progress.console.print(text)
                    said += 1
        for text in notices[said:]:  # a request in the run's last moments
            _say(text)
    except (OSError, ValueError):  # the terminal went away: wait quietly for the save
        thread.join()


def cmd_generate(a) -> int:
    from cllm.core.model_file import load_model
    from cllm.core.sampler import generate_samples, prompt_tokens

    loaded = load_model(a.model)
    if a.weights == "int8" and loaded.model.quantized is None:
        from cllm.core.quantize import quantize_model

        quantize_model(loaded.model)  # at load: the prompt pass too sees the int8 values
    config = SampleConfig(**{f.name: getattr(a, f.name) for f in fields(SampleConfig)}).validate()  # a flag each
    started = time.perf_counter()
    texts, counts, first = [""] * a.samples, [0] * a.samples, None
    stream = a.samples == 1 and not a.json
    for pieces in generate_samples(loaded.model, a.prompt, config):
        if first is None:
            first = time.perf_counter() - started
        for n, piece in enumerate(pieces):
            if piece is not None:
                texts[n] += piece
                counts[n] += 1
        if stream:
            sys.stdout.write(pieces[0] or "")
            sys.stdout.flush()
    elapsed = time.perf_counter() - started
    if a.json:
        after = elapsed - first if first is not None else 0.0
        later = sum(counts) - sum(c > 0 for c in counts)  # tokens after each sample's first
        print(json.dumps({"prompt": a.prompt, "text": texts[0], "texts": texts, "samples": a.samples,
                          "tokens": counts[0], "tokens_per_sample": counts, "seconds": elapsed,
                          "prompt_tokens": len(prompt_tokens(loaded.model.tokenizer, a.prompt)),
                          "time_to_first_token": first, "first_token_ms": None if first is None else first * 1e3,
                          "decode_tokens_per_s": later / after if later and after > 0 else None,
                          "weights": a.weights, "threads": a.threads}))
    elif stream:
        sys.stdout.write("\n")
    else:
        for n, text in enumerate(texts):
            sys.stdout.write(f"--- sample {n + 1} of {a.samples} ---\n{text}\n")
    return 0


def cmd_quantize(a) -> int:
    from cllm.core.model_file import load_model, save_model
    from cllm.core.quantize import quantize_model

    out = a.output.expanduser()
    if out.exists() and not a.force:
        raise ConfigError(f"{out} already exists; pass --force to replace it")
    loaded = load_model(a.model)
    model = loaded.model
    if model.quantized is not None:
        raise ConfigError(f"{a.model}: already an int8 model")
    quantize_model(model)
    training = dict(loaded.training, quantized_from=str(a.model))
    save_model(out, model, training=training, created=loaded.info.created)
    size, before = out.stat().st_size, loaded.info.file_size
    if a.json:
        print(json.dumps({"path": str(out), "weights": "int8", "file_size": size, "source_file_size": before}))
    else:
        print(f"wrote {out}: int8 weights, {size / 2**20:.1f} MiB (from {before / 2**20:.1f} MiB)")
    return 0


def cmd_eval(a) -> int:
    from cllm.core.model_file import load_model
    from cllm.core.trainer import corpus_tokens, evaluate

    loaded = load_model(a.model)
    model = loaded.model
    corpus = training_data(a.corpus, model.tokenizer, a, console=err, quiet=a.json)
    try:
        _, val = corpus_tokens(corpus, model)
    except TokenizerError as exc:
        raise TokenizerError(f"{getattr(corpus, 'path', None) or corpus.name}: {exc}") from None
    if a.json:
        loss, counted = evaluate(model, val, threads=a.threads, limit=a.eval_chunks)
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, refresh_per_second=8, transient=True) as progress:
            task = progress.add_task("evaluating (chunks)", total=None)
            loss, counted = evaluate(model, val, threads=a.threads, limit=a.eval_chunks,
                                    on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    if a.json:
        print(json.dumps({"val_loss": loss, "tokens": counted}))
    else:
        print(f"validation loss {loss:.4f} over {counted:,} tokens of {corpus.name}")
    return 0


def cmd_info(a) -> int:
    from cllm.core.model_file import check_values, read_info

    if is_dataset(a.model):
        return dataset_info(a)
    if a.model.is_dir():
        return _hf_folder_info(a)
    info = read_info(a.model) if a.header_only else check_values(a.model)
    run = info.run
    parent, imported = run.parent, run.imported
    values = "not checked (--header-only)" if a.header_only else "all finite (checked)"
    data = {
        "path": str(info.path), "config": info.config.to_dict(), "parameters": info.n_params,
        "tokenizer": info.tokenizer.get("type"), "vocab_size": info.config.vocab_size,
        "step": run.step, "tokens_seen": run.tokens_seen, "best_val_loss": run.best_val_loss,
        "corpus": {"name": run.corpus.name, "sha256": run.corpus.sha256} if run.corpus else None,
        "has_optimizer": info.has_optimizer, "created": info.created, "updated": info.updated,
        "file_size": info.file_size, "values_checked": not a.header_only, "weights": info.weights,
        "parent": parent.to_dict() if parent else None, "imported": imported,
    }
    if a.json:
        print(json.dumps(data))
        return 0
    c = info.config
    best = run.best_val_loss
    lines = [f"{info.path}",
             f"  model      {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, ctx {c.ctx}, "
             f"{info.n_params:,} parameters",
             f"  tokenizer  {data['tokenizer']} ({c.vocab_size} tokens)",
             f"  weights    {info.weights}" + (" (matrix products' weights int8, one float32 scale per output)"
                                               if info.weights == "int8" else ""),
             f"  training   {run.step} steps, {run.tokens_seen:,} tokens, best val loss "
             f"{'-' if best is None else f'{best:.4f}'}",
             f"  corpus     {run.corpus.name if run.corpus else '-'}"]
    if parent:
        lines.append(f"  parent     {parent.name} ({parent.step} steps, sha256 {parent.sha256[:16]}…)")
    if imported:
        lines.append(f"  imported   from {imported.get('folder', '?')} ({imported.get('dtype') or 'float32'})")
    lines += [f"  optimizer  {'saved' if info.has_optimizer else 'not saved'}",
              f"  values     {values}",
              f"  created    {info.created}, updated {info.updated}"]
    print("\n".join(lines))
    return 0


def _hf_folder_info(a) -> int:
    """`cllm info DIR` for a Hugging Face folder: what an import would make of it."""
    from cllm.core.hf_import import inspect_hf_folder

    info = inspect_hf_folder(a.model)
    c = info.config
    data = {"path": str(info.path), "format": "hugging-face", "model_type": info.hf_config.get("model_type"),
            "config": c.to_dict() if c else None, "parameters": info.n_params, "tokenizer": info.tokenizer_kind,
            "tokenizer_files": info.tokenizer_files, "weight_files": info.weight_files, "dtype": info.dtype,
            "importable": info.importable, "problems": info.problems, "notes": info.notes}
    if a.json:
        print(json.dumps(data))
        return 0
    lines = [f"{info.path} (Hugging Face folder, model_type {data['model_type']})"]
    if c:
        lines.append(f"  model      {c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, ctx {c.ctx}, "
                     f"{info.n_params:,} parameters")
    lines += [f"  tokenizer  {info.tokenizer_kind or '-'} ({', '.join(info.tokenizer_files) or 'no files'})",
              f"  weights    {', '.join(info.weight_files) or '-'} ({info.dtype or '-'})"]
    lines += [f"  note       {n}" for n in info.notes]
    lines += [f"  problem    {p}" for p in info.problems] or ["  importable yes: cllm import " + str(info.path)]
    print("\n".join(lines))
    return 0


def cmd_export(a) -> int:
    from cllm.core.hf_export import export_model

    started = time.perf_counter()
    result = export_model(a.model, a.folder, force=a.force)
    elapsed = time.perf_counter() - started
    if a.json:
        print(json.dumps({"folder": str(result.folder), "files": result.files, "seconds": elapsed,
                          "bos_token_id": result.bos_token_id, "eos_token_id": result.eos_token_id}))
    else:
        err.print(f"wrote {result.folder} ({', '.join(result.files)}) in {elapsed:.1f} s; "
                  f"transformers loads it with GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained")
    return 0


def cmd_import(a) -> int:
    from cllm.core.hf_import import import_hf_folder

    out = a.output or DEFAULT_MODEL.parent / f"{a.folder.resolve().name}.cllm"
    if a.json:
        result = import_hf_folder(a.folder, out, force=a.force)
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn())
        with Progress(*columns, console=err, refresh_per_second=8, transient=True) as progress:
            task = progress.add_task("reading weights", total=None)
            result = import_hf_folder(a.folder, out, force=a.force,
                                      progress=lambda done, total: progress.update(task, completed=done, total=total))
    info = result.info
    if a.json:
        print(json.dumps({"model": str(result.path), "parameters": info.n_params, "tokenizer": info.tokenizer_kind,
                          "dtype": info.dtype, "notes": info.notes, "seconds": result.seconds}))
    else:
        for note in info.notes:
            err.print(f"note: {escape(note)}", highlight=False)
        c = info.config
        assert c is not None  # an imported folder has a config
        err.print(f"imported {info.path} as {result.path}: {info.n_params:,} parameters, {c.n_layer} layers, "
                  f"{c.n_head} heads, width {c.n_embd}, ctx {c.ctx}, {info.tokenizer_kind} tokenizer "
                  f"({c.vocab_size} tokens), in {result.seconds:.1f} s")
    return 0


def _error_message(exc: CllmError) -> tuple[str | None, int]:
    """What to print of an error that ends a command (None: nothing) and the exit code.
    Ranks of an MPI run agree on their errors first (core/distributed.py)."""
    from cllm.core import mpi_world

    if mpi_world.current() is not None:
        from cllm.core.distributed import error_message

        return error_message(exc)
    rank, size = mpi_world.launched_ranks()
    return (str(exc) if size <= 1 else f"rank {rank}: {exc}"), 2


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "quantize": cmd_quantize, "eval": cmd_eval,
            "info": cmd_info, "export": cmd_export, "import": cmd_import, "prepare": lambda a: cmd_prepare(a, err),
            "cache": cmd_cache, "runs": cmd_runs}


def _recipe_given(argv: list[str] | None) -> Recipe | None:
    """The recipe `--recipe NAME` names, if any (the parser then reports a wrong name)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe")
    name = pre.parse_known_args(sys.argv[1:] if argv is None else argv)[0].recipe
    return RECIPES.get(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(_recipe_given(argv)).parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return COMMANDS[args.command](args)
    except CllmError as exc:
        message, code = _error_message(exc)
        if message is not None:
            err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        return code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # the reader of the output has gone (`cllm info m.cllm | head -3`)
        return 0
    finally:
        flush_or_drop_output()


if __name__ == "__main__":
    sys.exit(main())
