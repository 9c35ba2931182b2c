"""Exporters: eager ``MattingRefine`` -> deployable artifact (TorchScript ``.pt``, ONNX ``.onnx``).

Each exporter is a small function registered in :data:`EXPORTERS`; optional dependencies (onnx,
onnxsim) are imported lazily so TorchScript-only runs work without them. Every artifact records the
exporter's name, e.g. ``onnx-legacy`` for ``torch.onnx.export(..., dynamo=False)``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from model import MattingRefine, MattingRefineTorchScript

INPUT_NAMES = ["src", "bgr"]
OUTPUT_NAMES = ["pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm"]
# Unique dim names per tensor size class (shared names across tensors of different size break
# TensorRT profiles and ORT's shape checks: field-notes T3, RVM #238).
DYNAMIC_AXES = {
    "src": {0: "batch", 2: "height", 3: "width"},
    "bgr": {0: "batch", 2: "height", 3: "width"},
    "pha": {0: "batch", 2: "height", 3: "width"},
    "fgr": {0: "batch", 2: "height", 3: "width"},
    "pha_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "fgr_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "err_sm": {0: "batch", 2: "coarse_height", 3: "coarse_width"},
    "ref_sm": {0: "batch", 2: "quarter_height", 3: "quarter_width"},
}


class StageError(RuntimeError):
    """A stage failed for a reason worth stating in words (the message is shown in the report)."""


@dataclass
class Artifact:
    """An exported file. ``seconds`` is the export wall time, ``size_mib`` the file size in MiB."""

    path: Path
    format: str  # "torchscript" | "onnx"
    exporter: str
    seconds: float
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def size_mib(self) -> float:
        return os.path.getsize(self.path) / 2**20


@contextlib.contextmanager
def captured_output(log_path: Path):
    """Send everything written to fd 1 and fd 2 (Python *and* C++ prints, e.g. the legacy exporter's
    multi-page "Torch IR graph at exception" dump) to ``log_path`` while the block runs."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "ab") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()) as py_out:
                yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            log.write(py_out.getvalue().encode())


def _eval_all(module: torch.nn.Module) -> torch.nn.Module:
    module.eval()
    for m in module.modules():
        m.training = False
    return module


def export_torchscript(model: MattingRefine, path: Path, meta: Optional[Dict[str, object]] = None) -> Artifact:
    """Script :class:`MattingRefineTorchScript` around ``model`` (already in its precision) and save.

    The hoisted settings (``backbone_scale``, ``refine_mode``, ``refine_sample_pixels``,
    ``refine_threshold``, ``refine_prevent_oversampling``) stay changeable after loading.
    """
    t0 = time.perf_counter()
    wrapper = _eval_all(MattingRefineTorchScript(_eval_all(model)))
    for p in wrapper.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script deprecation notice
        scripted = torch.jit.script(wrapper)
    extra = {}
    if meta is not None:
        import json

        extra[f"{META_KEY}.json"] = json.dumps(meta, sort_keys=True, default=str)
    scripted.save(str(path), _extra_files=extra)
    _eval_all(model)
    return Artifact(Path(path), "torchscript", "torchscript", time.perf_counter() - t0)


def export_eager(model: MattingRefine, path: Path, kwargs: Dict[str, object], precision: str) -> Artifact:
    """"Export" for the eager runtimes: the state_dict (``path``, loaded back with ``weights_only``)
    and ``path.with_suffix('.json')`` holding the constructor arguments and precision."""
    import json

    t0 = time.perf_counter()
    torch.save(model.state_dict(), str(path))
    Path(path).with_suffix(".json").write_text(json.dumps({"kwargs": kwargs, "precision": precision}))
    return Artifact(Path(path), "eager", "eager", time.perf_counter() - t0)


def export_onnx_legacy(
    model: MattingRefine, path: Path, example: Tuple[Tensor, Tensor], opset: int
) -> Artifact:
    """``torch.onnx.export(dynamo=False)`` (the TorchScript-tracing exporter) with dynamic batch/H/W.

    ``example`` is ``(src, bgr)`` in the model's dtype. The traced graph bakes the refine mode and,
    in sampling mode, ``k = refine_sample_pixels // 16`` for TopK.

    Raises:
        StageError: the exporter raised; the message keeps its first line.
    """
    _eval_all(model)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), captured_output(Path(path).with_suffix(".export.log")):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                example,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=INPUT_NAMES,
                output_names=OUTPUT_NAMES,
                dynamic_axes=DYNAMIC_AXES,
                do_constant_folding=True,
            )
    finally:
        _eval_all(model)  # the legacy exporter can leave modules in train mode
    return Artifact(Path(path), "onnx", "onnx-legacy", time.perf_counter() - t0, {"opset": opset})


def _dynamo_cause(exc: BaseException) -> str:
    """The informative part of a ``dynamo=True`` export failure: the data-dependent guard (or other
    root error) and the first frame in our model code, instead of the wrapper's "step 1/3" banner."""
    import re

    text = "\n".join(str(e) for e in _chain(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = next((ln for ln in lines if "GuardOnDataDependentSymNode" in ln or "Could not guard on data-dependent" in ln),
                 None) or next((ln for ln in lines if re.search(r"(Unsupported|ConstraintViolation|not supported|"
                                                                 r"No decomposition|DispatchError)", ln)), None)
    frame = next((ln for ln in lines if re.search(r"model/(refiner|matting|decoder|backbones)\.py", ln)), None)
    if cause is None:
        return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
    cause = re.sub(r"^<class '([\w.]+)'>: ", lambda m: m.group(1).split(".")[-1] + ": ", cause)[:300]
    hint = ""
    if "data-dependent" in cause:
        hint = (" — the refiner's patch count comes from nonzero() on the error map, so its size is data-dependent;"
                " full refine mode exports")
    return f"{cause}{hint}" + (f" (at {frame[:160]})" if frame else "")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _export_dynamic_shapes() -> Dict[str, Dict[int, object]]:
    """torch.export dynamic shapes for ``(src, bgr)``: batch 1..64, H and W multiples of 4 up to 8192."""
    batch = torch.export.Dim("batch", min=1, max=64)
    h4 = torch.export.Dim("height_div4", min=8, max=2048)
    w4 = torch.export.Dim("width_div4", min=8, max=2048)
    return {"src": {0: batch, 2: 4 * h4, 3: 4 * w4}, "bgr": {0: batch, 2: 4 * h4, 3: 4 * w4}}


def export_onnx_dynamo(
    model: MattingRefine, path: Path, example: Tuple[Tensor, Tensor], opset: int
) -> Artifact:
    """``torch.onnx.export(dynamo=True)`` (torch.export + onnxscript) with dynamic batch and H, W as
    multiples of 4. The exporter starts at opset 18 and converts lower requests down.

    Raises:
        StageError: the export failed; the message names the root cause (e.g. the data-dependent guard
            on the refiner's patch count), see :func:`_dynamo_cause`.
    """
    _eval_all(model)
    shapes = _export_dynamic_shapes()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), captured_output(Path(path).with_suffix(".export.log")):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, example, str(path), dynamo=True, opset_version=opset, input_names=INPUT_NAMES,
                              output_names=OUTPUT_NAMES, dynamic_shapes=shapes, external_data=False,
                              verbose=False)
    except Exception as e:  # noqa: BLE001 - re-raised with its cause in words
        raise StageError(_dynamo_cause(e)) from None
    finally:
        _eval_all(model)
    return Artifact(Path(path), "onnx", "onnx-dynamo", time.perf_counter() - t0, {"opset": opset})


def export_aoti(model: MattingRefine, path: Path, example: Tuple[Tensor, Tensor]) -> Artifact:
    """``torch.export`` + AOTInductor: compile ``model`` to a ``.pt2`` package (a shared library plus
    weights) that runs without Python's torch frontend; dynamic batch and H, W as multiples of 4.

    ``example`` should have batch >= 2 (batch 1 would be specialised to a constant). ``meta`` records
    ``torch_export_s`` and ``compile_s`` (the C++ compile, typically minutes on CPU).

    Raises:
        StageError: torch.export or the compile failed; the message names the root cause.
    """
    _eval_all(model)
    shapes = _export_dynamic_shapes()
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings(), captured_output(Path(path).with_suffix(".export.log")), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.export.export(model, example, dynamic_shapes=shapes)
            t1 = time.perf_counter()
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    except Exception as e:  # noqa: BLE001 - re-raised with its cause in words
        raise StageError(_dynamo_cause(e)) from None
    finally:
        _eval_all(model)
    t2 = time.perf_counter()
    return Artifact(Path(path), "aoti", "aoti", t2 - t0, {"torch_export_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3)})


def check_onnx(path: Path) -> float:
    """Run ``onnx.checker.check_model(full_check=True)`` (includes strict shape inference).

    Returns the seconds taken. Raises ``onnx.checker.ValidationError`` or
    ``onnx.shape_inference.InferenceError`` on an invalid model.
    """
    import onnx

    t0 = time.perf_counter()
    onnx.checker.check_model(str(path), full_check=True)
    return time.perf_counter() - t0


def simplify_onnx(src: Artifact, path: Path) -> Artifact:
    """Simplify an ONNX artifact with onnxsim (dynamic shapes kept), checking its own result.

    Raises:
        StageError: onnxsim reports that the simplified model failed its check.
    """
    import onnx
    import onnxsim

    t0 = time.perf_counter()
    model = onnx.load(str(src.path))
    with captured_output(Path(path).with_suffix(".simplify.log")):
        simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise StageError("onnxsim: simplified model failed onnxsim's own output check")
    onnx.save(simplified, str(path))
    meta = dict(src.meta, nodes_before=len(model.graph.node), nodes_after=len(simplified.graph.node))
    return Artifact(Path(path), "onnx", src.exporter + "+onnxsim", time.perf_counter() - t0, meta)


@functools.lru_cache(maxsize=None)
def onnx_versions() -> Dict[str, Optional[str]]:
    """Versions of the optional ONNX tool chain (None when not installed); computed once."""
    out: Dict[str, Optional[str]] = {}
    for name in ("onnx", "onnxruntime", "onnxsim", "onnxscript"):
        try:
            mod = __import__(name)
            out[name] = getattr(mod, "__version__", "unknown")
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            out[name] = None
    return out


EXPORTERS: Dict[str, Callable[..., Artifact]] = {
    "eager": export_eager,
    "torchscript": export_torchscript,
    "onnx": export_onnx_legacy,
    "onnx-dynamo": export_onnx_dynamo,
    "aoti": export_aoti,
}


META_KEY = "matting_export_matrix"  # ONNX metadata_props key / TorchScript extra file / .pt2 archive entry


def write_metadata(path: Path, fmt: str, meta: Dict[str, object]) -> None:
    """Store the settings an artifact was exported with inside it, so ``python -m harness verify`` needs
    no flags: ONNX ``metadata_props[META_KEY]`` (JSON), TorchScript extra file ``META_KEY.json`` (written at
    save time by :func:`export_torchscript`), ``.pt2`` archive entry ``<root>/extra/META_KEY.json``, eager
    ``model.json`` key ``meta``. Rewrites the file (a new inode, so hard links into the cache stay intact)."""
    import json

    blob = json.dumps(meta, sort_keys=True, default=str)
    path = Path(path)
    if fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        kept = [p for p in model.metadata_props if p.key != META_KEY]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        model.metadata_props.add(key=META_KEY, value=blob)
        tmp = path.with_name(path.name + ".meta-tmp")
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    elif fmt == "aoti":
        import shutil
        import zipfile

        with zipfile.ZipFile(path) as z:
            root = z.namelist()[0].split("/", 1)[0]
            entry = f"{root}/extra/{META_KEY}.json"
            if entry in z.namelist() and z.read(entry).decode() == blob:
                return
        tmp = path.with_name(path.name + ".meta-tmp")
        shutil.copyfile(path, tmp)
        with warnings.catch_warnings(), zipfile.ZipFile(tmp, "a") as z:  # appended: the stored weights keep
            warnings.simplefilter("ignore")                             # their alignment; the last entry wins
            z.writestr(entry, blob)
        os.replace(tmp, path)
    elif fmt == "eager":
        side = path.with_suffix(".json")
        spec = json.loads(side.read_text())
        spec["meta"] = meta
        side.write_text(json.dumps(spec))
    elif fmt != "torchscript":
        raise ValueError(f"unknown artifact format {fmt!r}")


def read_metadata(path: Path) -> Optional[Dict[str, object]]:
    """The settings stored by :func:`write_metadata` (None for an artifact without them, e.g. from the
    official export script). The format is chosen by suffix: .onnx, .pt, .pt2, .pth (eager).

    Raises:
        ValueError: an unknown suffix, or a file that is not an artifact of its suffix's format.
    """
    import json
    import zipfile

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            return json.loads(props[META_KEY]) if META_KEY in props else None
        if suffix in (".pt", ".pt2"):  # both are zip archives with <root>/extra/<name> (no model load needed)
            with zipfile.ZipFile(path) as z:
                name = next((n for n in reversed(z.namelist()) if n.endswith(f"/extra/{META_KEY}.json")), None)
                return json.loads(z.read(name)) if name else None
        if suffix == ".pth":
            side = path.with_suffix(".json")
            return json.loads(side.read_text()).get("meta") if side.is_file() else None
    except (OSError, ValueError, KeyError, RuntimeError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable {suffix} artifact ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None
    except Exception as e:  # noqa: BLE001 - onnx/zip parse errors have their own classes
        raise ValueError(f"{path}: not a readable {suffix} artifact ({type(e).__name__})") from None
    raise ValueError(f"{path}: unknown artifact type {suffix!r}; expected .onnx (ONNX), .pt (TorchScript), "
                     f".pt2 (AOTInductor) or .pth (eager state_dict with model.json)")
