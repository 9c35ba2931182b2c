"""A run's files and bookkeeping, torch-free (the coordinator answers a fully cached re-run without torch):
its options (:class:`RunOptions`), statuses, summary, and results.jsonl I/O (:func:`append_record`,
:func:`read_records`). The typed record of one cell is :mod:`harness.record`."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from .faults import write_fault

NA = "n/a"  # the value of an axis that does not apply to a cell (e.g. BGMv2's crop_method in full mode)


class RunError(RuntimeError):
    """A problem with the run as a whole (unwritable output dir, bad checkpoint); exit code 2."""


# an absolute path up to and including site-packages/ (a virtualenv or system Python); then an absolute path
# up to one of this repository's top-level folders (the checkout that ran, wherever it was)
_SITE_PACKAGES = re.compile(r"(?<![\w/:.\\])(?:[A-Za-z]:)?(?:[/\\][^\s\"'()\[\]{},;:=/\\]*)+?[/\\](?:site|dist)-packages[/\\]")
_REPO_DIRS = ("harness", "model", "tests", "benchmarks", "reports", "docs", "shared")
_REPO_PREFIX = re.compile(r"(?<![\w/:.\\])(?:[A-Za-z]:)?(?:[/\\][^\s\"'()\[\]{},;:=/\\]+)+?[/\\](?=(?:%s)[/\\])"
                          % "|".join(_REPO_DIRS))
_ROOT = str(Path(__file__).resolve().parent.parent)  # this checkout (its own paths, e.g. in a log)


def relative_paths(text: Any) -> str:
    """``text`` with the machine's absolute paths made relative: a Python package's path from its folder in
    ``site-packages`` on (``/work/x/.nox/tests/lib/python3.11/site-packages/torchvision/_C.so`` ->
    ``torchvision/_C.so``), a file of the checkout that ran from the repository root on
    (``/work/main/model/bgmv2/refiner.py`` -> ``model/bgmv2/refiner.py``, whatever the checkout's folder),
    and this checkout's root. None is ``""``; nothing else changes."""
    s = "" if text is None else str(text)
    if "/" not in s and "\\" not in s:
        return s
    s = _SITE_PACKAGES.sub("", s)
    s = _REPO_PREFIX.sub("", s)
    return s.replace(_ROOT + "/", "")


def describe(exc: BaseException) -> str:
    """``ExceptionClass: first line of the message`` (never a multi-page graph dump), the machine's paths
    made relative (:func:`relative_paths`) before the line is cut at 600 characters (an exporter's cause,
    its explanation and the model frame it points at fit)."""
    msg = str(exc).strip()
    first = relative_paths(msg.splitlines()[0]) if msg else ""
    if len(first) > 600:
        first = first[:597] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# Statuses whose result is a property of the cell (cached and reused); crash/timeout/deadline are not.
CACHEABLE_STATUSES = ("pass", "fail", "error", "skip")
UNEXPECTED_STATUSES = ("fail", "error", "xpass", "crash", "timeout")
RERUN_STATUSES = ("fail", "error", "crash", "timeout")


@dataclass
class RunOptions:
    """What the CLI passes to :func:`harness.pool.run_plan`.

    ``jobs``: worker processes; ``stage_timeout_s``: per-stage wall limits in seconds (stage name ->
    s); ``deadline_s``: whole-run limit in seconds after which unstarted cells are ``skip``;
    ``memory_limit_mib``: RSS above which a worker is killed (status ``crash``); ``resume`` /
    ``rerun_failed``: continue the run already in ``out_dir``; ``cache_dir``/``no_cache``: the shared
    content-addressed cache (``--no-cache`` uses a private one that is deleted after the run).
    """

    out_dir: Path
    checkpoint: Optional[Path] = None
    src: Optional[str] = None
    bgr: Optional[str] = None
    pad: bool = False
    progress: bool = True
    config_path: Optional[str] = None
    jobs: int = 1
    cache_dir: Optional[Path] = None
    no_cache: bool = False
    stage_timeout_s: Dict[str, float] = field(default_factory=dict)
    deadline_s: Optional[float] = None
    memory_limit_mib: Optional[int] = None
    resume: bool = False
    rerun_failed: bool = False
    filter_expr: Optional[str] = None
    shard_info: Optional[Dict[str, Any]] = None  # run --shard K/N: shard, plan_fingerprint, plan_cells (harness/shard.py)


@dataclass
class RunSummary:
    """Records of the cells run (or kept, with ``--resume``) and the run's wall time in seconds."""

    records: List[Dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0
    interrupted: Optional[str] = None  # "SIGINT" / "SIGTERM" when the run was stopped
    stopped_by: Optional[str] = None  # "disk" when results could not be written
    cache: Dict[str, Dict[str, int]] = field(default_factory=dict)
    stage_s: float = 0.0
    jobs: int = 1
    kept: int = 0  # records kept from an earlier run (--resume / --rerun-failed)
    rounds: List[Any] = field(default_factory=list)  # harness.rounds.GroupRounds of the finalists, if measured

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def unexpected(self) -> int:
        return sum(1 for r in self.records if r["status"] in UNEXPECTED_STATUSES)


def stage_seconds(rec: Dict[str, Any]) -> float:
    """Sum of a record's timed stages in seconds (``stage_times`` as written by :meth:`Runner.run_cell`)."""
    return float(sum((rec.get("stage_times") or {}).values()))


def append_record(path: Path, rec: Dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk before returning.

    Raises:
        OSError: the write failed (e.g. ENOSPC); the file then holds at most a torn last line, which
            :func:`read_records` ignores.
    """
    line = json.dumps(rec, default=str, allow_nan=True)
    with open(path, "a", encoding="utf-8") as f:
        write_fault(rec["cell_id"])
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())




def read_records(results: Path) -> List[Dict[str, Any]]:
    """Parse ``results.jsonl`` (one record per line); a torn last line (process killed mid-write) is ignored.

    Raises:
        FileNotFoundError: no results.jsonl at ``results``.
        ValueError: a line other than the last is not valid JSON (names the line number).
    """
    lines = results.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if n == len(lines):
                break
            raise ValueError(f"{results}: line {n} is not valid JSON") from None
    return out


def check_out_dir(out: Path) -> None:
    """Create ``out`` and ``out/artifacts`` and prove they are writable. Raises RunError naming ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "artifacts").mkdir(exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(f"--out {str(out)!r} is not writable: {e.strerror or e}") from None
