"""Where co-simulation jobs run: in this process, on a local Dask cluster, or on a scheduler.

:func:`open_engine` gives an :class:`Engine` that runs independent jobs (the chunks of a
long co-simulation, the jobs of a regression) and yields each one's outcome as it
finishes:

- ``workers=1`` (and no scheduler): one after the other in this process, without Dask;
- no scheduler: a :class:`distributed.LocalCluster` of ``workers`` processes (default: one
  per core), one thread each (a simulation is one busy thread);
- ``scheduler="tcp://HOST:PORT"``: the workers of a running Dask cluster (``dask
  scheduler`` / ``dask worker``, ``docs/cosim.md``); with ``workers``, wait until that many
  have joined.

A job whose worker dies (killed, out of memory, lost machine) is reported as a
:class:`JobOutcome` with ``died`` set instead of taking the other jobs with it: the local
cluster does not retry it (``distributed.scheduler.allowed-failures`` is 0 there, so the
next worker is not killed too), and no more jobs are in flight than there are worker
threads, so no job waits on a worker (to be lost with it).

Local worker processes do not run the caller's script again: ``multiprocessing`` starts
them by re-running ``__main__`` (a script that imports PyTorch, or one without an ``if
__name__ == "__main__"`` guard, which then fails), and jobs never need it (their
functions are importable, as on a remote worker).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["Engine", "JobOutcome", "open_engine", "default_workers"]

#: Seconds to wait for the workers of a remote scheduler to join.
WORKER_WAIT_S = 120


@dataclasses.dataclass
class JobOutcome:
    """How one job ended.

    Attributes
    ----------
    index : int
        The job's position in the submitted list.
    result : Any
        What the job returned (None if it raised or its worker died).
    error : str or None
        ``"<ExceptionType>: <message>"`` if the job raised.
    died : bool
        The worker running the job died.
    worker : str
        Where it ran (``"in-process"`` or the worker's address).
    finished_after : float
        Seconds from the start of :meth:`Engine.run` to this outcome.
    """

    index: int
    result: Any
    error: str | None
    died: bool
    worker: str
    finished_after: float


def default_workers() -> int:
    """Return the default number of local workers: one per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


class Engine:
    """Runs jobs in-process or on a Dask client (made by :func:`open_engine`).

    Attributes
    ----------
    description : str
        E.g. ``"in-process"``, ``"LocalCluster, 2 workers"``, ``"tcp://h:8786, 3 workers"``.
    workers : int
        How many jobs can run at once.
    """

    def __init__(self, client: Any, description: str, workers: int) -> None:
        self._client = client
        self.description = description
        self.workers = workers

    def run(self, func: Callable[..., Any], jobs: Sequence[tuple[Any, ...]]
            ) -> Iterator[JobOutcome]:
        """Run ``func(*args)`` for every ``args`` of ``jobs``; yield outcomes as they finish.

        ``func`` must be importable by the workers (a module-level function of an installed
        module), and its arguments and result picklable.
        """
        start = time.perf_counter()
        if self._client is None:
            for i, args in enumerate(jobs):
                try:
                    result, error = func(*args), None
                except Exception as exc:  # reported per job, like a worker's exception
                    result, error = None, f"{type(exc).__name__}: {exc}"
                yield JobOutcome(i, result, error, False, "in-process",
                                 time.perf_counter() - start)
            return
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        # No more jobs in flight than worker threads: a job waiting on a worker would be
        # lost with it if the job running there killed it.
        client = self._client
        pending = list(enumerate(jobs))
        active: dict[str, int] = {}
        running = as_completed()

        def fill() -> None:
            limit = max(1, sum(client.nthreads().values()))
            while pending and len(active) < limit:
                i, args = pending.pop(0)
                future = client.submit(func, *args, pure=False)
                active[future.key] = i
                running.add(future)

        fill()
        for future in running:
            i = active.pop(future.key)
            worker = _worker_of(client, future)
            try:
                outcome = JobOutcome(i, future.result(), None, False, worker,
                                     time.perf_counter() - start)
            except KilledWorker:
                outcome = JobOutcome(i, None, "the worker running it died", True, worker,
                                     time.perf_counter() - start)
            except Exception as exc:
                outcome = JobOutcome(i, None, f"{type(exc).__name__}: {exc}", False, worker,
                                     time.perf_counter() - start)
            future.release()
            fill()
            yield outcome


@contextlib.contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Hide the ``__main__`` module's file and spec from ``multiprocessing`` (module doc).

    Spawned processes re-run ``__main__`` only if it has one of them; while the local
    cluster lives (its nannies restart dead workers), it has neither.
    """
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def _worker_of(client: Any, future: Any) -> str:
    """Return the address of the worker that ran ``future`` ("?" once it is forgotten)."""
    try:
        where = client.who_has([future]).get(future.key) or ()
    except Exception:  # the scheduler may already have forgotten a failed task
        where = ()
    return where[0] if where else "?"


@contextlib.contextmanager
def open_engine(workers: int | None = None, scheduler: str | None = None
                ) -> Iterator[Engine]:
    """Open where jobs run (module doc); close the local cluster on exit.

    Parameters
    ----------
    workers : int, optional
        Local: the number of worker processes (default :func:`default_workers`; 1 runs
        in-process without Dask). With ``scheduler``: wait until that many have joined.
    scheduler : str, optional
        A Dask scheduler's address, e.g. ``"tcp://10.0.0.5:8786"``.

    Raises
    ------
    ValueError
        If ``workers`` is below 1.
    RuntimeError
        If the scheduler cannot be reached, or its workers do not join in time.
    """
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if scheduler is None and workers == 1:
        yield Engine(None, "in-process", 1)
        return
    import dask
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise RuntimeError(f"cannot reach the Dask scheduler at {scheduler}: {exc}"
                               ) from None
        with client:
            if workers is not None:
                try:
                    client.wait_for_workers(workers, timeout=WORKER_WAIT_S)
                except TimeoutError:
                    raise RuntimeError(
                        f"the Dask scheduler at {scheduler} has "
                        f"{len(client.scheduler_info()['workers'])} workers, not {workers}, "
                        f"after {WORKER_WAIT_S} s") from None
            n = len(client.scheduler_info()["workers"])
            if n == 0:
                raise RuntimeError(f"the Dask scheduler at {scheduler} has no workers "
                                   "(start some with `dask worker " + scheduler + "`)")
            yield Engine(client, f"{scheduler}, {n} workers", n)
        return
    n = workers if workers is not None else default_workers()
    # A job that kills its worker is reported, not retried on (and killing) the next one.
    # Any free port for the scheduler's web server: 8787 may be another cluster's.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            _main_script_hidden(), LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                         dashboard_address=":0", silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        yield Engine(client, f"LocalCluster, {n} workers", n)
