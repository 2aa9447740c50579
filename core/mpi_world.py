"""This process as one rank of a run over several processes (MPI): whether it is one, the
few collectives the trainer needs, and noticing a rank that is gone.

An MPI launcher (`mpiexec`, `mpirun`, `srun`) tells each process it starts how many there
are in its environment; `join` reads that and imports mpi4py only when there are more
than one, so without the `mpi` extra, or outside a launcher, nothing here touches MPI.

No wait for the other ranks is unbounded. Collectives are non-blocking and polled with a
deadline (`timeout`), so a rank that dies or hangs shows up on the others as `PeerLost`
within `timeout` seconds; a rank that fails or gives up first sends a "leaving" notice on
a communicator of its own, and the others raise `PeerLost` at their next wait; and MPI's
start-up, which waits for every rank inside C code, runs under a guard process that ends
this one after as long. (Launchers also end the whole job when one of its processes is
killed by a signal, before any of this is needed.)
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cllm.core.config import default_threads
from cllm.core.errors import CllmError, ConfigError

# What launchers set: MPICH's and Intel MPI's hydra and Slurm's PMI; Open MPI; MVAPICH.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
DEFAULT_TIMEOUT = 300.0  # seconds a rank waits for the others at one collective
SPIN_SECONDS = 0.2  # a wait polls without sleeping this long (the others are about to arrive), then every POLL_SLEEP
POLL_SLEEP = 0.001
NOTICE_TAG = 7
SEND_SECONDS = 1.0  # a rank that parts waits this long at most for its notices to leave
NOTICE_BYTES = 2048


class PeerLost(CllmError):
    """Another rank died, hung, or left the run: this one cannot go on."""


def launched_ranks(environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """(this process's rank, number of ranks) as an MPI launcher's environment tells
    them; (0, 1) when no launcher started this process."""
    for size_name, rank_name in zip(SIZE_VARIABLES, RANK_VARIABLES, strict=True):
        size, rank = environ.get(size_name, "").strip(), environ.get(rank_name, "0").strip()
        if size.isdigit() and rank.isdigit():
            return int(rank), int(size)
    return 0, 1


def default_threads_per_rank(cores: int, machine_cores: int, ranks_here: int) -> int:
    """Threads for a rank when `--threads` is not given. `cores`: the cores this process
    may run on; `machine_cores`: the machine's; `ranks_here`: the ranks on this machine.
    A launcher that bound each rank to its own cores (fewer than the machine's) already
    divided them; otherwise the machine's cores are shared out among its ranks."""
    if cores < machine_cores:
        return max(1, cores)
    return max(1, cores // max(1, ranks_here))


@dataclass
class World:
    """The ranks of one run, as this one sees them."""

    comm: Any  # mpi4py's COMM_WORLD
    rank: int
    size: int
    ranks_here: int  # ranks on this machine, this one included
    timeout: float
    notices: Any  # a duplicate of comm that carries only "leaving" notices
    _notice: Any = field(repr=False)  # the pending receive of one notice from any rank
    _notice_buffer: bytearray = field(repr=False)
    started: bool = False  # the ranks' start-up handshake happened (core/distributed.py)
    left: list[int] = field(default_factory=list)  # ranks that sent a notice that they leave
    lost: bool = False  # a rank is gone: collectives may never complete, so no MPI_Finalize
    completed: bool = False  # every rank reached the same end of the run (or of a failed start)
    parted: bool = False  # this rank told the others it leaves
    failure: str = ""  # why this rank ends before the others, if it knows

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def default_threads(self) -> int:
        return default_threads_per_rank(default_threads(), os.cpu_count() or 1, self.ranks_here)

    # -- waiting ----------------------------------------------------------------------
    def wait(self, request: Any, what: str) -> None:
        """Until `request` completes; raises PeerLost (naming `what` was awaited) when a
        rank left, MPI failed, or `timeout` seconds passed."""
        from mpi4py import MPI

        started = time.monotonic()
        status = MPI.Status()
        try:
            while True:
                index, done = MPI.Request.Testany([request, self._notice], status)
                if done and index != 1:
                    return
                if done:
                    source, reason = self._take_notice(status)
                    raise self._lose(f"rank {source} left the run ({reason})")
                waited = time.monotonic() - started
                if waited > self.timeout:
                    raise self._lose(f"no answer from the other ranks for {self.timeout:g} s (during {what}): "
                                     "a rank died or hung")
                if waited < SPIN_SECONDS:
                    os.sched_yield()
                else:
                    time.sleep(POLL_SLEEP)
        except MPI.Exception as exc:
            raise self._lose(f"MPI failed during {what}: {exc.Get_error_string()}") from None

    def _lose(self, why: str) -> PeerLost:
        self.lost = True
        return PeerLost(f"rank {self.rank}: {why}")

    def _take_notice(self, status: Any) -> tuple[int, str]:
        """The notice that just arrived (its sender and reason); listens for the next."""
        from mpi4py import MPI

        source = status.Get_source()
        reason = bytes(self._notice_buffer[:status.Get_count(MPI.BYTE)]).decode(errors="replace")
        self.left.append(source)
        self._notice = self.notices.Irecv([self._notice_buffer, MPI.BYTE], source=MPI.ANY_SOURCE, tag=NOTICE_TAG)
        return source, reason

    # -- collectives --------------------------------------------------------------------
    def sum(self, buffer: np.ndarray, what: str) -> None:
        """`buffer` (contiguous) becomes the element-wise sum of every rank's `buffer`."""
        from mpi4py import MPI

        self.wait(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), what)

    def gather(self, data: bytes, what: str) -> list[bytes]:
        """Every rank's `data`, in rank order."""
        from mpi4py import MPI

        sizes = np.zeros(self.size, np.int64)
        self.wait(self.comm.Iallgather(np.array([len(data)], np.int64), sizes), what)
        out = np.zeros(int(sizes.sum()), np.uint8)
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.wait(self.comm.Iallgatherv([np.frombuffer(data, np.uint8), MPI.BYTE],
                                        [out, (sizes, offsets), MPI.BYTE]), what)
        return [out[o:o + n].tobytes() for o, n in zip(offsets, sizes, strict=True)]

    def broadcast(self, value: int, what: str) -> int:
        """Rank 0's `value`, on every rank."""
        buffer = np.array([value], np.int64)
        self.wait(self.comm.Ibcast(buffer, root=0), what)
        return int(buffer[0])

    # -- leaving -----------------------------------------------------------------------
    def part(self, reason: str) -> None:
        """Leaves a run that cannot go on: tells every other rank (so none waits for this
        one any longer). A rank other than 0 then waits, at most `timeout` seconds, for
        rank 0 to part too: rank 0 saves first, and a process that ends without
        MPI_Finalize makes the launcher end the whole job."""
        from mpi4py import MPI

        self.lost = self.parted = True
        payload = bytearray(reason.encode()[:NOTICE_BYTES])
        try:
            sends = [self.notices.Isend([payload, MPI.BYTE], dest=r, tag=NOTICE_TAG)
                     for r in range(self.size) if r != self.rank]
            started = time.monotonic()
            status = MPI.Status()
            while True:
                waited = time.monotonic() - started
                if self.is_root or 0 in self.left:
                    if MPI.Request.Testall(sends) or waited > SEND_SECONDS:
                        return
                elif waited > self.timeout:
                    return
                if self._notice.Test(status):
                    self._take_notice(status)
                time.sleep(POLL_SLEEP)
        except MPI.Exception:
            pass

    def close(self) -> None:
        """At the end of a run every rank finished: withdraws the pending notice receive,
        so MPI_Finalize has nothing left to wait for."""
        from mpi4py import MPI

        try:
            self._notice.Cancel()
            self._notice.Wait()
        except MPI.Exception:
            pass


_world: World | None = None


def current() -> World | None:
    """The world `join` joined, if any."""
    return _world


def join(timeout: float = DEFAULT_TIMEOUT) -> World | None:
    """This process's place among the ranks an MPI launcher started; None when it was not
    started as one of several (then MPI is not imported). Raises ConfigError when it was
    but mpi4py is missing or belongs to another MPI than the launcher."""
    global _world
    if _world is not None:
        return _world
    rank, size = launched_ranks()
    if size <= 1:
        return None
    if not timeout > 0:
        raise ConfigError(f"the MPI timeout must be a positive number of seconds, got {timeout:g}")
    try:
        import mpi4py
    except ImportError:
        raise ConfigError(f"an MPI launcher started {size} processes, but mpi4py is not installed here: "
                          "pip install 'cllm[mpi]'") from None
    mpi4py.rc.thread_level = "serialized"  # the training thread makes the calls, never two threads at once
    mpi4py.rc.finalize = False  # `_finalize` does it, unless a rank was lost
    with _start_guard(rank, timeout):
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        if comm.Get_size() != size:
            library = MPI.Get_library_version().splitlines()[0].strip()
            raise ConfigError(f"the launcher started {size} processes but MPI counts {comm.Get_size()}: "
                              f"mpi4py is built for another MPI ({library}) than the launcher that ran this")
        here = comm.Split_type(MPI.COMM_TYPE_SHARED)
        ranks_here = here.Get_size()
        here.Free()
        notices = comm.Dup()
    buffer = bytearray(NOTICE_BYTES)
    notice = notices.Irecv([buffer, MPI.BYTE], source=MPI.ANY_SOURCE, tag=NOTICE_TAG)
    _world = World(comm, comm.Get_rank(), size, ranks_here, timeout, notices, notice, buffer)
    atexit.register(_finalize)
    return _world


# Sleeps, says why, and ends the process that started it (argv: its id, seconds, message).
_GUARD = "import os, sys, time; time.sleep(float(sys.argv[2])); print(sys.argv[3], file=sys.stderr, flush=True); " \
         "os.kill(int(sys.argv[1]), 9)"


@contextmanager
def _start_guard(rank: int, timeout: float) -> Iterator[None]:
    """MPI's start-up waits inside C code, holding the interpreter, for every rank; one
    that died before it would keep the others there for ever. A small child process ends
    this one, saying why, if the start-up takes more than `timeout` seconds."""
    message = (f"rank {rank}: MPI did not start within {timeout:g} s: a rank died or hung before it started; "
               "exiting")
    guard = subprocess.Popen([sys.executable, "-c", _GUARD, str(os.getpid()), str(timeout), message],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        yield
    finally:
        guard.kill()
        guard.wait()


def _finalize() -> None:
    """At exit. After an end every rank reached: MPI_Finalize. Otherwise this rank leaves
    early (an error of its own, or it lost the others): it tells them, if it has not yet,
    and skips MPI_Finalize, which could wait for them for ever; a process that ends without
    it makes the launcher end the whole job."""
    world = _world
    if world is None:
        return
    if not world.completed:
        if not world.parted:
            uncaught = getattr(sys, "last_value", None)  # what Python just printed, if anything
            world.part(world.failure or (f"rank {world.rank} failed: {uncaught!r}" if uncaught else
                                         f"rank {world.rank} ended before the run did"))
        return
    from mpi4py import MPI

    world.close()
    MPI.Finalize()
