"""Model adapters: what the harness needs to know about each model family, one module per model.

An adapter (:class:`ModelAdapter`) declares the model's own axes and settings (pydantic models whose
fields join ``matrix.yaml``'s ``axes:`` and ``settings:``), names the model's inputs and outputs and their
ONNX dynamic axes, expands its axes into cells and names them, builds the eager module for a cell, wraps it
for TorchScript, provides weights and validation feeds, and says how a candidate is judged where the
model needs more than elementwise closeness (BGMv2's selection-aware near-tie judge). Exporters and
runtimes only see names and modules, so a second model (RobustVideoMatting, issue 11) is a new adapter
plus ``model/<name>/``. See docs/architecture.md. This package imports neither torch nor the models.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Type

from pydantic import BaseModel

from model.errors import CheckpointError

from ..values import as_list
from ..verdict import elementwise_fields, elementwise_verdict


@dataclass
class Inputs:
    """Validation inputs of one (resolution, batch): the sample name of each batch item, the named feeds in
    float32 (``{input name: tensor}``; the adapter's :meth:`ModelAdapter.cast` makes them the cell's
    precision) and, for zero-padded user images (``--pad``), the real ``(H, W)`` the outputs are judged in."""

    names: List[str]
    feeds: Dict[str, Any]
    crop_to: Optional[Tuple[int, int]] = None


class ModelAdapter:
    """Base of the model adapters (class attributes; methods are overridden per model).

    ``axes``: a pydantic model whose fields are the model's axes (each a list of values, as in
    ``matrix.yaml``); ``settings``: a pydantic model of the model's settings (each with a default);
    ``hoisted``: settings and axes a TorchScript artifact keeps settable after loading (set with
    ``setattr`` on the loaded module, so one file serves every value); ``code_dir``: the model's source
    folder and adapter file (their hash enters the model's cache keys, so editing one model re-runs only its
    cells); ``calibration_recipe``: how the seeded weights are made (``environment.json``)."""

    name: str = ""
    label: str = ""  # how messages name the model family (e.g. "BGMv2"; default: name)
    input_names: Tuple[str, ...] = ()
    output_names: Tuple[str, ...] = ()
    dynamic_axes: Dict[str, Dict[int, str]] = {}
    axes: Type[BaseModel] = BaseModel
    settings: Type[BaseModel] = BaseModel
    hoisted: Tuple[str, ...] = ()
    code_dir: Tuple[str, ...] = ("model",)
    calibration_recipe: str = ""
    # every H and W (validation resolutions, export_resolution) must be a multiple of this (BGMv2: 4)
    size_multiple: int = 1
    # the model of a cell or record without a ``model`` field (matrix files and results.jsonl written before
    # the harness knew a second model): exactly one registered adapter sets it (:func:`default_model`)
    default: bool = False
    # the TorchScript artifact's forward() takes and returns tensors only (the C++ libtorch runner can run it)
    torchscript_tensor_io: bool = False

    @property
    def display_name(self) -> str:
        """How messages name the model family: :attr:`label`, else :attr:`name`."""
        return self.label or self.name

    # ------------------------------------------------------------------ schema and cells (torch-free)
    def axis_names(self) -> Tuple[str, ...]:
        """The model's own axes, in cell-id order."""
        return tuple(self.axes.model_fields)

    def setting_names(self) -> Tuple[str, ...]:
        """The model's own settings."""
        return tuple(self.settings.model_fields)

    def combinations(self, axes: Dict[str, List[Any]]) -> Iterator[Dict[str, Any]]:
        """The model's axis values to cross with the common axes: ``{axis: value}`` per combination, without
        meaningless ones (default: the full cross product of :meth:`axis_names`)."""
        names = self.axis_names()
        for values in itertools.product(*(axes[n] for n in names)):
            yield dict(zip(names, values))

    def allows(self, knobs: Dict[str, Any], exporter: str, runtime: str) -> bool:
        """False for a combination of the model's values with an exporter/runtime that means nothing."""
        return True

    @staticmethod
    def common_id(cell: Any) -> str:
        """The common axes' part of a cell id, e.g. ``onnx-sim-op17-fp16-onnxruntime-cpu-288x512-b1-tf32``."""
        h, w = cell.resolution
        exp = cell.exporter + ("-sim" if cell.simplify else "")
        op = f"-op{cell.opset}" if cell.opset is not None else ""
        return f"{exp}{op}-{cell.precision}-{cell.runtime}-{h}x{w}-b{cell.batch}" + ("-tf32" if cell.tf32 else "")

    def cell_id(self, cell: Any) -> str:
        """The cell's stable id (the caller sanitises it): the model, its axis values, then :meth:`common_id`."""
        own = "-".join(str(getattr(cell, n)) for n in self.axis_names())
        return f"{self.name}-{own}-{self.common_id(cell)}"

    def check_profile(self, settings: Dict[str, Any], axes: Dict[str, Any], where: str) -> None:
        """Cross-checks of a profile's resolved settings and axes; raises ValueError starting with ``where``."""

    def record_settings(self) -> Tuple[str, ...]:
        """The settings every record of this model carries (default: all of them)."""
        return self.setting_names()

    def axis_fields(self) -> Dict[str, Any]:
        """``{axis: type of one value}`` of the model's axes for the typed record (:mod:`harness.record`);
        a ``List[Literal[...]]`` axis holds strings (``n/a`` included), ``List[bool]`` booleans."""
        import typing

        out: Dict[str, Any] = {}
        for n, f in self.axes.model_fields.items():
            (item,) = typing.get_args(f.annotation) or (str,)
            if typing.get_origin(item) is typing.Annotated:  # e.g. Annotated[float, Field(gt=0)]
                item = typing.get_args(item)[0]
            if typing.get_origin(item) is typing.Literal:
                kinds = {type(v) for v in typing.get_args(item)}
                item = kinds.pop() if len(kinds) == 1 else Any
            out[n] = item if item in (bool, int, float) else str
        return out

    def settings_fields(self) -> Dict[str, Any]:
        """``{name: type}`` of :meth:`record_settings` for the typed record (:mod:`harness.record`)."""
        return {n: self.settings.model_fields[n].annotation for n in self.record_settings()}

    def record_fields(self) -> Dict[str, Any]:
        """The fields this model's judge (and model-specific checks) write (``{name: type}``); default: those
        of the elementwise judge (:func:`harness.verdict.elementwise_fields`)."""
        return elementwise_fields(self.output_names)

    # ------------------------------------------------------------------ weights and keys (torch-free)
    def weights_group(self, cell: Any) -> str:
        """Cells of one group share one set of weights (BGMv2: the backbone)."""
        return self.name

    def model_parts(self, cell: Any, s: Any, precision: str) -> Dict[str, Any]:
        """What the eager model of ``cell`` in ``precision`` depends on besides weights and code (cache keys)."""
        return {"precision": precision, **{n: getattr(cell, n) for n in self.axis_names()},
                **{n: getattr(s, n) for n in self.setting_names()}}

    def calibration_parts(self, group: str, s: Any) -> Dict[str, Any]:
        """What calibrated weights of ``group`` depend on besides the seed, samples and code."""
        return {}

    # ------------------------------------------------------------------ I/O of a cell
    def io(self, cell: Any) -> Tuple[Tuple[str, ...], Tuple[str, ...], Dict[str, Dict[int, str]]]:
        """``(input names, output names, ONNX dynamic axes)`` of the cell's artifact (default: the class
        attributes; a model whose export options change its inputs, e.g. a baked scalar input, overrides it)."""
        return self.input_names, self.output_names, self.dynamic_axes

    def dynamic_shapes(self, cell: Any, max_batch: int = 64, max_hw: Tuple[int, int] = (8192, 8192)) -> Dict[str, Any]:
        """``torch.export`` dynamic shapes of the cell's inputs (default: every input ``(B, C, H, W)`` with
        batch 1..``max_batch`` and H, W multiples of :attr:`size_multiple` from 32 up to ``max_hw``)."""
        import torch

        m = max(self.size_multiple, 1)
        batch = torch.export.Dim("batch", min=1, max=max_batch)
        hd = torch.export.Dim(f"height_div{m}", min=max(32 // m, 2), max=max_hw[0] // m)
        wd = torch.export.Dim(f"width_div{m}", min=max(32 // m, 2), max=max_hw[1] // m)
        return {n: {0: batch, 2: m * hd if m > 1 else hd, 3: m * wd if m > 1 else wd} for n in self.io(cell)[0]}

    def single_call(self, feeds: Dict[str, Any], cell: Any) -> Dict[str, Any]:
        """The named feeds of one call of the artifact, from the cell's validation ``feeds`` (in its precision):
        what latency is measured on and the graph analysis observes (default: ``feeds``; a recurrent model
        returns its first frame with its initial states)."""
        return feeds

    def single_outputs(self, outs: List[Any], cell: Any) -> List[Any]:
        """The outputs of that one call from :meth:`run_candidate`'s (default: ``outs``)."""
        return outs

    def analyze_artifact(self, cell: Any, path: Path, observed: Dict[str, Tuple[int, ...]]) -> Dict[str, Any]:
        """Model-specific static checks of an ONNX artifact at ``path`` (next to it, files it writes for the
        user, e.g. RVM's TensorRT profile) given the shapes one call observed (``{tensor name: shape}``); record
        fields (declared in :meth:`record_fields`). Default: none."""
        return {}

    def run_candidate(self, runtime: Any, feeds: Dict[str, Any], cell: Any) -> List[Any]:
        """The candidate's outputs (numpy, output order) on the validation ``feeds`` through a loaded runtime
        plug-in (default: one call; a recurrent model runs its frames here, feeding its states back)."""
        return as_list(runtime.run(feeds), self.io(cell)[1])

    # ------------------------------------------------------------------ verify (python -m harness verify)
    # whether ``verify`` can judge a file of this model (the hooks below are implemented)
    verifiable: bool = False

    def add_verify_arguments(self, parser: Any) -> None:
        """Add the model's own ``verify`` flags (its settings an artifact without metadata needs)."""

    def verify_settings(self, args: Any, found: Dict[str, Any]) -> Dict[str, Any]:
        """The settings of the artifact ``verify`` judges: ``found`` (what the artifact's metadata says)
        overridden by the model's flags in ``args`` and completed with the model's defaults.

        Raises:
            harness.inputs.InputError: a setting that cannot be known (names the flag to give)."""
        return dict(found)

    def verify_overrides(self, s: Dict[str, Any]) -> Dict[str, Any]:
        """Profile settings that ``s`` fixes (``{setting: value}``, joined to matrix.yaml's settings)."""
        return {}

    def verify_cell_fields(self, s: Dict[str, Any]) -> Dict[str, Any]:
        """The model's own cell fields (its axes) for the artifact described by ``s``."""
        return {}

    def verify_describe(self, s: Dict[str, Any]) -> str:
        """One line naming the artifact's model settings, for verify's header."""
        return ", ".join(f"{k} {v}" for k, v in s.items())

    # ------------------------------------------------------------------ report
    # the report's compatibility grids: one grid per value of grid_group_axes (with exporter, runtime,
    # resolution, batch), one row per combination of grid_row_axes (columns: opset x precision)
    grid_group_axes: Tuple[str, ...] = ()
    grid_row_axes: Tuple[str, ...] = ()
    grid_headers: Dict[str, str] = {}
    # the axis whose values change what the model computes, not only how it is exported (BGMv2's refine
    # mode, RVM's downsample ratio): the decision report (harness/decide.py) names the best config per value
    semantic_axis: str = ""

    def export_tags(self, record: Dict[str, Any]) -> str:
        """Suffix naming the model's export options of a record in the report (e.g. BGMv2's ``+guard``)."""
        return ""

    # ------------------------------------------------------------------ inputs
    # the inputs the input-contract probes (harness/probes.py: size, dtype, channels, range) perturb, in the
    # order the probes' positional call takes them; () = the model has no probes (the stage records nothing)
    probe_inputs: Tuple[str, ...] = ()

    def input_files(self, res: Tuple[int, int], batch: int, samples: List[str]) -> List[Path]:
        """The shipped files the validation inputs of ``(res, batch)`` are made from (their bytes identify the
        inputs in cache keys without decoding them)."""
        raise NotImplementedError

    def validation_inputs(self, res: Tuple[int, int], batch: int, samples: List[str]) -> Inputs:
        """The validation inputs at ``res = (H, W)`` with ``batch`` items made from the shipped ``samples``
        (cycled, so a batch holds different content)."""
        raise NotImplementedError

    def user_inputs(self, user: Any, batch: int, pad: bool) -> Inputs:
        """The validation inputs from the user's own files (``--src``/``--bgr``: ``user`` is the loaded
        :class:`harness.inputs.Pair`); ``pad``: zero-pad to the model's size multiple and judge the real size.
        Raises :class:`harness.inputs.InputError` where the model cannot take them."""
        raise NotImplementedError

    def check_user_inputs(self, user: Any, cells: List[Any], s: Any) -> None:
        """Raise :class:`harness.inputs.InputError` where the user's inputs cannot serve ``cells`` under ``s``."""

    def example_inputs(self, res: Tuple[int, int], batch: int, cell: Any = None) -> Inputs:
        """What exporters trace ``cell`` with (``settings.export_resolution``, the exporter's example batch)."""
        return self.validation_inputs(res, batch, [])

    def cast(self, feeds: Dict[str, Any], precision: str) -> Dict[str, Any]:
        """``feeds`` in the tensors' dtype of ``precision`` (default: every floating tensor)."""
        import torch

        dt = {"fp32": torch.float32, "fp16": torch.float16}[precision]
        return {k: v.to(dt) if v.is_floating_point() else v for k, v in feeds.items()}

    def call(self, model: Any, feeds: Dict[str, Any], cell: Any = None) -> List[Any]:
        """The eager model on named ``feeds``: its outputs in output-name order (default: one positional call
        in input-name order; a recurrent model runs its frames here)."""
        names = self.io(cell)[0] if cell is not None else self.input_names
        return list(model(*(feeds[n] for n in names)))

    # ------------------------------------------------------------------ model (torch)
    def blank_model(self, group: str, s: Any) -> Any:
        """An untrained eager module of weights group ``group`` (what a checkpoint loads into)."""
        raise NotImplementedError

    def load_state(self, group: str, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """``state_dict`` checked against group ``group``'s model (strict); returns the model's own state_dict.
        Raises the model's CheckpointError naming the mismatch."""
        raise NotImplementedError

    def cell_state(self, cell: Any, state_dict: Dict[str, Any]) -> Dict[str, Any]:
        """The part of the weights group's ``state_dict`` that ``cell``'s model loads (strictly); default: all
        of it (RVM's parameter-free refiner drops ``refiner.*``)."""
        return state_dict

    def checkpoint_kind(self, state_dict: Dict[str, Any]) -> str:
        """What a checkpoint looks like (``environment.json``), or ``"unknown"``."""
        return "unknown"

    def group_kind(self, group: str) -> str:
        """The model weights group ``group`` loads into, as :meth:`checkpoint_kind` names it (messages; default:
        the group's name)."""
        return group

    def refuse_foreign(self, group: str, state_dict: Dict[str, Any]) -> None:
        """Refuse another registered model's weights before any key is compared: when ``state_dict`` looks like
        none of this model's (:meth:`checkpoint_kind` is ``"unknown"``) but like another model's. Call it first
        in :meth:`load_state`.

        Raises:
            model.errors.CheckpointError: naming what the checkpoint looks like, what ``group`` expects, and a
                few of its keys."""
        if self.checkpoint_kind(state_dict) != "unknown":
            return
        for other in MODELS.values():
            kind = other.checkpoint_kind(state_dict) if other is not self else "unknown"
            if kind != "unknown":
                keys = list(state_dict)
                shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
                raise CheckpointError(
                    f"checkpoint looks like {other.display_name} {kind}, expected {self.display_name} "
                    f"{self.group_kind(group)}: {len(keys)} keys ({shown}); give {self.display_name} weights, "
                    f"or run the {other.name} cells with these (--filter model={other.name})")

    def calibrated_state(self, group: str, s: Any, samples: List[str]) -> Dict[str, Any]:
        """Seeded, calibrated weights of ``group`` (the caller seeds torch with ``settings.seed``) made on the
        shipped ``samples``: what the matrix uses without a checkpoint."""
        raise NotImplementedError

    def construct(self, kwargs: Dict[str, Any]) -> Any:
        """The eager module from its constructor arguments (what the ``eager`` exporter stores)."""
        raise NotImplementedError

    def model_kwargs(self, cell: Any, s: Any) -> Dict[str, Any]:
        """Constructor arguments of ``cell`` under settings ``s``."""
        raise NotImplementedError

    def torchscript_module(self, model: Any) -> Any:
        """The module to ``torch.jit.script`` for ``model`` (default: the model itself)."""
        return model

    # {regular expression on a torch.export failure's cause: what it means for this model} (the first match is
    # appended to the cell's reason; harness.exporters.export_cause)
    export_hints: Dict[str, str] = {}

    # torch.jit.freeze the scripted module before saving (folds BatchNorm, inlines attributes: what RVM's
    # inference scripts do); never for a model with hoisted settable attributes, which freezing would bake
    torchscript_freeze: bool = False

    def official(self, cell: Any) -> Any:
        """The cell whose eager model is the reference (default: the cell itself)."""
        return cell

    def judge(self, outs: List[Any], ref32: List[Any], ref_same: Optional[List[Any]], tol: Any, cell: Any, s: Any,
              crop_to: Optional[Tuple[int, int]] = None) -> Any:
        """The cell's verdict (:class:`harness.verdict.Verdict`) from its outputs (numpy, :attr:`output_names`
        order) against eager fp32 (``ref32``) and eager in the cell's precision (``ref_same``, None for fp32).
        Default: value by value (:func:`harness.verdict.elementwise_verdict`). Raises
        :class:`harness.parity.ShapeMismatch` for outputs of another count or shape."""
        return elementwise_verdict(outs, ref32, ref_same, tol, self.output_names, cell.precision)

    def cap_truncation(self, cell: Any, s: Any, ref32: List[Any]) -> str:
        """Why a model-specific cap made the cell compute less than the official model ("" when it did not;
        a non-empty answer fails the cell). Default: no cap."""
        return ""

    # ------------------------------------------------------------------ report content (torch-free)
    def own_records(self, records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The records of ``records`` this model owns (:func:`record_owner`)."""
        return [r for r in records if record_owner(r) is self]

    def report_findings(self, records: List[Dict[str, Any]]) -> List[str]:
        """The model's own findings for the report and summary.md, one line each, from all of a run's
        ``records`` (select your own with :meth:`own_records`). Default: none."""
        return []

    def report_sections(self, records: List[Dict[str, Any]]) -> List["ReportSection"]:
        """The model's own sections of report.html (each a table, optionally a figure), from all of a run's
        ``records``; none for a run without the model's records. Default: none."""
        return []


@dataclass
class SectionCell:
    """One table cell of a :class:`ReportSection`: ``value`` (a string shown as is; a number or None shown as
    the report formats values, None and NaN empty), ``status`` (a cell status, e.g. ``pass``: coloured like
    the grids) and ``note`` (a second line in small print)."""

    value: Any
    status: str = ""
    note: str = ""


@dataclass
class ReportSection:
    """A model's own part of report.html (:meth:`ModelAdapter.report_sections`).

    ``id``: unique HTML id; ``title``: its heading; ``intro_html``: what comes before the table, as markup the
    adapter writes itself (not escaped: never put record text in it); ``headers``: the table's column names;
    ``rows``: the table, each cell a string, a number or a :class:`SectionCell` (escaped); ``figure``: a
    callable given ``matplotlib.pyplot`` that returns a Figure (or None), drawn above the table where
    matplotlib is installed; ``figure_alt``: the image's alt text."""

    id: str
    title: str
    intro_html: str = ""
    headers: Tuple[str, ...] = ()
    rows: Tuple[Tuple[Any, ...], ...] = ()
    figure: Optional[Any] = None
    figure_alt: str = ""


MODELS: Dict[str, ModelAdapter] = {}


def register_model(adapter: ModelAdapter) -> ModelAdapter:
    """Add an adapter instance to :data:`MODELS` under ``adapter.name``.

    Raises:
        ValueError: no name, a name taken, or an axis/setting that another model declares with another type
            (axes and settings share ``matrix.yaml``'s namespace)."""
    if not adapter.name or adapter.name in MODELS:
        raise ValueError(f"model adapter {type(adapter).__name__}: name {adapter.name!r} is empty or taken")
    for other in MODELS.values():
        for kind in ("axes", "settings"):
            mine, theirs = getattr(adapter, kind).model_fields, getattr(other, kind).model_fields
            for n in set(mine) & set(theirs):
                if mine[n].annotation != theirs[n].annotation:
                    raise ValueError(f"model {adapter.name!r}: {kind[:-1]} {n!r} is declared by model {other.name!r} "
                                     f"with another type ({theirs[n].annotation}); rename it")
    MODELS[adapter.name] = adapter
    return adapter


def adapter(name: Optional[str]) -> ModelAdapter:
    """The adapter called ``name`` (None or "": :func:`default_model`).

    Raises:
        KeyError: an unknown model (names the known ones)."""
    name = name or default_model()
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


def _declared(kind: str) -> Dict[str, Any]:
    """``{name: pydantic FieldInfo}`` of every registered model's ``kind`` (``axes`` or ``settings``); the
    first declaration wins on a shared name (:func:`register_model` refuses shared names of another type)."""
    out: Dict[str, Any] = {}
    for m in MODELS.values():
        for n, f in getattr(m, kind).model_fields.items():
            out.setdefault(n, f)
    return out


def model_axes() -> Dict[str, Any]:
    """Every registered model's axes: ``{axis: pydantic FieldInfo}``."""
    return _declared("axes")


def model_settings() -> Dict[str, Any]:
    """Every registered model's settings: ``{name: pydantic FieldInfo}``."""
    return _declared("settings")


def default_model() -> str:
    """The name of the adapter that declares ``default = True`` (the model of cells and records without a
    ``model`` field), else the first registered one.

    Raises:
        LookupError: no model is registered."""
    for name, a in MODELS.items():
        if a.default:
            return name
    if not MODELS:
        raise LookupError("no model adapter is registered (harness/models/<name>.py)")
    return next(iter(MODELS))


def owner(cell: Any) -> ModelAdapter:
    """The adapter of ``cell`` (its ``model`` field; :func:`default_model` for a cell without one)."""
    return MODELS[getattr(cell, "model", None) or default_model()]


def record_owner(rec: Dict[str, Any]) -> ModelAdapter:
    """The adapter of a results.jsonl record (:func:`default_model` for records written before the ``model``
    field existed)."""
    return MODELS[rec.get("model") or default_model()]


PLUGINS_ENV = "MATRIX_PLUGINS"


def _discover() -> None:
    """Import every adapter module of this package (a new file registers itself), then the modules named in
    ``$MATRIX_PLUGINS`` (comma-separated, importable: plug-ins kept outside the harness, e.g. a model of your
    own; they may register models, exporters and runtimes). Runs before the config schema, the cell class and
    the exporters' field classification are built from the registry, so an outside model joins all three."""
    import importlib
    import os
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")
    for name in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:  # a bad value of the variable, not a harness bug: no traceback
            import sys

            sys.stderr.write(f"error: ${PLUGINS_ENV}: cannot import plug-in module {name!r} ({e}); expected "
                             f"comma-separated importable module names, e.g. mypackage.my_model\n")
            raise SystemExit(2) from None


_discover()
