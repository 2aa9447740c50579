"""`cllm-tui` and `python -m cllm.tui`: run the app, then wait for a run it stopped.

    cllm-tui [--models-dir DIR] [--model FILE]
"""

from __future__ import annotations

import argparse
import os
import sys

from cllm.core.stop_signals import flush_or_drop_output, stop_on_signals
from cllm.tui.app import CllmApp


def wait_for_training(app: CllmApp) -> str:
    """After the screen is gone: a run still saving is waited for (signals meanwhile do not
    cut the save short). Returns what to tell the user about a run the exit stopped."""
    run = app.training
    if run is None or not run.stop_requested:
        return ""
    with stop_on_signals(lambda why: None):
        run.finished.wait()
    if run.done is not None:
        return f"{run.name}: {run.done.message}"
    return f"{run.name}: {run.error or 'stopped before it started; no file was touched'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cllm-tui", description="CLLM's terminal app.")
    parser.add_argument("--models-dir", default="models", metavar="DIR",
                        help="folder of .cllm model files (default: ./models)")
    parser.add_argument("--model", default=None, metavar="FILE", help="model to load at start-up")
    args = parser.parse_args(argv)
    app = CllmApp(models_dir=args.models_dir, model_path=args.model)
    app.run()
    note = wait_for_training(app)
    if note:
        try:
            print(note)
        except OSError:  # the terminal is gone (SIGHUP): the file is saved all the same
            pass
    flush_or_drop_output()
    code = app.return_code or 0
    if app.compiling:
        # Quitting during the first kernel compilation: numba cannot be interrupted and the
        # interpreter would wait for it (up to a minute) after the screen is gone. Nothing
        # is lost by not waiting: a run, if any, was stopped and saved before exit.
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
