"""Exporter plug-ins: eager model -> deployable artifact, one file per exporter in this package.

An exporter is a subclass of :class:`Exporter` decorated with :func:`register_exporter`; every module of
this package whose name does not start with ``_`` is imported when the package is, so adding an exporter
is adding a file (see docs/architecture.md). The class *declares* what the core needs to know without
running it (torch-free, so the coordinator can compute cache keys without importing torch):

- ``name`` (the ``exporter`` axis value), ``format`` (what runtimes consume: runtimes declare the same
  string), ``suffix`` (artifact file name);
- ``bakes`` / ``settable`` / ``ignores``: how every model-relevant field relates to the file
  (:mod:`harness.targets`; the cache key holds exactly the baked fields);
- ``packages``: distributions whose versions change the artifact (part of its key);
- ``opsets`` (None: the exporter has no opset axis), ``simplifiable`` (the ``simplify`` axis applies),
  ``example_batch`` (batch of the example inputs it traces with).

and implements :meth:`Exporter.export` (plus :meth:`Exporter.check` / :meth:`Exporter.simplify` where the
format has them) and the two metadata hooks that let ``python -m harness verify`` judge an artifact
without flags. Heavy imports (torch, onnx, onnxsim, executorch) happen inside the methods.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import os
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Optional, Tuple, Type

from ..models import MODELS, adapter, default_model
from ..targets import ExporterSpec

META_KEY = "matting_export_matrix"  # ONNX metadata_props key / TorchScript extra file / .pt2 archive entry


class StageError(RuntimeError):
    """A stage failed for a reason worth stating in words (the message is shown in the report)."""


@dataclass
class Artifact:
    """An exported file. ``seconds`` is the export wall time, ``size_mib`` the file size in MiB; ``meta`` holds
    facts about it (``opset``, ``nodes_before``/``nodes_after``) and, under ``"record"``, fields the plug-in
    wants in the cell's record (``compile_s``, ``delegated_ops``...)."""

    path: Path
    format: str
    exporter: str
    seconds: float
    meta: Dict[str, object] = field(default_factory=dict)

    @property
    def size_mib(self) -> float:
        return os.path.getsize(self.path) / 2**20


@dataclass
class ExportRequest:
    """What the core hands an exporter for one artifact.

    ``model``: the eager module, already in the cell's precision and ``eval()`` mode; ``example``: the
    positional example inputs in the model's dtype (``(src, bgr)`` of shape ``(example_batch, 3, H, W)``
    at ``settings.export_resolution`` for BGMv2); ``input_names``/``output_names``/``dynamic_axes``: the
    model adapter's I/O contract; ``opset``: the cell's opset (None where the exporter has none);
    ``model_name``: the model adapter (:mod:`harness.models`); ``model_kwargs``: the constructor arguments (for
    exporters that store them); ``meta``: what the artifact should carry about itself
    (:meth:`Exporter.write_metadata`); :meth:`shapes`: the inputs' ``torch.export`` dynamic shapes."""

    model: Any
    path: Path
    example: Tuple[Any, ...]
    input_names: Tuple[str, ...]
    output_names: Tuple[str, ...]
    dynamic_axes: Dict[str, Dict[int, str]]
    opset: Optional[int] = None
    precision: str = "fp32"
    model_name: str = ""  # "" : the default model (harness.models.default_model)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)
    # the model adapter's torch.export dynamic shapes (:meth:`harness.models.ModelAdapter.dynamic_shapes`)
    dynamic_shapes: Optional[Callable[..., Dict[str, Any]]] = None

    def shapes(self, max_batch: int = 64, max_hw: Tuple[int, int] = (8192, 8192)) -> Dict[str, Any]:
        """``torch.export`` dynamic shapes of the inputs: the adapter's, else :func:`export_dynamic_shapes`."""
        if self.dynamic_shapes is not None:
            return self.dynamic_shapes(max_batch=max_batch, max_hw=max_hw)
        return export_dynamic_shapes(tuple(self.input_names), max_batch, max_hw)


class Exporter:
    """Base class of the exporter plug-ins (see the module docstring for the declared attributes)."""

    name: ClassVar[str] = ""
    format: ClassVar[str] = ""
    suffix: ClassVar[str] = ""
    bakes: ClassVar[Tuple[str, ...]] = ()
    settable: ClassVar[Tuple[str, ...]] = ()
    ignores: ClassVar[Tuple[str, ...]] = ()
    packages: ClassVar[Tuple[str, ...]] = ()
    opsets: ClassVar[Optional[Tuple[int, ...]]] = None
    simplifiable: ClassVar[bool] = False
    example_batch: ClassVar[int] = 1
    # record fields the plug-in reports under Artifact.meta["record"] ({name: type}, harness/record.py)
    record_fields: ClassVar[Dict[str, Any]] = {}
    # the model adapters this exporter can export (None: any); cells of other models are not made
    models: ClassVar[Optional[Tuple[str, ...]]] = None

    @classmethod
    def spec(cls) -> ExporterSpec:
        """The torch-free declaration the cache keys are derived from (:mod:`harness.targets`)."""
        return ExporterSpec(cls.name, cls.format, cls.bakes, cls.settable, cls.ignores, cls.packages, cls.suffix)

    @classmethod
    def unavailable(cls, simplify: bool = False) -> Optional[str]:
        """None when this exporter (and, with ``simplify``, its simplifier) can run here, else the reason
        shown as ``skipped: <reason>``. Default: always available."""
        return None

    def export(self, req: ExportRequest) -> Artifact:
        """Write the artifact to ``req.path`` and return it. Raises whatever the tool raises (the core
        records it as the ``export`` stage's error) or :class:`StageError` with the cause in words."""
        raise NotImplementedError

    def check(self, path: Path) -> Optional[float]:
        """Validate a written artifact (stage ``check``); seconds taken, or None when the format has no
        checker. Raises the checker's error for an invalid file."""
        return None

    def simplify(self, art: Artifact, path: Path) -> Artifact:
        """Write a simplified copy of ``art`` to ``path`` (only called when :attr:`simplifiable`)."""
        raise NotImplementedError(f"exporter {self.name!r} has no simplifier")

    def write_metadata(self, path: Path, meta: Dict[str, Any]) -> None:
        """Store ``meta`` inside the artifact (default: nothing; verify then needs flags)."""

    @classmethod
    def read_metadata(cls, path: Path) -> Optional[Dict[str, Any]]:
        """What :meth:`write_metadata` stored (None when the artifact has none)."""
        return None


EXPORTERS: Dict[str, Type[Exporter]] = {}


def register_exporter(cls: Type[Exporter]) -> Type[Exporter]:
    """Class decorator: add an exporter plug-in to :data:`EXPORTERS` under ``cls.name``.

    Raises:
        ValueError: the name is empty or already taken, or the declaration classifies a field twice or
            not at all (:meth:`harness.targets.ExporterSpec.classification`)."""
    if not cls.name or not cls.format or not cls.suffix:
        raise ValueError(f"exporter class {cls.__name__} must set name, format and suffix")
    if cls.name in EXPORTERS and EXPORTERS[cls.name] is not cls:
        raise ValueError(f"exporter name {cls.name!r} is registered twice ({EXPORTERS[cls.name].__name__}, {cls.__name__})")
    cls.spec().classification()
    EXPORTERS[cls.name] = cls
    return cls


def export_model(name: str, model: Any, path: Path, example: Tuple[Any, ...], opset: Optional[int] = None,
                 meta: Optional[Dict[str, Any]] = None, model_name: Optional[str] = None) -> Artifact:
    """Export ``model`` (eval, in its precision) of the adapter ``model_name`` (None: the default model,
    :func:`harness.models.default_model`) with exporter ``name`` outside a matrix run (tests, the
    per-process baseline): ``example`` holds the positional inputs in the adapter's ``input_names`` order;
    the adapter's declared I/O names and ONNX dynamic axes.

    Raises:
        KeyError: an unknown exporter or model name (names the registered ones); whatever the exporter raises."""
    if name not in EXPORTERS:
        raise KeyError(f"unknown exporter {name!r}; expected one of {sorted(EXPORTERS)}")
    a = adapter(model_name)
    req = ExportRequest(model=model, path=Path(path), example=tuple(example), input_names=tuple(a.input_names),
                        output_names=tuple(a.output_names), dynamic_axes=dict(a.dynamic_axes), opset=opset,
                        model_name=a.name, meta=dict(meta or {}))
    return EXPORTERS[name]().export(req)


def specs() -> Dict[str, ExporterSpec]:
    """``{exporter name: ExporterSpec}`` of every registered exporter."""
    return {name: cls.spec() for name, cls in EXPORTERS.items()}


def exporter_for_suffix(suffix: str) -> Optional[Type[Exporter]]:
    """The first registered exporter (in name order) whose artifact file has ``suffix`` (``.onnx``)."""
    for name in sorted(EXPORTERS):
        if Path(EXPORTERS[name].suffix).suffix == suffix.lower():
            return EXPORTERS[name]
    return None


def read_metadata(path: Path) -> Optional[Dict[str, Any]]:
    """The settings the harness stored in an artifact (None for one without them, e.g. from the official
    export script); the reader is chosen by the file's suffix.

    Raises:
        ValueError: an unknown suffix (names the known ones), or a file that is not an artifact of its
            suffix's format.
    """
    path = Path(path)
    cls = exporter_for_suffix(path.suffix)
    if cls is None:
        known = sorted({Path(c.suffix).suffix for c in EXPORTERS.values()})
        raise ValueError(f"{path}: unknown artifact type {path.suffix!r}; expected one of {known}")
    try:
        return cls.read_metadata(path)
    except Exception as e:  # noqa: BLE001 - every parse error means "not an artifact of this format"
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise ValueError(f"{path}: not a readable {path.suffix} artifact ({type(e).__name__}: {first})") from None


# ------------------------------------------------------------------------------ helpers for plug-ins
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


def eval_all(module: Any) -> Any:
    """``module.eval()`` and ``training = False`` on every submodule (the legacy exporter can leave
    modules in train mode, and BatchNorm statistics then drift silently)."""
    module.eval()
    for m in module.modules():
        m.training = False
    return module


def quiet_export(path: Path, fn: Callable[[], Any], suffix: str = ".export.log") -> Any:
    """Call ``fn`` with warnings silenced and fd 1/2 captured in ``path.with_suffix(suffix)``."""
    import warnings

    with warnings.catch_warnings(), captured_output(Path(path).with_suffix(suffix)):
        warnings.simplefilter("ignore")
        return fn()


def export_dynamic_shapes(names: Tuple[str, ...] = ("src", "bgr"), max_batch: int = 64,
                          max_hw: Tuple[int, int] = (8192, 8192)) -> Dict[str, Dict[int, object]]:
    """torch.export dynamic shapes for image inputs ``names``: batch 1..``max_batch``, H and W multiples of 4
    from 32 up to ``max_hw`` (default 64 and 8192 x 8192)."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=max_batch)
    h4 = torch.export.Dim("height_div4", min=8, max=max_hw[0] // 4)
    w4 = torch.export.Dim("width_div4", min=8, max=max_hw[1] // 4)
    return {n: {0: batch, 2: 4 * h4, 3: 4 * w4} for n in names}


def export_cause(exc: BaseException, model_name: Optional[str] = None) -> str:
    """The informative part of a torch.export-based failure: the data-dependent guard (or other root
    error), the model adapter's explanation of it (its ``export_hints``) and the first frame in our model
    code, instead of a wrapper's "step 1/3" banner."""
    import re

    text = "\n".join(str(e) for e in _chain(exc))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    cause = next((ln for ln in lines if "GuardOnDataDependentSymNode" in ln or "Could not guard on data-dependent" in ln),
                 None) or next((ln for ln in lines if re.search(r"(Unsupported|ConstraintViolation|not supported|"
                                                                 r"No decomposition|DispatchError)", ln)), None)
    frame = next((ln for ln in lines if re.search(r"model/\w+/\w+\.py", ln)), None)
    if cause is None:
        return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"
    cause = re.sub(r"^<class '([\w.]+)'>: ", lambda m: m.group(1).split(".")[-1] + ": ", cause)[:300]
    hints = getattr(MODELS.get(model_name or default_model()), "export_hints", {}) or {}
    hint = next((f" — {text}" for pattern, text in hints.items() if re.search(pattern, cause)), "")
    return f"{cause}{hint}" + (f" (at {frame[:160]})" if frame else "")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def zip_extra_metadata(path: Path, meta: Dict[str, Any]) -> None:
    """Append ``<root>/extra/META_KEY.json`` to a zip-based artifact (``.pt2``); the stored weights keep their
    alignment and the last entry wins. Rewrites the file (a new inode: hard links into the cache stay intact)."""
    import json
    import shutil
    import warnings
    import zipfile

    blob = json.dumps(meta, sort_keys=True, default=str)
    with zipfile.ZipFile(path) as z:
        root = z.namelist()[0].split("/", 1)[0]
        entry = f"{root}/extra/{META_KEY}.json"
        if entry in z.namelist() and z.read(entry).decode() == blob:
            return
    tmp = Path(path).with_name(Path(path).name + ".meta-tmp")
    shutil.copyfile(path, tmp)
    with warnings.catch_warnings(), zipfile.ZipFile(tmp, "a") as z:
        warnings.simplefilter("ignore")
        z.writestr(entry, blob)
    os.replace(tmp, path)


def zip_read_metadata(path: Path) -> Optional[Dict[str, Any]]:
    """The ``extra/META_KEY.json`` entry of a zip-based artifact (TorchScript ``.pt``, ``.pt2``), or None."""
    import json
    import zipfile

    with zipfile.ZipFile(path) as z:
        name = next((n for n in reversed(z.namelist()) if n.endswith(f"/extra/{META_KEY}.json")), None)
        return json.loads(z.read(name)) if name else None


@functools.lru_cache(maxsize=None)
def module_version(name: str) -> Optional[str]:
    """Version of an importable optional tool (``onnx``, ``onnxsim``, ``executorch``...), ``"unknown"`` when it
    has none, None when importing it fails for any reason (once per process)."""
    try:
        mod = importlib.import_module(name)
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return None
    return str(getattr(mod, "__version__", "unknown"))


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_discover()
