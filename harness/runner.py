"""Execute cells: model -> export -> check -> simplify -> load -> run -> parity -> latency -> probe.

:class:`Runner` is what a worker process (``harness/pool.py``) uses to run one cell at a time; the
coordinator uses it too, to prepare weights and compute cache keys. Artifacts and eager references go
through the content-addressed :class:`~harness.cache.Cache`, so one ONNX export feeds the plain and the
onnxsim cell and every runtime, one TorchScript file serves every refine mode (the mode is set with
``setattr`` after loading, which is what the hoisted attributes are for), and a re-run reuses them.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from model.bgmv2 import MattingRefine
from model.bgmv2.calibration import calibrate
from model.bgmv2.checkpoint import CheckpointError, guess_architecture, load_checkpoint, read_state_dict, sha256_of

from . import inputs as data_mod
from .benchmark import measure
from .cache import Cache, link_or_copy, make_key
from .config import Cell, Plan
from .keys import CellKeys
from .records import (  # noqa: F401 - re-exported
    CACHEABLE_STATUSES,
    RERUN_STATUSES,
    UNEXPECTED_STATUSES,
    RunError,
    RunOptions,
    RunSummary,
    append_record,
    describe,
)
from .exporters import EXPORTERS, Artifact, Exporter, ExportRequest
from .models import bgmv2
from .parity import ShapeMismatch, Selection
from .verdict import judge_outputs
from .runtimes import RUNTIMES, as_list

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class _Stage(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(stage)
        self.stage = stage
        self.exc = exc


@dataclass
class Inputs:
    """Validation inputs for one (resolution, batch): names and (B,3,H,W) float32 tensors."""

    names: List[str]
    src: torch.Tensor
    bgr: torch.Tensor
    crop_to: Optional[Tuple[int, int]] = None


class Runner(CellKeys):
    """Executes cells one at a time (in a worker), with artifacts and references from ``cache``.

    ``on_stage(name)`` is called as each stage starts (the worker reports it to the coordinator,
    which enforces per-stage time limits and keeps timing quiet while another worker measures)."""

    def __init__(self, plan: Plan, opts: RunOptions, cache: Cache, threads: Optional[int] = None) -> None:
        super().__init__(plan, opts, threads or torch.get_num_threads())
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
        self.adapter = bgmv2.ADAPTER

    # ---------------------------------------------------------------- setup (coordinator)
    def load_user_pair(self) -> None:
        """Read ``--src``/``--bgr`` (raises InputError naming the problem)."""
        if self.opts.src or self.opts.bgr:
            if not (self.opts.src and self.opts.bgr):
                raise data_mod.InputError("--src and --bgr must be given together")
            self.user_pair = data_mod.load_user_pair(self.opts.src, self.opts.bgr, pad=self.opts.pad)
            h, w = self.user_pair.src.shape[1:]
            h, w = h + (-h) % 4, w + (-w) % 4
            need = self.s.refine_sample_pixels
            if "sampling" in {c.refine_mode for c in self.plan.cells} and h * w < need:
                raise data_mod.InputError(
                    f"--src/--bgr are {w}x{h} (WxH) = {h * w} px, fewer than refine_sample_pixels={need}; "
                    f"use images of at least {need} px or lower settings.refine_sample_pixels in the config"
                )

    def prepare_weights(self) -> Dict[str, Tuple[str, str]]:
        """Load the checkpoint or calibrate weights (cached), save them in ``out``.

        Returns ``{backbone: (weights file, weights id)}`` for the workers.
        Raises CheckpointError for a checkpoint that does not fit every backbone of the plan."""
        torch.manual_seed(self.s.seed)
        backbones = sorted({c.backbone for c in self.plan.cells})
        files: Dict[str, Tuple[str, str]] = {}
        if self.opts.checkpoint is not None:
            sd = read_state_dict(self.opts.checkpoint)
            looks = guess_architecture(sd) or "unknown"
            digest = sha256_of(self.opts.checkpoint)
            for bb in backbones:
                m = MattingRefine(bb)
                load_checkpoint(m, sd)  # raises CheckpointError naming the mismatch
                self.weights[bb] = m.state_dict()
                self.weights_id[bb] = f"ckpt:{digest}:{bb}"
                files[bb] = (str(Path(self.opts.checkpoint).resolve()), self.weights_id[bb])
            self.weights_info = {"source": "checkpoint", "path": str(self.opts.checkpoint), "sha256": digest,
                                 "looks_like": looks}
            return files
        Path(self.out).mkdir(parents=True, exist_ok=True)
        for bb, name in self.weights_file_names().items():
            key, parts = self._calibration_key(bb)
            hit = self.cache.get("weights", key)
            if hit is not None:
                self.weights[bb] = torch.load(hit / "weights.pth", weights_only=True)
                link_or_copy(hit / "weights.pth", self.out / name)
            else:
                torch.manual_seed(self.s.seed)
                m = MattingRefine(bb, backbone_scale=self.s.backbone_scale)
                pairs = [data_mod.load_sample(n, data_mod._SHIPPED["small"]) for n in self.plan.samples]
                src, bgr = data_mod.stack(pairs)
                if src.shape[0] < 2:
                    src, bgr = torch.cat([src, src.flip(-1)]), torch.cat([bgr, bgr.flip(-1)])
                calibrate(m, [(src, bgr), (src.flip(-1), bgr.flip(-1))])
                self.weights[bb] = m.state_dict()
                torch.save(self.weights[bb], self.out / name)
                self.cache.put("weights", key, {"weights.pth": self.out / name}, {"backbone": bb, **parts})
            self.weights_id[bb] = f"calibrated:{key[:16]}"
            files[bb] = (str((self.out / name).resolve()), self.weights_id[bb])
        self.weights_info = self.calibrated_info()
        return files

    def use_weights(self, files: Dict[str, Tuple[str, str]]) -> None:
        """In a worker: load the weights the coordinator prepared (``{backbone: (file, id)}``)."""
        for bb, (path, wid) in files.items():
            sd = read_state_dict(path)
            m = MattingRefine(bb)
            load_checkpoint(m, sd)
            self.weights[bb] = m.state_dict()
            self.weights_id[bb] = wid

    # ---------------------------------------------------------------- inputs
    def _inputs(self, res: Tuple[int, int], batch: int) -> Inputs:
        key = (res, batch)
        if key not in self.inputs:
            if self.user_pair is not None:
                src, bgr = self.user_pair.src, self.user_pair.bgr
                crop = None
                if self.opts.pad:
                    src, crop = data_mod.pad_to_multiple(src)
                    bgr, _ = data_mod.pad_to_multiple(bgr)
                    if tuple(crop) == tuple(src.shape[1:]):
                        crop = None
                self.inputs[key] = Inputs(
                    [self.user_pair.name] * batch,
                    src.unsqueeze(0).repeat(batch, 1, 1, 1),
                    bgr.unsqueeze(0).repeat(batch, 1, 1, 1),
                    crop,
                )
            else:
                pairs = [
                    data_mod.load_sample(self.plan.samples[k % len(self.plan.samples)], res) for k in range(batch)
                ]
                src, bgr = data_mod.stack(pairs)
                self.inputs[key] = Inputs([p.name for p in pairs], src, bgr)
        return self.inputs[key]

    # ---------------------------------------------------------------- models and references
    def model_kwargs(self, cell: Cell) -> Dict[str, Any]:
        """The model's constructor arguments for ``cell`` (:meth:`harness.models.bgmv2.BGMv2.model_kwargs`)."""
        return self.adapter.model_kwargs(cell, self.s)

    def selection(self, cell: Cell) -> Selection:
        """How the cell's refiner selects cells (for the near-tie judge of :mod:`harness.parity`)."""
        return self.adapter.selection(cell, self.s)

    def build_model(self, cell: Cell, precision: Optional[str] = None) -> Any:
        """The eager model of ``cell`` with the run's weights, in ``precision`` (default the cell's), eval."""
        m = self.adapter.construct(self.model_kwargs(cell))
        m.load_state_dict(self.weights[cell.backbone])
        return m.to(DTYPES[precision or cell.precision]).eval()

    def reference(self, cell: Cell, precision: str, device: str = "cpu") -> List[np.ndarray]:
        """Eager outputs (numpy, float32) of the *official* model for the cell's config in ``precision`` on
        ``device`` (cached; on CUDA with TF32 off, keyed on the GPU and driver). Official: the non-official
        options (``refine_patch_select`` static, ``input_guard``) are off, so a static cell passes only if it
        equals the official selection."""
        from .runtimes import gpu_identity, set_tf32

        cell = self.adapter.official(cell)
        parts = self._model_parts(cell, precision)
        parts.update(refine_mode=cell.refine_mode, inputs=self.inputs_id(cell.resolution, cell.batch),
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
                    inp = self._inputs(cell.resolution, cell.batch)
                    m = self.build_model(cell, precision).to(device)
                    dt = DTYPES[precision]
                    if device != "cpu":
                        set_tf32(False)
                    with torch.inference_mode():
                        outs = m(inp.src.to(device=device, dtype=dt), inp.bgr.to(device=device, dtype=dt))
                        self.refs[key] = [o.float().cpu().numpy() for o in outs]
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
        key = (cell.backbone, cell.refine_mode, cell.crop_method, cell.replace_method, cell.resolution)
        memo = self.__dict__.setdefault("_gmacs", {})
        if key not in memo:
            from torch.utils.flop_counter import FlopCounterMode

            inp = self._inputs(cell.resolution, 1)
            m = self.build_model(cell, "fp32")
            with FlopCounterMode(display=False) as fc, torch.inference_mode():
                m(inp.src[:1], inp.bgr[:1])
            memo[key] = round(fc.get_total_flops() / 2 / 1e9, 2)
        return memo[key]

    def localize(self, cell: Cell, art: Artifact, inp: "Inputs", atol: float) -> str:
        """"first divergence: <op> <node>, max abs <x>" of a failing ONNX artifact against the fp32 plain
        ONNX export of the same configuration (harness/divergence.py), or why it could not be localised."""
        import dataclasses

        from .divergence import first_divergence

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
        feeds = {"src": inp.src[:1].float().numpy(), "bgr": inp.bgr[:1].float().numpy()}
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
        from .onnx_analysis import analyze

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
        hit = self.cache.get("artifact", key)
        if hit is not None:
            meta = self.cache.meta("artifact", key)
            for f in hit.iterdir():  # the artifact, its sidecars and the exporter's logs
                if f.name != "meta.json":
                    link_or_copy(f, cell_dir / f.name)
            return Artifact(target, meta["format"], meta["exporter"], meta["seconds"], dict(meta["meta"], cached=True))
        try:
            art = make(target)
        except _Stage as e:
            failed[key] = e
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
        parts = self.artifact_parts(cell, simplified)
        return {"model": "bgmv2", "format": exporter.format, "exporter": cell.exporter, "weights": parts["weights"],
                "seed": self.s.seed, "samples": list(self.plan.samples), "settable": list(exporter.settable),
                **parts["baked"]}

    def export_request(self, cell: Cell, path: Path, batch: int) -> ExportRequest:
        """The exporter's inputs for ``cell``: the eager model in the cell's precision, example inputs at
        ``settings.export_resolution`` with ``batch`` images, the I/O contract and the metadata to embed."""
        dt = DTYPES[cell.precision]
        _, src, bgr = data_mod.batch_of(self.s.export_resolution, batch)
        a = self.adapter
        return ExportRequest(model=self.build_model(cell), path=path, example=(src.to(dt), bgr.to(dt)),
                             input_names=a.input_names, output_names=a.output_names, dynamic_axes=a.dynamic_axes,
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
        plain = self._artifact(cell_dir, self.artifact_key(cell, False), make, suffix)
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
        sim = self._artifact(cell_dir, self.artifact_key(cell, True), make_sim, f"{stem}.sim.{ext}")
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
        return {
            "backbone_scale": self.s.backbone_scale,
            "refine_mode": cell.refine_mode,
            "refine_sample_pixels": self.s.refine_sample_pixels,
            "refine_threshold": self.s.refine_threshold,
            "refine_prevent_oversampling": self.s.refine_prevent_oversampling,
            "threads": self.threads,
            "precision": cell.precision,
            "tf32": cell.tf32,
            "input_names": self.adapter.input_names,
            "output_names": self.adapter.output_names,
        }

    def run_cell(self, cell: Cell) -> Dict[str, Any]:
        """Run every stage of ``cell``; never raises (errors become the record's status).

        The record is *raw*: known-incompatibility rules are applied by the coordinator
        (:func:`harness.rules.apply_rule`), so cached records stay valid when rules change."""
        self.current_cell = cell
        rec = self.base_record(cell)
        t0 = time.perf_counter()
        status, stage, reason = "pass", "done", ""
        why = RUNTIMES[cell.runtime].unavailable() or EXPORTERS[cell.exporter].unavailable(cell.simplify)
        self.stage_times: Dict[str, float] = {}
        if why:
            status, stage, reason = "skip", "load", f"skipped: {why}"
        else:
            self._runtime = None
            try:
                status, stage, reason = self._stages(cell, rec)
            except _Stage as e:
                status, stage, reason = "error", e.stage, describe(e.exc)
            except Exception as e:  # noqa: BLE001 - a harness bug must not lose the other cells
                status, stage, reason = "error", "harness", describe(e) + " | " + traceback.format_exc(limit=2).splitlines()[-1]
            finally:
                if self._runtime is not None:
                    try:
                        self._runtime.close()
                    except Exception:  # noqa: BLE001 - cleanup never changes a verdict
                        pass
        rec["stage_times"] = {k: round(v, 4) for k, v in self.stage_times.items()}
        rec.update(status=status, stage=stage, reason=reason, cell_s=round(time.perf_counter() - t0, 3))
        return rec

    def _timed(self, stage: str, fn: Callable[[], Any]) -> Any:
        self.on_stage(stage)
        t = time.perf_counter()
        try:
            return fn()
        finally:
            self.stage_times[stage] = self.stage_times.get(stage, 0.0) + time.perf_counter() - t

    def _stages(self, cell: Cell, rec: Dict[str, Any]) -> Tuple[str, str, str]:
        """model -> export -> check -> simplify -> load -> run -> analyze -> parity -> latency -> probe."""
        cell_dir = self.out / "artifacts" / cell.cell_id
        cell_dir.mkdir(parents=True, exist_ok=True)
        # references first: a configuration the model itself rejects is not an export finding
        try:
            ref32 = self._timed("model", lambda: self.reference(cell, "fp32"))
            ref_same = (self._timed("model", lambda: self.reference(cell, cell.precision))
                        if cell.precision != "fp32" else None)
        except Exception as e:  # noqa: BLE001
            return "skip", "model", f"skipped: eager reference failed: {describe(e)}"
        if self.s.count_macs:
            rec["gmac"] = self._timed("model", lambda: self.gmacs(cell))
        art = self._export_stage(cell, cell_dir, rec)
        runtime = self._load_stage(cell, art, rec)
        feeds, outs, inp = self._run_stage(cell, runtime, art, rec)
        tol = self.plan.tolerances[cell.precision]
        try:
            verdict = self._timed("parity", lambda: self.adapter.judge(outs, ref32, ref_same, tol, cell, self.s,
                                                                       inp.crop_to))
        except ShapeMismatch as e:
            return "fail", "parity", f"ShapeMismatch: {e}"
        except Exception as e:  # noqa: BLE001
            raise _Stage("parity", e) from e
        rec.update(verdict.record)
        self._diagnose(cell, runtime, art, inp, outs, verdict, rec)
        self._latency_stage(cell, runtime, feeds, rec)
        result = ("fail", "parity", verdict.reason) if not verdict.passed else ("pass", "done", "")
        truncated = self.adapter.cap_truncation(cell, self.s, ref32)
        if truncated:  # the static selector refined fewer cells than the official one: never a pass
            rec["patch_cap_truncated"] = truncated
            result = ("fail", "parity", truncated + ("" if verdict.passed else "; " + verdict.reason))
        self._probe(rec, runtime, feeds, outs, result)
        return result

    def _export_stage(self, cell: Cell, cell_dir: Path, rec: Dict[str, Any]) -> Artifact:
        """Stages export/check/simplify (cached artifacts cost ~0 s here); fills the artifact's record fields."""
        self.on_stage("export")
        t = time.perf_counter()
        try:
            art, times = self.export(cell, cell_dir)
        finally:
            self.stage_times["export"] = time.perf_counter() - t  # this cell's own export work (~0 when cached)
        rec.update({f"{k}_s": round(v, 4) for k, v in times.items()})
        from . import faults

        if art.format == "onnx" and faults.wants(cell.cell_id, "export", "perturb"):
            rec["injected_fault"] = f"perturbed {faults.perturb_onnx(art.path)}"
        mutations = faults.mutations(cell.cell_id) if art.format == "onnx" else []
        if mutations:
            from .mutants import mutate_onnx

            rec["injected_fault"] = "; ".join(mutate_onnx(art.path, m) for m in mutations)
        rec["exporter_name"] = art.exporter
        rec.update(art.meta.get("record") or {})  # facts the exporter plug-in reports (e.g. compile_s)
        rec.update(artifact=str(art.path.relative_to(self.out)), artifact_key=self.artifact_key(cell, cell.simplify),
                   artifact_mib=round(art.size_mib, 3), cached_artifact=bool(art.meta.get("cached", False)))
        if "nodes_after" in art.meta:
            rec["nodes_before_sim"] = art.meta["nodes_before"]
            rec["nodes"] = art.meta["nodes_after"]
        return art

    def _load_stage(self, cell: Cell, art: Artifact, rec: Dict[str, Any]) -> Any:
        """Stage load: the runtime plug-in prepares (e.g. builds the C++ runner) and loads the artifact."""
        runtime = self._runtime = RUNTIMES[cell.runtime]()
        rec.update(_in_stage("load", lambda: self._timed("load", lambda: runtime.prepare(self.cache, self.out))))
        seconds = _in_stage("load", lambda: self._timed("load", lambda: runtime.load(str(art.path),
                                                                                      self.runtime_settings(cell))))
        rec["load_s"] = round(seconds, 4)
        return runtime

    def _run_stage(self, cell: Cell, runtime: Any, art: Artifact, rec: Dict[str, Any]):
        """Stage run (one call on the validation inputs) and, for ONNX, the static analysis of the graph."""
        inp = self._inputs(cell.resolution, cell.batch)
        dt = DTYPES[cell.precision]
        feeds = self.adapter.feeds(inp.src.to(dt), inp.bgr.to(dt))
        if inp.crop_to is not None:  # --pad: the model saw the padded size (padded_to, from base_record)
            rec["input_size"] = f"{inp.crop_to[0]}x{inp.crop_to[1]}"
        t = time.perf_counter()
        outs = _in_stage("run", lambda: as_list(self._timed("run", lambda: runtime.run(feeds)), bgmv2.OUTPUT_NAMES))
        # a runtime that times itself (libtorch-cpp) reports the call without its transfer overhead
        rec["first_run_ms"] = round(getattr(runtime, "last_run_ms", None) or (time.perf_counter() - t) * 1e3, 2)
        rec["output_dtypes"] = ",".join(sorted({str(o.dtype) for o in outs}))
        rec["runtime_info"] = json.dumps(runtime.info(), default=str)  # rules may depend on it (what really ran)
        if art.format == "onnx":
            observed = {n: tuple(t.shape) for n, t in feeds.items()}
            observed.update({n: o.shape for n, o in zip(bgmv2.OUTPUT_NAMES, outs)})
            try:
                rec.update(self._timed("analyze", lambda: self.analyze_onnx(art.path, cell, observed)))
            except Exception as e:  # noqa: BLE001 - analysis is information, never a reason to fail a cell
                rec["analysis_error"] = describe(e)
        return feeds, outs, inp

    def _diagnose(self, cell: Cell, runtime: Any, art: Artifact, inp: "Inputs", outs: List[np.ndarray],
                  verdict: Any, rec: Dict[str, Any]) -> None:
        """Information next to the verdict: CUDA cells also against eager on the same GPU (TF32 off), and a
        failing ONNX graph's first divergence from the fp32 export (on onnxruntime-cpu)."""
        tol = self.plan.tolerances[cell.precision]
        if runtime.device == "cuda":  # separates GPU numerics from the graph
            try:
                on_gpu = judge_outputs(outs, self.reference(cell, cell.precision, "cuda"), None, tol, self.selection(cell))
                rec.update(max_abs_pha_vs_cuda_eager=on_gpu.best.outputs["pha"].max_abs,
                           judged_max_abs_pha_vs_cuda_eager=on_gpu.best.outputs["pha"].judged_max_abs,
                           passes_vs_cuda_eager=on_gpu.passed)
            except Exception as e:  # noqa: BLE001 - information only
                rec["cuda_eager_error"] = describe(e)
        if not verdict.passed and art.format == "onnx" and cell.runtime == "onnxruntime-cpu":
            rec["first_divergence"] = self._timed("parity", lambda: self.localize(cell, art, inp, tol.atol))
        elif not verdict.passed and art.format == "onnx":
            rec["first_divergence"] = (f"not localised: the graphs are compared on onnxruntime-cpu; see the "
                                       f"onnxruntime-cpu cell of this artifact for whether {cell.runtime} alone fails")

    def _latency_stage(self, cell: Cell, runtime: Any, feeds: Dict[str, Any], rec: Dict[str, Any]) -> None:
        """Stage latency: end-to-end and (``latency.compute``) device compute, timed alone on all cores."""
        lat_cfg = self.s.latency
        proto = lat_cfg.protocol()
        cuda = runtime.device == "cuda"
        device = self.device
        if cuda:
            device = rec["device"] = f"cuda: {runtime.info().get('gpu', '?')}"
        work_threads = torch.get_num_threads()

        def timing():
            e2e = runtime.measure_native(feeds, "end-to-end", proto, device, cell.batch)
            if e2e is None:
                e2e = measure(lambda: runtime.run(feeds), proto, device, batch=cell.batch)
            comp = None
            if lat_cfg.compute:
                comp = runtime.measure_native(feeds, "compute", proto, device, cell.batch)
                if comp is None:
                    comp = measure(runtime.compute_fn(feeds), proto, device, batch=cell.batch, cuda=cuda)
            return e2e, comp

        try:
            torch.set_num_threads(self.threads)  # timed alone, on all cores (see harness/pool.py)
            lat, comp = _in_stage("latency", lambda: self._timed("latency", timing))
        finally:
            torch.set_num_threads(work_threads)
        rec.update(latency_fields(lat, comp))
        rec["cold_ms"] = rec.get("first_run_ms")
        peak = runtime.peak_memory_mib()
        if peak is not None:
            rec["peak_device_mib"] = round(peak, 1)

    def _probe(self, rec: Dict[str, Any], runtime: Any, feeds: Dict[str, Any], outs: List[np.ndarray],
               result: Tuple[str, str, str]) -> None:
        """Input-contract probes (harness/probes.py) on the loaded artifact, after the verdict: they add
        ``input_contract``/``probe_*`` fields and never change the status."""
        from .probes import record_fields, run_probes

        probes = list(self.s.input_probes)
        if not probes:
            return
        status, stage, reason = result

        def on_probe(name: str, done: list) -> None:
            snap = dict(rec, status=status, stage=stage, reason=reason, probing=name,
                        stage_times={k: round(v, 4) for k, v in self.stage_times.items()})
            snap.pop("latency_samples_ms", None)
            snap.update(record_fields(done, probes))
            self.on_partial(snap)

        on_probe(probes[0], [])  # before the stage starts: a fault injected at its start finds the verdict
        call = positional_call(runtime)
        try:
            found = self._timed("probe", lambda: run_probes(call, feeds["src"], feeds["bgr"], outs, probes, on_probe))
        except Exception as e:  # noqa: BLE001 - probing is information, never a reason to fail a cell
            rec["probe_error"] = describe(e)
            return
        rec.update(record_fields(found, probes))


def positional_call(runtime: Any) -> Callable[..., List[np.ndarray]]:
    """``(src, bgr) -> [pha, fgr, ...]`` around a runtime plug-in's named ``run`` (for the probes)."""
    return lambda src, bgr: as_list(runtime.run({"src": src, "bgr": bgr}), bgmv2.OUTPUT_NAMES)


def latency_fields(lat: Any, comp: Any) -> Dict[str, Any]:
    """Record fields of an end-to-end :class:`~harness.benchmark.Latency` and an optional compute one (ms)."""
    rec: Dict[str, Any] = {k: round(getattr(lat, k), 3)
                           for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms")}
    rec.update(cv=round(lat.cv, 4), fps=round(lat.fps, 2), latency_runs=lat.runs, warmup_runs=lat.warmup_runs,
               latency_clock=lat.clock, latency_warning=lat.warning, latency_samples_ms=lat.samples_ms)
    if comp is not None:
        rec.update(compute_p50_ms=round(comp.p50_ms, 3), compute_p90_ms=round(comp.p90_ms, 3),
                   compute_p99_ms=round(comp.p99_ms, 3), compute_cv=round(comp.cv, 4), compute_clock=comp.clock,
                   compute_fps=round(comp.fps, 2))
        if comp.warning:
            rec["latency_warning"] = "; ".join(filter(None, [lat.warning, f"compute {comp.warning}"]))
    return rec


def _in_stage(stage: str, fn: Callable[[], Any]) -> Any:
    """``fn()``, with any exception re-raised as the failure of ``stage`` (the record's stage and reason)."""
    try:
        return fn()
    except _Stage:
        raise
    except Exception as e:  # noqa: BLE001
        raise _Stage(stage, e) from e


__all__ = ["RunError", "RunOptions", "RunSummary", "Runner", "append_record", "describe", "CheckpointError",
           "UNEXPECTED_STATUSES", "RERUN_STATUSES", "CACHEABLE_STATUSES"]
