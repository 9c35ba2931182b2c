"""Runtimes: load an artifact, run it on ``(src, bgr)``, return the six outputs as numpy arrays.

A registry in the MMDeploy style: each runtime names the artifact format it consumes, the device it
runs on, and :meth:`Runtime.unavailable` says why it cannot run here (then cells are ``skip``, never
``error``: a CPU machine skips every CUDA runtime with the reason). Backends are imported lazily.

Two latency definitions (see :mod:`harness.benchmark`): :meth:`Runtime.run` is *end-to-end* (host
tensors in, numpy arrays out: includes host<->device copies); :meth:`Runtime.compute_fn` returns a call
on inputs already on the device with outputs left there (*device compute*; ORT uses IO binding).
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Tuple, Type

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

Outputs = List[np.ndarray]
HOISTED = ("backbone_scale", "refine_mode", "refine_sample_pixels", "refine_threshold", "refine_prevent_oversampling")


@functools.lru_cache(maxsize=None)
def gpu_identity() -> str:
    """``"<GPU name>, driver <version>"`` of every GPU ``nvidia-smi`` lists, or ``"none"`` (torch-free, once
    per process): CUDA results are only reused on the same GPU model and driver."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "none"
    try:
        out = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return "; ".join(sorted({ln.strip() for ln in out.splitlines() if ln.strip()})) or "none"


@functools.lru_cache(maxsize=None)
def gpu_compute_capability() -> Optional[str]:
    """Compute capability of the first GPU (``"9.0"``) from ``nvidia-smi``, or None without one (torch-free)."""
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def set_tf32(on: bool) -> None:
    """Allow or forbid TF32 in CUDA matmuls and cuDNN convolutions (PyTorch allows it for cuDNN by default,
    which moves fp32 results by ~1e-3: the matrix keeps it off unless a cell's ``tf32`` axis value is true)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def _no_cuda() -> Optional[str]:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "CUDA is not available here (torch.cuda.is_available() is False)"
    return None


class Runtime:
    """Base class. Subclasses set ``name``, ``format``, ``device`` and implement load/run.

    ``packages``: distributions (besides torch/torchvision/numpy) whose versions change this runtime's
    results; they enter the cell's result key, so upgrading e.g. OpenVINO re-runs the OpenVINO cells.
    :meth:`identity` adds what else the result depends on (GPU and driver, the C++ runner's toolchain)."""

    name = ""
    format = ""
    device = "cpu"
    packages: Tuple[str, ...] = ()

    @classmethod
    def identity(cls) -> Dict[str, object]:
        """Facts besides package versions that a cached result of this runtime depends on (torch-free)."""
        return {"gpu": gpu_identity()} if cls.device == "cuda" else {}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        """None when usable here, else a short reason (shown as ``skipped: <reason>``)."""
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        """Load the artifact; return session/load time in seconds. ``settings`` are runtime knobs."""
        raise NotImplementedError

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        """End-to-end: ``(B,3,H,W)`` host tensors in the artifact's dtype -> the 6 outputs as numpy."""
        raise NotImplementedError

    def compute_fn(self, src: Tensor, bgr: Tensor) -> Callable[[], object]:
        """A call that runs on inputs already on the device and leaves outputs there (device compute)."""
        return lambda: self.run(src, bgr)

    def peak_memory_mib(self) -> Optional[float]:
        """Peak device memory in MiB since load, where the runtime exposes it (CUDA via torch)."""
        return None

    def info(self) -> Dict[str, object]:
        """Runtime facts worth recording (e.g. ``cudnn_benchmark``, execution providers)."""
        return {}

    def prepare(self, cache: object, work_dir: Path) -> Dict[str, object]:
        """Build or fetch what the runtime needs before :meth:`load` (``cache``: the run's
        :class:`~harness.cache.Cache`); returns facts for the record. Default: nothing to do."""
        return {}

    def measure_native(self, src: Tensor, bgr: Tensor, what: str, protocol: object, device: str,
                       batch: int) -> Optional[object]:
        """Latency timed by the runtime itself (a :class:`~harness.benchmark.Latency`), or None to be
        timed by the harness around :meth:`run` / :meth:`compute_fn`. ``what``: end-to-end | compute."""
        return None

    def close(self) -> None:
        """Release processes or sessions held since :meth:`load` (called once per cell)."""


class _TorchModule(Runtime):
    """Shared by the TorchScript and eager runtimes: a ``torch.nn.Module`` on ``self.device``."""

    def _finish_load(self, settings: Dict[str, object], hoisted: bool = True) -> None:
        import torch

        for key in HOISTED if hoisted else ():
            if key in settings:
                setattr(self.module, key, settings[key])
        self.module.eval()
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = bool(settings.get("cudnn_benchmark", True))
            set_tf32(bool(settings.get("tf32", False)))
            torch.cuda.reset_peak_memory_stats()

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        import torch

        with torch.inference_mode():
            outs = self.module(src.to(self.device), bgr.to(self.device))
            return [o.cpu().numpy() for o in outs]

    def compute_fn(self, src: Tensor, bgr: Tensor) -> Callable[[], object]:
        import torch

        s, b = src.to(self.device), bgr.to(self.device)

        def call():
            with torch.inference_mode():
                return self.module(s, b)

        return call

    def peak_memory_mib(self) -> Optional[float]:
        if self.device != "cuda":
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 2**20

    def info(self) -> Dict[str, object]:
        if self.device != "cuda":
            return {}
        import torch

        return {"cudnn_benchmark": bool(torch.backends.cudnn.benchmark), "gpu": torch.cuda.get_device_name(0),
                "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
                "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}


class TorchScriptCPU(_TorchModule):
    """``torch.jit.load`` on CPU; the hoisted settings are set with ``setattr`` after loading."""

    name = "torchscript-cpu"
    format = "torchscript"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            self.module = torch.jit.load(path, map_location=self.device)
        self._finish_load(settings)
        return time.perf_counter() - t0


class _OnCUDA:
    """Mixin for the torch runtimes' CUDA variants: device ``cuda``, ``skip`` where CUDA is absent."""

    device = "cuda"

    @classmethod
    def unavailable(cls) -> Optional[str]:
        return _no_cuda()


class TorchScriptCUDA(_OnCUDA, TorchScriptCPU):
    """TorchScript on CUDA (``cudnn.benchmark`` on by default, recorded)."""

    name = "torchscript-cuda"


class EagerCPU(_TorchModule):
    """Eager PyTorch: the ``eager`` exporter's ``model.pth`` (state_dict, ``weights_only``) plus
    ``model.json`` (constructor arguments). The reference implementation's own speed."""

    name = "eager-cpu"
    format = "eager"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        from model import MattingRefine

        t0 = time.perf_counter()
        spec = json.loads(Path(path).with_suffix(".json").read_text())
        m = MattingRefine(**spec["kwargs"])
        m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        dtype = {"fp32": torch.float32, "fp16": torch.float16}[spec["precision"]]
        self.module = m.to(device=self.device, dtype=dtype).eval()
        self._finish_load(settings, hoisted=False)  # the model was built with the cell's settings
        return time.perf_counter() - t0


class EagerCUDA(_OnCUDA, EagerCPU):
    """Eager PyTorch on CUDA (``cudnn.benchmark`` on by default, recorded)."""

    name = "eager-cuda"


class AOTInductorCPU(_TorchModule):
    """An AOTInductor ``.pt2`` package loaded with ``torch._inductor.aoti_load_package`` on CPU."""

    name = "aoti-cpu"
    format = "aoti"

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import torch

        t0 = time.perf_counter()
        self.module = torch._inductor.aoti_load_package(path)
        return time.perf_counter() - t0

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        import torch

        with torch.inference_mode():
            return [o.cpu().numpy() for o in self.module(src, bgr)]

    def compute_fn(self, src: Tensor, bgr: Tensor) -> Callable[[], object]:
        import torch

        def call():
            with torch.inference_mode():
                return self.module(src, bgr)

        return call


class LibTorchCpp(Runtime):
    """A C++ program (``harness/cpp/matting_runner.cpp``) built with CMake against the libtorch inside
    the torch wheel: ``torch::jit::load`` of the TorchScript artifact, the hoisted attributes set with
    ``Module::setattr``, inference on the cell's images with outputs written back for parity, and the
    latency protocol timed inside the binary (``steady_clock``), not around process launches.

    Built once and cached (:mod:`harness.cpp_runner`); ``skip`` where CMake or a C++ compiler is
    missing. ``roi_align`` artifacts need torchvision's operators in C++ (see the module's notes)."""

    name = "libtorch-cpp"
    format = "torchscript"

    @classmethod
    def identity(cls) -> Dict[str, object]:
        from . import cpp_runner

        return {"cpp_toolchain": cpp_runner.toolchain_id()}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        from . import cpp_runner

        return cpp_runner.unavailable()

    def prepare(self, cache: object, work_dir: Path) -> Dict[str, object]:
        from . import cpp_runner

        self.binary, facts = cpp_runner.ensure_binary(cache, work_dir)  # type: ignore[arg-type]
        return dict(facts)

    def load(self, path: str, settings: Dict[str, object]) -> float:
        from . import cpp_runner

        attrs = {k: settings[k] for k in HOISTED if k in settings}
        self.proc = cpp_runner.RunnerProcess(self.binary, path, attrs, int(settings.get("threads") or 0))
        return float(self.proc.ready["load_ms"]) / 1e3

    def _sync_threads(self) -> None:
        import torch

        self.proc.set_threads(torch.get_num_threads())  # the harness's current intra-op setting

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        self._sync_threads()
        outs, self.last_run_ms = self.proc.run(src.numpy(), bgr.numpy())
        return outs

    def measure_native(self, src: Tensor, bgr: Tensor, what: str, protocol: object, device: str,
                       batch: int) -> Optional[object]:
        from .benchmark import summarize

        self._sync_threads()
        r = self.proc.bench(src.numpy(), bgr.numpy(), what, protocol)
        return summarize(np.asarray(r["samples_ms"], dtype=float), warmup_runs=int(r["warmup_runs"]),
                         warmup_s=float(r["warmup_s"]), measure_s=float(r["measure_s"]), cold_ms=None,
                         batch=batch, clock=f"{r['clock']} (in libtorch-cpp)", device=device,
                         protocol=protocol)  # type: ignore[arg-type]

    def info(self) -> Dict[str, object]:
        proc = getattr(self, "proc", None)
        if proc is None:
            return {}
        out: Dict[str, object] = {"libtorch": proc.ready.get("torch"), "threads": proc.ready.get("threads"),
                                  "attrs": proc.ready.get("attrs"), "process_start_s": round(proc.start_s, 3)}
        if proc.ready.get("ops_errors"):
            out["ops_library_errors"] = proc.ready["ops_errors"]
        return out

    def close(self) -> None:
        proc = getattr(self, "proc", None)
        if proc is not None:
            proc.close()
            self.proc = None


class OnnxRuntimeCPU(Runtime):
    """onnxruntime ``InferenceSession`` with the CPU execution provider (providers given explicitly)."""

    name = "onnxruntime-cpu"
    format = "onnx"
    packages = ("onnxruntime", "onnxruntime-gpu")
    providers: Tuple[str, ...] = ("CPUExecutionProvider",)

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        missing = [p for p in cls.providers if p not in ort.get_available_providers()]
        if missing:
            return (f"onnxruntime {ort.__version__} has no {missing[0]} (available: "
                    f"{', '.join(ort.get_available_providers())}; install onnxruntime-gpu)")
        return None

    def _provider_options(self, settings: Dict[str, object]) -> list:
        return [{} for _ in self.providers]

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import onnxruntime as ort

        t0 = time.perf_counter()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if settings.get("threads") and self.device == "cpu":
            opts.intra_op_num_threads = int(settings["threads"])
        self.session = ort.InferenceSession(path, opts, providers=list(self.providers),
                                            provider_options=self._provider_options(settings))
        self.output_names = [o.name for o in self.session.get_outputs()]
        return time.perf_counter() - t0

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        return self.session.run(self.output_names, {"src": src.numpy(), "bgr": bgr.numpy()})

    def compute_fn(self, src: Tensor, bgr: Tensor) -> Callable[[], object]:
        import onnxruntime as ort

        dev = "cuda" if self.device == "cuda" else "cpu"
        binding = self.session.io_binding()
        for name, t in (("src", src), ("bgr", bgr)):
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(t.numpy(), dev, 0))
        for name in self.output_names:
            binding.bind_output(name, dev)

        def call():
            self.session.run_with_iobinding(binding)

        return call

    def info(self) -> Dict[str, object]:
        return {"providers": self.session.get_providers()} if hasattr(self, "session") else {}


class OnnxRuntimeCUDA(OnnxRuntimeCPU):
    """onnxruntime with the CUDA execution provider (needs ``onnxruntime-gpu``)."""

    name = "onnxruntime-cuda"
    device = "cuda"
    providers = ("CUDAExecutionProvider",)


class OnnxRuntimeTensorRT(OnnxRuntimeCPU):
    """onnxruntime with the TensorRT execution provider (fp16 engines for fp16 models), CUDA EP fallback."""

    name = "onnxruntime-tensorrt"
    device = "cuda"
    packages = ("onnxruntime", "onnxruntime-gpu", "tensorrt")
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

    def _provider_options(self, settings: Dict[str, object]) -> list:
        trt = {"trt_fp16_enable": settings.get("precision") == "fp16"}
        return [trt, {}]


class OpenVINOCPU(Runtime):
    """OpenVINO on CPU, reading the ONNX file directly (``Core.compile_model``).

    The inference precision is pinned to the model's (``INFERENCE_PRECISION_HINT`` f32 for fp32 models):
    OpenVINO's CPU plugin otherwise runs fp32 models in bfloat16 on CPUs that support it, which moved
    alpha by up to 1.0 here (TopK picks other patches). The plugin's default is kept in ``info()``."""

    name = "openvino-cpu"
    format = "onnx"
    packages = ("openvino",)

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import openvino  # noqa: F401
        except ImportError:
            return "openvino is not installed (pip install 'matting-export-matrix[openvino]')"
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        import openvino as ov

        t0 = time.perf_counter()
        core = ov.Core()
        self.default_precision = _ov_type_name(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        self.requested = "f16" if settings.get("precision") == "fp16" else "f32"
        config = {"INFERENCE_PRECISION_HINT": self.requested}
        if settings.get("threads"):
            config["INFERENCE_NUM_THREADS"] = int(settings["threads"])
        self.compiled = core.compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.version = ov.__version__
        return time.perf_counter() - t0

    def run(self, src: Tensor, bgr: Tensor) -> Outputs:
        res = self.request.infer({"src": src.numpy(), "bgr": bgr.numpy()})
        return [np.asarray(res[o]) for o in self.compiled.outputs]

    def compute_fn(self, src: Tensor, bgr: Tensor) -> Callable[[], object]:
        import openvino as ov

        self.request.set_tensor("src", ov.Tensor(src.numpy(), shared_memory=True))
        self.request.set_tensor("bgr", ov.Tensor(bgr.numpy(), shared_memory=True))
        return self.request.infer

    def info(self) -> Dict[str, object]:
        if not hasattr(self, "compiled"):
            return {}
        return {"openvino": self.version, "default_inference_precision": self.default_precision,
                "requested_inference_precision": self.requested,
                "inference_precision": _ov_type_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))}


def _ov_type_name(t: object) -> str:
    """``"bfloat16"`` / ``"float16"`` / ``"float32"`` for an OpenVINO element type (its repr is ``<Type: ...>``)."""
    name = getattr(t, "get_type_name", None)
    return str(name()) if callable(name) else str(t)


RUNTIMES: Dict[str, Type[Runtime]] = {
    r.name: r for r in (TorchScriptCPU, OnnxRuntimeCPU, EagerCPU, OpenVINOCPU, AOTInductorCPU, LibTorchCpp, TorchScriptCUDA,
                        EagerCUDA, OnnxRuntimeCUDA, OnnxRuntimeTensorRT)
}


def runtimes_for(fmt: str) -> Tuple[str, ...]:
    """Names of registered runtimes that consume artifact format ``fmt``."""
    return tuple(name for name, cls in RUNTIMES.items() if cls.format == fmt)
