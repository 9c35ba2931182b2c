"""Runtime plug-ins: load an artifact, run it on named feeds, return named numpy outputs.

A registry in the MMDeploy style: each runtime is a :class:`Runtime` subclass in its own module of this
package, decorated with :func:`register_runtime` (every module whose name does not start with ``_`` is
imported with the package, so adding a runtime is adding a file; see docs/architecture.md). It declares
the artifact ``format`` it consumes (the string its exporters declare), the ``device`` it runs on and the
``packages`` whose versions change its results; :meth:`Runtime.unavailable` says why it cannot run here
(then its cells are ``skip``, never ``error``: a CPU machine skips every CUDA runtime with the reason).
Backends are imported lazily, inside the methods.

The contract (the same for every model): :meth:`Runtime.load` an artifact with ``settings`` (runtime
knobs plus the model adapter's ``input_names``/``output_names``), then :meth:`Runtime.run` ``feeds``
(``{input name: host tensor}``) -> ``{output name: numpy array}``; :meth:`Runtime.reset` clears the
state a stateful model keeps between calls. Two latency definitions (:mod:`harness.benchmark`):
:meth:`Runtime.run` is *end-to-end* (host tensors in, numpy arrays out: includes host<->device copies);
:meth:`Runtime.compute_fn` returns a call on inputs already on the device with outputs left there
(*device compute*; ORT uses IO binding).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Dict, Optional, Sequence, Tuple, Type

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

Feeds = Dict[str, "Tensor"]
Outputs = Dict[str, np.ndarray]
# TorchScript's hoisted attributes, set with setattr after loading: every model adapter's ``hoisted``
from ..targets import TORCHSCRIPT_SETTABLE as HOISTED  # noqa: E402
from ..system import gpu_identity  # noqa: E402 - the GPU in a CUDA runtime's identity (harness/system.py)


def set_tf32(on: bool) -> None:
    """Allow or forbid TF32 in CUDA matmuls and cuDNN convolutions (PyTorch allows it for cuDNN by default,
    which moves fp32 results by ~1e-3: the matrix keeps it off unless a cell's ``tf32`` axis value is true)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def no_cuda() -> Optional[str]:
    """None when torch sees a CUDA device, else the reason (for ``unavailable`` of CUDA runtimes)."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "CUDA is not available here (torch.cuda.is_available() is False)"
    return None


class Runtime:
    """Base class of the runtime plug-ins. Subclasses set ``name``, ``format``, ``device`` and implement
    :meth:`load` and :meth:`run`.

    ``packages``: distributions (besides torch/torchvision/numpy) whose versions change this runtime's
    results; they enter the cell's result key, so upgrading e.g. OpenVINO re-runs the OpenVINO cells.
    :meth:`identity` adds what else the result depends on (GPU and driver, the C++ runner's toolchain)."""

    name: ClassVar[str] = ""
    format: ClassVar[str] = ""
    device: ClassVar[str] = "cpu"
    packages: ClassVar[Tuple[str, ...]] = ()
    # record fields :meth:`prepare` returns ({name: type}, harness/record.py)
    record_fields: ClassVar[Dict[str, Any]] = {}
    # the model adapters whose I/O this runtime can carry (None: any, through named feeds); cells of other
    # models are not made (harness/config.py _cells)
    models: ClassVar[Optional[Tuple[str, ...]]] = None

    @classmethod
    def serves(cls, adapter: Any) -> bool:
        """Whether this runtime can run artifacts of the model ``adapter`` (default: :attr:`models` lists it,
        or lists nothing)."""
        return cls.models is None or adapter.name in cls.models

    input_names: Tuple[str, ...] = ("src", "bgr")
    output_names: Tuple[str, ...] = ()

    @classmethod
    def identity(cls) -> Dict[str, object]:
        """Facts besides package versions that a cached result of this runtime depends on (torch-free)."""
        return {"gpu": gpu_identity()} if cls.device == "cuda" else {}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        """None when usable here, else a short reason (shown as ``skipped: <reason>``)."""
        return None

    def prepare(self, cache: object, work_dir: Path) -> Dict[str, object]:
        """Build or fetch what the runtime needs before :meth:`load` (``cache``: the run's
        :class:`~harness.cache.Cache`); returns facts for the record. Default: nothing to do."""
        return {}

    def load(self, path: str, settings: Dict[str, object]) -> float:
        """Load the artifact at ``path``; return the session/load time in seconds. ``settings``: runtime knobs
        (``threads``, ``precision``, ``tf32``, the hoisted model settings) and the model's ``input_names`` and
        ``output_names`` (tuples)."""
        raise NotImplementedError

    def _names(self, settings: Dict[str, object]) -> None:
        self.input_names = tuple(settings.get("input_names") or self.input_names)  # type: ignore[arg-type]
        self.output_names = tuple(settings.get("output_names") or self.output_names)  # type: ignore[arg-type]

    def run(self, feeds: Feeds) -> Outputs:
        """End-to-end: ``{input name: host tensor in the artifact's dtype}`` -> ``{output name: numpy array}``."""
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the state a stateful model carries between calls (a new sequence starts). Default: none."""

    def compute_fn(self, feeds: Feeds) -> Callable[[], object]:
        """A call that runs on inputs already on the device and leaves outputs there (device compute)."""
        return lambda: self.run(feeds)

    def measure_native(self, feeds: Feeds, what: str, protocol: object, device: str, batch: int) -> Optional[object]:
        """Latency timed by the runtime itself (a :class:`~harness.benchmark.Latency`), or None to be
        timed by the harness around :meth:`run` / :meth:`compute_fn`. ``what``: end-to-end | compute."""
        return None

    def peak_memory_mib(self) -> Optional[float]:
        """Peak device memory in MiB since load, where the runtime exposes it (CUDA via torch)."""
        return None

    def info(self) -> Dict[str, object]:
        """Runtime facts worth recording (e.g. ``cudnn_benchmark``, execution providers); rules may be
        conditioned on them (``runtime_info`` in matrix.yaml)."""
        return {}

    def close(self) -> None:
        """Release processes or sessions held since :meth:`load` (called once per cell)."""

    def named(self, outs: Sequence[object]) -> Outputs:
        """``{output name: numpy array}`` from a positional sequence of tensors/arrays."""
        return {n: _numpy(o) for n, o in zip(self.output_names, outs)}


def _numpy(o: object) -> np.ndarray:
    if isinstance(o, np.ndarray):
        return o
    cpu = getattr(o, "cpu", None)
    return cpu().numpy() if callable(cpu) else np.asarray(o)




RUNTIMES: Dict[str, Type[Runtime]] = {}


def register_runtime(cls: Type[Runtime]) -> Type[Runtime]:
    """Class decorator: add a runtime plug-in to :data:`RUNTIMES` under ``cls.name``.

    Raises:
        ValueError: ``name``/``format`` missing, or the name already taken by another class."""
    if not cls.name or not cls.format:
        raise ValueError(f"runtime class {cls.__name__} must set name and format")
    if cls.name in RUNTIMES and RUNTIMES[cls.name] is not cls:
        raise ValueError(f"runtime name {cls.name!r} is registered twice ({RUNTIMES[cls.name].__name__}, {cls.__name__})")
    RUNTIMES[cls.name] = cls
    return cls


def runtimes_for(fmt: str) -> Tuple[str, ...]:
    """Names of registered runtimes that consume artifact format ``fmt``."""
    return tuple(name for name, cls in RUNTIMES.items() if cls.format == fmt)


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


_discover()
