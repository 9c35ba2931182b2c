"""``python -m harness verify ARTIFACT``: judge any exported artifact, including one you exported yourself.

The artifact (ONNX ``.onnx``, TorchScript ``.pt``, AOTInductor ``.pt2``, or the eager exporter's ``.pth``)
runs on every installed runtime that loads its format, on the shipped samples at batch 1 and 2 and a
resolution other than the one it was exported at (or on ``--src``/``--bgr``), and is compared with eager
PyTorch by the same judge as a matrix cell (:func:`harness.verdict.judge_outputs`).

Settings come from the metadata the harness stores in its artifacts (:func:`harness.exporters.write_metadata`);
flags override them, and an artifact without metadata (the official export script's) needs them. Weights:
``--checkpoint``, else the calibrated weights named in the metadata (recomputed from their seed and samples).

Each runtime's result is judged by the matrix's known-incompatibility rules like a cell (``xfail`` where a
rule predicts the failure). Exit codes: 0 nothing unexpected (pass or xfail); 1 some run is fail, error or
xpass; 2 bad input (file, flags, checkpoint, images) or no installed runtime can load the artifact.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

SETTING_FLAGS = ("backbone", "backbone_scale", "refine_mode", "refine_sample_pixels", "refine_threshold",
                 "refine_kernel_size", "refine_prevent_oversampling", "crop_method", "replace_method", "precision")


def formats() -> Dict[str, str]:
    """``{artifact suffix: format}`` from the exporter plug-ins (``.onnx``: onnx, ``.pt``: torchscript, ...)."""
    from .exporters import EXPORTERS, exporter_for_suffix

    suffixes = {Path(cls.suffix).suffix for cls in EXPORTERS.values()}
    return {sfx: exporter_for_suffix(sfx).format for sfx in sorted(suffixes)}  # type: ignore[union-attr]


def default_exporter(fmt: str) -> str:
    """The exporter assumed for an artifact of format ``fmt`` without metadata (first by name)."""
    from .exporters import EXPORTERS

    return next(name for name in sorted(EXPORTERS) if EXPORTERS[name].format == fmt)


class VerifyError(ValueError):
    """Bad input to ``verify`` (exit 2); the message names the file, flag or value."""


def add_parser(sub: Any) -> None:
    """Register the ``verify`` sub-command on an argparse sub-parser collection."""
    v = sub.add_parser("verify", help="judge one exported artifact against eager PyTorch on every installed runtime")
    v.add_argument("artifact", help="model.onnx / model.pt (TorchScript) / model.pt2 (AOTInductor) / model.pth (eager)")
    v.add_argument("--checkpoint", default=None, help="BMV2 state_dict (default: the calibrated weights in the metadata)")
    v.add_argument("--src", default=None, help="your own source image (needs --bgr)")
    v.add_argument("--bgr", default=None, help="your own background image (needs --src)")
    v.add_argument("--backbone", choices=["mobilenetv2", "resnet50", "resnet101"], default=None)
    v.add_argument("--backbone-scale", type=float, default=None)
    v.add_argument("--refine-mode", choices=["sampling", "thresholding", "full"], default=None)
    v.add_argument("--refine-sample-pixels", type=int, default=None)
    v.add_argument("--refine-threshold", type=float, default=None)
    v.add_argument("--refine-kernel-size", type=int, choices=[1, 3], default=None)
    v.add_argument("--refine-prevent-oversampling", choices=["true", "false"], default=None)
    v.add_argument("--crop-method", choices=["unfold", "roi_align", "gather"], default=None)
    v.add_argument("--replace-method", choices=["scatter_nd", "scatter_element"], default=None)
    v.add_argument("--precision", choices=["fp32", "fp16"], default=None)
    v.add_argument("--runtime", action="append", default=None, help="only this runtime (repeatable)")
    v.add_argument("--resolution", default=None, metavar="HxW", help="validation size (default 288x512, "
                   "or 320x576 when the artifact was exported at 288x512)")


def _settings(args: argparse.Namespace, fmt: str, meta: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Settings from the artifact's metadata, overridden by flags, completed with the official defaults."""
    from .config import NA

    s: Dict[str, Any] = {k: v for k, v in (meta or {}).items() if k in SETTING_FLAGS or k in (
        "export_resolution", "opset", "exporter", "simplify", "input_guard", "refine_patch_select")}
    for k in SETTING_FLAGS:
        v = getattr(args, k, None)
        if v is not None:
            s[k] = (v == "true") if k == "refine_prevent_oversampling" else v
    if "backbone" not in s and args.checkpoint:
        from model.bgmv2.checkpoint import guess_backbone
        from model.checkpoint import read_state_dict

        s["backbone"] = guess_backbone(read_state_dict(args.checkpoint))
    if not s.get("backbone"):
        raise VerifyError(f"{args.artifact}: no harness metadata and no --backbone (nor a --checkpoint to tell it "
                          f"from); give --backbone mobilenetv2|resnet50|resnet101 and the other settings you exported with")
    defaults = {"backbone_scale": 0.25, "refine_mode": "sampling", "refine_sample_pixels": 80_000,
                "refine_threshold": 0.1, "refine_kernel_size": 3, "refine_prevent_oversampling": True,
                "crop_method": "roi_align", "replace_method": "scatter_element", "exporter": default_exporter(fmt)}
    for k, v in defaults.items():
        s.setdefault(k, v)
    if "precision" not in s:  # only an artifact without metadata or flag: read it from the graph's input
        s["precision"] = _detect_precision(args.artifact, fmt)
    if s["refine_mode"] == "full":
        s["crop_method"] = s["replace_method"] = NA
    return s


def _detect_precision(path: str, fmt: str) -> str:
    if fmt == "onnx":
        import onnx

        m = onnx.load(path, load_external_data=False)
        return "fp16" if m.graph.input and m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "fp32"
    return "fp32"


def _resolution(args: argparse.Namespace, s: Dict[str, Any]) -> Tuple[int, int]:
    if args.resolution:
        try:
            h, w = (int(x) for x in args.resolution.lower().split("x"))
        except ValueError:
            raise VerifyError(f"--resolution {args.resolution!r}: expected HxW, e.g. 288x512") from None
        if h <= 0 or w <= 0 or h % 4 or w % 4:
            raise VerifyError(f"--resolution {args.resolution!r}: H and W must be positive multiples of 4")
        return h, w
    return (320, 576) if list(s.get("export_resolution") or []) == [288, 512] else (288, 512)


def _plan(s: Dict[str, Any], meta: Optional[Dict[str, Any]], fmt: str, runtimes: List[str], res, batches):
    """A plan of one cell per runtime and batch, with matrix.yaml's settings, tolerances and rules."""
    from .config import Cell, Plan, Settings, load_config
    from .exporters import EXPORTERS
    from .config import DEFAULT_CONFIG

    cfg = load_config(DEFAULT_CONFIG)
    settings = Settings.model_validate({
        **cfg.settings.model_dump(), "backbone_scale": s["backbone_scale"],
        "refine_sample_pixels": s["refine_sample_pixels"], "refine_threshold": s["refine_threshold"],
        "refine_kernel_size": s["refine_kernel_size"], "refine_prevent_oversampling": s["refine_prevent_oversampling"],
        "seed": (meta or {}).get("seed", cfg.settings.seed)})
    samples = tuple((meta or {}).get("samples") or cfg.samples)
    exporter = s["exporter"] if s["exporter"] in EXPORTERS else default_exporter(fmt)
    own = {k: s[k] for k in ("backbone", "refine_mode", "crop_method", "replace_method")}
    own.update(input_guard=bool(s.get("input_guard", False)), refine_patch_select=s.get("refine_patch_select", "nonzero"))
    cells = tuple(Cell(model="bgmv2", **own, precision=s["precision"], exporter=exporter,
                       opset=s.get("opset") if EXPORTERS[exporter].opsets else None,
                       simplify=bool(s.get("simplify", False)), runtime=rt, resolution=tuple(res), batch=b)
                  for rt in runtimes for b in batches)
    return Plan("verify", settings, cells, dict(cfg.tolerances), tuple(cfg.rules), samples)


def run_verify(args: argparse.Namespace) -> int:
    """Entry point of ``python -m harness verify`` (see the module docstring for exit codes)."""
    from model.errors import ModelInputError

    from .inputs import InputError

    try:
        return _verify(args)
    except (VerifyError, InputError, ModelInputError) as e:  # every model's CheckpointError/InputContractError
        print(f"error: {e}", file=sys.stderr)
        return 2


def _verify(args: argparse.Namespace) -> int:
    from .exporters import read_metadata
    from .runtimes import RUNTIMES

    path = Path(args.artifact)
    if not path.is_file():
        raise VerifyError(f"{args.artifact!r}: no such file" + (" (it is a directory)" if path.is_dir() else ""))
    fmt = formats().get(path.suffix.lower())
    if fmt is None:
        raise VerifyError(f"{args.artifact!r}: unknown artifact type {path.suffix!r}; expected one of {sorted(formats())}")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise VerifyError(f"--checkpoint {args.checkpoint!r}: no such file")
    if bool(args.src) != bool(args.bgr):
        raise VerifyError("--src and --bgr must be given together")
    names = [n for n, cls in RUNTIMES.items() if cls.format == fmt]
    bad = [r for r in args.runtime or [] if r not in names]
    if bad:  # checked before the file is read: a wrong flag is named even for a broken artifact
        raise VerifyError(f"--runtime {bad[0]!r} cannot load a {fmt} artifact; expected one of {names}")
    _resolution(args, {})
    try:
        meta = read_metadata(path)
    except ValueError as e:
        raise VerifyError(str(e)) from None
    if meta is not None and meta.get("format") not in (None, fmt):
        raise VerifyError(f"{args.artifact!r}: its metadata says format {meta.get('format')!r}, the suffix says {fmt!r}")
    if meta is not None and meta.get("model", "bgmv2") != "bgmv2":
        raise VerifyError(f"{args.artifact!r}: exported from model {meta.get('model')!r}; verify judges BGMv2 "
                          f"artifacts (model 'bgmv2') only: run that model's cells with `python -m harness run`")
    from .models import MODELS

    assumed = MODELS["bgmv2"]  # what verify judges today (see _plan)
    if fmt == "onnx":  # names first: a foreign graph is named before any flag is asked for
        _check_interface(args.artifact, assumed, assumed.input_names, assumed.output_names)
    s = _settings(args, fmt, meta)
    if args.runtime:
        names = list(args.runtime)
    runnable = [n for n in names if RUNTIMES[n].unavailable() is None]
    skipped = {n: RUNTIMES[n].unavailable() for n in names if n not in runnable}
    for n, why in skipped.items():
        print(f"skip  {n}: {why}")
    if not runnable:
        raise VerifyError(f"no installed runtime can load {args.artifact!r} (format {fmt}); tried {names}")
    res = _resolution(args, s)
    plan = _plan(s, meta, fmt, runnable, res, (1, 2))
    if fmt == "onnx":  # then ranks, fixed sizes and dtypes against the inputs this plan feeds
        cell = plan.cells[0]
        a = MODELS[cell.model]
        ins, outs, _ = a.io(cell)
        feeds = a.cast(a.validation_inputs(tuple(res), 1, list(plan.samples)).feeds, cell.precision)
        _check_interface(args.artifact, a, ins, outs, feeds, where=f"{cell.precision}, {res[0]}x{res[1]}",
                         fixed_hw=not args.src)
    with tempfile.TemporaryDirectory(prefix="matrix-verify-") as tmp:
        return _judge_all(args, path, plan, meta, s, Path(tmp))


def _onnx_io(path: str) -> Tuple[List[Tuple[str, str, List[Any]]], List[Tuple[str, str, List[Any]]]]:
    """``(inputs, outputs)`` of an ONNX graph, each ``[(name, dtype name, dims)]`` (a dim is an int, a dim
    name, or None); initializers listed as inputs (old exporters) are left out."""
    import onnx

    g = onnx.load(path, load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def one(v):
        t = v.type.tensor_type
        try:
            dtype = str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)) if t.elem_type else "?"
        except (KeyError, ValueError, TypeError):
            dtype = onnx.TensorProto.DataType.Name(t.elem_type).lower()
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
        return v.name, dtype, dims

    return [one(v) for v in g.input if v.name not in inits], [one(v) for v in g.output]


def _fmt_io(items) -> str:
    return ", ".join(f"{n} {dt} [{', '.join('?' if d is None else str(d) for d in dims)}]" for n, dt, dims in items)


def _check_interface(path: str, adapter: Any, inputs: Tuple[str, ...], outputs: Tuple[str, ...],
                     feeds: Optional[Dict[str, Any]] = None, where: str = "", fixed_hw: bool = True) -> None:
    """Refuse an ONNX graph that is not a graph of ``adapter``'s model before anything runs: its input names must
    be ``inputs`` and its outputs include ``outputs``; with ``feeds`` (the tensors verify will feed, named), each
    input's rank and dtype must match, and so must its fixed sizes (batch excepted; H/W only with ``fixed_hw``).

    Raises:
        VerifyError: naming the graph's inputs and outputs and what the model needs (exit 2)."""
    got_in, got_out = _onnx_io(path)
    names_in, names_out = [n for n, _, _ in got_in], [n for n, _, _ in got_out]
    problems = []
    missing, extra = [n for n in inputs if n not in names_in], [n for n in names_in if n not in inputs]
    if missing:
        problems.append(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected input{'s' if len(extra) > 1 else ''} {', '.join(extra)}")
    lost = [n for n in outputs if n not in names_out]
    if lost:
        problems.append(f"missing output{'s' if len(lost) > 1 else ''} {', '.join(lost)}")
    want = ", ".join(inputs)
    if feeds is not None and not problems:
        want = ", ".join(f"{n} {str(feeds[n].dtype).replace('torch.', '')} {list(feeds[n].shape)}" for n in inputs)
        for n, dt, dims in got_in:
            t = feeds[n]
            exp_dt = str(t.dtype).replace("torch.", "")
            if dt != exp_dt:
                problems.append(f"input {n} is {dt}, the {where} run feeds {exp_dt}")
            if len(dims) != t.dim():
                problems.append(f"input {n} has {len(dims)} dims, the model takes {t.dim()}")
                continue
            fixed = [i for i, d in enumerate(dims) if isinstance(d, int) and d > 0 and i > 0
                     and (fixed_hw or i < t.dim() - 2) and d != t.shape[i]]
            if fixed:
                problems.append(f"input {n} is fixed to [{', '.join('?' if d is None else str(d) for d in dims)}], "
                                f"the {where} run feeds {list(t.shape)}"
                                + (" (give --resolution HxW of the size it was exported at)"
                                   if any(i >= t.dim() - 2 for i in fixed) else ""))
    if problems:
        raise VerifyError(
            f"{path!r} is not a {adapter.label or adapter.name} graph: it takes {_fmt_io(got_in) or 'no inputs'} and "
            f"gives {_fmt_io(got_out) or 'no outputs'}; a {adapter.label or adapter.name} artifact takes {want} and "
            f"gives {', '.join(outputs)} ({'; '.join(problems)})")


def _contract(rt: Any, src: Any, bgr: Any, outs: Any) -> str:
    """The artifact's input contract on this runtime (harness/probes.py), e.g. "size garbage · dtype
    refuses · channels refuses · range garbage"; information only, it never changes the verdict."""
    from .probes import record_fields, run_probes
    from .records import describe
    from .runner import positional_call

    try:
        found = run_probes(positional_call(rt), src, bgr, outs)
    except Exception as e:  # noqa: BLE001
        return f"not probed: {describe(e)}"
    fields = record_fields(found)
    bad = [f"{r.probe}: {r.detail}" for r in found if r.outcome == "garbage"]
    return str(fields["input_contract"]) + ("".join(f"\n        {b}" for b in bad))


def _judge_all(args, path: Path, plan, meta, s, tmp: Path) -> int:
    """Judge the artifact on every cell of ``plan`` (runtime x batch); print one line per cell; exit code."""
    from .cache import Cache
    from .records import UNEXPECTED_STATUSES, RunOptions
    from .rules import apply_rule, matching_rules, pick_rule
    from .runner import Runner

    opts = RunOptions(out_dir=tmp, checkpoint=Path(args.checkpoint) if args.checkpoint else None, src=args.src,
                      bgr=args.bgr, progress=False)
    (tmp / "artifacts").mkdir(parents=True, exist_ok=True)
    runner = Runner(plan, opts, Cache())
    runner.load_user_pair()
    runner.prepare_weights()
    wid = runner.keys.weights_id[s["backbone"]]
    if meta is not None and not args.checkpoint and meta.get("weights") not in (None, wid):
        raise VerifyError(f"{path}: exported with weights {meta.get('weights')!r}, which are not the calibrated weights "
                          f"this harness makes ({wid!r}); give --checkpoint")
    print(f"verify {path} ({plan.cells[0].exporter}, {s['precision']}, backbone {s['backbone']}, mode {s['refine_mode']}, "
          f"crop {s['crop_method']}, replace {s['replace_method']}, sample_pixels {s['refine_sample_pixels']}, "
          f"threshold {s['refine_threshold']}; weights {wid}; metadata: {'yes' if meta else 'no'})")
    counts: Dict[str, int] = {}
    for cell in plan.cells:
        rec, contract = _judge_one(runner, cell, path, tmp)
        # the matrix's known-incompatibility rules, exactly as a cell is judged (xfail / xpass)
        judged = apply_rule(rec, pick_rule(rec, matching_rules(cell, plan.rules)))
        counts[judged["status"]] = counts.get(judged["status"], 0) + 1
        print(f"{judged['status']:<5} {cell.runtime} {cell.resolution[0]}x{cell.resolution[1]} b{cell.batch}: "
              f"{judged['reason']}")
        if contract:
            print(f"      input contract: {contract}")
    summary = ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))
    print(f"{counts.get('pass', 0)} of {len(plan.cells)} passed ({summary})")
    return 1 if any(k in UNEXPECTED_STATUSES for k in counts) else 0


def _judge_one(runner: Any, cell: Any, path: Path, tmp: Path) -> Tuple[Dict[str, Any], str]:
    """Load, run and judge the artifact for one cell: the raw record and the input contract ("" when not probed)."""
    from .parity import ShapeMismatch
    from .records import describe
    from .runner import positional_call
    from .models import owner
    from .runtimes import RUNTIMES

    rt = RUNTIMES[cell.runtime]()
    rec: Dict[str, Any] = {"status": "pass", "stage": "done", "reason": ""}
    stage, contract = "model", ""
    try:
        ref32 = runner.reference(cell, "fp32")
        ref_same = runner.reference(cell, cell.precision) if cell.precision != "fp32" else None
        stage = "load"
        rt.prepare(runner.cache, tmp)
        rt.load(str(path), runner.runtime_settings(cell))
        stage = "run"
        feeds = owner(cell).cast(runner.inputs_for(cell).feeds, cell.precision)
        src, bgr = feeds["src"], feeds["bgr"]
        outs = positional_call(rt)(src, bgr)
        rec["runtime_info"] = rt.info()
        stage = "parity"
        v = owner(cell).judge(outs, ref32, ref_same, runner.plan.tolerances[cell.precision], cell, runner.s)
        if not v.passed:
            rec.update(status="fail", stage="parity", reason=v.reason)
        else:
            rec["reason"] = v.record["parity_note"]
        contract = _contract(rt, src, bgr, outs)
    except ShapeMismatch as e:
        rec.update(status="fail", stage="parity", reason=f"ShapeMismatch: {e}")
    except Exception as e:  # noqa: BLE001 - a runtime that raises is a finding, reported per runtime
        rec.update(status="error", stage=stage, reason=describe(e))
    finally:
        rt.close()
    return rec, contract
