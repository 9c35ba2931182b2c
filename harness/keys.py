"""Cache keys and record skeletons for cells, without torch: the coordinator answers a fully cached
re-run from these alone (see :mod:`harness.cache` for what goes into a key)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from . import inputs as data_mod
from .benchmark import cpu_flags, cpu_name
from .cache import code_hash, file_hash, link_or_copy, make_key
from .config import Cell, Plan
from .exporters import EXPORTERS
from .models import MODELS, default_model, owner
from .runtimes import RUNTIMES


class CellKeys:
    """Identity of a run's cells: weights ids, input ids, artifact/reference/result keys.

    ``threads`` is the thread count latency is measured with (all physical cores by default); it is
    part of the device string and of result keys (latency depends on it)."""

    def __init__(self, plan: Plan, opts: Any, threads: int) -> None:
        self.plan = plan
        self.opts = opts
        self.s = plan.settings
        self.threads = threads
        self.device = f"cpu: {cpu_name()} ({threads} threads)"
        self.weights_id: Dict[str, str] = {}
        self.weights_info: Dict[str, Any] = {}
        self.input_conversion = ""  # what loading --src/--bgr converted (mode, alpha), for environment.json

    def calibration_key(self, group: str) -> Tuple[str, Dict[str, Any]]:
        a = self.weights_groups()[group]
        parts = {"model": a.name, "group": group, **a.calibration_parts(group, self.s), "seed": self.s.seed,
                 "samples": list(self.plan.samples), "code": code_hash(*a.code_dir),
                 "samples_hash": file_hash(sorted(data_mod.SAMPLES_DIR.glob("*_small_*")))}
        return make_key("weights", parts), parts

    def weights_groups(self) -> Dict[str, Any]:
        """``{weights group: model adapter}`` of the plan's cells (BGMv2: one group per backbone)."""
        if "_groups" not in self.__dict__:  # the plan is fixed: one pass over its cells (207,900 in `full`)
            groups = {owner(c).weights_group(c): owner(c) for c in self.plan.cells}
            self._groups = {g: groups[g] for g in sorted(groups)}
        return dict(self._groups)

    def weights_ids(self) -> Dict[str, str]:
        """Identity of the calibrated weights of every weights group, known before calibrating (so results
        can come from the cache without any model work). Checkpoint ids come from prepare_weights."""
        for g in self.weights_groups():
            self.weights_id.setdefault(g, f"calibrated:{self.calibration_key(g)[0][:16]}")
        return dict(self.weights_id)

    def weights_of(self, cell: Cell) -> str:
        """The weights id of ``cell`` (its adapter's weights group)."""
        return self.weights_id[owner(cell).weights_group(cell)]

    def weights_file_names(self) -> Dict[str, str]:
        """File name of each weights group's calibrated weights in the output directory."""
        groups = list(self.weights_groups())
        return {g: "weights.pth" if len(groups) == 1 else f"weights-{g}.pth" for g in groups}

    def calibrated_info(self) -> Dict[str, Any]:
        """``environment.json``'s description of calibrated weights."""
        return {
            "source": "calibrated", "seed": self.s.seed, "files": sorted(self.weights_file_names().values()),
            "recipe": "; ".join(sorted({a.calibration_recipe for a in self.weights_groups().values()})),
        }

    def link_cached_weights(self, cache: Any, out: Path) -> bool:
        """Hard-link every weights group's cached calibrated weights into ``out``; False if one is not cached."""
        names = self.weights_file_names()
        hits = {bb: cache.get("weights", self.calibration_key(bb)[0]) for bb in names}
        if any(h is None for h in hits.values()):
            return False
        for bb, hit in hits.items():
            link_or_copy(hit / "weights.pth", Path(out) / names[bb])
        self.weights_info = self.calibrated_info()
        return True

    def inputs_id(self, res: Tuple[int, int], batch: int, model: Optional[str] = None) -> str:
        """Identity of the validation inputs of a (resolution, batch) from file contents (no decoding)."""
        memo = self.__dict__.setdefault("_inputs_ids", {})
        model = model or default_model()
        key = (model, tuple(res), batch)
        if key not in memo:
            memo[key] = self._inputs_id(res, batch, model)
        return memo[key]

    def _inputs_id(self, res: Tuple[int, int], batch: int, model: str) -> str:
        if self.opts.src:
            return f"user:{file_hash([Path(self.opts.src), Path(self.opts.bgr)])}:pad={self.opts.pad}:b{batch}"
        files = MODELS[model].input_files(tuple(res), batch, list(self.plan.samples))
        return f"samples:{file_hash(files)}:{res[0]}x{res[1]}:b{batch}"

    # ---------------------------------------------------------------- keys
    def model_parts(self, cell: Cell, precision: str) -> Dict[str, Any]:
        a = owner(cell)
        return {"weights": self.weights_of(cell), **a.model_parts(cell, self.s, precision), "model": a.name,
                "model_code": code_hash(*a.code_dir)}

    def field_value(self, cell: Cell, name: str, simplified: Optional[bool] = None) -> Any:
        """Value of a cell field or model setting named in :mod:`harness.targets` (``simplify`` can be
        overridden: the plain export of an onnxsim cell has ``simplify=False``)."""
        if name == "simplify" and simplified is not None:
            return bool(simplified)
        value = getattr(cell, name) if name in Cell.__dataclass_fields__ else getattr(self.s, name)
        return list(value) if isinstance(value, tuple) else value

    def artifact_parts(self, cell: Cell, simplified: bool) -> Dict[str, Any]:
        """What the cell's artifact key is made of: the values of exactly the fields its exporter declares
        it bakes (its plug-in's declaration, :meth:`harness.exporters.Exporter.spec`), the weights and the
        producing code (the plug-in's module and the modules it builds on)."""
        exporter = EXPORTERS[cell.exporter]
        return {"baked": {f: self.field_value(cell, f, simplified) for f in exporter.bakes},
                "weights": self.weights_of(cell), "model_code": code_hash(*owner(cell).code_dir),
                "exporter_code": _exporter_code(exporter)}

    def artifact_key(self, cell: Cell, simplified: bool) -> str:
        """Cache key of the cell's artifact, derived from its exporter's declaration (so a TorchScript file
        serves every refine mode and runtime, while an eager or AOTInductor one serves one mode)."""
        return make_key("artifact", self.artifact_parts(cell, simplified), packages=EXPORTERS[cell.exporter].packages)

    def result_key(self, cell: Cell) -> str:
        """Cache key of a cell's finished record: everything that can change it, including the
        tolerances, latency protocol, machine and thread count, all harness code, the versions of the
        exporter's and the runtime's packages (e.g. openvino, onnxruntime-gpu, tensorrt) and the runtime's
        identity (GPU name and driver for CUDA cells, the C++ runner's toolchain)."""
        parts = self.model_parts(cell, cell.precision)
        rt = RUNTIMES[cell.runtime]
        # the model's own code is in model_parts (its adapter's code_dir): editing one model re-runs its cells only
        parts.update(cell=cell.cell_id, settings=self.s.model_dump(),
                     inputs=self.inputs_id(cell.resolution, cell.batch, cell.model),
                     tolerance=self.plan.tolerances[cell.precision].model_dump(), device=self.device,
                     code=code_hash("harness"), runtime_identity=rt.identity(), cpu_flags=cpu_flags())
        return make_key("result", parts, packages=EXPORTERS[cell.exporter].packages + rt.packages)

    def unavailable(self, cell: Cell) -> Optional[str]:
        """Why the cell cannot run on this machine (its runtime's or exporter's reason: no CUDA, no C++
        compiler, a package missing), or None; asked once per (runtime, exporter, simplify) per process."""
        memo = self.__dict__.setdefault("_unavailable", {})
        k = (cell.runtime, cell.exporter, cell.simplify)
        if k not in memo:
            memo[k] = RUNTIMES[cell.runtime].unavailable() or EXPORTERS[cell.exporter].unavailable(cell.simplify)
        return memo[k]

    def base_record(self, cell: Cell) -> Dict[str, Any]:
        """The cell's axes and settings, as every record starts (also for crash/timeout records)."""
        rec: Dict[str, Any] = {"cell_id": cell.cell_id, **cell.as_dict()}
        rec.update({n: getattr(self.s, n) for n in owner(cell).record_settings()})
        rec.update(
            export_resolution=f"{self.s.export_resolution[0]}x{self.s.export_resolution[1]}",
            device=self.device,
        )
        h, w = cell.resolution  # with --src, the real input size (the CLI puts it into every cell)
        if self.opts.src and self.opts.pad and (h % 4 or w % 4):
            rec["padded_to"] = f"{h + (-h) % 4}x{w + (-w) % 4}"
        return rec


@functools.lru_cache(maxsize=None)
def _exporter_code(cls: type) -> str:
    """Hash of a plug-in's source files, once per process (like :func:`harness.cache.code_hash`: the code a
    process runs is what it imported; re-reading the files for each of 250,000 keys cost half a minute)."""
    return file_hash(_code_files(cls))


def _code_files(cls: type) -> list:
    """Source files of a plug-in class and of every harness class it derives from (sorted, unique)."""
    import sys

    files = {Path(sys.modules[c.__module__].__file__) for c in cls.__mro__
             if c.__module__.startswith("harness.") and getattr(sys.modules.get(c.__module__), "__file__", None)}
    return sorted(files)
