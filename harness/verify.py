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

from model.errors import ModelInputError

from .cache import Cache
from .config import DEFAULT_CONFIG, Cell, Plan, Settings, load_config
from .exporters import EXPORTERS, exporter_for_suffix, read_metadata
from .inputs import InputError
from .models import MODELS, default_model, owner
from .parity import ShapeMismatch
from .probes import record_fields, run_probes
from .runs import UNEXPECTED_STATUSES, RunOptions, describe
from .rules import apply_rule, matching_rules, pick_rule
from .runtimes import RUNTIMES
from .stages import positional_call

# what an artifact's metadata says beyond the model's own settings (harness/runner.py artifact_metadata)
META_KEYS = ("export_resolution", "opset", "exporter", "simplify", "precision")


def verifiable() -> List[str]:
    """The registered models whose artifacts verify can judge (their adapters implement the verify hooks)."""
    return [n for n, a in MODELS.items() if a.verifiable]


def formats() -> Dict[str, str]:
    """``{artifact suffix: format}`` from the exporter plug-ins (``.onnx``: onnx, ``.pt``: torchscript, ...)."""
    suffixes = {Path(cls.suffix).suffix for cls in EXPORTERS.values()}
    return {sfx: exporter_for_suffix(sfx).format for sfx in sorted(suffixes)}  # type: ignore[union-attr]


def default_exporter(fmt: str) -> str:
    """The exporter assumed for an artifact of format ``fmt`` without metadata (first by name)."""
    return next(name for name in sorted(EXPORTERS) if EXPORTERS[name].format == fmt)


class VerifyError(ValueError):
    """Bad input to ``verify`` (exit 2); the message names the file, flag or value."""


def add_parser(sub: Any) -> None:
    """Register the ``verify`` sub-command on an argparse sub-parser collection."""
    v = sub.add_parser("verify", help="judge one exported artifact against eager PyTorch on every installed runtime")
    v.add_argument("artifact", help="model.onnx / model.pt (TorchScript) / model.pt2 (AOTInductor) / model.pth (eager)")
    v.add_argument("--checkpoint", default=None, help="the model's state_dict (default: the calibrated weights in "
                   "the metadata)")
    v.add_argument("--src", default=None, help="your own source image (needs --bgr)")
    v.add_argument("--bgr", default=None, help="your own background image (needs --src)")
    v.add_argument("--model", choices=verifiable(), default=None,
                   help="the model the artifact was exported from (default: its metadata's, else "
                        f"{default_model()})")
    for name in verifiable():  # each model's own settings as flags
        MODELS[name].add_verify_arguments(v.add_argument_group(f"{MODELS[name].display_name} settings"))
    v.add_argument("--precision", choices=["fp32", "fp16"], default=None)
    v.add_argument("--runtime", action="append", default=None, help="only this runtime (repeatable)")
    v.add_argument("--resolution", default=None, metavar="HxW", help="validation size (default 288x512, "
                   "or 320x576 when the artifact was exported at 288x512)")


def _settings(args: argparse.Namespace, fmt: str, meta: Optional[Dict[str, Any]], a: Any) -> Dict[str, Any]:
    """Settings from the artifact's metadata, overridden by flags, completed with the model adapter's defaults
    (:meth:`harness.models.ModelAdapter.verify_settings`)."""
    found = dict(meta or {})
    s: Dict[str, Any] = {k: v for k, v in found.items() if k in META_KEYS}
    s.update(a.verify_settings(args, found))
    if args.precision is not None:
        s["precision"] = args.precision
    s.setdefault("exporter", default_exporter(fmt))
    if "precision" not in s:  # only an artifact without metadata or flag: read it from the graph's input
        s["precision"] = _detect_precision(args.artifact, fmt)
    return s


def _detect_precision(path: str, fmt: str) -> str:
    if fmt == "onnx":
        import onnx

        m = onnx.load(path, load_external_data=False)
        return "fp16" if m.graph.input and m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16 else "fp32"
    return "fp32"


def _resolution(args: argparse.Namespace, s: Dict[str, Any], multiple: int = 4) -> Tuple[int, int]:
    if args.resolution:
        try:
            h, w = (int(x) for x in args.resolution.lower().split("x"))
        except ValueError:
            raise VerifyError(f"--resolution {args.resolution!r}: expected HxW, e.g. 288x512") from None
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise VerifyError(f"--resolution {args.resolution!r}: H and W must be positive multiples of {multiple}")
        return h, w
    return (320, 576) if list(s.get("export_resolution") or []) == [288, 512] else (288, 512)


def _plan(a: Any, s: Dict[str, Any], meta: Optional[Dict[str, Any]], fmt: str, runtimes: List[str], res, batches):
    """A plan of one cell of model adapter ``a`` per runtime and batch, with matrix.yaml's settings (and the
    ones the artifact fixes), tolerances and rules."""
    cfg = load_config(DEFAULT_CONFIG)
    settings = Settings.model_validate({**cfg.settings.model_dump(), **a.verify_overrides(s),
                                        "seed": (meta or {}).get("seed", cfg.settings.seed)})
    samples = tuple((meta or {}).get("samples") or cfg.samples)
    exporter = s["exporter"] if s["exporter"] in EXPORTERS else default_exporter(fmt)
    cells = tuple(Cell(model=a.name, **a.verify_cell_fields(s), precision=s["precision"], exporter=exporter,
                       opset=s.get("opset") if EXPORTERS[exporter].opsets else None,
                       simplify=bool(s.get("simplify", False)), runtime=rt, resolution=tuple(res), batch=b)
                  for rt in runtimes for b in batches)
    return Plan("verify", settings, cells, dict(cfg.tolerances), tuple(cfg.rules), samples)


def run_verify(args: argparse.Namespace) -> int:
    """Entry point of ``python -m harness verify`` (see the module docstring for exit codes)."""
    try:
        return _verify(args)
    except (VerifyError, InputError, ModelInputError) as e:  # every model's CheckpointError/InputContractError
        print(f"error: {e}", file=sys.stderr)
        return 2


def _verify(args: argparse.Namespace) -> int:
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
    name = args.model or (meta or {}).get("model") or default_model()
    if name not in verifiable():
        raise VerifyError(f"{args.artifact!r}: exported from model {name!r}; verify judges artifacts of "
                          f"{', '.join(repr(n) for n in verifiable())} only: run that model's cells with "
                          f"`python -m harness run`")
    if args.model and meta is not None and meta.get("model") not in (None, args.model):
        raise VerifyError(f"--model {args.model!r}: the artifact's metadata says model {meta.get('model')!r}")
    assumed = MODELS[name]
    if fmt == "onnx":  # names first: a foreign graph is named before any flag is asked for
        _check_interface(args.artifact, assumed, assumed.input_names, assumed.output_names)
    s = _settings(args, fmt, meta, assumed)
    if args.runtime:
        names = list(args.runtime)
    runnable = [n for n in names if RUNTIMES[n].unavailable() is None]
    skipped = {n: RUNTIMES[n].unavailable() for n in names if n not in runnable}
    for n, why in skipped.items():
        print(f"skip  {n}: {why}")
    if not runnable:
        raise VerifyError(f"no installed runtime can load {args.artifact!r} (format {fmt}); tried {names}")
    res = _resolution(args, s, max(assumed.size_multiple, 1))
    plan = _plan(assumed, s, meta, fmt, runnable, res, (1, 2))
    if fmt == "onnx":  # then ranks, fixed sizes and dtypes against the inputs this plan feeds
        cell = plan.cells[0]
        ins, outs, _ = assumed.io(cell)
        feeds = assumed.cast(assumed.validation_inputs(tuple(res), 1, list(plan.samples)).feeds, cell.precision)
        _check_interface(args.artifact, assumed, ins, outs, feeds, where=f"{cell.precision}, {res[0]}x{res[1]}",
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
            f"{path!r} is not a {adapter.display_name} graph: it takes {_fmt_io(got_in) or 'no inputs'} and "
            f"gives {_fmt_io(got_out) or 'no outputs'}; a {adapter.display_name} artifact takes {want} and "
            f"gives {', '.join(outputs)} ({'; '.join(problems)})")


def _contract(rt: Any, a: Any, feeds: Dict[str, Any], outs: Any) -> str:
    """The artifact's input contract on this runtime (harness/probes.py), e.g. "size garbage · dtype
    refuses · channels refuses · range garbage"; information only, it never changes the verdict ("" for a
    model that declares no ``probe_inputs``)."""
    if not a.probe_inputs:
        return ""
    try:
        found = run_probes(positional_call(rt, a), *(feeds[n] for n in a.probe_inputs), outs)
    except Exception as e:  # noqa: BLE001
        return f"not probed: {describe(e)}"
    fields = record_fields(found)
    bad = [f"{r.probe}: {r.detail}" for r in found if r.outcome == "garbage"]
    return str(fields["input_contract"]) + ("".join(f"\n        {b}" for b in bad))


def _judge_all(args, path: Path, plan, meta, s, tmp: Path) -> int:
    """Judge the artifact on every cell of ``plan`` (runtime x batch); print one line per cell; exit code."""
    from .runner import Runner

    opts = RunOptions(out_dir=tmp, checkpoint=Path(args.checkpoint) if args.checkpoint else None, src=args.src,
                      bgr=args.bgr, progress=False)
    (tmp / "artifacts").mkdir(parents=True, exist_ok=True)
    runner = Runner(plan, opts, Cache())
    runner.load_user_pair()
    runner.prepare_weights()
    cell0 = plan.cells[0]
    wid = runner.keys.weights_of(cell0)
    if meta is not None and not args.checkpoint and meta.get("weights") not in (None, wid):
        raise VerifyError(f"{path}: exported with weights {meta.get('weights')!r}, which are not the calibrated weights "
                          f"this harness makes ({wid!r}); give --checkpoint")
    print(f"verify {path} ({cell0.exporter}, {s['precision']}, {owner(cell0).verify_describe(s)}; weights {wid}; "
          f"metadata: {'yes' if meta else 'no'})")
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
        a = owner(cell)
        feeds = a.cast(runner.inputs_for(cell).feeds, cell.precision)
        outs = a.run_candidate(rt, feeds, cell)
        rec["runtime_info"] = rt.info()
        stage = "parity"
        v = a.judge(outs, ref32, ref_same, runner.plan.tolerances[cell.precision], cell, runner.s)
        if not v.passed:
            rec.update(status="fail", stage="parity", reason=v.reason)
        else:
            rec["reason"] = v.record.get("parity_note", "")
        contract = _contract(rt, a, feeds, outs)
    except ShapeMismatch as e:
        rec.update(status="fail", stage="parity", reason=f"ShapeMismatch: {e}")
    except Exception as e:  # noqa: BLE001 - a runtime that raises is a finding, reported per runtime
        rec.update(status="error", stage=stage, reason=describe(e))
    finally:
        rt.close()
    return rec, contract
