"""The cell record: one typed object per cell, from which results.jsonl, results.csv and the report derive.

Every field a record can hold is declared once, by the part of the harness that produces it, and
:func:`record_model` assembles them into a pydantic model (``extra="forbid"``, validated on assignment):
a stage that writes a misspelt or undeclared field, or a value of the wrong type, fails at once instead of
adding a silent column. The sections, in column order:

- identity: ``cell_id``, ``model``, the model's own axes (its adapter's ``axes``), the common axes
  (:class:`harness.config.Cell`), the model settings the adapter names, ``export_resolution``, ``device``;
- outcome: ``status``/``stage``/``reason`` (and, after the rules, ``raw_status``/``rule``), the timings
  of the cell (``cell_s``, ``stage_times`` in s; ``paused_s``: seconds the latency gate kept the worker stopped
  while another worker timed, already taken out of the other two) and where it ran (``worker``, its RSS in MiB);
- parity/diagnosis/latency/export/load/run/analysis/probes: the fields each typed stage result declares
  (``FIELDS`` of :mod:`harness.results`; :mod:`harness.stages` produces the results);
- the plug-ins' own facts: each exporter's and runtime's ``record_fields`` (e.g. AOTInductor's
  ``compile_s``, ExecuTorch's delegation counts, the C++ runner's build time);
- the model adapter's judge fields (:meth:`harness.models.ModelAdapter.record_fields`: BGMv2's per-output
  statistics and refined-cell agreement).

Units are in the names: ``_s`` seconds, ``_ms`` milliseconds, ``_mib`` MiB; fractions are in [0, 1].
This module imports neither torch nor a plug-in's backend (the coordinator builds records too).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from .exporters import EXPORTERS
from .models import MODELS, default_model
from .onnx_analysis import record_fields as analysis_fields
from .results import Analyzed, Diagnosed, Exported, Fields, Judged, Loaded, Probed, Ran, References, Timed
from .runtimes import RUNTIMES
from .values import PROBES

IDENTITY: Fields = {"cell_id": str}
# filled from the cell (harness.config.Cell): the common axes; the model's own come from its adapter
CORE_AXES: Fields = {
    "model": str, "precision": str, "exporter": str, "opset": int, "simplify": bool, "runtime": str,
    "resolution": str, "batch": int, "tf32": bool,
}
RUN_CONTEXT: Fields = {"export_resolution": str, "device": str, "padded_to": str, "input_size": str}
OUTCOME: Fields = {
    "status": str, "stage": str, "reason": str, "raw_status": str, "rule": str, "cell_s": float, "paused_s": float,
    "stage_times": Dict[str, float], "worker": int, "worker_max_rss_mib": int, "cache": str, "finished_at": str,
    "resumable": bool, "exit_code": int, "exit_signal": str, "timeout_s": float, "peak_rss_mib": int,
}
# what the stages write: each stage result declares its own fields (harness/results.py)
EXPORT: Fields = Exported.FIELDS
LOAD_RUN: Fields = {**Loaded.FIELDS, **Ran.FIELDS}
DIAGNOSIS: Fields = {**Diagnosed.FIELDS, **References.FIELDS, **Analyzed.FIELDS, **Judged.FIELDS}
LATENCY: Fields = Timed.FIELDS


def _probe_fields() -> Fields:
    fields: Fields = {f"probe_{p}": str for p in PROBES}
    fields.update(probe_details=Dict[str, str], input_contract=str, silent_failures=int, **Probed.FIELDS,
                  probe_abnormal=str, probing=str)
    return fields


def _plugin_fields() -> Fields:
    fields: Fields = {}
    for cls in list(EXPORTERS.values()) + list(RUNTIMES.values()):
        for name, typ in getattr(cls, "record_fields", {}).items():
            if fields.get(name, typ) != typ:
                raise ValueError(f"{cls.__name__} declares record field {name!r} as {typ}, another plug-in as "
                                 f"{fields[name]}")
            fields[name] = typ
    return fields


def sections(model: Optional[str] = None) -> List[Tuple[str, Fields]]:
    """``(section, {field: type})`` in column order for records of the model adapter named ``model`` (None:
    :func:`harness.models.default_model`)."""
    adapter = MODELS[model or default_model()]
    return [
        ("identity", {**IDENTITY, "model": str, **adapter.axis_fields(), **CORE_AXES, **adapter.settings_fields(),
                      **RUN_CONTEXT}),
        ("outcome", OUTCOME),
        ("parity", adapter.record_fields()),
        ("diagnosis", DIAGNOSIS),
        ("latency", LATENCY),
        ("export", EXPORT),
        ("load/run", LOAD_RUN),
        ("analysis", analysis_fields()),
        ("probes", _probe_fields()),
        ("plug-ins", _plugin_fields()),
    ]


class RecordBase(BaseModel):
    """Base of the generated record models: every field optional (absent until a stage sets it)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)

    def put(self, **fields: Any) -> "RecordBase":
        """Set ``fields``; raises :class:`RecordError` naming an undeclared field or a value of the wrong type."""
        for name, value in fields.items():
            try:
                setattr(self, name, value)
            except ValidationError as e:
                raise RecordError(_explain(e, name, value)) from None
        return self

    def get(self, name: str, default: Any = None) -> Any:
        """The field's value if a stage set it, else ``default``."""
        return getattr(self, name) if name in self.model_fields_set else default

    def as_dict(self) -> Dict[str, Any]:
        """The fields that were set, in declaration order (what results.jsonl holds)."""
        return self.model_dump(exclude_unset=True)


class RecordError(ValueError):
    """A record field that is not declared, or a value of the wrong type (a harness bug: names the field)."""


def _explain(e: ValidationError, name: str, value: Any) -> str:
    err = e.errors()[0]
    if err["type"] in ("no_such_attribute", "extra_forbidden"):
        return (f"record field {err['loc'][0] if err['loc'] else name!r} is not declared (harness/record.py, a "
                f"plug-in's record_fields or the model adapter's record_fields)")
    loc = ".".join(map(str, err["loc"])) or name
    return f"record field {loc!r}: {err['msg']} (got {type(value).__name__} {str(value)[:60]!r})"


def record_model(model: Optional[str] = None) -> type:
    """The pydantic record class for the model adapter ``model`` (None: the default model; cached)."""
    return _record_model(model or default_model())


@lru_cache(maxsize=None)
def _record_model(model: str) -> type:
    fields: Dict[str, Any] = {}
    where: Dict[str, str] = {}
    for section, sec in sections(model):
        for name, typ in sec.items():
            if name in where and where[name] != section:
                raise ValueError(f"record field {name!r} is declared twice: in section {where[name]!r} and in "
                                 f"{section!r} (declare it once, where it is produced)")
            where[name] = section
            fields.setdefault(name, (Optional[typ], None))
    return create_model(f"CellRecord_{model}", __base__=RecordBase, **fields)


def columns(model: Optional[str] = None) -> List[str]:
    """Every declared field in column order (results.csv's column order derives from it)."""
    return list(record_model(model).model_fields)


def new_record(model: Optional[str] = None, /, **fields: Any) -> RecordBase:
    """A record of the model adapter ``model`` with ``fields`` set (validated; ``fields`` may hold the
    record's own ``model`` field)."""
    return record_model(model)().put(**fields)


def validate(rec: Dict[str, Any], model: Optional[str] = None) -> Dict[str, Any]:
    """``rec`` checked against the record model and returned in declaration order with normalised types
    (numpy scalars become Python numbers). Raises :class:`RecordError` naming the first bad field."""
    return new_record(rec.get("model") or model, **rec).as_dict()
