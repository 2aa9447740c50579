"""Runs that outlive the terminal: what the run journal costs, and how soon `cllm-tui`
is gone after its terminal.

Journal: a tiny model (thousands of steps a second: the worst case, where a cost per
step shows most) trains `--steps` steps in this process, with its events recorded in a
live journal (core/runs.py's RunSession, its helper thread writing every half second,
in a fresh CLLM_HOME) and without (events dropped), in turns: A B A B ... Tokens per
second from the first finished step to the last, as `cllm train` reports it; the ratio
is taken pair by pair.

Hang-up: `cllm-tui` on a pseudo-terminal under a shell (tests/pty_app.py), a quick start
under way; the terminal's master is closed and the time until the app's process is gone
is measured (`--hangups` times; kernels must be compiled: a first run compiles them).

    python benchmarks/bench_runs.py
    python benchmarks/bench_runs.py --repeats 5 --hangups 3 --write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (
    DEFAULT_CORPUS,
    add_report_args,
    check_tree,
    command_line,
    fmt_range,
    load_text,
    machine_lines,
    report,
    stats,
    table,
)

TINY = dict(n_layer=1, n_head=2, n_embd=32, ctx=32)


def journal_pair(text: str, steps: int, threads: int, home: Path, journal_first: bool) -> tuple[float, float]:
    """(tokens/s journaled, tokens/s not), the two runs in the order asked."""
    from cllm.core.config import TrainConfig
    from cllm.core.corpus import load_corpus
    from cllm.core.events import StepEvent
    from cllm.core.runs import RunSession
    from cllm.core.trainer import Trainer

    path = home / "corpus.txt"
    path.write_text(text)
    corpus = load_corpus(str(path))
    config = TrainConfig(steps=steps, batch=8, eval_interval=0, checkpoint_minutes=0, threads=threads)
    rates = {}
    for journaled in (True, False) if journal_first else (False, True):
        trainer = Trainer.new(corpus, TINY, config)
        events: list[StepEvent] = []
        session = RunSession.start(home / "bench.cllm", origin="bench", steps=steps) if journaled else None
        if session is not None:
            assert session.journal is not None, session.notes
            session.describe_trainer(trainer)

        def on_event(event, session=session, events=events) -> None:
            if isinstance(event, StepEvent):
                events.append(event)
            if session is not None:
                session.record(event)

        trainer.run(on_event)
        if session is not None:
            session.close()
        first, last = events[0], events[-1]
        rates[journaled] = (last.tokens_seen - first.tokens_seen) / (last.elapsed - first.elapsed)
    return rates[True], rates[False]


def hangup_seconds(home: Path) -> tuple[float, float]:
    """Seconds from closing the terminal to the app's exit, and to the next step of the
    run (in the detached process that continues it, as the journal shows it)."""
    from cllm.core.journal import Journal
    from tests.pty_app import PtyApp

    (home / "models").mkdir(parents=True, exist_ok=True)
    os.environ["CLLM_HOME"] = str(home / "cllm-home")
    app = PtyApp(home, {"CLLM_CONFIG_DIR": str(home / "config")})
    try:
        app.wait_for(b"Type a prompt", timeout=120)
        app.press(b"\x0e")
        app.wait_for(b"ETA", timeout=120)
        app.read(2.0)
        app.hang_up()
        closed = time.monotonic()
        seconds = app.wait_exit(30)
    finally:
        app.kill()
    journal = Journal()
    try:
        (row,) = journal.runs()
        handed_at = row.step
        while row.live and row.step <= handed_at and time.monotonic() - closed < 120:
            time.sleep(0.02)
            row = journal.run(row.id)
        next_step = time.monotonic() - closed
        journal.request(row.id, "stop")  # the benchmark needs no more of it
    finally:
        journal.close()
    return float("nan") if seconds is None else seconds, next_step


def main() -> int:
    check_tree()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--repeats", type=int, default=5, help="pairs of runs (journaled, not)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hangups", type=int, default=3, help="hang-ups of cllm-tui to time (0: none)")
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    add_report_args(p, "Run journal and hang-up")
    a = p.parse_args()
    text = load_text(a.corpus)[:200_000]
    out = ["What the run journal costs a training run, and how soon cllm-tui exits after its terminal.", ""]
    out += machine_lines() + [f"- command: `{command_line()}`", ""]
    with tempfile.TemporaryDirectory(prefix="cllm-bench-runs-") as work:
        home = Path(work)
        os.environ["CLLM_HOME"] = str(home / "cllm-home")
        pairs = []
        for i in range(a.repeats):
            pairs.append(journal_pair(text, a.steps, a.threads, home, journal_first=i % 2 == 0))
            print(f"pair {i + 1}: journaled {pairs[-1][0]:,.0f} tok/s, not {pairs[-1][1]:,.0f} tok/s", flush=True)
        ratios = [j / n for j, n in pairs]
        out += [f"Training tokens/s of a tiny model ({TINY}, batch 8, {a.steps} steps, {a.threads} thread(s)), "
                f"with the journal and without, in turns ({a.repeats} pairs, which goes first alternates); "
                "median (min-max). The machine was shared with other engineers' work (KVM guest):", "",
                table(["journal", "tokens/s"], [["recorded", fmt_range(stats([j for j, _ in pairs]))],
                                                ["off", fmt_range(stats([n for _, n in pairs]))]]), "",
                f"journaled / not, pair by pair: {fmt_range(stats(ratios))}", ""]
        if a.hangups:
            times = []
            for i in range(a.hangups):
                times.append(hangup_seconds(home / f"hangup-{i}"))
                print(f"hang-up {i + 1}: cllm-tui gone after {times[-1][0]:.2f} s, the run's next step after "
                      f"{times[-1][1]:.2f} s", flush=True)
            out += [f"cllm-tui, quick start under way, terminal master closed (under a shell that exits 1 s after "
                    f"the hang-up, tests/pty_app.py), {a.hangups} runs, seconds from the close, median (min-max):", "",
                    table(["until", "seconds"], [
                        ["cllm-tui's process is gone", fmt_range(stats([t[0] for t in times]))],
                        ["the run's next step (in the detached cllm train --resume, journal)",
                         fmt_range(stats([t[1] for t in times]))]]), ""]
    return report(out, a)


if __name__ == "__main__":
    sys.exit(main())
