"""Coordinator and worker processes: run a :class:`~harness.config.Plan` so that no cell can take the
run down with it.

Cells run in worker subprocesses (``spawn``), each of which imports torch once and runs many cells. The
coordinator (this process) hands out cells grouped by the artifact they share, and watches every
worker:

- a worker that dies (segfault, abort, ``os._exit``, killed) ends only its current cell, as ``crash``
  with the stage it was in, the signal or exit code and the last lines of its stderr; it is replaced;
- a stage that runs past its limit (``limits.stage_timeout_s``) ends the cell as ``timeout``;
- a worker whose resident memory passes ``limits.memory_limit_mib`` is killed (``crash``, "out of
  memory") before the kernel's OOM killer picks a victim;
- after ``limits.deadline_s`` the cells not yet finished are ``skip`` (``--resume`` runs them later);
- SIGINT/SIGTERM stop the workers; every finished cell is already on disk.

While one worker measures latency, no other worker runs (the coordinator stops the others and their child
processes with SIGSTOP wherever they are, and continues them afterwards; the stopped seconds are taken out
of their stage times and recorded as ``paused_s``), so ``--jobs`` changes throughput, not the numbers.

Each record is appended to ``results.jsonl`` and fsynced as soon as its cell ends.

Modules: :mod:`~harness.pool.worker` (the worker process's loop and the message protocol),
:mod:`~harness.pool.coordinator` (owns the workers: time, memory and crash guards, the latency gate),
:mod:`~harness.pool.session` (one ``run``: resume, result cache, records, rules, the coordinator).
"""

from .coordinator import Coordinator, group_cells  # noqa: F401
from .session import run_plan  # noqa: F401

__all__ = ["Coordinator", "group_cells", "run_plan"]
