"""Execute cells: the services behind the stages of :mod:`harness.stages` (model -> export -> load -> run ->
analyze -> parity -> diagnose -> latency -> probe) and the walk over them.

:class:`Runner` is what a worker process (``harness/pool/``) uses to run one cell at a time; the
coordinator uses it too, to prepare weights and compute cache keys. Artifacts and eager references go
through the content-addressed :class:`~harness.cache.Cache`, so one ONNX export feeds the plain and the
onnxsim cell and every runtime, one TorchScript file serves every refine mode (the mode is set with
``setattr`` after loading, which is what the hoisted attributes are for), and a re-run reuses them.
"""

from __future__ import annotations

import json
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from model.checkpoint import CheckpointError, read_state_dict, sha256_of

from . import inputs as data_mod
from .cache import Cache, link_or_copy, make_key
from .config import Cell, Plan
from .divergence import first_divergence
from .exporters import EXPORTERS, Artifact, Exporter, ExportRequest
from .keys import CellKeys
from .models import Inputs, owner  # noqa: F401 - Inputs re-exported
from .onnx_analysis import analyze
from .record import new_record
from .runs import (  # noqa: F401 - re-exported
    CACHEABLE_STATUSES,
    RERUN_STATUSES,
    UNEXPECTED_STATUSES,
    RunError,
    RunOptions,
    RunSummary,
    append_record,
    describe,
)
from .runtimes import gpu_identity, set_tf32
from .stages import PIPELINE, CellContext, Done, Outcome, StageClock, StageFailure, in_stage

_Stage, _in_stage = StageFailure, in_stage

# Failures that say something about the machine, not the export: never cached (the next run retries them).
NONDETERMINISTIC = (MemoryError, OSError, TimeoutError, KeyboardInterrupt)


def _link_entry(entry: Path, cell_dir: Path) -> None:
    """Hard-link (or copy) a cache entry's files, all but its ``meta.json``, into ``cell_dir``."""
    for f in entry.iterdir():
        if f.name != "meta.json":
            link_or_copy(f, cell_dir / f.name)


def _replay_failure(entry: Path, cell_dir: Path) -> StageFailure:
    """The cached failure of an export (cache kind ``export-failure``, same key as the artifact would have:
    exporter and its version, model code, settings, precision, ...) as the same StageFailure: same stage, same
    exception class name and message, so the record's reason and the rules' verdict are those of a real
    attempt; the exporter's log is linked into ``cell_dir``. ``--no-cache`` or a new torch re-attempts it."""
    meta = json.loads((entry / "meta.json").read_text())
    _link_entry(entry, cell_dir)
    exc_type = type(str(meta["type"]), (RuntimeError,), {"cached_failure": True})
    return StageFailure(str(meta["stage"]), exc_type(meta["message"]))

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class Runner:
    """Executes cells one at a time (in a worker), with artifacts and references from ``cache``; implements
    the :class:`harness.stages.Services` the stages ask for. The cells' identities (weights ids, cache keys,
    record skeletons) are ``keys`` (:class:`harness.keys.CellKeys`, shared with the coordinator's session
    when it passes its own).

    ``on_stage(name)`` is called as each stage starts (the worker reports it to the coordinator,
    which enforces per-stage time limits and keeps timing quiet while another worker measures)."""

    def __init__(self, plan: Plan, opts: RunOptions, cache: Cache, threads: Optional[int] = None,
                 keys: Optional[CellKeys] = None) -> None:
        self.keys = keys if keys is not None else CellKeys(plan, opts, threads or torch.get_num_threads())
        self.plan, self.opts, self.s = plan, opts, plan.settings
        self.threads, self.device = self.keys.threads, self.keys.device
        self.cache = cache
        self.out = Path(opts.out_dir)
        self.weights: Dict[str, Dict[str, torch.Tensor]] = {}
        self.refs: Dict[str, Any] = {}
        self.inputs: Dict[Tuple[Tuple[int, int], int], Inputs] = {}
        self.user_pair: Optional[data_mod.Pair] = None
        self.on_stage: Callable[[str], None] = lambda stage: None
        # called with the record so far before each input probe (the worker forwards it to the
        # coordinator, which keeps the verdict if a probe kills the process)
        self.on_partial: Callable[[Dict[str, Any]], None] = lambda rec: None
        self.current_cell: Optional[Cell] = None

    # ---------------------------------------------------------------- setup (coordinator)
    def load_user_pair(self) -> None:
        """Read ``--src``/``--bgr`` and let each model of the plan check them (raises InputError naming the
        problem)."""
        if self.opts.src or self.opts.bgr:
            if not (self.opts.src and self.opts.bgr):
                raise data_mod.InputError("--src and --bgr must be given together")
            self.user_pair = data_mod.load_user_pair(self.opts.src, self.opts.bgr, pad=self.opts.pad)
            self.keys.input_conversion = self.user_pair.conversion  # environment.json says what was converted
            for a in {owner(c).name: owner(c) for c in self.plan.cells}.values():
                a.check_user_inputs(self.user_pair, [c for c in self.plan.cells if c.model == a.name], self.s)

    def prepare_weights(self) -> Dict[str, Tuple[str, str]]:
        """Load the checkpoint or calibrate weights (cached), save them in ``out``.

        Returns ``{weights group: (weights file, weights id)}`` for the workers (BGMv2: a group per backbone).
        Raises the model's CheckpointError for a checkpoint that does not fit every group of the plan."""
        torch.manual_seed(self.s.seed)
        groups = self.keys.weights_groups()
        files: Dict[str, Tuple[str, str]] = {}
        if self.opts.checkpoint is not None:
            sd = read_state_dict(self.opts.checkpoint)
            digest = sha256_of(self.opts.checkpoint)
            looks = {a.checkpoint_kind(sd) for a in groups.values()}
            for g, a in groups.items():
                self.weights[g] = a.load_state(g, sd)  # raises CheckpointError naming the mismatch
                self.keys.weights_id[g] = f"ckpt:{digest}:{g}"
                files[g] = (str(Path(self.opts.checkpoint).resolve()), self.keys.weights_id[g])
            self.keys.weights_info = {"source": "checkpoint", "path": str(self.opts.checkpoint), "sha256": digest,
                                 "looks_like": " / ".join(sorted(looks))}
            return files
        Path(self.out).mkdir(parents=True, exist_ok=True)
        for g, name in self.keys.weights_file_names().items():
            key, parts = self.keys.calibration_key(g)
            hit = self.cache.get("weights", key)
            if hit is not None:
                self.weights[g] = torch.load(hit / "weights.pth", weights_only=True)
                link_or_copy(hit / "weights.pth", self.out / name)
            else:
                torch.manual_seed(self.s.seed)
                self.weights[g] = groups[g].calibrated_state(g, self.s, list(self.plan.samples))
                # a new file, never written through: the old one may be a hard link into the cache
                (self.out / name).unlink(missing_ok=True)
                torch.save(self.weights[g], self.out / name)
                self.cache.put("weights", key, {"weights.pth": self.out / name}, {"group": g, **parts})
            self.keys.weights_id[g] = f"calibrated:{key[:16]}"
            files[g] = (str((self.out / name).resolve()), self.keys.weights_id[g])
        self.keys.weights_info = self.keys.calibrated_info()
        return files

    def use_weights(self, files: Dict[str, Tuple[str, str]]) -> None:
        """In a worker: load the weights the coordinator prepared (``{weights group: (file, id)}``)."""
        groups = self.keys.weights_groups()
        for g, (path, wid) in files.items():
            self.weights[g] = groups[g].load_state(g, read_state_dict(path))
            self.keys.weights_id[g] = wid

    # ---------------------------------------------------------------- inputs
    def _inputs(self, cell: Cell) -> Inputs:
        """The validation inputs of ``cell``'s model at its resolution and batch (float32; cached)."""
        a, res, batch = owner(cell), tuple(cell.resolution), cell.batch
        key = (a.name, res, batch)
        if key not in self.inputs:
            if self.user_pair is not None:
                self.inputs[key] = a.user_inputs(self.user_pair, batch, self.opts.pad)
            else:
                self.inputs[key] = a.validation_inputs(res, batch, list(self.plan.samples))
        return self.inputs[key]

    # ---------------------------------------------------------------- models and references
    def model_kwargs(self, cell: Cell) -> Dict[str, Any]:
        """The model's constructor arguments for ``cell`` (:meth:`harness.models.bgmv2.BGMv2.model_kwargs`)."""
        return owner(cell).model_kwargs(cell, self.s)

    def build_model(self, cell: Cell, precision: Optional[str] = None) -> Any:
        """The eager model of ``cell`` with the run's weights, in ``precision`` (default the cell's), eval."""
        a = owner(cell)
        m = a.construct(self.model_kwargs(cell))
        m.load_state_dict(a.cell_state(cell, self.weights[a.weights_group(cell)]))
        return m.to(DTYPES[precision or cell.precision]).eval()

    def reference(self, cell: Cell, precision: str, device: str = "cpu") -> List[np.ndarray]:
        """Eager outputs (numpy, float32) of the *official* model for the cell's config in ``precision`` on
        ``device`` (cached; on CUDA with TF32 off, keyed on the GPU and driver). Official: the non-official
        options (``refine_patch_select`` static, ``input_guard``) are off, so a static cell passes only if it
        equals the official selection."""
        cell = owner(cell).official(cell)
        parts = self.keys.model_parts(cell, precision)
        parts.update(inputs=self.keys.inputs_id(cell.resolution, cell.batch, cell.model),
                     threads=torch.get_num_threads())
        if device != "cpu":
            parts.update(device=device, gpu=gpu_identity(), tf32=False)
        key = make_key("reference", parts)
        if key not in self.refs:
            hit = self.cache.get("reference", key)
            if hit is not None:
                with np.load(hit / "outputs.npz") as z:
                    self.refs[key] = [z[f"o{k}"] for k in range(len(z.files))]
            else:
                try:
                    a = owner(cell)
                    feeds = {k: v.to(device) for k, v in a.cast(self._inputs(cell).feeds, precision).items()}
                    m = self.build_model(cell, precision).to(device)
                    if device != "cpu":
                        set_tf32(False)
                    with torch.inference_mode():
                        self.refs[key] = [o.float().cpu().numpy() for o in a.call(m, feeds, cell)]
                except Exception as e:  # noqa: BLE001 - recorded as the cell's skip reason
                    self.refs[key] = e
                else:
                    tmp = self.out / "artifacts" / f".ref-{key[:16]}.npz"
                    np.savez(tmp, **{f"o{k}": a for k, a in enumerate(self.refs[key])})
                    self.cache.put("reference", key, {"outputs.npz": tmp}, {"cell": cell.cell_id})
                    tmp.unlink(missing_ok=True)
        val = self.refs[key]
        if isinstance(val, Exception):
            raise val
        return val

    def gmacs(self, cell: Cell) -> Optional[float]:
        """Multiply-accumulates per frame in GMac (``torch.utils.flop_counter``: convolutions and matmuls,
        like the paper's Table 3, which excludes interpolation and cropping), batch 1, fp32."""
        import dataclasses

        one = dataclasses.replace(cell, batch=1)
        key = make_key("gmacs", {**self.keys.model_parts(one, "fp32"), "mode": str(self.model_kwargs(one)),
                                 "res": list(cell.resolution)})
        memo = self.__dict__.setdefault("_gmacs", {})
        if key not in memo:
            from torch.utils.flop_counter import FlopCounterMode

            a = owner(cell)
            m = self.build_model(one, "fp32")
            with FlopCounterMode(display=False) as fc, torch.inference_mode():
                a.call(m, self._inputs(one).feeds, one)
            memo[key] = round(fc.get_total_flops() / 2 / 1e9, 2)
        return memo[key]

    def localize(self, cell: Cell, art: Artifact, inp: "Inputs", atol: float) -> str:
        """"first divergence: <op> <node>, max abs <x>" of a failing ONNX artifact against the fp32 plain
        ONNX export of the same configuration (harness/divergence.py), or why it could not be localised."""
        import dataclasses

        ref_cell = dataclasses.replace(cell, precision="fp32", simplify=False)
        work = self.out / "artifacts" / cell.cell_id / "divergence"
        work.mkdir(parents=True, exist_ok=True)
        try:
            ref_art, _ = self.export(ref_cell, work)
        except _Stage as e:
            return f"not localised: the fp32 reference export failed ({describe(e.exc)})"
        if ref_art.path.resolve() == Path(art.path).resolve() or (
                ref_cell == cell and ref_art.path.read_bytes() == Path(art.path).read_bytes()):
            return "not localised: this graph is the fp32 export itself (the difference is against eager PyTorch)"
        feeds = {k: v[:1].float().numpy() for k, v in owner(cell).single_call(inp.feeds, cell).items()}
        try:
            found = first_divergence(Path(art.path), ref_art.path, feeds, atol, work)
        except Exception as e:  # noqa: BLE001 - localisation is a diagnosis, not a verdict
            return f"not localised: {describe(e)}"
        finally:
            for f in work.glob("*.all.onnx"):
                f.unlink()
        return str(found) if found else "not localised: every shared tensor matches the fp32 graph within atol"

    def analyze_onnx(self, path: Path, cell: Cell, observed: Dict[str, Any]) -> Dict[str, Any]:
        """Static-analysis fields for the record (harness/onnx_analysis.py); for an onnxsim cell also the
        op histogram before simplification."""
        fields = analyze(str(path), observed).as_record()
        plain = Path(path).with_name("model.onnx")
        if cell.simplify and plain.is_file() and plain != Path(path):
            fields.update(analyze(str(plain)).as_record(prefix="before_sim_"))
        return fields

    # ---------------------------------------------------------------- artifacts
    def _artifact(self, cell_dir: Path, key: str, make: Callable[[Path], Artifact], name: str) -> Artifact:
        """The cached artifact for ``key`` (hard-linked into ``cell_dir``), or make it there and cache it."""
        target = cell_dir / name
        failed = self.__dict__.setdefault("_failed_exports", {})
        if key in failed:  # the same export already failed in this worker: do not pay for it again
            raise failed[key]
        known = self.cache.get("export-failure", key)
        if known is not None:  # a deterministic failure of this very export (same key): replay it
            raise _replay_failure(known, cell_dir)
        hit = self.cache.get("artifact", key)
        if hit is not None:
            meta = self.cache.meta("artifact", key)
            _link_entry(hit, cell_dir)  # the artifact, its sidecars and the exporter's logs
            return Artifact(target, meta["format"], meta["exporter"], meta["seconds"], dict(meta["meta"], cached=True))
        # files left here by an earlier run may be hard links into the cache: remove them, never write through
        for old in cell_dir.glob(Path(name).stem + ".*"):
            old.unlink()
        try:
            art = make(target)
        except _Stage as e:
            failed[key] = e
            if not isinstance(e.exc, NONDETERMINISTIC):
                logs = {p.name: p for p in cell_dir.glob(Path(name).stem + ".*") if p.suffix == ".log"}
                self.cache.put("export-failure", key, logs, {
                    "stage": e.stage, "type": type(e.exc).__name__, "message": str(e.exc), "cell": cell_dir.name})
            raise
        files = {p.name: p for p in cell_dir.glob(Path(name).stem + ".*") if p.suffix in (".log", ".json")}
        files[name] = target
        self.cache.put("artifact", key, files, {"format": art.format, "exporter": art.exporter,
                                                "seconds": art.seconds, "meta": art.meta, "cell": cell_dir.name})
        return art

    def artifact_metadata(self, cell: Cell, simplified: bool = False) -> Dict[str, Any]:
        """What an artifact carries about itself (``python -m harness verify`` reads it): the values of the
        fields its exporter bakes, the names of those it leaves settable, the weights' identity (with the
        calibration recipe's seed and samples) and the exporter's name."""
        exporter = EXPORTERS[cell.exporter]
        parts = self.keys.artifact_parts(cell, simplified)
        return {"model": cell.model, "format": exporter.format, "exporter": cell.exporter, "weights": parts["weights"],
                "seed": self.s.seed, "samples": list(self.plan.samples), "settable": list(exporter.settable),
                **parts["baked"]}

    def export_request(self, cell: Cell, path: Path, batch: int) -> ExportRequest:
        """The exporter's inputs for ``cell``: the eager model in the cell's precision, example inputs at
        ``settings.export_resolution`` with ``batch`` images, the I/O contract and the metadata to embed."""
        a = owner(cell)
        feeds = a.cast(a.example_inputs(tuple(self.s.export_resolution), batch, cell).feeds, cell.precision)
        ins, outs, dyn = a.io(cell)
        return ExportRequest(model=self.build_model(cell), path=path, example=tuple(feeds[n] for n in ins),
                             input_names=ins, output_names=outs, dynamic_axes=dyn,
                             dynamic_shapes=lambda **kw: a.dynamic_shapes(cell, **kw),
                             opset=cell.opset, precision=cell.precision, model_name=a.name,
                             model_kwargs=self.model_kwargs(cell), meta=self.artifact_metadata(cell, False))

    def export(self, cell: Cell, cell_dir: Path) -> Tuple[Artifact, Dict[str, float]]:
        """Export (or reuse) the cell's artifact with its exporter plug-in, check it and, for a ``simplify``
        cell, simplify the plain export (itself cached, so one export feeds the plain and the simplified
        cell); returns it and the seconds its export, check and simplify took when it was made."""
        exporter = EXPORTERS[cell.exporter]()

        def make(path: Path) -> Artifact:
            art = _in_stage("export", lambda: exporter.export(self.export_request(cell, path, exporter.example_batch)))
            self._check(exporter, path, art)
            exporter.write_metadata(path, self.artifact_metadata(cell, False))
            return art

        suffix = exporter.suffix
        plain = self._artifact(cell_dir, self.keys.artifact_key(cell, False), make, suffix)
        times = {"export": plain.seconds}
        if "check_s" in plain.meta:
            times["check"] = float(plain.meta["check_s"])  # type: ignore[arg-type]
        if not cell.simplify:
            return plain, times

        def make_sim(path: Path) -> Artifact:
            self.on_stage("simplify")
            art = _in_stage("simplify", lambda: exporter.simplify(plain, path))
            self._check(exporter, path, None)
            exporter.write_metadata(path, self.artifact_metadata(cell, True))
            return art

        stem, ext = suffix.rsplit(".", 1)
        sim = self._artifact(cell_dir, self.keys.artifact_key(cell, True), make_sim, f"{stem}.sim.{ext}")
        times["simplify"] = sim.seconds
        return sim, times

    def _check(self, exporter: Any, path: Path, art: Optional[Artifact]) -> None:
        """Stage ``check``: the format's checker on a written artifact (its seconds go to ``art.meta``)."""
        if type(exporter).check is Exporter.check:  # the format has no checker
            return
        self.on_stage("check")
        seconds = _in_stage("check", lambda: exporter.check(path))
        if seconds is not None and art is not None:
            art.meta["check_s"] = seconds

    # ---------------------------------------------------------------- one cell
    def runtime_settings(self, cell: Cell) -> Dict[str, Any]:
        """What a runtime's ``load`` gets for ``cell``: the hoisted model settings (TorchScript sets them on
        the loaded module), threads, precision, TF32 and the model's input/output names."""
        a = owner(cell)
        hoisted = {n: getattr(cell, n) if n in a.axis_names() else getattr(self.s, n) for n in a.hoisted}
        return {
            **hoisted,
            "threads": self.threads,
            "precision": cell.precision,
            "tf32": cell.tf32,
            "input_names": a.io(cell)[0],
            "output_names": a.io(cell)[1],
        }

    def run_cell(self, cell: Cell) -> Dict[str, Any]:
        """Walk :data:`harness.stages.PIPELINE` for ``cell``; never raises (errors become the record's status).

        Returns the record as a dict of the typed record's fields (:mod:`harness.record`). The record is
        *raw*: known-incompatibility rules are applied by the coordinator (:func:`harness.rules.apply_rule`),
        so cached records stay valid when rules change."""
        self.current_cell = cell
        t0 = time.perf_counter()
        record = new_record(cell.model, **self.keys.base_record(cell))
        clock = StageClock(self.on_stage)
        outcome = [Outcome()]  # the outcome so far (the probes' snapshots report it)

        def snapshot() -> Dict[str, Any]:
            o = outcome[0]
            return {**record.as_dict(), "status": o.status, "stage": o.stage, "reason": o.reason,
                    "stage_times": clock.rounded()}

        ctx = CellContext(cell=cell, cell_dir=self.out / "artifacts" / cell.cell_id, out=self.out, settings=self.s,
                          tolerance=self.plan.tolerances[cell.precision], threads=self.threads, device=self.device,
                          keys=self.keys, cache=self.cache, clock=clock, services=self, snapshot=snapshot,
                          on_partial=self.on_partial)
        why = self.keys.unavailable(cell)
        if why:
            outcome[0] = Outcome("skip", "load", f"skipped: {why}")
        else:
            self._walk(ctx, record, outcome)
        o = outcome[0]
        record.put(stage_times=clock.rounded(), status=o.status, stage=o.stage, reason=o.reason,
                   cell_s=round(time.perf_counter() - t0, 3))
        return record.as_dict()

    @staticmethod
    def _walk(ctx: CellContext, record: Any, outcome: List[Outcome]) -> None:
        """The pipeline's stages in order, each given the results before it; ``outcome[0]`` is the cell's
        outcome as the stages decide it; a stage's exception is the cell's ``error`` at that stage."""
        ctx.cell_dir.mkdir(parents=True, exist_ok=True)
        done = Done()
        try:
            for stage in PIPELINE:
                step = stage(ctx, done)
                if step.result is not None:
                    setattr(done, stage.name, step.result)
                    record.put(**step.result.fields())
                if step.outcome is not None:
                    outcome[0] = step.outcome
                if step.stop:
                    break
        except StageFailure as e:
            if getattr(e.exc, "cached_failure", False):
                record.put(cache="export-failure")  # replayed from the cache, not re-attempted
            outcome[0] = Outcome("error", e.stage, describe(e.exc))
        except Exception as e:  # noqa: BLE001 - a harness bug must not lose the other cells
            outcome[0] = Outcome("error", "harness", describe(e) + " | " + traceback.format_exc(limit=2).splitlines()[-1])
        finally:
            if done.runtime is not None:
                try:
                    done.runtime.close()
                except Exception:  # noqa: BLE001 - cleanup never changes a verdict
                    pass

    def inputs_for(self, cell: Cell) -> Inputs:
        """The cell's validation inputs (float32, cached per model, resolution and batch)."""
        return self._inputs(cell)

    @staticmethod
    def dtype(cell: Cell) -> Any:
        """The torch dtype of the cell's precision."""
        return DTYPES[cell.precision]

    def judge_vs_cuda_eager(self, cell: Cell, outs: List[np.ndarray], tol: Any) -> Dict[str, Any]:
        """Record fields of the model's judge against eager on the same GPU (TF32 off), or why it failed
        (information)."""
        try:
            on_gpu = owner(cell).judge(outs, self.reference(cell, cell.precision, "cuda"), None, tol, cell, self.s)
        except Exception as e:  # noqa: BLE001 - information only
            return {"cuda_eager_error": describe(e)}
        names = owner(cell).io(cell)[1]
        pha = "pha" if "pha" in names else names[0]
        return {"max_abs_pha_vs_cuda_eager": on_gpu.record.get(f"max_abs_{pha}"),
                "judged_max_abs_pha_vs_cuda_eager": on_gpu.record.get(f"judged_max_abs_{pha}",
                                                                      on_gpu.record.get(f"max_abs_{pha}")),
                "passes_vs_cuda_eager": on_gpu.passed}


__all__ = ["RunError", "RunOptions", "RunSummary", "Runner", "append_record", "describe", "CheckpointError",
           "UNEXPECTED_STATUSES", "RERUN_STATUSES", "CACHEABLE_STATUSES"]
