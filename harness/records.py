"""Torch-free pieces of a run: options, statuses, records and their rules, so that the coordinator can
answer a fully cached re-run without importing torch."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from .config import Rule


class RunError(RuntimeError):
    """A problem with the run as a whole (unwritable output dir, bad checkpoint); exit code 2."""


def describe(exc: BaseException) -> str:
    """``ExceptionClass: first line of the message`` (never a multi-page graph dump)."""
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else ""
    if len(first) > 300:
        first = first[:297] + "..."
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


def rule_environment() -> Dict[str, Any]:
    """Facts rules may be conditioned on (torch-free): every CPU flag, package versions are looked up
    on demand, the first GPU's compute capability (None without one)."""
    from .benchmark import all_cpu_flags
    from .runtimes import gpu_compute_capability

    return {"cpu_flags": set(all_cpu_flags()), "gpu_compute_capability": gpu_compute_capability()}


def _env_holds(rule: Rule, env: Dict[str, Any]) -> bool:
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    from .cache import package_version

    e = rule.env
    flags = env.get("cpu_flags", set())
    if any(f not in flags for f in e.cpu_flags) or any(f in flags for f in e.cpu_flags_absent):
        return False
    for name, spec in e.packages.items():
        have = package_version(name)
        if spec == "absent":
            if have is not None:
                return False
            continue
        try:
            if have is None or Version(have) not in SpecifierSet(spec):
                return False
        except InvalidVersion:
            return False
    if e.gpu_compute_capability is not None:
        cc = env.get("gpu_compute_capability")
        if cc is None or Version(cc) not in SpecifierSet(e.gpu_compute_capability):
            return False
    return True


def _runtime_info(rec: Dict[str, Any]) -> Dict[str, Any]:
    info = rec.get("runtime_info")
    if isinstance(info, str):
        try:
            info = json.loads(info)
        except ValueError:
            return {}
    return info if isinstance(info, dict) else {}


def _runtime_info_holds(rule: Rule, rec: Dict[str, Any]) -> bool:
    """Every ``runtime_info`` condition of ``rule`` holds for what the cell's runtime recorded. A cell that
    never got as far as recording it (an export error) satisfies no such condition."""
    if not rule.runtime_info:
        return True
    info = _runtime_info(rec)
    for key, want in rule.runtime_info.items():
        vals = want if isinstance(want, list) else [want]
        if key not in info or str(info[key]).lower() not in [str(v).lower() for v in vals]:
            return False
    return True


def applicable_rules(rec: Dict[str, Any], rules: Sequence[Rule], env: Optional[Dict[str, Any]] = None) -> List[Rule]:
    """Of ``rules`` (already matching the cell's fields), those whose machine (``env``) and runtime
    (``runtime_info``) conditions hold for this record."""
    env = rule_environment() if env is None else env
    return [r for r in rules if _env_holds(r, env) and _runtime_info_holds(r, rec)]


def predicts(rule: Rule, rec: Dict[str, Any]) -> bool:
    """True when ``rule`` predicts the raw record's outcome: the status class, the stage (when given) and
    the ``match`` regular expression on the reason (when given)."""
    import re

    predicted = ("fail", "error") if rule.expect == "fail" else ("crash", "timeout")
    if rec["status"] not in predicted or (rule.stage is not None and rule.stage != rec.get("stage")):
        return False
    return rule.match is None or re.search(rule.match, rec.get("reason") or "") is not None


def pick_rule(rec: Dict[str, Any], rules: Sequence[Rule], env: Optional[Dict[str, Any]] = None) -> Optional[Rule]:
    """Of the rules matching a cell whose conditions hold, the first that predicts its raw outcome, else
    the first one. A cell can match several (e.g. an fp16 dynamo export run on OpenVINO: the export rule
    predicts its failure, the OpenVINO fp16 parity rule would not)."""
    rules = applicable_rules(rec, rules, env)
    for rule in rules:
        if predicts(rule, rec):
            return rule
    return rules[0] if rules else None


def apply_rule(rec: Dict[str, Any], rule: Optional[Rule]) -> Dict[str, Any]:
    """Turn a raw record's status into its judged status under ``rule`` (a known incompatibility).

    A failure the rule predicts (:func:`predicts`: status class, stage and ``match``) becomes ``xfail``;
    another failure keeps its status with a note saying what the rule expected; a pass becomes ``xpass``."""
    rec = dict(rec)
    rec["rule"] = rule.id if rule else ""
    if rule is None:
        return rec
    status, stage = rec["status"], rec.get("stage")
    failed = ("fail", "error") if rule.expect == "fail" else ("crash", "timeout")
    if predicts(rule, rec):
        rec["status"] = "xfail"
        rec["reason"] = f"{rec.get('reason', '')} [expected: {rule.reason}]"
    elif status in failed and rule.stage is not None and rule.stage != stage:
        rec["reason"] = f"{rec.get('reason', '')} [rule {rule.id} expected failure at stage {rule.stage!r}]"
    elif status in failed:
        rec["reason"] = (f"{rec.get('reason', '')} [rule {rule.id} expected a failure matching {rule.match!r}; "
                         f"this one is not it]")
    elif status == "pass":
        rec["status"] = "xpass"
        rec["reason"] = f"passed although rule {rule.id!r} expects failure ({rule.reason})"
    return rec


def append_record(path: Path, rec: Dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk before returning.

    Raises:
        OSError: the write failed (e.g. ENOSPC); the file then holds at most a torn last line, which
            :func:`harness.report.read_records` ignores.
    """
    from .faults import write_fault

    line = json.dumps(rec, default=str, allow_nan=True)
    with open(path, "a", encoding="utf-8") as f:
        write_fault(rec["cell_id"])
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())




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
