"""What this machine lets a run use, from psutil plus the cgroup limits psutil does not read (torch-free).

A container on a 16-core host with ``--cpus=2`` or an affinity mask of 2 cores must time latency with 2
threads, not 16 (oversubscribed threads make every p50 noise), and a 4 GiB memory limit must set the
worker memory guard, not the host's 128 GiB. Where psutil is not installed (e.g. a bare device image),
``os`` gives the logical CPUs and the page count; the record then says so (:func:`describe`).
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Optional

MIB = 2**20
CGROUP = Path("/sys/fs/cgroup")


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def cgroup_cpu_limit(root: Path = CGROUP) -> Optional[float]:
    """CPUs allowed by the cgroup's CFS quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``/``cpu.cfs_period_us``),
    None where there is no quota."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        q, p = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if q.is_file() and p.is_file():
            quota_us = int(q.read_text())
            return None if quota_us <= 0 else quota_us / int(p.read_text())
    except (OSError, ValueError):
        return None
    return None


def cgroup_memory_limit_mib(root: Path = CGROUP) -> Optional[float]:
    """The cgroup's memory limit in MiB (v2 ``memory.max``, v1 ``memory.limit_in_bytes``), None without one."""
    for f in (root / "memory.max", root / "memory" / "memory.limit_in_bytes"):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text == "max" or not text.isdigit() or int(text) >= 2**60:  # v1 reports "no limit" as ~2**63
            return None
        return int(text) / MIB
    return None


def usable_cores() -> int:
    """Cores a run may use: physical cores (psutil), capped by this process's CPU affinity and the cgroup's
    CPU quota (rounded up); at least 1. Latency is timed with this many threads."""
    ps = _psutil()
    physical = (ps.cpu_count(logical=False) if ps else None) or os.cpu_count() or 1
    caps = [physical]
    try:
        caps.append(len(ps.Process().cpu_affinity()) if ps else len(os.sched_getaffinity(0)))
    except (AttributeError, OSError, NotImplementedError):
        pass
    quota = cgroup_cpu_limit()
    if quota is not None:
        caps.append(max(1, math.ceil(quota)))
    return max(1, min(caps))


def physical_memory_mib() -> Optional[float]:
    """Memory this process may use in MiB: physical memory (psutil) capped by the cgroup's limit."""
    ps = _psutil()
    total: Optional[float]
    try:
        total = ps.virtual_memory().total / MIB if ps else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB
    except (ValueError, OSError, AttributeError):
        total = None
    limit = cgroup_memory_limit_mib()
    if limit is not None:
        total = limit if total is None else min(total, limit)
    return total


def rss_mib(pid: int) -> Optional[float]:
    """Resident memory of process ``pid`` in MiB (None when it is gone or cannot be read)."""
    ps = _psutil()
    try:
        if ps is not None:
            return ps.Process(pid).memory_info().rss / MIB
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MIB
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess/AccessDenied, OSError: the process is gone
        return None


def describe() -> Dict[str, object]:
    """For environment.json: the limits above and where they came from."""
    ps = _psutil()
    return {"usable_cores": usable_cores(), "logical_cpus": os.cpu_count(),
            "physical_cores": ps.cpu_count(logical=False) if ps else None,
            "cgroup_cpu_limit": cgroup_cpu_limit(), "cgroup_memory_limit_mib": cgroup_memory_limit_mib(),
            "memory_mib": round(physical_memory_mib() or 0), "source": "psutil" if ps else "os (psutil not installed)"}


@functools.lru_cache(maxsize=None)
def gpu_identity() -> str:
    """``"<GPU name>, driver <version>"`` of every GPU ``nvidia-smi`` lists, or ``"none"`` (torch-free, once
    per process): CUDA results are only reused on the same GPU model and driver."""
    out = _nvidia_smi("name,driver_version")
    if out is None:
        return "none" if _smi_path() is None else "unknown"
    return "; ".join(sorted({ln.strip() for ln in out.splitlines() if ln.strip()})) or "none"


@functools.lru_cache(maxsize=None)
def gpu_compute_capability() -> Optional[str]:
    """Compute capability of the first GPU (``"9.0"``) from ``nvidia-smi``, or None without one (torch-free)."""
    out = (_nvidia_smi("compute_cap") or "").split()
    return out[0] if out else None


def _smi_path() -> Optional[str]:
    return shutil.which("nvidia-smi")


def _nvidia_smi(query: str) -> Optional[str]:
    smi = _smi_path()
    if smi is None:
        return None
    try:
        return subprocess.run([smi, f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_device_nodes() -> bool:
    """Whether this machine has a GPU device node (``/dev/nvidiactl``, ``/dev/nvidia0``, ROCm's ``/dev/kfd``,
    WSL's ``/dev/dxg``). A cheap hint without importing torch, used only to decide how many workers to start;
    whether a CUDA cell runs is decided by :func:`harness.runtimes.no_cuda`."""
    return any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))
