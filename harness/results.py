"""The typed results of a cell's stages (:mod:`harness.stages` produces them), and the record fields each
declares: :mod:`harness.record` assembles the typed record from these declarations, so a field is declared
once, by the result that writes it. Values only: nothing here runs a stage.

Units are in the names: ``_s`` seconds, ``_ms`` milliseconds, ``_mib`` MiB.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional

import numpy as np

Fields = Dict[str, Any]  # field name -> type (every record field is Optional with default None)


@dataclass(frozen=True)
class Outcome:
    """How a cell ended: ``status`` (see :data:`harness.values.STATUSES`), the ``stage`` that decided it
    (``done`` for a pass) and a one-line ``reason`` ("" for a pass)."""

    status: str = "pass"
    stage: str = "done"
    reason: str = ""


class StageResult:
    """Base of the stage results: :meth:`fields` are the record fields the result contributes, and
    :attr:`FIELDS` declares the ones only this result writes (``{name: type}``; :mod:`harness.record`
    builds the typed record from these declarations, so each field is declared once)."""

    FIELDS: ClassVar[Fields] = {}

    def fields(self) -> Dict[str, Any]:
        return {}


@dataclass(frozen=True)
class References(StageResult):
    """Eager outputs of the official configuration (numpy float32): in fp32 and, for a reduced-precision
    cell, in the cell's precision; ``gmac`` per frame when ``settings.count_macs``."""

    FIELDS: ClassVar[Fields] = {"gmac": float}

    ref32: List[np.ndarray]
    ref_same: Optional[List[np.ndarray]]
    gmac: Optional[float] = None

    def fields(self) -> Dict[str, Any]:
        return {"gmac": self.gmac} if self.gmac is not None else {}


@dataclass(frozen=True)
class Exported(StageResult):
    """The cell's artifact (made now or hard-linked from the cache), its key, the seconds its export/check/
    simplify took when it was made, and any fault injected into it (harness self-tests)."""

    FIELDS: ClassVar[Fields] = {
        "export_s": float, "check_s": float, "simplify_s": float, "exporter_name": str, "artifact": str,
        "artifact_key": str, "artifact_mib": float, "cached_artifact": bool, "nodes_before_sim": int, "nodes": int,
        "injected_fault": str,
    }  # + the exporter plug-in's own record_fields

    artifact: Any
    key: str
    relpath: str
    seconds: Dict[str, float]
    injected_fault: str = ""

    def fields(self) -> Dict[str, Any]:
        art = self.artifact
        out: Dict[str, Any] = {f"{k}_s": round(v, 4) for k, v in self.seconds.items()}
        if self.injected_fault:
            out["injected_fault"] = self.injected_fault
        out["exporter_name"] = art.exporter
        out.update(art.meta.get("record") or {})  # facts the exporter plug-in reports (its record_fields)
        out.update(artifact=self.relpath, artifact_key=self.key, artifact_mib=round(art.size_mib, 3),
                   cached_artifact=bool(art.meta.get("cached", False)))
        if "nodes_after" in art.meta:
            out.update(nodes_before_sim=art.meta["nodes_before"], nodes=art.meta["nodes_after"])
        return out


@dataclass(frozen=True)
class Loaded(StageResult):
    """The runtime plug-in with the artifact loaded, its load time in s and the facts ``prepare`` reported."""

    FIELDS: ClassVar[Fields] = {"load_s": float}  # + the runtime plug-in's record_fields (what prepare reports)

    runtime: Any
    load_s: float
    facts: Dict[str, Any]

    def fields(self) -> Dict[str, Any]:
        return {**self.facts, "load_s": round(self.load_s, 4)}


@dataclass(frozen=True)
class Ran(StageResult):
    """One call on the validation inputs: the inputs (:class:`harness.models.Inputs`), the named feeds, the
    outputs in the model's output order (numpy), the call's wall time in ms and the runtime's ``info()``."""

    FIELDS: ClassVar[Fields] = {"first_run_ms": float, "output_dtypes": str, "runtime_info": str}  # + input_size (run context)

    inputs: Any
    feeds: Dict[str, Any]
    outputs: List[np.ndarray]
    first_run_ms: float
    runtime_info: Dict[str, Any]

    def fields(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        if self.inputs.crop_to is not None:  # --pad: the model saw the padded size (padded_to, from base_record)
            out["input_size"] = f"{self.inputs.crop_to[0]}x{self.inputs.crop_to[1]}"
        out.update(first_run_ms=round(self.first_run_ms, 2),
                   output_dtypes=",".join(sorted({str(o.dtype) for o in self.outputs})),
                   runtime_info=json.dumps(self.runtime_info, default=str))  # rules may test it (what really ran)
        return out


@dataclass(frozen=True)
class Analyzed(StageResult):
    """Static analysis of an ONNX graph (:func:`harness.onnx_analysis.analyze`): its record fields, or why
    it could not be analysed (information only, never a verdict)."""

    FIELDS: ClassVar[Fields] = {"analysis_error": str}  # + harness.onnx_analysis.record_fields and the adapter's analysis fields

    analysis: Dict[str, Any]
    error: str = ""

    def fields(self) -> Dict[str, Any]:
        return {"analysis_error": self.error} if self.error else dict(self.analysis)


@dataclass(frozen=True)
class Judged(StageResult):
    """The adapter's verdict (:class:`harness.verdict.Verdict`) and, for BGMv2's static selector, why the
    patch cap truncated the official selection ("" when it did not)."""

    FIELDS: ClassVar[Fields] = {}  # the verdict's fields: the model adapter's record_fields

    verdict: Any
    truncated: str = ""

    def fields(self) -> Dict[str, Any]:
        out = dict(self.verdict.record)
        if self.truncated:
            out["patch_cap_truncated"] = self.truncated
        return out


@dataclass(frozen=True)
class Diagnosed(StageResult):
    """Information next to the verdict: on CUDA, the judge against eager on the same GPU; for a failing ONNX
    graph, its first divergence from the fp32 export (or why it was not localised)."""

    FIELDS: ClassVar[Fields] = {
        "first_divergence": str, "max_abs_pha_vs_cuda_eager": float, "judged_max_abs_pha_vs_cuda_eager": float,
        "passes_vs_cuda_eager": bool, "cuda_eager_error": str,
    }

    on_gpu: Dict[str, Any] = field(default_factory=dict)
    first_divergence: str = ""

    def fields(self) -> Dict[str, Any]:
        out = dict(self.on_gpu)
        if self.first_divergence:
            out["first_divergence"] = self.first_divergence
        return out


@dataclass(frozen=True)
class Timed(StageResult):
    """End-to-end and (``latency.compute``) device-compute :class:`harness.benchmark.Latency` in ms, the
    first call's ms (``cold_ms``), the device name for a CUDA cell and its peak memory in MiB. ``latency_runs``
    timed calls took ``measure_s`` seconds of wall time (the measuring loop, warm-up excluded). The
    end-to-end measurement's CPU contention share (``latency_contention``, 0-1, absent without PSI), its
    attempts (``latency_attempts``) and the intra-op threads it ran with (``latency_threads``) are recorded
    (:func:`harness.benchmark.measure_uncontended`)."""

    FIELDS: ClassVar[Fields] = {
        **{f"{k}_ms": float for k in ("p50", "p90", "p99", "mean", "std", "min", "max")},
        "cv": float, "fps": float, "latency_runs": int, "measure_s": float, "warmup_runs": int, "latency_clock": str,
        "latency_warning": str, "latency_samples_ms": List[float], "cold_ms": float,
        "p50_ci_ms": List[float], "latency_stop": str, "latency_contention": float, "latency_attempts": int,
        "latency_threads": int,
        "compute_p50_ms": float, "compute_p90_ms": float, "compute_p99_ms": float, "compute_cv": float,
        "compute_clock": str, "compute_fps": float, "peak_device_mib": float,
    }  # + device (run context) on CUDA

    latency: Any
    compute: Any
    cold_ms: Optional[float]
    device: str = ""
    peak_device_mib: Optional[float] = None

    def fields(self) -> Dict[str, Any]:
        out = latency_fields(self.latency, self.compute)
        out["cold_ms"] = self.cold_ms
        if self.device:
            out["device"] = self.device
        if self.peak_device_mib is not None:
            out["peak_device_mib"] = round(self.peak_device_mib, 1)
        return out


@dataclass(frozen=True)
class Probed(StageResult):
    """Input-contract probes (:mod:`harness.probes`): their record fields, or why probing broke off."""

    FIELDS: ClassVar[Fields] = {"probe_error": str}  # + the probes' fields (harness.probes.record_fields)

    probe_fields: Dict[str, Any]
    error: str = ""

    def fields(self) -> Dict[str, Any]:
        return {"probe_error": self.error} if self.error else dict(self.probe_fields)


def latency_fields(lat: Any, comp: Any) -> Dict[str, Any]:
    """Record fields of an end-to-end :class:`~harness.benchmark.Latency` and an optional compute one (ms)."""
    rec: Dict[str, Any] = {k: round(getattr(lat, k), 3)
                           for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")}
    rec.update(cv=round(lat.cv, 4), fps=round(lat.fps, 2), latency_runs=lat.runs, measure_s=round(lat.measure_s, 3),
               warmup_runs=lat.warmup_runs,
               latency_clock=lat.clock, latency_warning=lat.warning, latency_samples_ms=lat.samples_ms)
    ci = getattr(lat, "p50_ci_ms", None)
    if ci is not None:
        rec["p50_ci_ms"] = [round(ci[0], 3), round(ci[1], 3)]
    if getattr(lat, "stop", ""):
        rec["latency_stop"] = lat.stop
    if getattr(lat, "contention", None) is not None:
        rec["latency_contention"] = lat.contention
    rec["latency_attempts"] = getattr(lat, "attempts", 1)
    if getattr(lat, "threads", None) is not None:
        rec["latency_threads"] = lat.threads
    if comp is not None:
        rec.update(compute_p50_ms=round(comp.p50_ms, 3), compute_p90_ms=round(comp.p90_ms, 3),
                   compute_p99_ms=round(comp.p99_ms, 3), compute_cv=round(comp.cv, 4), compute_clock=comp.clock,
                   compute_fps=round(comp.fps, 2))
        if comp.warning:
            rec["latency_warning"] = "; ".join(filter(None, [lat.warning, f"compute {comp.warning}"]))
    return rec
