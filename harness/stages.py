"""The stages of one cell: each takes the typed results of the stages before it and returns its own.

``Runner.run_cell`` walks :data:`PIPELINE` in order::

    model -> export (+ check, simplify) -> load -> run -> analyze -> parity -> diagnose -> latency -> probe

A stage is called as ``stage(ctx, done)``: ``ctx`` (:class:`CellContext`, frozen) holds the cell and its
values (settings, tolerance, folders, threads, device), the cell's cache keys (:class:`harness.keys.CellKeys`),
the :class:`StageClock` that times stages and the :class:`Services` that compute what a stage cannot
compute from values alone (eager references, exports through the cache, inputs, localisation); ``done``
(:class:`Done`) holds the frozen results of the stages that ran, one typed attribute each. It returns a
:class:`Step`: its own result (a frozen dataclass below, or None), and optionally the cell's
:class:`Outcome` (skip in ``model``, fail in ``parity``) and whether the walk stops. The runner copies
``result.fields()`` into the typed record (:mod:`harness.record`), so every record field comes from exactly
one stage result. An exception inside a stage becomes :class:`StageFailure` (the record's ``stage`` and
``reason``: status ``error``). Export, check and simplify are one stage because they share one
content-addressed artifact (a cached artifact costs ~0 s); their own seconds are in ``export_s``,
``check_s``, ``simplify_s`` when the artifact was made.

No stage sees the runner: :class:`Services` is the whole of what the stages ask of the process that runs
them (:class:`harness.runner.Runner` implements it); model-specific parts go through the cell's model
adapter (:func:`harness.models.owner`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, List, Optional, Protocol, Tuple

import numpy as np

from . import faults
from .benchmark import measure, measure_uncontended
from .models import adapter as model_adapter
from .models import owner
from .mutants import mutate_onnx
from .parity import ShapeMismatch
from .probes import record_fields, run_probes
from .results import (Analyzed, Diagnosed, Exported, Judged, Loaded, Outcome, Probed, Ran, References,
                      StageResult, Timed)
from .runs import describe
from .runtimes import RUNTIMES
from .values import STAGES, SUB_STAGES, Tolerance, as_list

if TYPE_CHECKING:  # types only: the pipeline's inputs
    from .config import Cell
    from .exporters import Artifact
    from .keys import CellKeys
    from .models import Inputs


class StageFailure(Exception):
    """``exc`` raised inside stage ``stage`` (the record's ``stage``; ``reason`` is ``describe(exc)``). A
    wrapper the walk unpacks, never shown; the exception an exporter raises to state a failure in words is
    :class:`harness.exporters.StageError`."""

    def __init__(self, stage: str, exc: BaseException):
        super().__init__(stage)
        self.stage = stage
        self.exc = exc


def in_stage(stage: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, with any exception re-raised as the failure of ``stage`` (the record's stage and reason)."""
    try:
        return fn()
    except StageFailure:
        raise
    except Exception as e:  # noqa: BLE001
        raise StageFailure(stage, e) from e


class StageClock:
    """Seconds per stage of one cell (``stage_times`` in the record) and the hook told as each stage starts
    (a worker reports it to the coordinator, which enforces per-stage limits and keeps timing quiet while
    another worker measures latency)."""

    def __init__(self, on_stage: Callable[[str], None]) -> None:
        self.on_stage = on_stage
        self.times: Dict[str, float] = {}

    def timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        """``fn()`` as (part of) ``stage``: reported to ``on_stage`` and added to :attr:`times` (s)."""
        self.on_stage(stage)
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - t

    def rounded(self) -> Dict[str, float]:
        """:attr:`times` rounded to 0.1 ms, as the record stores them."""
        return {k: round(v, 4) for k, v in self.times.items()}


class Services(Protocol):
    """What the stages ask of the process that runs them (:class:`harness.runner.Runner`): values they cannot
    compute from the cell alone. Each raises whatever its work raises; the stage decides what that means."""

    def reference(self, cell: "Cell", precision: str, device: str = "cpu") -> List[np.ndarray]:
        """Eager outputs (numpy float32, output order) of the official configuration of ``cell``."""

    def gmacs(self, cell: "Cell") -> Optional[float]:
        """Multiply-accumulates per frame in GMac (batch 1, fp32)."""

    def export(self, cell: "Cell", cell_dir: Path) -> Tuple["Artifact", Dict[str, float]]:
        """The cell's artifact (made now or from the cache) and the seconds its export/check/simplify took."""

    def inputs_for(self, cell: "Cell") -> "Inputs":
        """The cell's validation inputs (float32)."""

    def runtime_settings(self, cell: "Cell") -> Dict[str, Any]:
        """What the runtime plug-in's ``load`` gets for ``cell``."""

    def analyze_onnx(self, path: Path, cell: "Cell", observed: Dict[str, Any]) -> Dict[str, Any]:
        """Static-analysis record fields of an ONNX artifact."""

    def judge_vs_cuda_eager(self, cell: "Cell", outs: List[np.ndarray], tol: Tolerance) -> Dict[str, Any]:
        """Record fields of the model's judge against eager on the same GPU (information)."""

    def localize(self, cell: "Cell", art: "Artifact", inp: "Inputs", atol: float) -> str:
        """The first divergence of a failing ONNX graph from the fp32 export, or why it was not localised."""


@dataclass(frozen=True)
class CellContext:
    """Everything a stage reads besides earlier results: the cell, its artifact folder and the run's output
    folder, the profile's settings, the tolerance of the cell's precision, the thread count latency is timed
    with, the device string of the record, the cell's keys, the content-addressed cache (runtime plug-ins
    build into it, e.g. the C++ runner), the clock and the services; ``snapshot()`` is the
    record so far (status, stage, reason and stage times included), which the probes hand to ``on_partial``
    (the coordinator keeps that verdict if a probe kills the worker)."""

    cell: "Cell"
    cell_dir: Path
    out: Path
    settings: Any
    tolerance: Tolerance
    threads: int
    device: str
    keys: "CellKeys"
    cache: Any
    clock: StageClock
    services: Services
    snapshot: Callable[[], Dict[str, Any]] = dict
    on_partial: Callable[[Dict[str, Any]], None] = lambda rec: None


@dataclass(frozen=True)
class Step:
    """What a stage returns: its ``result`` (None when it has nothing to record), the cell's ``outcome`` when
    the stage decided it, and ``stop`` to end the walk."""

    result: Optional["StageResult"] = None
    outcome: Optional[Outcome] = None
    stop: bool = False


class Stage:
    """One step of :data:`PIPELINE`: ``name`` (as in ``stage_times`` and the record's ``stage``) and
    ``__call__(ctx, done) -> Step``."""

    name: ClassVar[str] = ""

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ model
class ModelStage(Stage):
    """Eager references first: a configuration the model itself rejects is a ``skip``, not an export finding."""

    name = "model"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell, sv, clock = ctx.cell, ctx.services, ctx.clock
        try:
            ref32 = clock.timed("model", lambda: sv.reference(cell, "fp32"))
            ref_same = clock.timed("model", lambda: sv.reference(cell, cell.precision)) if cell.precision != "fp32" else None
        except Exception as e:  # noqa: BLE001
            return Step(None, Outcome("skip", "model", f"skipped: eager reference failed: {describe(e)}"), stop=True)
        gmac = clock.timed("model", lambda: sv.gmacs(cell)) if ctx.settings.count_macs else None
        return Step(References(ref32, ref_same, gmac))


# ------------------------------------------------------------------------------------------ export
class ExportStage(Stage):
    """Export, check and simplify through the cache (:meth:`Services.export`); ONNX fault injection for
    self-tests."""

    name = "export"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell = ctx.cell
        # this cell's own export work (~0 when cached); check and simplify report their own start inside it
        art, seconds = ctx.clock.timed("export", lambda: ctx.services.export(cell, ctx.cell_dir))
        return Step(Exported(art, ctx.keys.artifact_key(cell, cell.simplify), str(art.path.relative_to(ctx.out)),
                             seconds, _inject_faults(cell.cell_id, art)))


def _inject_faults(cell_id: str, art: Any) -> str:
    """Apply the perturbation/mutants the fault plan names for ``cell_id`` to an ONNX artifact (tests only)."""
    if art.format != "onnx":
        return ""
    done = ""
    if faults.wants(cell_id, "export", "perturb"):
        done = f"perturbed {faults.perturb_onnx(art.path)}"
    mutations = faults.mutations(cell_id)
    if mutations:
        done = "; ".join(mutate_onnx(art.path, m) for m in mutations)
    return done


# ------------------------------------------------------------------------------------------ load
class LoadStage(Stage):
    """The runtime plug-in prepares (e.g. builds the C++ runner) and loads the artifact."""

    name = "load"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell, clock = ctx.cell, ctx.clock
        art = done.export.artifact
        runtime = RUNTIMES[cell.runtime]()
        done.opened(runtime)  # closed by the walk whatever happens next
        facts = in_stage("load", lambda: clock.timed("load", lambda: runtime.prepare(ctx.cache, ctx.out)))
        settings = ctx.services.runtime_settings(cell)
        seconds = in_stage("load", lambda: clock.timed("load", lambda: runtime.load(str(art.path), settings)))
        return Step(Loaded(runtime, seconds, dict(facts or {})))


# ------------------------------------------------------------------------------------------ run
class RunStage(Stage):
    """One call of the loaded artifact on the cell's validation inputs."""

    name = "run"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell = ctx.cell
        runtime = done.load.runtime
        inp = ctx.services.inputs_for(cell)
        feeds = owner(cell).cast(inp.feeds, cell.precision)
        t = time.perf_counter()
        outs = in_stage("run", lambda: ctx.clock.timed("run", lambda: owner(cell).run_candidate(runtime, feeds, cell)))
        # a runtime that times itself (libtorch-cpp) reports the call without its transfer overhead
        ms = getattr(runtime, "last_run_ms", None) or (time.perf_counter() - t) * 1e3
        return Step(Ran(inp, feeds, outs, ms, runtime.info()))


# ------------------------------------------------------------------------------------------ analyze
class AnalyzeStage(Stage):
    """ONNX artifacts only: op histogram, dynamic dims, data-dependent ops, per-target readiness."""

    name = "analyze"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell = ctx.cell
        art, ran = done.export.artifact, done.run
        if art.format != "onnx":
            return Step()
        a = owner(cell)
        observed = {n: tuple(t.shape) for n, t in a.single_call(ran.feeds, cell).items()}
        observed.update({n: o.shape for n, o in zip(a.io(cell)[1], a.single_outputs(ran.outputs, cell))})
        try:
            fields = ctx.clock.timed("analyze", lambda: ctx.services.analyze_onnx(art.path, cell, observed))
            fields.update(a.analyze_artifact(cell, Path(art.path), observed))
            return Step(Analyzed(fields))
        except Exception as e:  # noqa: BLE001 - analysis is information, never a reason to fail a cell
            return Step(Analyzed({}, describe(e)))


# ------------------------------------------------------------------------------------------ parity
class ParityStage(Stage):
    """The model adapter's judge against the eager references; decides pass or fail."""

    name = "parity"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell, s = ctx.cell, ctx.settings
        refs, ran = done.model, done.run
        try:
            verdict = ctx.clock.timed("parity", lambda: owner(cell).judge(ran.outputs, refs.ref32, refs.ref_same,
                                                                        ctx.tolerance, cell, s, ran.inputs.crop_to))
        except ShapeMismatch as e:
            return Step(None, Outcome("fail", "parity", f"ShapeMismatch: {e}"), stop=True)
        except Exception as e:  # noqa: BLE001
            raise StageFailure("parity", e) from e
        outcome = Outcome("fail", "parity", verdict.reason) if not verdict.passed else Outcome()
        truncated = owner(cell).cap_truncation(cell, s, refs.ref32)
        if truncated:  # the patch cap refined fewer cells than the official selection: never a pass
            outcome = Outcome("fail", "parity", truncated + ("" if verdict.passed else "; " + verdict.reason))
        return Step(Judged(verdict, truncated), outcome)


# ------------------------------------------------------------------------------------------ diagnose
class DiagnoseStage(Stage):
    """CUDA cells also against eager on the same GPU (TF32 off); failing ONNX graphs localised on onnxruntime-cpu."""

    name = "diagnose"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        cell, tol, sv = ctx.cell, ctx.tolerance, ctx.services
        runtime, art = done.load.runtime, done.export.artifact
        ran, verdict = done.run, done.parity.verdict
        on_gpu: Dict[str, Any] = {}
        first = ""
        if runtime.device == "cuda":  # separates GPU numerics from the graph
            on_gpu = ctx.clock.timed("diagnose", lambda: sv.judge_vs_cuda_eager(cell, ran.outputs, tol))
        if not verdict.passed and art.format == "onnx" and cell.runtime == "onnxruntime-cpu":
            first = ctx.clock.timed("diagnose", lambda: sv.localize(cell, art, ran.inputs, tol.atol))
        elif not verdict.passed and art.format == "onnx":
            first = (f"not localised: the graphs are compared on onnxruntime-cpu; see the "
                     f"onnxruntime-cpu cell of this artifact for whether {cell.runtime} alone fails")
        return Step(Diagnosed(on_gpu, first))


# ------------------------------------------------------------------------------------------ latency
class LatencyStage(Stage):
    """Timed alone on all cores (the coordinator keeps other workers quiet), by the profile's protocol; a
    measurement during which tasks outside the harness took cores is repeated and flagged
    (:func:`harness.benchmark.measure_uncontended`). The record's ``latency_threads`` is the intra-op thread
    count of the timed calls (the C++ runner's own report for libtorch-cpp), not the run stage's."""

    name = "latency"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        import torch  # the worker has it loaded; the coordinator imports this module without torch

        cell, ran = ctx.cell, done.run
        runtime = done.load.runtime
        feeds = owner(cell).single_call(ran.feeds, cell)  # one call (a recurrent model: one frame)
        lat_cfg, proto = ctx.settings.latency, ctx.settings.latency.protocol()
        cuda = runtime.device == "cuda"
        device = f"cuda: {ran.runtime_info.get('gpu', '?')}" if cuda else ctx.device

        def once(what: str, fallback: Callable[[], Any]) -> Callable[[], Any]:
            def run() -> Any:
                lat = runtime.measure_native(feeds, what, proto, device, cell.batch)
                lat = fallback() if lat is None else lat
                if lat.threads is None:  # in-process: the torch setting below, which the plug-ins were loaded with
                    lat.threads = torch.get_num_threads()
                return lat
            return run

        def timing() -> Tuple[Any, Any]:
            # repeated while other tasks took cores from the timed threads (harness/benchmark.py)
            e2e = measure_uncontended(once("end-to-end", lambda: measure(lambda: runtime.run(feeds), proto, device,
                                                                         batch=cell.batch)), proto)
            comp = None
            if lat_cfg.compute:
                comp = measure_uncontended(once("compute", lambda: measure(runtime.compute_fn(feeds), proto, device,
                                                                           batch=cell.batch, cuda=cuda)), proto)
            return e2e, comp

        work_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(ctx.threads)  # timed alone, on all cores (see harness/pool/)
            lat, comp = in_stage("latency", lambda: ctx.clock.timed("latency", timing))
        finally:
            torch.set_num_threads(work_threads)
        cold = round(ran.first_run_ms, 2)  # the first call of the run stage (as its record field)
        return Step(Timed(lat, comp, cold, device if cuda else "", runtime.peak_memory_mib()))


# ------------------------------------------------------------------------------------------ probe
class ProbeStage(Stage):
    """The probes on the loaded artifact, after the verdict: they add fields and never change the status.
    Before each probe the record so far goes to the coordinator (``ctx.on_partial``), which keeps the
    verdict if a probe kills the worker."""

    name = "probe"

    def __call__(self, ctx: CellContext, done: "Done") -> Step:
        a = owner(ctx.cell)
        probes = list(ctx.settings.input_probes)
        if not probes or not a.probe_inputs:  # the model declares no inputs to probe
            return Step()
        runtime, ran = done.load.runtime, done.run

        def on_probe(name: str, found: list) -> None:
            snap = ctx.snapshot()
            snap.update(probing=name)
            snap.pop("latency_samples_ms", None)
            snap.update(record_fields(found, probes))
            ctx.on_partial(snap)

        on_probe(probes[0], [])  # before the stage starts: a fault injected at its start finds the verdict
        call = positional_call(runtime, a)
        try:
            found = ctx.clock.timed("probe", lambda: run_probes(call, *(ran.feeds[n] for n in a.probe_inputs),
                                                                ran.outputs, probes, on_probe))
        except Exception as e:  # noqa: BLE001 - probing is information, never a reason to fail a cell
            return Step(Probed({}, describe(e)))
        return Step(Probed(record_fields(found, probes)))


@dataclass
class Done:
    """The results of the stages that ran for one cell, one typed attribute per stage (None until it ran or
    when it had nothing to record), and the runtime plug-in the load stage opened (the walk closes it)."""

    model: Optional[References] = None
    export: Optional[Exported] = None
    load: Optional[Loaded] = None
    run: Optional[Ran] = None
    analyze: Optional[Analyzed] = None
    parity: Optional[Judged] = None
    diagnose: Optional[Diagnosed] = None
    latency: Optional[Timed] = None
    probe: Optional[Probed] = None
    runtime: Any = None

    def opened(self, runtime: Any) -> None:
        """Remember the runtime plug-in a stage created, so the walk closes it whatever happens."""
        self.runtime = runtime


def positional_call(runtime: Any, adapter: Any = None) -> Callable[..., List[np.ndarray]]:
    """``(*probe inputs) -> [outputs in order]`` around a runtime plug-in's named ``run`` for the probes: the
    model ``adapter``'s ``probe_inputs`` name the arguments, its ``output_names`` order the outputs (None: the
    default model's adapter, :func:`harness.models.default_model`)."""
    a = adapter if adapter is not None else model_adapter(None)
    return lambda *xs: as_list(runtime.run(dict(zip(a.probe_inputs, xs))), a.output_names)


PIPELINE: Tuple[Stage, ...] = (ModelStage(), ExportStage(), LoadStage(), RunStage(), AnalyzeStage(), ParityStage(),
                               DiagnoseStage(), LatencyStage(), ProbeStage())

# One list of stage names (harness/values.py STAGES): the walk above plus the parts of ``export`` timed on
# their own; a stage added here without a name there (or the reverse) fails at import, not at run time.
if tuple(s.name for s in PIPELINE) != tuple(n for n in STAGES if n not in SUB_STAGES):
    raise ImportError(f"harness.stages.PIPELINE walks {[s.name for s in PIPELINE]}; harness.values.STAGES "
                      f"declares {list(STAGES)} (sub-stages {list(SUB_STAGES)}): keep them equal")
