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

from cllm.core.config import ModelConfig, SampleConfig, TrainConfig
from cllm.core.errors import CllmError, ConfigError, TokenizerError
from cllm.core.mpi_world import DEFAULT_TIMEOUT as MPI_TIMEOUT
from cllm.core.stop_signals import flush_or_drop_output, stop_on_signals
from cllm.core.tokenizer import TRAINABLE_KINDS

DEFAULT_MODEL = Path("models") / "saved_model.cllm"

err = Console(stderr=True)

EXIT_CODES = """exit codes:
  0  training finished, or was stopped (Ctrl-C, SIGTERM, SIGHUP) and saved
  1  the loss became NaN or infinite: stopped, the last checkpoint kept
  2  bad input (a file, the corpus, a setting): nothing was trained
  3  the model file could not be written: the run was saved to a fallback file (printed)
  4  the run could not be saved anywhere (every place tried is printed)
  5  under mpiexec: a rank was lost (died, left, or no answer in --mpi-timeout seconds;
     rank 0 saved the last finished step) or the ranks' parameters differ"""


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a model on a text file (or the built-in corpus)",
                       description="Train a model. Ctrl-C, SIGTERM or SIGHUP stops at the next step and saves.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("corpus", nargs="?", default=None,
                   help="UTF-8 text file, or 'python-docs' (the default: CPython's documentation)")
    p.add_argument("-o", "--output", type=Path, default=DEFAULT_MODEL, help=f"model file (default {DEFAULT_MODEL})")
    d, t = ModelConfig(vocab_size=2), TrainConfig()
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
    p.add_argument("--min-lr", type=float, default=None, help="final learning rate (default lr/10)")
    p.add_argument("--warmup", type=int, default=t.warmup,
                   help="learning-rate warm-up steps (default: a tenth of --steps, at most 100)")
    p.add_argument("--weight-decay", type=float, default=t.weight_decay)
    p.add_argument("--grad-clip", type=float, default=t.grad_clip)
    p.add_argument("--grad-accum", type=int, default=t.grad_accum)
    p.add_argument("--eval-interval", type=int, default=t.eval_interval)
    p.add_argument("--eval-chunks", type=int, default=t.eval_chunks, help="0: every held-out chunk")
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
    p.add_argument("--init", type=Path, default=None, metavar="MODEL",
                   help="fine-tune: start from MODEL's weights and tokenizer (a new run saved to --output)")
    p.add_argument("--force", action="store_true", help="replace an existing model file")
    p.add_argument("--json", action="store_true", help="print one JSON line of results")


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="stream text from a model")
    p.add_argument("model", type=Path)
    p.add_argument("--prompt", default="")
    s = SampleConfig()
    p.add_argument("--max-tokens", type=int, default=s.max_tokens)
    p.add_argument("--temperature", type=float, default=s.temperature, help="0: always the most likely token")
    p.add_argument("--top-k", type=int, default=s.top_k, help="0: no limit")
    p.add_argument("--top-p", type=float, default=s.top_p, help="1: no nucleus cut")
    p.add_argument("--seed", type=int, default=s.seed)
    p.add_argument("--stop", default=s.stop, help="end generation before this text")
    p.add_argument("--json", action="store_true")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="validation loss on the last 10%% of a corpus")
    p.add_argument("model", type=Path)
    p.add_argument("corpus", nargs="?", default=None)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", action="store_true")


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="describe and check a model file, or a Hugging Face folder an import would read")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cllm", description="Train and sample small GPT models on the CPU.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_generate(sub)
    _add_eval(sub)
    _add_info(sub)
    _add_export(sub)
    _add_import(sub)
    return parser


def _train_config(a) -> TrainConfig:
    return TrainConfig(
        steps=a.steps, batch=a.batch, lr=a.lr, min_lr=a.min_lr, warmup=a.warmup, weight_decay=a.weight_decay,
        grad_clip=a.grad_clip, grad_accum=a.grad_accum, eval_interval=a.eval_interval,
        eval_chunks=a.eval_chunks, checkpoint_interval=a.checkpoint_interval,
        checkpoint_minutes=a.checkpoint_minutes, threads=a.threads, seed=a.seed,
    ).validate()





def cmd_train(a) -> int:
    from cllm.core import mpi_world
    from cllm.core.corpus import load_corpus
    from cllm.core.events import CheckpointEvent, DoneEvent, EndReason, EvalEvent, SaveFailedEvent, StepEvent
    from cllm.core.outcome import describe_end
    from cllm.core.precompile import compile_kernels, kernels_cached
    from cllm.core.trainer import Trainer

    world = mpi_world.join(a.mpi_timeout)  # None unless an MPI launcher started this as one of several ranks
    if world is not None:
        from cllm.core import distributed
        from cllm.core.distributed import DistributedTrainer as Trainer  # one rank of the run
    config = _train_config(a)
    out = a.output
    _check_init(a)
    if a.resume and not out.exists():
        raise ConfigError(f"{out}: no such model to resume")
    if out.exists() and not (a.force or a.resume):
        raise ConfigError(f"{out} already exists; pass --force to replace it or --resume to continue training it")
    corpus = load_corpus(a.corpus)
    if a.resume:
        trainer = Trainer.resume(out, corpus, config, out_path=out)
    elif a.init is not None:
        trainer = Trainer.fine_tune(a.init, corpus, config, out_path=out)
    else:
        d = ModelConfig(vocab_size=2)
        shape = dict(n_layer=_given(a.layers, d.n_layer), n_head=_given(a.heads, d.n_head),
                     n_embd=_given(a.embd, d.n_embd), ctx=_given(a.ctx, d.ctx))
        trainer = Trainer.new(corpus, shape, config, tokenizer=a.tokenizer or "char", vocab_size=a.vocab_size,
                              out_path=out)
    rank_threads = distributed.start(world, trainer) if world else [trainer.n_threads]  # every rank ready
    speaks = world is None or world.is_root  # under MPI rank 0 alone shows the run
    quiet = a.json or not speaks

    def request_stop(why: str) -> None:
        first = not trainer.stopping
        trainer.stop(why)
        if not quiet:
            _say(f"{why}: stopping at the next step boundary, then saving…" if first
                 else f"{why}: already stopping; the save goes on, please wait")

    started = time.perf_counter()
    events: list = []
    first_step: list[float] = []
    result: dict = {}

    def on_event(event) -> None:
        if isinstance(event, StepEvent) and not first_step:
            first_step.append(time.perf_counter() - started)
        events.append(event)

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
        _watch(trainer, thread, events, quiet)
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


def _watch(trainer, thread: threading.Thread, events: list, quiet: bool) -> None:
    """Rich progress while the trainer thread runs: the run, then one bar per core, which
    follows the evaluations too."""
    from cllm.core.events import CheckpointEvent, EvalEvent, SaveFailedEvent, StepEvent

    if quiet:
        while thread.is_alive():
            thread.join(0.2)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn())
    seen = 0
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
    except (OSError, ValueError):  # the terminal went away: wait quietly for the save
        thread.join()


def cmd_generate(a) -> int:
    from cllm.core.model_file import load_model
    from cllm.core.sampler import generate

    loaded = load_model(a.model)
    config = SampleConfig(**{f.name: getattr(a, f.name) for f in fields(SampleConfig)}).validate()  # a flag each
    started = time.perf_counter()
    pieces, first = [], None
    for piece in generate(loaded.model, a.prompt, config):
        if first is None:
            first = time.perf_counter() - started
        pieces.append(piece)
        if not a.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    elapsed = time.perf_counter() - started
    text = "".join(pieces)
    if a.json:
        print(json.dumps({"prompt": a.prompt, "text": text, "tokens": len(pieces), "seconds": elapsed,
                          "time_to_first_token": first}))
    else:
        sys.stdout.write("\n")
    return 0


def cmd_eval(a) -> int:
    from cllm.core.corpus import load_corpus
    from cllm.core.model_file import load_model
    from cllm.core.trainer import evaluate, split_tokens

    loaded = load_model(a.model)
    corpus = load_corpus(a.corpus)
    model = loaded.model
    try:
        tokens = model.tokenizer.encode(corpus.text)
    except TokenizerError as exc:
        raise TokenizerError(f"{corpus.path or corpus.name}: {exc}") from None
    _, val = split_tokens(tokens, model.config.ctx, corpus.name)
    if a.json:
        loss, counted = evaluate(model, val, threads=a.threads)
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, refresh_per_second=8, transient=True) as progress:
            task = progress.add_task("evaluating (chunks)", total=None)
            loss, counted = evaluate(model, val, threads=a.threads,
                                    on_progress=lambda done, total: progress.update(task, completed=done, total=total))
    if a.json:
        print(json.dumps({"val_loss": loss, "tokens": counted}))
    else:
        print(f"validation loss {loss:.4f} over {counted:,} tokens of {corpus.name}")
    return 0


def cmd_info(a) -> int:
    from cllm.core.model_file import check_values, read_info

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
        "file_size": info.file_size, "values_checked": not a.header_only,
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


COMMANDS = {"train": cmd_train, "generate": cmd_generate, "eval": cmd_eval, "info": cmd_info,
            "export": cmd_export, "import": cmd_import}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
