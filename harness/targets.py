"""What each exporter's artifact bakes in, and which packages produce or run it (torch-free).

Cache keys are derived from these declarations, never from a hand-kept list in the key code: an
artifact key holds exactly the values of the fields its exporter *bakes* (plus the weights, the code
and the versions of the exporter's packages). Every model-relevant field is classified for every
exporter as either

- ``bakes``: fixed when the artifact is written (a different value needs a different file), or
- ``settable``: stored in the artifact but set again on the loaded artifact for each cell (TorchScript's
  hoisted attributes, :data:`harness.runtimes.HOISTED`), so one file serves every value.

Each exporter plug-in (``harness/exporters/<name>.py``) declares its classification as class attributes;
:meth:`harness.exporters.Exporter.spec` turns them into an :class:`ExporterSpec`.

The run-only fields (:data:`RUN_FIELDS`: runtime, validation resolution, batch) never reach an
exporter. ``tests/test_keys.py`` proves that the classification is complete for every exporter and that
no two cells of the ``full`` profile that differ in a baked field share an artifact key.

A forgotten entry was a real bug: the eager and AOTInductor keys left out ``refine_mode``, so a
thresholding cell loaded the sampling model built for its neighbour (issue 9, section 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

from .models import MODELS, model_axes, model_settings

# Cell fields and model settings that define the model an artifact computes: the model, its precision and
# every registered model adapter's own axes and settings (harness/models/<name>.py).
MODEL_CELL_FIELDS = ("model",) + tuple(model_axes()) + ("precision",)
MODEL_SETTINGS = tuple(model_settings())
# Fields that only some exporters read.
EXPORT_FIELDS = ("exporter", "opset", "simplify", "export_resolution")
# Fields that never reach an exporter: they choose where and on what the artifact runs.
RUN_FIELDS = ("runtime", "resolution", "batch", "tf32")
ALL_FIELDS = MODEL_CELL_FIELDS + MODEL_SETTINGS + EXPORT_FIELDS + RUN_FIELDS

# TorchScript's hoisted attributes (set with setattr after loading): each adapter's ``hoisted``.
TORCHSCRIPT_SETTABLE = tuple(dict.fromkeys(f for m in MODELS.values() for f in m.hoisted))


@dataclass(frozen=True)
class ExporterSpec:
    """Declaration of one exporter.

    ``format``: the artifact format runtimes consume; ``bakes``: fields fixed in the file (drive the
    artifact key); ``settable``: model fields set on the loaded artifact; ``ignores``: fields the exporter
    never reads (always the same value for its cells, e.g. opset for TorchScript); ``packages``:
    distributions whose versions change the artifact (besides :data:`harness.cache.BASE_PACKAGES`); ``suffix``: file name.
    """

    name: str
    format: str
    bakes: Tuple[str, ...]
    settable: Tuple[str, ...] = ()
    ignores: Tuple[str, ...] = ()
    packages: Tuple[str, ...] = ()
    suffix: str = ""

    def classification(self) -> Dict[str, str]:
        """``{field: "bakes" | "settable" | "ignores" | "run"}`` for every field of :data:`ALL_FIELDS`.

        Raises:
            ValueError: a field is classified twice or not at all (names it).
        """
        out: Dict[str, str] = {f: "run" for f in RUN_FIELDS}
        for kind, fields in (("bakes", self.bakes), ("settable", self.settable), ("ignores", self.ignores)):
            for f in fields:
                if f in out:
                    raise ValueError(f"exporter {self.name!r}: field {f!r} is declared both {out[f]!r} and {kind!r}")
                out[f] = kind
        missing = [f for f in ALL_FIELDS if f not in out]
        if missing:
            raise ValueError(f"exporter {self.name!r}: fields {missing} are neither baked, settable nor ignored")
        return out
