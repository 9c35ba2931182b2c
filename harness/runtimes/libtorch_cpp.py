"""``libtorch-cpp``: the TorchScript artifact in a C++ process (harness/cpp/matting_runner.cpp)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import numpy as np

from .. import cpp_runner
from ..benchmark import summarize
from . import HOISTED, Feeds, Outputs, Runtime, register_runtime


@register_runtime
class LibTorchCpp(Runtime):
    """A C++ program built with CMake against the libtorch inside the torch wheel: ``torch::jit::load`` of the
    TorchScript artifact, the hoisted attributes set with ``Module::setattr``, inference on the cell's
    images with outputs written back for parity, and the latency protocol timed inside the binary
    (``steady_clock``), not around process launches.

    Built once and cached (:mod:`harness.cpp_runner`); ``skip`` where CMake or a C++ compiler is
    missing. ``roi_align`` artifacts need torchvision's operators in C++ (see that module's notes). The
    binary feeds ``forward()`` the artifact's tensor inputs in order (BGMv2: two, RVM: six) and returns its
    outputs."""

    name = "libtorch-cpp"
    format = "torchscript"
    record_fields = {"cpp_build_cached": bool, "cpp_build_s": float, "cpp_compiler": str, "cpp_build_key": str}

    @classmethod
    def serves(cls, adapter: object) -> bool:
        """harness/cpp/matting_runner.cpp feeds ``forward()`` the artifact's inputs in order and returns its
        tuple: the models whose TorchScript artifact takes and returns tensors only
        (:attr:`harness.models.ModelAdapter.torchscript_tensor_io`)."""
        return bool(getattr(adapter, "torchscript_tensor_io", False))

    @classmethod
    def identity(cls) -> Dict[str, object]:
        return {"cpp_toolchain": cpp_runner.toolchain_id()}

    @classmethod
    def unavailable(cls) -> Optional[str]:
        return cpp_runner.unavailable()

    def prepare(self, cache: object, work_dir: Path) -> Dict[str, object]:
        self.binary, facts = cpp_runner.ensure_binary(cache, work_dir)  # type: ignore[arg-type]
        return dict(facts)

    def load(self, path: str, settings: Dict[str, object]) -> float:
        self._names(settings)
        attrs = {k: settings[k] for k in HOISTED if k in settings}
        self.proc = cpp_runner.RunnerProcess(self.binary, path, attrs, int(settings.get("threads") or 0))
        return float(self.proc.ready["load_ms"]) / 1e3

    def _sync_threads(self) -> None:
        import torch

        self.proc.set_threads(torch.get_num_threads())  # the harness's current intra-op setting

    def _arrays(self, feeds: Feeds) -> list:
        return [feeds[n].numpy() for n in self.input_names]

    def run(self, feeds: Feeds) -> Outputs:
        self._sync_threads()
        outs, self.last_run_ms = self.proc.run(*self._arrays(feeds))
        return self.named(outs)

    def measure_native(self, feeds: Feeds, what: str, protocol: object, device: str, batch: int) -> Optional[object]:
        """The latency protocol timed inside the runner, with the harness's current intra-op thread count.

        Raises:
            RunnerError: the runner timed with another thread count than the harness set (its ``bench``
                reply says which ``at::get_num_threads()`` the timed calls ran with)."""
        import torch

        self._sync_threads()
        r = self.proc.bench(*self._arrays(feeds), what, protocol)
        if int(r["threads"]) != torch.get_num_threads():
            raise cpp_runner.RunnerError(f"libtorch-cpp timed with {r['threads']} intra-op threads, the harness "
                                         f"asked for {torch.get_num_threads()}")
        lat = summarize(np.asarray(r["samples_ms"], dtype=float), warmup_runs=int(r["warmup_runs"]),
                        warmup_s=float(r["warmup_s"]), measure_s=float(r["measure_s"]), cold_ms=None,
                        batch=batch, clock=f"{r['clock']} (in libtorch-cpp)", device=device,
                        protocol=protocol)  # type: ignore[arg-type]
        lat.threads = int(r["threads"])
        return lat

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
