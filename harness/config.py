"""``matrix.yaml``: schema, validation and expansion into cells.

The file declares the universe of axis values (``axes``), model ``settings``, named ``profiles`` that
restrict axes and override settings, ``tolerances`` per precision, and known-incompatibility
``rules``. Validation happens before any work; every problem is reported as one :class:`ConfigError`
naming the key, the bad value and what is accepted (the CLI exits with code 2).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from .benchmark import Protocol
from .exporters import EXPORTERS
from .inputs import SAMPLE_NAMES
from .models import MODELS, default_model, model_axes, model_settings, owner
from .rounds import RoundsProtocol
from .rules import Rule, matching_rule, matching_rules  # noqa: F401 - the rules: section of matrix.yaml
from .runs import NA  # noqa: F401 - re-exported
from .runtimes import RUNTIMES
from .values import DEFAULT_STAGE_TIMEOUT_S, PRECISIONS, STAGES, STATUSES, Tolerance  # noqa: F401 - re-exported
from .values import Strict as _Strict


# the matrix file of this checkout (``--config`` overrides it)
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "matrix.yaml"


class ConfigError(ValueError):
    """Invalid matrix.yaml or CLI selection; the message names the key, the bad value and the choices."""


def _nonempty_unique(v: list, info) -> list:
    if not v:
        raise ValueError("axis must list at least one value")
    seen = []
    for x in v:
        if x in seen:
            raise ValueError(f"duplicate value {x!r}")
        seen.append(x)
    return v


Resolution = Tuple[int, int]


def _check_hw(name: str, hw: Resolution, multiple: int = 1) -> Resolution:
    """``hw`` if H and W are positive multiples of ``multiple`` (the models' :func:`size_multiple`)."""
    h, w = hw
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        raise ValueError(f"{name} [{h}, {w}]: H and W must be positive multiples of {multiple}"
                         if multiple > 1 else f"{name} [{h}, {w}]: H and W must be positive")
    return hw


def size_multiple(models: Optional[List[str]] = None) -> int:
    """The multiple every H and W must be for ``models`` (default: every registered model): the least common
    multiple of their adapters' ``size_multiple`` (BGMv2: 4)."""
    import math

    out = 1
    for name in models or list(MODELS):
        if name in MODELS:
            out = math.lcm(out, MODELS[name].size_multiple)
    return out


class CoreAxes(_Strict):
    """The axes every model has. Resolutions are ``[H, W]`` (multiples of 4) used for validation runs; each
    model adapter adds its own axes (:func:`_axes_model`), e.g. BGMv2's ``crop_method``."""

    # names of model adapters (harness/models/); default: the registry's default model
    model: List[str] = Field(default_factory=lambda: [default_model()])
    opset: List[int]
    precision: List[Literal["fp32", "fp16"]]
    exporter: List[str]  # names of exporter plug-ins (harness/exporters/)
    simplify: List[bool]
    runtime: List[str]
    resolution: List[Resolution]
    batch: List[int]
    # TF32 matmul/convolution on CUDA runtimes (off by default: it moves fp32 results by ~1e-3); CPU cells
    # always have tf32 false
    tf32: List[bool] = [False]

    @field_validator("*")
    @classmethod
    def _v(cls, v: Any, info) -> Any:
        return v if v is None else _nonempty_unique(v, info)

    @field_validator("model")
    @classmethod
    def _models(cls, v: List[str]) -> List[str]:
        bad = [m for m in v if m not in MODELS]
        if bad:
            raise ValueError(f"unknown model {bad[0]!r}; expected one of {sorted(MODELS)} (harness/models/)")
        return v

    @field_validator("opset")
    @classmethod
    def _opsets(cls, v: List[int]) -> List[int]:
        known = sorted({o for e in EXPORTERS.values() for o in (e.opsets or ())})
        bad = [o for o in v if o not in known]
        if bad:
            raise ValueError(f"unsupported opset {bad[0]!r}; the exporters accept {known[0]}..{known[-1]}")
        return v

    @field_validator("exporter", "runtime")
    @classmethod
    def _plugins(cls, v: List[str], info) -> List[str]:
        registry, folder = (EXPORTERS, "exporters") if info.field_name == "exporter" else (RUNTIMES, "runtimes")
        bad = [name for name in v if name not in registry]
        if bad:
            raise ValueError(f"unknown {info.field_name} {bad[0]!r}; expected one of {sorted(registry)} (harness/{folder}/)")
        return v

    @field_validator("resolution")
    @classmethod
    def _res(cls, v: List[Resolution], info) -> List[Resolution]:
        """Each resolution must suit at least one selected model (its size multiple); a model's cells are made
        only at the resolutions that suit it (:func:`_cells`), e.g. RVM's odd 721x1283 next to BGMv2's sizes."""
        models = [m for m in (info.data.get("model") or list(MODELS)) if m in MODELS] or [default_model()]
        multiple = min(MODELS[m].size_multiple for m in models) if models[0] in MODELS else 1
        for hw in v:
            _check_hw("resolution", hw, multiple)
        return v

    @field_validator("batch")
    @classmethod
    def _batch(cls, v: List[int]) -> List[int]:
        for b in v:
            if b < 1:
                raise ValueError(f"batch {b!r} must be >= 1")
        return v

    @model_validator(mode="after")
    def _model_axes(self) -> "CoreAxes":
        """Each selected model has every axis it requires."""
        for name in self.model:
            for axis, f in MODELS[name].axes.model_fields.items():
                if f.is_required() and getattr(self, axis) is None:
                    raise ValueError(f"axes.{axis}: required by model {name!r} (harness/models/{name}.py)")
        return self


def _axes_model() -> type:
    """:class:`CoreAxes` plus every registered model's axes (optional here: required only for the models
    listed in ``axes.model``; a model's default applies when the axis is left out)."""
    from typing import Annotated

    fields: Dict[str, Any] = {}
    for axis, f in model_axes().items():
        typ = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[axis] = (Optional[typ], None if f.is_required() else f.default)
    return create_model("Axes", __base__=CoreAxes, __doc__=CoreAxes.__doc__, **fields)


Axes = _axes_model()


class Rounds(_Strict):
    """Interleaved re-measurement of each decision's finalists after the run (:mod:`harness.rounds`,
    :mod:`harness.pool.rounds`): ``cap_s`` seconds of rounds per decision (0: off), 6-``max_rounds`` rounds,
    ``warmup_runs`` untimed and ``runs`` timed calls per finalist per round, stop once every ratio's 95 %
    interval is within +-``target``; ``finalists`` candidates besides the fastest, those within ``within`` x
    its burst p50."""

    cap_s: float = Field(0.0, ge=0)
    min_rounds: int = Field(6, ge=6)
    max_rounds: int = Field(30, ge=6)
    warmup_runs: int = Field(1, ge=0)
    runs: int = Field(3, ge=1)
    target: float = Field(0.03, gt=0, lt=1)
    finalists: int = Field(4, ge=1)
    within: float = Field(1.6, ge=1)

    def protocol(self) -> RoundsProtocol:
        return RoundsProtocol(**self.model_dump())


class Latency(_Strict):
    """Latency protocol (harness/benchmark.py): warm up until both ``warmup_min_s`` seconds and
    ``warmup_min_runs`` calls; measure until both ``measure_min_s`` and ``measure_min_runs``, at most
    ``measure_max_s`` seconds; warn "unstable" when std/mean exceeds ``cv_warn``. ``compute``: also time
    device compute (inputs already on the device, ORT IO binding) besides end-to-end. ``target_ci`` > 0:
    adaptive, stop once the p50's 95 % CI is within +- that fraction of it (after the minimums).
    ``contention_max``: a measurement during which tasks waited for a CPU longer than this share of
    it is repeated up to ``contention_retries`` times, the least contended one kept and flagged "contended"
    if still above (:func:`harness.benchmark.measure_uncontended`, docs/latency-stability.md)."""

    warmup_min_s: float = Field(0.2, ge=0)
    warmup_min_runs: int = Field(10, ge=0)
    measure_min_s: float = Field(1.0, ge=0)
    measure_min_runs: int = Field(20, ge=1)
    measure_max_s: float = Field(15.0, gt=0)
    cv_warn: float = Field(0.10, gt=0)
    target_ci: float = Field(0.0, ge=0, lt=1)
    # off by default (recorded only): PSI also counts the runtime's own threads waiting, e.g. onnxruntime's
    # intra-op pool plus its calling thread on 2 cores (median 0.49 on onnxruntime-cpu, 0.39 on openvino-cpu
    # in a ci run alone on the 2-core Xeon, 2026-12-06), so a 0.10 limit repeated most cells 3x for nothing
    contention_max: float = Field(1.0, ge=0, le=1)
    contention_retries: int = Field(0, ge=0, le=10)
    compute: bool = True
    rounds: Rounds = Rounds()

    def protocol(self):
        return Protocol(self.warmup_min_s, self.warmup_min_runs, self.measure_min_s, self.measure_min_runs,
                        self.measure_max_s, self.cv_warn, self.target_ci, self.contention_max,
                        self.contention_retries)


class CoreSettings(_Strict):
    """Run settings shared by all cells of a profile; each model adapter adds its own (:func:`_settings_model`)."""

    export_resolution: Resolution = (256, 448)
    latency: Latency = Latency()
    count_macs: bool = False
    seed: int = 0
    # input-contract probes run on each cell's loaded artifact after its verdict (harness/probes.py)
    input_probes: List[Literal["size", "dtype", "channels", "range"]] = ["size", "dtype", "channels", "range"]

    @field_validator("export_resolution")
    @classmethod
    def _res(cls, v: Resolution) -> Resolution:
        return _check_hw("export_resolution", v)  # the models' multiple: MatrixConfig._check_models


def _settings_model() -> type:
    """:class:`CoreSettings` plus every registered model's settings (each with its default and bounds)."""
    fields = {name: (f.annotation, f) for name, f in model_settings().items()}
    return create_model("Settings", __base__=CoreSettings, __doc__=CoreSettings.__doc__, **fields)


Settings = _settings_model()


def _override_of(model: type, name: str, keep_constraints: bool) -> type:
    """The "every field optional, default None" twin of ``model`` for a profile's overrides, generated from
    ``model`` so that a new axis or setting is declared once. With ``keep_constraints`` each field keeps its
    type and bounds (``refine_sample_pixels >= 16`` is checked in the profile, with its line number);
    without, values are checked against the universe by :meth:`MatrixConfig._cross_checks` (axes)."""
    from typing import Annotated

    fields: Dict[str, Any] = {}
    for key, f in model.model_fields.items():
        inner = Annotated[(f.annotation, *f.metadata)] if keep_constraints and f.metadata else f.annotation
        fields[key] = (Optional[inner] if keep_constraints else Optional[List[Any]], None)
    return create_model(name, __base__=_Strict, __doc__=f"Optional overrides of :class:`{model.__name__}`.", **fields)


SettingsOverride = _override_of(Settings, "SettingsOverride", keep_constraints=True)
AxesOverride = _override_of(Axes, "AxesOverride", keep_constraints=False)


class Profile(_Strict):
    """A named selection: ``axes`` override the universe; each entry of ``include`` overrides the
    profile's axes once more and adds that cross product too (like a CI matrix's ``include``), so a
    profile can add a few cells of an option without multiplying every cell by it."""

    description: str = ""
    axes: AxesOverride = AxesOverride()
    settings: SettingsOverride = SettingsOverride()
    include: List[AxesOverride] = []


class Limits(_Strict):
    """Wall-clock and memory limits that protect a run from hanging or exploding cells.

    ``stage_timeout_s``: per-stage limit in seconds (a stage past it ends the cell as ``timeout``);
    ``worker_start_s``: seconds a worker may take to import torch and load weights;
    ``memory_limit_mib``: resident memory (MiB) above which a worker is killed and its cell is
    ``crash`` (default: 75 % of physical memory divided by the number of workers);
    ``deadline_s``: whole-run limit after which unstarted cells are ``skip`` (None: no deadline).
    """

    stage_timeout_s: Dict[str, float] = DEFAULT_STAGE_TIMEOUT_S
    worker_start_s: float = Field(300.0, gt=0)
    memory_limit_mib: Optional[int] = Field(None, ge=256)
    deadline_s: Optional[float] = Field(None, gt=0)

    @field_validator("stage_timeout_s")
    @classmethod
    def _stages(cls, v: Dict[str, float]) -> Dict[str, float]:
        for k, t in v.items():
            if k not in STAGES:
                raise ValueError(f"unknown stage {k!r}; expected some of {list(STAGES)}")
            if not t > 0:
                raise ValueError(f"stage_timeout_s.{k}: {t!r} must be > 0 seconds")
        return {**DEFAULT_STAGE_TIMEOUT_S, **v}


class MatrixConfig(_Strict):
    """Top level of matrix.yaml."""

    version: Literal[1] = 1
    axes: Axes
    settings: Settings = Settings()
    profiles: Dict[str, Profile]
    default_profile: str = "ci"
    tolerances: Dict[Literal["fp32", "fp16"], Tolerance]
    samples: List[str] = ["rocket_coffee", "hubble_astronaut", "horse_grass"]
    rules: List[Rule] = []
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _cross_checks(self) -> "MatrixConfig":
        universe = self.axes.model_dump()
        self._check_profiles(universe)
        if self.default_profile not in self.profiles:
            raise ValueError(f"default_profile {self.default_profile!r} is not one of profiles {sorted(self.profiles)}")
        for p in PRECISIONS:
            if p in self.axes.precision and p not in self.tolerances:
                raise ValueError(f"tolerances: missing an entry for precision {p!r}")
        for s in self.samples:
            if s not in SAMPLE_NAMES:
                raise ValueError(f"samples: unknown sample {s!r}; expected some of {list(SAMPLE_NAMES)}")
        self._check_rules(universe)
        self._check_models()
        return self

    def _check_profiles(self, universe: Dict[str, Any]) -> None:
        """Every value a profile (or one of its ``include`` entries) names is in the universe's axis."""
        for pname, prof in self.profiles.items():
            blocks = [(f"profiles.{pname}.axes", prof.axes)]
            blocks += [(f"profiles.{pname}.include[{k}]", inc) for k, inc in enumerate(prof.include)]
            for where, block in blocks:
                for axis, values in block.model_dump().items():
                    if values is None:
                        continue
                    if not values:
                        raise ValueError(f"{where}.{axis}: empty list")
                    if axis == "resolution":  # sizes the block's models take (before "not in axes")
                        models = block.model_dump().get("model") or prof.axes.model_dump().get("model") or universe["model"]
                        multiple = min(MODELS[m].size_multiple for m in models if m in MODELS) if any(
                            m in MODELS for m in models) else 1
                        for hw in values:
                            _check_hw(f"{where}.resolution", hw, multiple)
                    bad = [v for v in values if not _occurs(v, universe[axis])]
                    if bad:
                        raise ValueError(f"{where}.{axis}: value {bad[0]!r} is not in axes.{axis} {universe[axis]!r}")

    def _check_rules(self, universe: Dict[str, Any]) -> None:
        """A rule names known stages, cell fields and values that occur, and matches at least one cell."""
        rule_keys = set(Cell.__dataclass_fields__)  # model, every model's axes, the common axes
        for k, rule in enumerate(self.rules):
            if rule.stage is not None and rule.stage not in STAGES:
                raise ValueError(f"rules[{k}] ({rule.id}).stage: {rule.stage!r} is not one of {list(STAGES)}")
            for key, val in rule.when.items():
                if key not in rule_keys:
                    raise ValueError(
                        f"rules[{k}] ({rule.id}).when: unknown key {key!r}; expected cell fields {sorted(rule_keys)}"
                    )
                bad = [v for v in (val if isinstance(val, list) else [val])
                       if key in universe and v != NA and not _occurs(v, universe[key])]
                if bad:
                    raise ValueError(f"rules[{k}] ({rule.id}).when.{key}: value {bad[0]!r} never occurs; "
                                     f"axes.{key} is {universe[key]!r}")
        for k, rule in enumerate(self.rules):
            # the universe narrowed to the rule's values, walked lazily until a first match (the whole
            # universe is hundreds of thousands of cells once RVM's axes join BGMv2's)
            sub = dict(universe)
            for key, val in rule.when.items():
                if key in sub and isinstance(sub[key], list):
                    vals = val if isinstance(val, list) else [val]
                    keep = [u for u in sub[key] if any(_occurs(v, [u]) for v in vals)]
                    sub[key] = keep or sub[key]
            if not any(matching_rule(c, (rule,)) for c in _iter_cells(sub)):
                raise ValueError(
                    f"rules[{k}].when: rule {rule.id!r} matches no cell of the axes (each value occurs, but "
                    f"not together: {rule.when}); TorchScript has no opset/simplify and full mode has "
                    f"crop_method/replace_method 'n/a'"
                )

    def _check_models(self) -> None:
        """Each model's own cross-checks (:meth:`harness.models.ModelAdapter.check_profile`) on the resolved
        settings and axes of the universe and of every profile."""
        for pname, prof in [("settings", None)] + list(self.profiles.items()):
            st, axes = self.settings.model_dump(), self.axes.model_dump()
            if prof is not None:
                st.update({k: v for k, v in prof.settings.model_dump().items() if v is not None})
                axes.update({k: v for k, v in prof.axes.model_dump().items() if v is not None})
            where = "settings" if prof is None else f"profiles.{pname}"
            _check_hw(f"{where}: export_resolution", st["export_resolution"], size_multiple(axes["model"]))
            for name in axes["model"]:
                MODELS[name].check_profile(st, axes, where)


def _occurs(value: Any, allowed: List[Any]) -> bool:
    """``value`` is one of ``allowed`` (YAML lists compared as tuples: resolutions)."""
    norm = [tuple(x) if isinstance(x, list) else x for x in allowed]
    return (tuple(value) if isinstance(value, list) else value) in norm


CORE_CELL_FIELDS = ("precision", "exporter", "opset", "simplify", "runtime", "resolution", "batch", "tf32")


class _CellMethods:
    """Methods of :data:`Cell` (a dataclass generated from the registered models' axes)."""

    @property
    def cell_id(self) -> str:
        """Stable, filesystem-safe id from the cell's model adapter, e.g.
        ``mobilenetv2-sampling-roi_align-scatter_nd-onnx-sim-op17-fp16-onnxruntime-cpu-288x512-b1``."""
        return re.sub(r"[^A-Za-z0-9_.-]", "_", owner(self).cell_id(self))

    def own_fields(self) -> Tuple[str, ...]:
        """``model``, the model's own axes and the common ones (the other models' axes are ``n/a`` here)."""
        return ("model",) + owner(self).axis_names() + CORE_CELL_FIELDS

    def as_dict(self) -> Dict[str, Any]:
        """The cell's own fields (:meth:`own_fields`), resolution as ``"HxW"``."""
        d = {k: getattr(self, k) for k in self.own_fields()}
        d["resolution"] = f"{self.resolution[0]}x{self.resolution[1]}"
        return d


def _cell_class() -> type:
    """``Cell``: one point of the matrix, a frozen keyword-only dataclass with ``model``, every registered
    model's axes (``n/a`` where they are not the cell's model's) and the common axes. ``opset`` is None
    where the exporter has no opset (TorchScript)."""
    from dataclasses import field as dc_field, make_dataclass

    fields: List[Any] = [("model", str, dc_field(default=default_model()))]
    fields += [(axis, Any, dc_field(default=NA)) for axis in model_axes()]
    fields += [("precision", str), ("exporter", str), ("opset", Optional[int]), ("simplify", bool), ("runtime", str),
               ("resolution", Tuple[int, int]), ("batch", int), ("tf32", bool, dc_field(default=False))]
    cls = make_dataclass("Cell", fields, bases=(_CellMethods,), frozen=True, kw_only=True)
    cls.__module__ = __name__  # picklable as harness.config.Cell (workers receive cells)
    cls.__doc__ = _cell_class.__doc__.split(": ", 1)[1]
    return cls


Cell = _cell_class()


@dataclass(frozen=True)
class Plan:
    """A resolved profile: settings, cells, tolerances and rules."""

    profile: str
    settings: Settings
    cells: Tuple[Cell, ...]
    tolerances: Dict[str, Tolerance]
    rules: Tuple[Rule, ...]
    samples: Tuple[str, ...]
    limits: Limits = Limits()

    def fingerprint(self) -> str:
        """SHA-256 (16 hex digits) of what decides the cells' results: the cells, settings, tolerances
        and samples (not rules or limits). ``--resume`` refuses a directory with another fingerprint."""
        blob = json.dumps(
            {"cells": [c.cell_id for c in self.cells], "settings": self.settings.model_dump(),
             "tolerances": {k: v.model_dump() for k, v in sorted(self.tolerances.items())},
             "samples": list(self.samples)},
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _yaml_lines(text: str) -> Dict[Tuple[Any, ...], int]:
    """Map each key path in a YAML document (e.g. ``("axes", "crop_method", 1)``) to its 1-based line."""
    lines: Dict[Tuple[Any, ...], int] = {}

    def walk(node, path):
        lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                lines[path + (k.value,)] = k.start_mark.line + 1
                walk(v, path + (k.value,))
                lines[path + (k.value,)] = k.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                walk(v, path + (i,))

    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines
    if root is not None:
        walk(root, ())
    return lines


def _line_for(lines: Dict[Tuple[Any, ...], int], loc: Tuple[Any, ...]) -> Optional[int]:
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _format_validation_error(path: str, err: ValidationError, lines: Optional[Dict] = None) -> str:
    out = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        line = _line_for(lines or {}, tuple(e["loc"]))
        where = f"{path}:{line}" if line else path
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        bad = e.get("input")
        shown = "" if isinstance(bad, dict) else f" (got {bad!r})"
        ctx = e.get("ctx", {}).get("expected")
        expected = f"; expected {ctx}" if ctx else ""
        if not loc:  # a cross-field check: its message starts with the key path
            key = msg.split(":", 1)[0].removeprefix("Value error, ")
            line = _line_for(lines or {}, tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", key) if p))
            where = f"{path}:{line}" if line else path
            out.append(f"{where}: {msg.removeprefix('Value error, ')}")
            continue
        out.append(f"{where}: {loc}: {msg}{shown}{expected}")
    return "\n".join(out)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: str, line: int, first: int) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise _DuplicateKey(str(key), key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_config(path: Union[str, Path]) -> MatrixConfig:
    """Read and validate ``matrix.yaml``.

    Raises:
        ConfigError: missing file, YAML syntax error, or any schema violation (all listed).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {str(path)!r}")
    text = path.read_text()
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as e:
        raise ConfigError(f"{path}:{e.line}: duplicate key {e.key!r} (first at line {e.first}); "
                          f"YAML would silently keep only the last value") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    try:
        return MatrixConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(str(path), e, _yaml_lines(text))) from None


def _filter(expr: Optional[str]):
    """Build a cell predicate from ``--filter``: comma-separated ``key=value`` (value may be ``a|b``) or
    plain substrings of the cell id; all terms must match."""
    if not expr:
        return lambda cell: True
    terms = [t.strip() for t in expr.split(",") if t.strip()]
    fields = set(Cell.__dataclass_fields__)
    parsed = []
    for t in terms:
        if "=" in t:
            k, v = t.split("=", 1)
            k = k.strip()
            if k not in fields:
                raise ConfigError(f"--filter: unknown key {k!r}; expected one of {sorted(fields)}")
            parsed.append((k, [x.strip() for x in v.split("|")]))
        else:
            parsed.append((None, [t]))

    def pred(cell: Cell) -> bool:
        d = cell.as_dict()
        for k, vals in parsed:
            if k is None:
                if vals[0] not in cell.cell_id:
                    return False
            elif k not in d or str(d[k]).lower() not in [v.lower() for v in vals]:  # another model's axis: no match
                return False
        return True

    return pred


def expand(config: MatrixConfig, profile: Optional[str] = None, filter_expr: Optional[str] = None) -> Plan:
    """Resolve ``profile`` (default: ``config.default_profile``) into a :class:`Plan`.

    Cells are the cross product of the profile's axes minus meaningless combinations: TorchScript has
    no opset and no simplify; a runtime must consume the exporter's artifact format; full mode has no
    crop/replace method.

    Raises:
        ConfigError: unknown profile, bad ``--filter``, or a selection with no cells.
    """
    name = profile or config.default_profile
    if name not in config.profiles:
        raise ConfigError(f"--profile {name!r} is not defined; expected one of {sorted(config.profiles)}")
    prof = config.profiles[name]
    axes = config.axes.model_dump()
    for k, v in prof.axes.model_dump().items():
        if v is not None:
            axes[k] = v
    base = config.settings.model_dump()
    for k, v in prof.settings.model_dump().items():
        if v is not None:
            base[k] = v
    settings = Settings.model_validate(base)
    pred = _filter(filter_expr)
    cells = _cells(axes, pred)
    for extra in prof.include:
        sub = dict(axes)
        sub.update({k: v for k, v in extra.model_dump().items() if v is not None})
        have = set(cells)
        cells += [c for c in _cells(sub, pred) if c not in have]
    if not cells:
        raise ConfigError(f"profile {name!r} with --filter {filter_expr!r} selects no cells")
    return Plan(name, settings, tuple(cells), dict(config.tolerances), tuple(config.rules), tuple(config.samples),
                config.limits)


def _cells(axes: Dict[str, Any], pred=lambda cell: True) -> List[Cell]:
    """:func:`_iter_cells` as a list."""
    return list(_iter_cells(axes, pred))


def _iter_cells(axes: Dict[str, Any], pred=lambda cell: True) -> Iterator[Cell]:
    """Cross product of ``axes`` per model minus meaningless combinations, in a stable order: the model's
    own (:meth:`harness.models.ModelAdapter.combinations` and ``allows``), an exporter's own opsets only
    (onnx-dynamo: 18+), no simplify where the exporter has no simplifier, a runtime must consume the
    exporter's artifact format, a plug-in limited to some models (its ``models``) only for those, TF32 only
    on CUDA runtimes."""
    seen = set()
    for name in axes.get("model") or [default_model()]:
        adapter = MODELS[name]
        for knobs, prec, exp, res, batch in itertools.product(
                list(adapter.combinations(axes)), axes["precision"], axes["exporter"], axes["resolution"], axes["batch"]):
            exporter = EXPORTERS[exp]
            opsets = [o for o in axes["opset"] if o in exporter.opsets] if exporter.opsets else [None]
            sims = axes["simplify"] if exporter.simplifiable else [False]
            if res[0] % adapter.size_multiple or res[1] % adapter.size_multiple:  # not a size this model takes
                continue
            for op, sim, rt, tf in itertools.product(opsets, sims, axes["runtime"], axes.get("tf32") or [False]):
                runtime = RUNTIMES[rt]
                if runtime.format != exporter.format or (tf and runtime.device != "cuda"):
                    continue
                if not runtime.serves(adapter) or name not in (exporter.models or (name,)):
                    continue
                if not adapter.allows(knobs, exp, rt):
                    continue
                cell = Cell(model=name, **knobs, precision=prec, exporter=exp, opset=op, simplify=bool(sim),
                            runtime=rt, resolution=tuple(res), batch=int(batch), tf32=bool(tf))
                if cell in seen or not pred(cell):
                    continue
                seen.add(cell)
                yield cell
