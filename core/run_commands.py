"""`cllm runs` (list, show, stop, attach) and `cllm train --background`: runs as the
journal (core/journal.py) knows them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cllm.core.errors import CllmError
from cllm.core.journal import Journal, JournalError, RunRow, journal_path
from cllm.core.runs import new_run_id

err = Console(stderr=True)
BACKGROUND_START_SECONDS = 60.0  # how long `train --background` waits for the run to appear


def add_runs_parser(sub) -> None:
    p = sub.add_parser("runs", help="training runs on this machine: list, show, stop, attach",
                       description="Training runs as the run journal records them (newest first). "
                                   f"The journal is {journal_path()} (CLLM_HOME moves it).")
    p.add_argument("--json", action="store_true", help="one JSON object per run, one a line")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (0: all)")
    verbs = p.add_subparsers(dest="verb")
    show = verbs.add_parser("show", help="a run's settings, parent, best validation loss and loss curve")
    show.add_argument("run", help="run id (or a unique start of it), or a run name")
    show.add_argument("--json", action="store_true")
    stop = verbs.add_parser("stop", help="ask a live run to stop at its next step and save")
    stop.add_argument("run")
    stop.add_argument("--wait", type=float, default=0.0, help="seconds to wait for it to end (0: do not)")
    for verb, text in (("pause", "ask a live run to pause after its current step"), ("resume", "resume a paused run")):
        verbs.add_parser(verb, help=text).add_argument("run")
    attach = verbs.add_parser("attach", help="follow a run's progress (Ctrl-C detaches; the run goes on)")
    attach.add_argument("run")


def add_train_options(p) -> None:
    """`cllm train`'s options for runs that outlive the shell."""
    p.add_argument("--background", action="store_true",
                   help="run detached from this shell (it survives logging out); prints the run's id "
                        "(follow it with `cllm runs attach ID`)")
    p.add_argument("--run-id", default=None, help="the journal id for this run (continues that run's record)")


def _open() -> Journal:
    try:
        return Journal.for_reading()
    except JournalError as exc:
        raise CllmError(f"cannot read the run journal: {exc}") from None


def cmd_runs(a) -> int:
    if a.verb == "show":
        return _show(a)
    if a.verb == "stop":
        return _stop(a)
    if a.verb == "attach":
        return _attach(a)
    if a.verb in ("pause", "resume"):
        return _pause(a)
    journal = _open()
    try:
        rows = journal.runs(a.limit or None)
    finally:
        journal.close()
    if a.json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return 0
    if not rows:
        err.print(f"no runs recorded yet in {journal.path}")
        return 0
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
    for column in ("id", "state", "step", "best val", "tok/s", "started", "name", "file"):
        flexible = column in ("name", "file")  # on a narrow terminal these give way first
        table.add_column(column, no_wrap=True, overflow="ellipsis", min_width=None if flexible else len(column),
                         ratio=1 if flexible else None)
    for row in rows:
        table.add_row(row.id, _state_text(row), f"{row.step:,}/{row.steps:,}", _num(row.best_val),
                      f"{row.tokens_per_s:,.0f}" if row.tokens_per_s else "-", _when(row.started, short=True),
                      escape(row.name), escape(Path(row.file).name))
    Console().print(table)
    return 0


STATE_STYLES = {"running": "green", "paused": "yellow", "finished": "blue", "stopped": "cyan", "failed": "red",
                "lost": "bold red"}


def _state_text(row: RunRow) -> str:
    return f"[{STATE_STYLES.get(row.state, '')}]{row.state}[/]"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _when(stamp: float | None, short: bool = False) -> str:
    """A time; `short`: the hour today, else the day."""
    if stamp is None:
        return "-"
    when = datetime.fromtimestamp(stamp)
    if not short:
        return when.strftime("%Y-%m-%d %H:%M")
    return when.strftime("%H:%M" if when.date() == datetime.now().date() else "%b %d")


def _show(a) -> int:
    journal = _open()
    try:
        row = journal.run(a.run)
        steps, evals = journal.curve(row.id)
        checkpoints = journal.checkpoints(row.id)
    except JournalError as exc:
        raise CllmError(str(exc)) from None
    finally:
        journal.close()
    if a.json:
        print(json.dumps({**row.to_json(), "loss_curve": steps, "val_curve": evals,
                          "checkpoints": [{"step": c[0], "path": c[1], "reason": c[2]} for c in checkpoints]}))
        return 0
    m, t = row.model, row.training
    parent = row.parent
    lines = [f"[bold]{escape(row.name)}[/] ({row.id}) {_state_text(row)}: step {row.step:,} of {row.steps:,}",
             f"  file       {escape(row.file)}",
             f"  corpus     {escape(row.corpus or '-')}",
             f"  model      {m.get('n_layer', '?')} layers, {m.get('n_head', '?')} heads, width "
             f"{m.get('n_embd', '?')}, ctx {m.get('ctx', '?')}, vocab {m.get('vocab_size', '?')}" if m else
             "  model      -",
             "  training   " + (", ".join(f"{k} {v}" for k, v in t.items() if k in (
                 "batch", "lr", "min_lr", "warmup", "weight_decay", "grad_accum", "seed", "threads")) or "-"),
             f"  parent     {escape(parent['name'])} ({parent.get('step', '?')} steps)" if parent else
             "  parent     - (trained from scratch)",
             f"  best val   {_num(row.best_val)}",
             f"  process    pid {row.pid} on {row.host}, {row.origin}; started {_when(row.started)}, "
             f"ended {_when(row.ended)}"]
    if row.message:
        lines.append(f"  outcome    {escape(row.message)}")
    if checkpoints:
        last = checkpoints[-1]
        lines.append(f"  checkpoints {len(checkpoints)}, the last at step {last[0]}: {escape(last[1])}")
    out = Console()
    for line in lines:
        out.print(line, highlight=False)
    if steps:
        out.print()
        out.print(loss_plot(steps, evals), highlight=False)
    return 0


def loss_plot(steps: list[tuple[int, float]], evals: list[tuple[int, float]], width: int = 64,
              height: int = 12) -> str:
    """The loss curve as text: `·` train loss (the mean of the steps in each column),
    `o` validation loss, the loss on the left axis and the steps below."""
    values = [v for _, v in steps] + [v for _, v in evals]
    top, bottom = max(values), min(values)
    span = top - bottom or 1.0
    first, last = steps[0][0], max(steps[-1][0], evals[-1][0] if evals else 0)
    grid = [[" "] * width for _ in range(height)]

    def place(step: float, value: float, mark: str) -> None:
        x = min(width - 1, int((step - first) / max(1, last - first) * (width - 1)))
        y = min(height - 1, int((top - value) / span * (height - 1)))
        grid[y][x] = mark

    columns: dict[int, list[float]] = {}
    for step, value in steps:
        columns.setdefault(min(width - 1, int((step - first) / max(1, last - first) * (width - 1))), []).append(value)
    for x, group in columns.items():
        place(first + x * max(1, last - first) / (width - 1), sum(group) / len(group), "·")
    for step, value in evals:
        place(step, value, "o")
    labels = [f"{top:7.3f} ┤", *(" " * 7 + " │" for _ in range(height - 2)), f"{bottom:7.3f} ┤"]
    rows = [label + "".join(line) for label, line in zip(labels, grid, strict=True)]
    rows.append(" " * 8 + "└" + "─" * width)
    rows.append(" " * 9 + f"{first:<{width // 2}}" + f"{last:>{width - width // 2}}" + "  step")
    rows.append(" " * 9 + "· train loss" + ("   o validation loss" if evals else ""))
    return "\n".join(rows)


def _stop(a) -> int:
    journal = _open()
    try:
        row = journal.run(a.run)
        if not row.live:
            raise CllmError(f"run {row.id} ({row.name}) is not running: it is {row.state}")
        journal.request(row.id, "stop")
        err.print(f"asked run {row.id} ({escape(row.name)}, pid {row.pid} on {row.host}) to stop: it stops at its "
                  "next step and saves")
        deadline = time.monotonic() + a.wait
        while a.wait and time.monotonic() < deadline:
            time.sleep(0.2)
            row = journal.run(row.id)
            if not row.live:
                err.print(f"run {row.id}: {escape(row.message or row.state)}")
                return 0
    except JournalError as exc:
        raise CllmError(str(exc)) from None
    finally:
        journal.close()
    return 0


def _pause(a) -> int:
    journal = _open()
    try:
        row = journal.run(a.run)
        if not row.live:
            raise CllmError(f"run {row.id} ({row.name}) is not running: it is {row.state}")
        journal.request(row.id, a.verb)
    except JournalError as exc:
        raise CllmError(str(exc)) from None
    finally:
        journal.close()
    err.print(f"asked run {row.id} ({escape(row.name)}) to {a.verb}")
    return 0


def _attach(a) -> int:
    journal = _open()
    try:
        row = journal.run(a.run)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[info]}"), TimeElapsedColumn())
        try:
            with Progress(*columns, console=err, refresh_per_second=4) as progress:
                task = progress.add_task(row.name, total=row.steps or None, completed=row.step, info="")
                while True:
                    progress.update(task, total=row.steps or None, completed=row.step, info=_progress_info(row))
                    if not row.live:
                        break
                    time.sleep(0.5)
                    row = journal.run(row.id)
        except KeyboardInterrupt:
            err.print(f"detached from run {row.id}; it goes on (cllm runs attach {row.id} to follow it again)")
            return 0
        err.print(f"run {row.id}: {escape(row.message or row.state)}")
    except JournalError as exc:
        raise CllmError(str(exc)) from None
    finally:
        journal.close()
    return 0 if row.state in ("finished", "stopped") else 1


def _progress_info(row: RunRow) -> str:
    if row.state == "paused":
        return "paused"
    if row.loss is None:
        return row.state
    return (f"loss {row.loss:.4f}  {row.tokens_per_s or 0:,.0f} tok/s  "
            + (f"ETA {row.eta:.0f}s" if row.eta is not None and row.live else row.state))


def spawn_detached(args: list[str], run_id: str, origin: str) -> tuple[subprocess.Popen, Path]:
    """Starts `cllm ARGS --run-id RUN_ID` detached from this process's terminal and
    session (it survives a logout and a hang-up), its output in a log file beside the
    journal. Returns the process and the log's path."""
    logs = journal_path().parent / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{run_id}.log"
        log = open(log_path, "ab")
    except OSError as exc:
        raise CllmError(f"{logs}: cannot write the background run's log ({exc.strerror or exc})") from None
    command = [sys.executable, "-m", "cllm.core.cli", *args, "--run-id", run_id]
    with log, open(os.devnull, "rb") as nothing:
        process = subprocess.Popen(command, stdin=nothing, stdout=log, stderr=log, start_new_session=True,
                                   env={**os.environ, "CLLM_ORIGIN": origin})
    return process, log_path


def resume_args(out: Path, corpus: str | None, training: dict) -> list[str]:
    """`cllm train` arguments that continue the run saved in `out` exactly, with its
    training settings (a TrainConfig's fields)."""
    args = ["train", *([corpus] if corpus else []), "-o", str(out), "--resume"]
    for name, value in training.items():
        if value is not None and name not in ("beta1", "beta2"):
            args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def start_background(a, argv: list[str]) -> int:
    """`cllm train --background ...`: the same command, detached from this shell; prints
    the run's id once the run has locked its file and is in the journal, or why it did
    not start."""
    run_id = new_run_id()
    process, log_path = spawn_detached([x for x in argv if x != "--background"], run_id, "background")
    deadline = time.monotonic() + BACKGROUND_START_SECONDS
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise CllmError(f"the background run ended at once (exit code {code}): " + " / ".join(tail))
        try:
            journal = Journal(readonly=True)
            try:
                row = journal.run(run_id)
            finally:
                journal.close()
        except JournalError:
            time.sleep(0.1)
            continue
        if a.json:
            print(json.dumps({"id": row.id, "pid": process.pid, "file": row.file, "log": str(log_path)}))
        else:
            print(run_id)
            err.print(f"run {run_id} trains in the background (pid {process.pid}) into {escape(row.file)}; "
                      f"log {escape(str(log_path))}; follow it with `cllm runs attach {run_id}`")
        return 0
    err.print(f"run {run_id} started (pid {process.pid}) but is not in the journal yet; log {log_path}")
    print(run_id)
    return 0


def origin(world) -> str:
    """How a run was started, for the journal."""
    if world is not None:
        return "mpi"
    return os.environ.get("CLLM_ORIGIN", "cli")

