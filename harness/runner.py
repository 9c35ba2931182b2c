"""Run a :class:`~harness.config.Plan`: for every cell, export -> check -> simplify -> load -> run ->
parity -> latency, one record per cell appended to ``results.jsonl`` as soon as it finishes.

Artifacts are shared within a run: one ONNX export feeds the plain and the onnxsim cell, and one
TorchScript file serves every refine mode (the mode is set with ``setattr`` after loading, which is
what the hoisted attributes are for). Eager references are computed once per model configuration
and input.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from model import MattingRefine
from model.calibration import calibrate
from model.checkpoint import CheckpointError, guess_architecture, load_checkpoint, read_state_dict, sha256_of

from . import inputs as data_mod
from .benchmark import cpu_name, measure
from .config import NA, Cell, Plan, matching_rule
from .exporters import (
    Artifact,
    StageError,
    check_onnx,
    export_onnx_legacy,
    export_torchscript,
    onnx_versions,
    simplify_onnx,
)
from .parity import compare, drift_failures
from .runtimes import RUNTIMES

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class RunError(RuntimeError):
    """A problem with the run as a whole (unwritable output dir, bad checkpoint); exit code 2."""


class _Stage(Exception):
    def __init__(self, stage: str, exc: BaseException):
        super().__init__(stage)
        self.stage = stage
        self.exc = exc


def describe(exc: BaseException) -> str:
    """``ExceptionClass: first line of the message`` (never a multi-page graph dump)."""
    msg = str(exc).strip()
    first = msg.splitlines()[0] if msg else ""
    if len(first) > 300:
        first = first[:297] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@dataclass
class Inputs:
    """Validation inputs for one (resolution, batch): names and (B,3,H,W) float32 tensors."""

    names: List[str]
    src: torch.Tensor
    bgr: torch.Tensor
    crop_to: Optional[Tuple[int, int]] = None


@dataclass
class RunOptions:
    """What the CLI passes to :func:`run_plan`."""

    out_dir: Path
    checkpoint: Optional[Path] = None
    src: Optional[str] = None
    bgr: Optional[str] = None
    pad: bool = False
    progress: bool = True
    config_path: Optional[str] = None


@dataclass
class RunSummary:
    records: List[Dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def counts(self) -> Dict[str, int]:
        out: Dict[str, int] = {}
        for r in self.records:
            out[r["status"]] = out.get(r["status"], 0) + 1
        return out

    @property
    def unexpected(self) -> int:
        return sum(1 for r in self.records if r["status"] in ("fail", "error", "xpass"))


class Runner:
    """Executes cells, caching weights, eager references and artifacts for the duration of a run."""

    def __init__(self, plan: Plan, opts: RunOptions) -> None:
        self.plan = plan
        self.opts = opts
        self.s = plan.settings
        self.out = Path(opts.out_dir)
        self.weights: Dict[str, Dict[str, torch.Tensor]] = {}
        self.weights_info: Dict[str, Any] = {}
        self.refs: Dict[tuple, Any] = {}
        self.artifacts: Dict[tuple, Any] = {}
        self.inputs: Dict[Tuple[Tuple[int, int], int], Inputs] = {}
        self.user_pair: Optional[data_mod.Pair] = None
        self.device = f"cpu: {cpu_name()} ({torch.get_num_threads()} threads)"

    # ---------------------------------------------------------------- setup
    def prepare(self) -> None:
        """Create the output dir, load/calibrate weights and inputs. Raises RunError / InputError."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "artifacts").mkdir(exist_ok=True)
            probe = self.out / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"--out {str(self.out)!r} is not writable: {e.strerror or e}") from None
        if self.opts.src or self.opts.bgr:
            if not (self.opts.src and self.opts.bgr):
                raise data_mod.InputError("--src and --bgr must be given together")
            self.user_pair = data_mod.load_user_pair(self.opts.src, self.opts.bgr, pad=self.opts.pad)
        torch.manual_seed(self.s.seed)
        backbones = sorted({c.backbone for c in self.plan.cells})
        if self.opts.checkpoint is not None:
            sd = read_state_dict(self.opts.checkpoint)
            looks = guess_architecture(sd) or "unknown"
            for bb in backbones:
                m = MattingRefine(bb)
                load_checkpoint(m, sd)  # raises CheckpointError naming the mismatch
                self.weights[bb] = m.state_dict()
            self.weights_info = {
                "source": "checkpoint",
                "path": str(self.opts.checkpoint),
                "sha256": sha256_of(self.opts.checkpoint),
                "looks_like": looks,
            }
        else:
            hw = data_mod._SHIPPED["small"]
            for bb in backbones:
                torch.manual_seed(self.s.seed)
                m = MattingRefine(bb, backbone_scale=self.s.backbone_scale)
                pairs = [data_mod.load_sample(n, hw) for n in self.plan.samples]
                src, bgr = data_mod.stack(pairs)
                if src.shape[0] < 2:
                    src, bgr = torch.cat([src, src.flip(-1)]), torch.cat([bgr, bgr.flip(-1)])
                calibrate(m, [(src, bgr), (src.flip(-1), bgr.flip(-1))])
                self.weights[bb] = m.state_dict()
                name = "weights.pth" if len(backbones) == 1 else f"weights-{bb}.pth"
                torch.save(self.weights[bb], self.out / name)
            self.weights_info = {
                "source": "calibrated",
                "seed": self.s.seed,
                "files": ["weights.pth"] if len(backbones) == 1 else [f"weights-{bb}.pth" for bb in backbones],
                "recipe": "model/calibration.py: seeded init, BatchNorm stats calibrated on the shipped samples",
            }

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

    def _resolution(self, cell: Cell) -> Tuple[int, int]:
        if self.user_pair is not None:
            return tuple(self._inputs(cell.resolution, cell.batch).src.shape[2:])
        return cell.resolution

    # ---------------------------------------------------------------- models and references
    def build_model(self, cell: Cell, precision: Optional[str] = None) -> MattingRefine:
        s = self.s
        m = MattingRefine(
            cell.backbone,
            backbone_scale=s.backbone_scale,
            refine_mode=cell.refine_mode,
            refine_sample_pixels=s.refine_sample_pixels,
            refine_threshold=s.refine_threshold,
            refine_kernel_size=s.refine_kernel_size,
            refine_prevent_oversampling=s.refine_prevent_oversampling,
            refine_patch_crop_method="unfold" if cell.crop_method == NA else cell.crop_method,
            refine_patch_replace_method="scatter_nd" if cell.replace_method == NA else cell.replace_method,
        )
        m.load_state_dict(self.weights[cell.backbone])
        return m.to(DTYPES[precision or cell.precision]).eval()

    def reference(self, cell: Cell, precision: str) -> List[np.ndarray]:
        """Eager outputs (numpy, float32) for the cell's model config in ``precision``."""
        key = (cell.backbone, cell.refine_mode, cell.crop_method, cell.replace_method, precision,
               cell.resolution, cell.batch)
        if key not in self.refs:
            try:
                inp = self._inputs(cell.resolution, cell.batch)
                m = self.build_model(cell, precision)
                dt = DTYPES[precision]
                with torch.inference_mode():
                    self.refs[key] = [o.float().numpy() for o in m(inp.src.to(dt), inp.bgr.to(dt))]
            except Exception as e:  # noqa: BLE001 - recorded as the cell's skip reason
                self.refs[key] = e
        val = self.refs[key]
        if isinstance(val, Exception):
            raise val
        return val

    # ---------------------------------------------------------------- artifacts
    def _artifact(self, cell: Cell, cell_dir: Path, key: tuple, make: Callable[[Path], Artifact], name: str) -> Artifact:
        """Return the cached artifact for ``key`` (hard-linked into ``cell_dir``) or make it there."""
        if key in self.artifacts:
            val = self.artifacts[key]
            if isinstance(val, _Stage):
                raise val
            target = cell_dir / val.path.name
            if not target.exists():
                try:
                    os.link(val.path, target)
                except OSError:
                    shutil.copy2(val.path, target)
            return Artifact(target, val.format, val.exporter, val.seconds, dict(val.meta, cached=True))
        try:
            art = make(cell_dir / name)
        except _Stage as e:
            self.artifacts[key] = e
            raise
        self.artifacts[key] = art
        return art

    def export(self, cell: Cell, cell_dir: Path) -> Tuple[Artifact, Dict[str, float]]:
        """Export (or reuse) the cell's artifact; returns it and stage timings in seconds."""
        times: Dict[str, float] = {}
        dt = DTYPES[cell.precision]
        if cell.exporter == "torchscript":
            key = ("torchscript", cell.backbone, cell.crop_method, cell.replace_method, cell.precision)

            def make_ts(path: Path) -> Artifact:
                try:
                    return export_torchscript(self.build_model(cell), path)
                except Exception as e:  # noqa: BLE001
                    raise _Stage("export", e) from e

            art = self._artifact(cell, cell_dir, key, make_ts, "model.pt")
            times["export_s"] = art.seconds
            return art, times

        ex_hw = self.s.export_resolution
        base_key = ("onnx", cell.backbone, cell.refine_mode, cell.crop_method, cell.replace_method,
                    cell.precision, cell.opset)

        def make_onnx(path: Path) -> Artifact:
            names, src, bgr = data_mod.batch_of(ex_hw, 1)
            try:
                art = export_onnx_legacy(self.build_model(cell), path, (src.to(dt), bgr.to(dt)), cell.opset)
            except Exception as e:  # noqa: BLE001
                raise _Stage("export", e) from e
            try:
                art.meta["check_s"] = check_onnx(path)
            except Exception as e:  # noqa: BLE001
                raise _Stage("check", e) from e
            return art

        plain = self._artifact(cell, cell_dir, base_key, make_onnx, "model.onnx")
        times["export_s"] = plain.seconds
        times["check_s"] = float(plain.meta.get("check_s", 0.0))
        if not cell.simplify:
            return plain, times

        def make_sim(path: Path) -> Artifact:
            try:
                art = simplify_onnx(plain, path)
            except Exception as e:  # noqa: BLE001
                raise _Stage("simplify", e) from e
            try:
                check_onnx(path)
            except Exception as e:  # noqa: BLE001
                raise _Stage("check", e) from e
            return art

        sim = self._artifact(cell, cell_dir, base_key + ("onnxsim",), make_sim, "model.sim.onnx")
        times["simplify_s"] = sim.seconds
        return sim, times

    # ---------------------------------------------------------------- one cell
    def run_cell(self, cell: Cell) -> Dict[str, Any]:
        """Run every stage of ``cell``; never raises (errors become the record's status)."""
        rec: Dict[str, Any] = {"cell_id": cell.cell_id, **cell.as_dict()}
        rec.update(
            backbone_scale=self.s.backbone_scale,
            refine_sample_pixels=self.s.refine_sample_pixels,
            refine_threshold=self.s.refine_threshold,
            refine_kernel_size=self.s.refine_kernel_size,
            refine_prevent_oversampling=self.s.refine_prevent_oversampling,
            export_resolution=f"{self.s.export_resolution[0]}x{self.s.export_resolution[1]}",
            device=self.device,
        )
        if self.user_pair is not None:
            h, w = self._resolution(cell)
            rec["resolution"] = f"{h}x{w}"
        t0 = time.perf_counter()
        status, stage, reason = "pass", "done", ""
        rt_cls = RUNTIMES[cell.runtime]
        why = rt_cls.unavailable() or _missing_tools(cell)
        rule = matching_rule(cell, self.plan.rules)
        rec["rule"] = rule.id if rule else ""
        if why:
            status, stage, reason = "skip", "load", f"skipped: {why}"
        else:
            try:
                status, stage, reason = self._stages(cell, rec)
            except _Stage as e:
                status, stage, reason = "error", e.stage, describe(e.exc)
            except Exception as e:  # noqa: BLE001 - a harness bug must not lose the other cells
                status, stage, reason = "error", "harness", describe(e) + " | " + traceback.format_exc(limit=2).splitlines()[-1]
        if rule is not None and status in ("fail", "error"):
            if rule.stage is None or rule.stage == stage:
                status = "xfail"
                reason = f"{reason} [expected: {rule.reason}]"
            else:
                reason = f"{reason} [rule {rule.id} expected failure at stage {rule.stage!r}]"
        elif rule is not None and status == "pass":
            status = "xpass"
            reason = f"passed although rule {rule.id!r} expects failure ({rule.reason})"
        rec.update(status=status, stage=stage, reason=reason, cell_s=round(time.perf_counter() - t0, 3))
        return rec

    def _stages(self, cell: Cell, rec: Dict[str, Any]) -> Tuple[str, str, str]:
        cell_dir = self.out / "artifacts" / cell.cell_id
        cell_dir.mkdir(parents=True, exist_ok=True)
        # references first: a configuration the model itself rejects is not an export finding
        try:
            ref32 = self.reference(cell, "fp32")
            ref_same = self.reference(cell, cell.precision) if cell.precision != "fp32" else None
        except Exception as e:  # noqa: BLE001
            return "skip", "model", f"skipped: eager reference failed: {describe(e)}"
        art, times = self.export(cell, cell_dir)
        rec.update({k: round(v, 4) for k, v in times.items()})
        rec["exporter_name"] = art.exporter
        rec["artifact"] = str(art.path.relative_to(self.out))
        rec["artifact_mib"] = round(art.size_mib, 3)
        rec["cached_artifact"] = bool(art.meta.get("cached", False))
        if "nodes_after" in art.meta:
            rec["nodes_before_sim"] = art.meta["nodes_before"]
            rec["nodes"] = art.meta["nodes_after"]
        runtime = RUNTIMES[cell.runtime]()
        settings = {
            "backbone_scale": self.s.backbone_scale,
            "refine_mode": cell.refine_mode,
            "refine_sample_pixels": self.s.refine_sample_pixels,
            "refine_threshold": self.s.refine_threshold,
            "refine_prevent_oversampling": self.s.refine_prevent_oversampling,
        }
        try:
            rec["load_s"] = round(runtime.load(str(art.path), settings), 4)
        except Exception as e:  # noqa: BLE001
            raise _Stage("load", e) from e
        inp = self._inputs(cell.resolution, cell.batch)
        dt = DTYPES[cell.precision]
        src, bgr = inp.src.to(dt), inp.bgr.to(dt)
        try:
            t = time.perf_counter()
            outs = runtime.run(src, bgr)
            rec["first_run_ms"] = round((time.perf_counter() - t) * 1e3, 2)
        except Exception as e:  # noqa: BLE001
            raise _Stage("run", e) from e
        rec["output_dtypes"] = ",".join(sorted({str(o.dtype) for o in outs}))
        try:
            tol = self.plan.tolerances[cell.precision]
            results = [compare(outs, ref32, tol, "fp32")]
            if ref_same is not None:
                results.append(compare(outs, ref_same, tol, cell.precision))
        except Exception as e:  # noqa: BLE001
            raise _Stage("parity", e) from e
        best = next((r for r in results if r.passed), results[0])
        rec["parity_ref"] = best.reference
        drift_fail: List[str] = []
        if not best.passed and ref_same is not None:
            eager = compare(ref_same, ref32, tol, "fp32")
            rec["eager_drift_max_abs_pha"] = eager.outputs["pha"].judged_max_abs
            if tol.eager_drift_factor is not None:
                drift_fail = drift_failures(results[0], eager, tol, tol.eager_drift_factor)
                if not drift_fail:
                    rec["parity_ref"] = f"fp32 (within {tol.eager_drift_factor:g}x eager {cell.precision} drift)"
        for name, st in best.outputs.items():
            rec[f"max_abs_{name}"] = st.max_abs
            rec[f"judged_max_abs_{name}"] = st.judged_max_abs
            rec[f"mean_abs_{name}"] = st.mean_abs
            rec[f"p99_abs_{name}"] = st.p99_abs
            rec[f"violation_frac_{name}"] = st.judged_violation_frac
            if st.psnr is not None:
                rec[f"psnr_{name}"] = st.psnr if np.isfinite(st.psnr) else 999.0
        rec["ref_iou"] = best.ref_iou
        rec["ref_cells"] = best.ref_cells
        rec["ref_cells_eager"] = best.ref_cells_ref
        rec["min_passing_atol"] = best.min_passing_atol
        if len(results) > 1:
            other = results[1] if best is results[0] else results[0]
            rec[f"max_abs_pha_vs_{other.reference}"] = other.outputs["pha"].max_abs
            rec[f"ref_iou_vs_{other.reference}"] = other.ref_iou
        rec["parity"] = best.summary()
        lat_cfg = self.s.latency
        try:
            lat = measure(lambda: runtime.run(src, bgr), lat_cfg.warmup, lat_cfg.runs, self.device)
        except Exception as e:  # noqa: BLE001
            raise _Stage("latency", e) from e
        rec["p50_ms"] = round(lat.p50_ms, 3)
        rec["p90_ms"] = round(lat.p90_ms, 3)
        rec["latency_runs"] = lat.runs
        if not best.passed and (ref_same is None or tol.eager_drift_factor is None or drift_fail):
            return "fail", "parity", "; ".join(drift_fail or best.failures)
        return "pass", "done", ""


def _missing_tools(cell: Cell) -> Optional[str]:
    """Why an optional export tool for ``cell`` is missing (None when all are importable)."""
    if cell.exporter != "onnx":
        return None
    versions = onnx_versions()
    if versions["onnx"] is None:
        return "onnx is not installed (pip install 'matting-export-matrix[onnx]')"
    if cell.simplify and versions["onnxsim"] is None:
        return "onnxsim is not installed (pip install onnxsim)"
    return None


def _order(cells) -> List[Cell]:
    """Group cells sharing an artifact so the cache is hot; stable otherwise."""
    return sorted(
        cells,
        key=lambda c: (c.backbone, c.exporter, c.precision, c.opset or 0, c.crop_method, c.replace_method,
                       c.refine_mode, c.simplify, c.runtime, c.resolution, c.batch),
    )


def append_record(path: Path, rec: Dict[str, Any]) -> None:
    """Append one JSON line and flush it to disk before returning."""
    line = json.dumps(rec, default=str, allow_nan=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_plan(plan: Plan, opts: RunOptions) -> Tuple[RunSummary, Runner]:
    """Run all cells of ``plan``; return the records (also written to ``results.jsonl``) and the
    runner (whose ``weights_info`` goes to environment.json).

    Raises:
        RunError, CheckpointError, InputError: before any cell runs, for problems with the run as a whole.
    """
    runner = Runner(plan, opts)
    runner.prepare()
    out = Path(opts.out_dir)
    results = out / "results.jsonl"
    if results.exists():
        results.unlink()
    summary = RunSummary()
    t0 = time.perf_counter()
    cells = _order(plan.cells)
    bar = None
    if opts.progress:
        from tqdm import tqdm

        bar = tqdm(total=len(cells), unit="cell", dynamic_ncols=True, file=sys.stderr, desc=plan.profile)
    try:
        for cell in cells:
            rec = runner.run_cell(cell)
            append_record(results, rec)
            summary.records.append(rec)
            if bar is not None:
                bar.set_postfix_str(f"{rec['status']}: {cell.cell_id}"[:70])
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    summary.wall_s = time.perf_counter() - t0
    return summary, runner


__all__ = ["RunError", "RunOptions", "RunSummary", "Runner", "append_record", "describe", "run_plan", "CheckpointError"]
