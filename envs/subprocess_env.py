"""A batched environment whose slots are stepped in worker processes, for families whose
environments step in Python (holding the GIL), such as Meta-World's.

The ``num_envs`` slots are split into contiguous blocks, one per worker; each worker holds a
batched environment of its block, built by ``make_block(block_size)`` (a picklable callable),
and the blocks step at the same time.  Each worker is a fresh interpreter (``python -c``, the
socket of a ``multiprocessing.Pipe`` inherited): it imports what ``make_block`` needs (and so
any patch its module applies) and nothing else, never this process's main script nor a copy of
its threads, and runs its numerical libraries on one thread.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import traceback
import weakref
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from metarl.envs.base import RENDER_SIZE, BatchedEnv, StepResult, Task


class SubprocessBatchedEnv(BatchedEnv):
    """``num_envs`` slots stepped by ``num_workers`` processes, each holding the batched
    environment ``make_block(size)`` of its contiguous block of slots.

    It behaves as one batched environment of ``make_block(num_envs)`` would, slot for slot, for
    families whose resets draw nothing from ``rng`` (each block resets with a generator seeded
    by a draw from it).  Once a worker has failed or died, every later call raises: build a new
    environment.
    """

    def __init__(
        self, make_block: Callable[[int], BatchedEnv], num_envs: int, num_workers: int
    ) -> None:
        super().__init__(num_envs)
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        sizes = [len(block) for block in np.array_split(np.arange(num_envs), num_workers)]
        self._bounds = np.cumsum([0, *[size for size in sizes if size]])
        self._connections: list[Connection] = []
        processes = []
        for first, last in zip(self._bounds[:-1], self._bounds[1:]):
            connection, process = _start_worker(make_block, int(last - first))
            self._connections.append(connection)
            processes.append(process)
        self._finalizer = weakref.finalize(self, _shut_down, self._connections, processes)
        self._failure: str | None = None
        every = range(len(self._connections))
        self.observation_dim, self.action_dim, self.horizon, self.metadata = self._receive(every)[0]

    @property
    def num_workers(self) -> int:
        """The worker processes (one per block of slots)."""
        return len(self._connections)

    def _blocks(self, values: Sequence[Any] | np.ndarray) -> list[Any]:
        return [values[first:last] for first, last in zip(self._bounds[:-1], self._bounds[1:])]

    def _call(self, method: str, *per_block: Sequence[Any]) -> list[Any]:
        """Call ``method`` on every block at once, block ``i`` with the ``i``-th of each of
        ``per_block``; the blocks' results in order."""
        calls = {
            i: (method, [arguments[i] for arguments in per_block])
            for i in range(len(self._connections))
        }
        return self._exchange(calls)

    def _exchange(self, calls: dict[int, tuple[str, list[Any]]]) -> list[Any]:
        """Send each worker of ``calls`` its call, then read every reply."""
        if self._failure is not None:
            raise RuntimeError(f"an environment worker failed earlier ({self._failure})")
        sent = []
        for block, call in calls.items():
            try:
                self._connections[block].send(call)
            except OSError:  # its process is gone
                self._failure = "its process died"
                break
            sent.append(block)
        replies = self._receive(sent)
        if self._failure is not None:
            raise RuntimeError(f"an environment worker failed: {self._failure}")
        return replies

    def _receive(self, blocks: Sequence[int]) -> list[Any]:
        """The replies of the workers of ``blocks``, every one read before an error is raised
        (no reply may be left for a later call to read)."""
        replies = []
        for block in blocks:
            try:
                status, value, alive = self._connections[block].recv()
            except (EOFError, OSError):
                status, value, alive = "error", "its process died", None
            if status == "error":
                self._failure = self._failure or value
            replies.append((value, alive))
        if self._failure is not None:
            raise RuntimeError(f"an environment worker failed: {self._failure}")
        if len(replies) == self.num_workers and replies[0][1] is not None:
            self.alive = np.concatenate([alive for _, alive in replies])
        return [value for value, _ in replies]

    def _on_tasks_set(self) -> None:
        self._call("set_tasks", self._blocks(self.tasks))

    def reset(self, rng: np.random.Generator) -> np.ndarray:
        if not self.tasks:
            raise RuntimeError("set_tasks must be called before reset")
        return np.concatenate(self._call("reset", self._block_generators(rng)))

    def _block_generators(self, rng: np.random.Generator) -> list[np.random.Generator]:
        """One generator per block, seeded by draws from ``rng`` (whose state then holds them)."""
        return [np.random.default_rng(seed) for seed in rng.integers(2**63, size=self.num_workers)]

    def reset_slots(
        self, slots: np.ndarray, tasks: Sequence[Task], rng: np.random.Generator
    ) -> np.ndarray:
        if not self.tasks:
            raise RuntimeError("set_tasks must be called before reset_slots")
        index = np.flatnonzero(slots)
        if len(tasks) != len(index):
            raise ValueError(f"expected {len(index)} tasks, got {len(tasks)}")
        for slot, task in zip(index, tasks):
            self.tasks[slot] = dict(task)
        block_slots = self._blocks(slots)
        block_tasks, first = [], 0
        for chosen in block_slots:
            block_tasks.append(list(tasks[first : first + int(chosen.sum())]))
            first += int(chosen.sum())
        rngs = self._block_generators(rng)
        return np.concatenate(self._call("reset_slots", block_slots, block_tasks, rngs))

    def end_slots(self, slots: np.ndarray) -> None:
        self._call("end_slots", self._blocks(slots))

    def step(self, action: np.ndarray) -> StepResult:
        results: list[StepResult] = self._call("step", self._blocks(np.asarray(action)))
        return StepResult(
            observation=np.concatenate([r.observation for r in results]),
            reward=np.concatenate([r.reward for r in results]),
            terminated=np.concatenate([r.terminated for r in results]),
            info={key: np.concatenate([r.info[key] for r in results]) for key in results[0].info},
        )

    def render(self, index: int = 0, size: int = RENDER_SIZE) -> np.ndarray:
        if not 0 <= index < self.num_envs:
            raise IndexError(f"slot {index} out of range for {self.num_envs} slots")
        block = int(np.searchsorted(self._bounds, index, side="right")) - 1
        (frame,) = self._exchange({block: ("render", [index - int(self._bounds[block]), size])})
        return np.asarray(frame)

    def close(self) -> None:
        self._finalizer()


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_WORKER_CODE = "import sys; from metarl.envs.subprocess_env import serve; serve(int(sys.argv[1]))"


def _start_worker(
    make_block: Callable[[int], BatchedEnv], size: int
) -> tuple[Connection, subprocess.Popen[bytes]]:
    """A worker process serving ``make_block(size)``, and this side's end of its connection."""
    ours, theirs = multiprocessing.Pipe()
    environment = {**os.environ, **dict.fromkeys(_THREAD_VARIABLES, "1")}
    process = subprocess.Popen(
        [sys.executable, "-c", _WORKER_CODE, str(theirs.fileno())],
        pass_fds=[theirs.fileno()],
        env=environment,
    )
    theirs.close()
    ours.send((make_block, size))
    return ours, process


def serve(handle: int) -> None:
    """A worker's life: receive ``make_block`` and the block's size on the connection of file
    descriptor ``handle``, build the block, then answer calls until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    connection = Connection(handle)
    try:
        make_block, size = connection.recv()
    except EOFError:
        return
    _serve(connection, make_block, size)


def _serve(connection: Connection, make_block: Callable[[int], BatchedEnv], size: int) -> None:
    """A worker's loop: build the block, then answer calls until told to close (errors go back
    as one line, their traceback to this process's stderr)."""
    try:
        env = make_block(size)
        shape = (env.observation_dim, env.action_dim, env.horizon, env.metadata)
    except Exception as error:  # reported to the parent, which raises it
        traceback.print_exc()
        connection.send(("error", f"{type(error).__name__}: {error}", None))
        return
    connection.send(("ok", shape, None))
    while True:
        try:
            method, arguments = connection.recv()
        except EOFError:
            break
        if method == "close":
            env.close()
            break
        try:
            value = getattr(env, method)(*arguments)
            connection.send(("ok", value, env.alive.copy()))
        except Exception as error:  # reported to the parent, which raises it
            traceback.print_exc()
            connection.send(("error", f"{type(error).__name__}: {error}", None))


def _shut_down(connections: list[Connection], processes: list[subprocess.Popen[bytes]]) -> None:
    for connection in connections:
        try:
            connection.send(("close", []))
        except (BrokenPipeError, OSError):
            pass
    for process in processes:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for connection in connections:
        connection.close()
