"""Run a batch's tasks here, in a process pool, or on a Dask distributed cluster, with progress.

:func:`run_tasks` takes ``(label, function, args)`` tuples and calls ``on_done(label,
result)`` in this process as each finishes, in completion order (the caller writes the
outputs, atomically, so an interrupted run keeps every finished result). A task that
cannot finish at all (its worker died) gives ``{"errors": [{"stage": "worker", ...}]}``.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

Task = tuple[str, Callable[..., dict], tuple]


def default_jobs() -> int:
    """Worker processes by default: the cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _one_thread() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per worker process (the processes are the parallelism)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _lost(exc: BaseException) -> dict[str, Any]:
    return {"errors": [{"stage": "worker", "reason": f"worker failed: {type(exc).__name__}: {exc}"}]}


def _progress(total: int, stream=None):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(file=stream or sys.stderr)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, disable=not console.is_terminal), console


def run_tasks(tasks: Sequence[Task], on_done: Callable[[str, dict], None], *, jobs: int = 1,
              scheduler: str | None = None, show_progress: bool = True) -> None:
    """Run every task (see the module doc). ``scheduler``: a Dask address (``tcp://host:8786``)."""
    if not tasks:
        return
    progress, console = _progress(len(tasks))
    plain = show_progress and not console.is_terminal  # logs and CI: one line per finished task
    done = 0

    def finished(label: str, result: dict) -> None:
        nonlocal done
        done += 1
        on_done(label, result)
        progress.update(bar, advance=1, description=f"{label[:40]:40s}")
        if plain:
            bad = " (errors)" if result.get("errors") else ""
            console.print(f"[{done}/{len(tasks)}] {label}{bad}", highlight=False)

    with progress:
        bar = progress.add_task("batch", total=len(tasks), visible=show_progress)
        if scheduler:
            _run_dask(tasks, finished, scheduler)
        elif jobs <= 1:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(1):  # like a pool worker: one core (restored afterwards)
                for label, fn, args in tasks:
                    finished(label, fn(*args))
        else:
            _run_pool(tasks, finished, jobs)


def _run_pool(tasks: Sequence[Task], finished, jobs: int) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_one_thread)
    try:
        pending = {pool.submit(fn, *args): label for label, fn, args in tasks}
        while pending:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in ready:
                label = pending.pop(fut)
                try:
                    result = fut.result()
                except Exception as exc:  # noqa: BLE001 - a dead worker spoils one result, not the batch
                    result = _lost(exc)
                finished(label, result)
    finally:  # on Ctrl-C: drop what has not started, keep what finished
        pool.shutdown(wait=True, cancel_futures=True)


def _run_dask(tasks: Sequence[Task], finished, address: str) -> None:
    try:
        from distributed import Client, as_completed
    except ImportError:
        from .errors import CD7FlowError

        raise CD7FlowError("--scheduler needs Dask distributed: pip install 'cd7flow[cluster]'") from None
    from .errors import CD7FlowError

    try:
        client = Client(address, timeout="20s")  # the default client only inside the with block below
    except (OSError, TimeoutError, ValueError) as exc:
        raise CD7FlowError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    with client:
        futures = {client.submit(fn, *args, pure=False): label for label, fn, args in tasks}
        for fut in as_completed(list(futures)):
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001
                result = _lost(exc)
            finished(futures[fut], result)
