"""Training over MPI ranks: real `mpiexec` (from the `mpich` wheel of the `mpi` extra)
launching real `cllm train` processes. Each rank runs in a folder of its own and writes
its model file by a relative name, so a file beside any rank but rank 0 would show.

The tests that need MPI are skipped, with the reason, where mpi4py or mpiexec is missing;
the others (detection, defaults, no MPI import without a launcher) always run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cllm.core.model_file import load_model
from cllm.core.mpi_world import default_threads_per_rank, launched_ranks


def find_mpiexec() -> str | None:
    """The mpiexec beside this interpreter (the mpich wheel's, in the virtual
    environment), else the one on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def mpiexec() -> str:
    """find_mpiexec's answer where the tests need one (they are skipped without it)."""
    path = find_mpiexec()
    assert path is not None
    return path


def mpi_missing() -> str | None:
    try:
        import mpi4py  # noqa: F401  (importing it is the check: a broken build fails here)
    except ImportError:
        return "mpi4py is not installed (pip install -e '.[mpi]')"
    if find_mpiexec() is None:
        return "no mpiexec found (pip install -e '.[mpi]' brings MPICH's)"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))

SHAPE = ["--layers", "2", "--heads", "2", "--embd", "16", "--ctx", "16", "--batch", "6",
         "--checkpoint-minutes", "0"]
TIMEOUT = 180  # seconds for any one launch; none should take a tenth of it
RANK = "${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-0}}"  # as the launchers tell it (core/mpi_world.py)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_text) -> Path:
    """The corpus, with the kernels compiled into numba's cache first: ranks then load them
    instead of compiling side by side."""
    from cllm.core.precompile import compile_kernels

    compile_kernels()
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(small_text)
    return path


def train_command(corpus: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "cllm.core.cli", "train", str(corpus), "-o", "m.cllm", *SHAPE, *args]


def rank_dirs(tmp_path: Path, ranks: int) -> list[Path]:
    dirs = [tmp_path / f"rank{r}" for r in range(ranks)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def launch(tmp_path: Path, ranks: int, command: list[str]) -> subprocess.Popen:
    """`mpiexec -n ranks` running `command` in tmp_path/rank<r>, each rank first writing its
    process id to tmp_path/pid.<r> (`exec` keeps it). A new session, so that a test that
    runs out of time can end the launcher and every rank."""
    rank_dirs(tmp_path, ranks)
    quoted = " ".join(f'"{part}"' for part in command)  # double quotes: a part may name {RANK}
    script = f'cd "{tmp_path}/rank{RANK}" && echo $$ > "{tmp_path}/pid.{RANK}" && exec {quoted}'
    return subprocess.Popen([mpiexec(), "-n", str(ranks), "sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"mpiexec did not end within {timeout} s:\n{err[-3000:]}")
    return process.returncode, out, err


def run_ranks(tmp_path: Path, ranks: int, command: list[str]) -> tuple[int, str, str]:
    return finish(launch(tmp_path, ranks, command))


def run_alone(folder: Path, command: list[str]) -> tuple[int, str, str]:
    folder.mkdir(exist_ok=True)
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=TIMEOUT)
    return done.returncode, done.stdout, done.stderr


def wait_for(path: Path, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            pytest.fail(f"the run ended before {path.name} appeared:\n{process.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no {path} within {timeout} s")
        time.sleep(0.05)


def rank_pid(tmp_path: Path, rank: int) -> int:
    return int((tmp_path / f"pid.{rank}").read_text())


def losses(path: Path) -> np.ndarray:
    return np.array([loss for _, loss in load_model(path).info.run.loss_history])


def assert_same_run(a: Path, b: Path, rtol: float = 1e-5) -> None:
    """Two files of the same run, up to float rounding: every step's loss, every
    evaluation, the weights and Adam moments, and where the run stands."""
    x, y = load_model(a), load_model(b)
    rx, ry = x.info.run, y.info.run
    assert [s for s, _ in rx.loss_history] == [s for s, _ in ry.loss_history]
    np.testing.assert_allclose(losses(b), losses(a), rtol=rtol)
    np.testing.assert_allclose([v for _, v in ry.val_history], [v for _, v in rx.val_history], rtol=rtol)
    assert x.optimizer is not None and y.optimizer is not None
    for mine, theirs in zip((y.model.params, *y.optimizer), (x.model.params, *x.optimizer), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=rtol * np.abs(theirs).max())
    assert (rx.step, rx.tokens_seen, rx.data_position, rx.rng_state) == (ry.step, ry.tokens_seen, ry.data_position,
                                                                        ry.rng_state)


def assert_only_rank_0_wrote(tmp_path: Path, ranks: int) -> None:
    for folder in rank_dirs(tmp_path, ranks)[1:]:
        assert list(folder.iterdir()) == [], f"{folder.name} wrote {[p.name for p in folder.iterdir()]}"


# -- without MPI ------------------------------------------------------------------------

@pytest.mark.parametrize("environ, expected", [
    ({}, (0, 1)),
    ({"PMI_SIZE": "4", "PMI_RANK": "2"}, (2, 4)),
    ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}, (1, 2)),
    ({"PMI_SIZE": "garbage"}, (0, 1)),
])
def test_the_launchers_environment_tells_rank_and_ranks(environ, expected):
    assert launched_ranks(environ) == expected


@pytest.mark.parametrize("cores, machine, here, expected", [
    (2, 2, 2, 1),  # 2 ranks on 2 cores: 1 thread each
    (16, 16, 4, 4),
    (16, 16, 3, 5),
    (2, 2, 3, 1),  # more ranks than cores: still one thread each
    (4, 16, 4, 4),  # the launcher bound this rank to 4 cores: they are its own
    (1, 2, 2, 1),
])
def test_threads_per_rank_share_a_machine_among_its_ranks(cores, machine, here, expected):
    assert default_threads_per_rank(cores, machine, here) == expected


def test_one_process_never_imports_mpi(tmp_path, corpus):
    code = ("import sys; from cllm.core.cli import main; code = main(sys.argv[1:]); "
            "sys.exit(10 if 'mpi4py' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", code, "train", str(corpus), "-o", str(tmp_path / "m.cllm"), *SHAPE,
                           "--steps", "2", "--eval-interval", "0", "--json"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=without_launcher_variables())
    assert done.returncode == 0, done.stderr


def without_launcher_variables() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PMI_", "OMPI_", "MV2_"))}


def test_a_launcher_without_mpi4py_gets_a_clear_message(tmp_path, corpus):
    code = ("import sys; sys.modules['mpi4py'] = None; from cllm.core.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    env = {**without_launcher_variables(), "PMI_SIZE": "2", "PMI_RANK": "1"}
    done = subprocess.run([sys.executable, "-c", code, "train", str(corpus), "-o", str(tmp_path / "m.cllm"), *SHAPE],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)
    assert done.returncode == 2
    assert "rank 1: an MPI launcher started 2 processes, but mpi4py is not installed" in done.stderr
    assert "pip install 'cllm[mpi]'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m.cllm").exists()


# -- with MPI ---------------------------------------------------------------------------

@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_of_one_thread_train_what_one_process_of_as_many_threads_trains(tmp_path, corpus, ranks):
    args = ["--steps", "8", "--eval-interval", "4", "--json"]
    code, out, err = run_alone(tmp_path / "alone", train_command(corpus, *args, "--threads", str(ranks)))
    assert code == 0, err
    code, out, err = run_ranks(tmp_path, ranks, train_command(corpus, *args, "--threads", "1"))
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, out  # rank 0 alone reports
    summary = json.loads(lines[0])
    assert summary["reason"] == "finished" and summary["ranks"] == ranks
    assert summary["threads_per_rank"] == [1] * ranks and summary["tokens_per_s"] > 0
    assert_same_run(tmp_path / "alone" / "m.cllm", tmp_path / "rank0" / "m.cllm")
    assert_only_rank_0_wrote(tmp_path, ranks)


@needs_mpi
def test_threads_per_rank_default_to_the_cores_shared_among_the_ranks(tmp_path, corpus):
    code, out, err = run_ranks(tmp_path, 2, train_command(corpus, "--steps", "1", "--eval-interval", "0", "--json"))
    assert code == 0, err
    expected = default_threads_per_rank(len(os.sched_getaffinity(0)), os.cpu_count() or 1, 2)
    assert json.loads(out)["threads_per_rank"] == [expected, expected]


@needs_mpi
def test_a_run_continues_exactly_with_or_without_mpi(tmp_path, corpus):
    """Six steps, then six more, each half with one process or with two ranks: the files
    after twelve steps agree, whichever way they came."""
    first = ["--steps", "6", "--eval-interval", "3"]
    then = ["--steps", "12", "--eval-interval", "3", "--resume"]
    alone, ranks = tmp_path / "alone", tmp_path / "ranks"
    assert run_alone(alone, train_command(corpus, *first, "--threads", "2"))[0] == 0
    for folder in rank_dirs(ranks, 2):  # every rank reads the file it resumes
        shutil.copy(alone / "m.cllm", folder)
    code, _, err = run_ranks(ranks, 2, train_command(corpus, *then, "--threads", "1"))  # one process, then ranks
    assert code == 0, err
    assert run_alone(alone, train_command(corpus, *then, "--threads", "2"))[0] == 0  # one process throughout
    assert_same_run(alone / "m.cllm", ranks / "rank0" / "m.cllm")

    back = tmp_path / "back"
    code, _, err = run_ranks(back, 2, train_command(corpus, *first, "--threads", "1"))  # ranks, then one process
    assert code == 0, err
    assert run_alone(back / "rank0", train_command(corpus, *then, "--threads", "2"))[0] == 0
    assert_same_run(alone / "m.cllm", back / "rank0" / "m.cllm")


def long_run(corpus: Path, *args: str) -> list[str]:
    return train_command(corpus, "--steps", "1000000", "--eval-interval", "0", "--checkpoint-interval", "5",
                         "--threads", "1", *args)


@needs_mpi
@pytest.mark.parametrize("sig, target, told", [
    (signal.SIGTERM, "rank 1", "SIGTERM on rank 1"),  # one rank alone gets it
    (signal.SIGINT, "mpiexec", "SIGINT"),  # Ctrl-C: the launcher passes it to every rank
])
def test_a_signal_stops_every_rank_at_one_step_with_one_save(tmp_path, corpus, sig, target, told):
    process = launch(tmp_path, 2, long_run(corpus))
    model = tmp_path / "rank0" / "m.cllm"
    wait_for(model, process)
    time.sleep(0.3)
    os.kill(rank_pid(tmp_path, 1) if target == "rank 1" else process.pid, sig)
    code, _, err = finish(process)
    assert code == 0, err
    run = load_model(model).info.run
    assert f"stopped ({told}) at step {run.step}, saved to m.cllm" in err
    assert run.step >= 5 and run.data_position == run.step
    assert err.count("stopped (") == 1 and "Traceback" not in err  # rank 0 alone tells (and saves: below)
    assert_only_rank_0_wrote(tmp_path, 2)


@needs_mpi
def test_a_rank_that_hangs_makes_rank_0_save_and_every_rank_exit(tmp_path, corpus):
    process = launch(tmp_path, 2, long_run(corpus, "--mpi-timeout", "3"))
    model = tmp_path / "rank0" / "m.cllm"
    wait_for(model, process)
    os.kill(rank_pid(tmp_path, 1), signal.SIGSTOP)
    started = time.monotonic()
    code, _, err = finish(process, timeout=60)
    # Rank 0 exits 5; the launcher then ends the stopped rank with SIGKILL, and which of the
    # two mpiexec reports depends on which end it notices first.
    assert code in (5, signal.SIGKILL), err
    assert time.monotonic() - started < 30
    run = load_model(model).info.run
    assert "rank 0: no answer from the other ranks for 3 s (during " in err  # step's losses or its gradients
    assert f"a rank died or hung; stopped at step {run.step}, saved to m.cllm" in err
    assert run.data_position == run.step and "Traceback" not in err


@needs_mpi
def test_a_killed_rank_ends_the_job_at_once_and_the_last_checkpoint_stays(tmp_path, corpus):
    process = launch(tmp_path, 2, long_run(corpus))
    model = tmp_path / "rank0" / "m.cllm"
    wait_for(model, process)
    os.kill(rank_pid(tmp_path, 1), signal.SIGKILL)
    started = time.monotonic()
    code, _, err = finish(process, timeout=60)
    assert code != 0 and time.monotonic() - started < 30
    run = load_model(model).info.run  # a whole file: a checkpoint (every 5 steps) or the old one
    assert run.step >= 5 and run.step % 5 == 0


# `cllm train` whose rank 1 fails (a bug, say) when it reaches step 8.
FAILING_RANK = ("import sys; from cllm.core import distributed; step = distributed.DistributedTrainer.train_step; "
                "distributed.DistributedTrainer.train_step = lambda self: (_ for _ in ()).throw("
                "RuntimeError('injected failure')) if self.world.rank == 1 and self.state.step == 7 else step(self); "
                "from cllm.core.cli import main; sys.exit(main(sys.argv[1:]))")


@needs_mpi
def test_a_rank_that_fails_tells_the_others_and_rank_0_saves_at_once(tmp_path, corpus):
    command = [sys.executable, "-c", FAILING_RANK, *train_command(corpus)[3:], "--steps", "1000000",
               "--eval-interval", "0", "--threads", "1", "--mpi-timeout", "120"]
    started = time.monotonic()
    code, _, err = finish(launch(tmp_path, 2, command), timeout=100)
    assert code != 0 and time.monotonic() - started < 60  # told, not timed out
    assert "RuntimeError: injected failure" in err  # rank 1's own traceback: a bug is a bug
    assert ("rank 0: rank 1 left the run (rank 1 failed: RuntimeError('injected failure')); stopped at step 7, "
            "saved to m.cllm") in err
    run = load_model(tmp_path / "rank0" / "m.cllm").info.run
    assert run.step == run.data_position == 7


@needs_mpi
def test_a_rank_gone_before_mpi_starts_does_not_keep_the_others_waiting(tmp_path, corpus):
    quoted = " ".join(f'"{part}"' for part in train_command(corpus, "--steps", "2", "--mpi-timeout", "3"))
    script = f'cd "{tmp_path}" && if [ {RANK} = 1 ]; then exit 3; fi; exec {quoted}'
    process = subprocess.Popen([mpiexec(), "-n", "2", "sh", "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    started = time.monotonic()
    code, _, err = finish(process, timeout=60)
    assert code != 0 and time.monotonic() - started < 30
    assert "rank 0: MPI did not start within 3 s: a rank died or hung before it started; exiting" in err


def per_rank_corpus(tmp_path: Path, command: list[str]) -> list[str]:
    """`command` with the corpus tmp_path/corpus-<rank>.txt: a file of each rank's own."""
    return [*command[:4], f"{tmp_path}/corpus-{RANK}.txt", *command[5:]]


@needs_mpi
def test_a_failure_on_one_rank_at_the_start_is_told_once(tmp_path, corpus):
    shutil.copy(corpus, tmp_path / "corpus-0.txt")  # and none for rank 1
    code, _, err = run_ranks(tmp_path, 2, per_rank_corpus(tmp_path, train_command(corpus, "--steps", "2")))
    assert code == 2
    assert err.count("error:") == 1 and f"error: rank 1: {tmp_path}/corpus-1.txt: no such file" in err
    assert "Traceback" not in err and not (tmp_path / "rank0" / "m.cllm").exists()


@needs_mpi
def test_ranks_that_would_train_different_runs_refuse_to_start(tmp_path, corpus, small_text):
    (tmp_path / "corpus-0.txt").write_text(small_text)
    (tmp_path / "corpus-1.txt").write_text(small_text[: len(small_text) // 2])
    code, _, err = run_ranks(tmp_path, 2, per_rank_corpus(tmp_path, train_command(corpus, "--steps", "2")))
    assert code == 2
    assert err.count("error:") == 1 and "rank 1 would train another run than rank 0" in err
    assert "Traceback" not in err and not (tmp_path / "rank0" / "m.cllm").exists()


# A rank of a run driven from Python, for what the command line cannot set up: one
# rank's values changed after the start.
RANK_SCRIPT = """
import json, sys
import numpy as np
from cllm.core import distributed, mpi_world
from cllm.core.config import TrainConfig
from cllm.core.corpus import load_corpus
world = mpi_world.join(30)
trainer = distributed.DistributedTrainer.new(load_corpus(sys.argv[1]), dict(n_layer=1, n_head=2, n_embd=16, ctx=16),
                                             TrainConfig(steps=6, batch=4, eval_interval=2, threads=1))
distributed.start(world, trainer)
if world.rank == 1:
    {change}
done = trainer.run()
result = {{"rank": world.rank, "reason": done.reason, "step": done.step, "message": done.message}}
with open(f"{{sys.argv[2]}}/result.{{world.rank}}.json", "w") as file:  # not stdout, where mpiexec may interleave lines
    json.dump(result, file)
"""


def run_rank_script(tmp_path: Path, corpus: Path, change: str) -> list[dict]:
    script = tmp_path / "rank_script.py"
    script.write_text(RANK_SCRIPT.format(change=change))
    process = subprocess.Popen([mpiexec(), "-n", "2", sys.executable, str(script), str(corpus), str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    code, _, err = finish(process)
    assert code == 0, err
    return [json.loads((tmp_path / f"result.{rank}.json").read_text()) for rank in range(2)]


@needs_mpi
def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_step(tmp_path, corpus):
    ranks = run_rank_script(tmp_path, corpus, "trainer.model.params[5] = np.inf")
    assert [(r["reason"], r["step"]) for r in ranks] == [("nan", 0), ("nan", 0)]


@needs_mpi
def test_the_ranks_checksums_catch_parameters_that_differ(tmp_path, corpus):
    ranks = run_rank_script(tmp_path, corpus, "trainer.model.params[5] += 1e-3")
    assert [(r["reason"], r["step"]) for r in ranks] == [("diverged", 2), ("diverged", 2)]
    assert "the parameters of rank 1 differ from rank 0's at step 2" in ranks[0]["message"]
