"""``executorch-cpu``: ExecuTorch's Python runtime (``executorch.runtime``) running an XNNPACK ``.pte``."""

from __future__ import annotations

import time
from typing import Dict, Optional

from ..cache import package_version
from . import Feeds, Outputs, Runtime, register_runtime

_THREADS: Dict[str, Optional[int]] = {"set": None}


def _threadpool(n: int) -> int:
    """Size XNNPACK's thread pool once per process, before any method is loaded (resetting it after a
    method ran crashed the process with executorch 1.5.1); returns the pool's size."""
    from executorch.extension.pybindings import portable_lib as pl

    if _THREADS["set"] is None and n > 0:
        if pl._threadpool_get_thread_count() != n:
            pl._unsafe_reset_threadpool(n)
        _THREADS["set"] = n
    return int(pl._threadpool_get_thread_count())


@register_runtime
class ExecuTorchCPU(Runtime):
    """``Runtime.get().load_program(path).load_method("forward")``; ``execute`` takes the inputs in order and
    returns the outputs in order (torch tensors). The thread pool gets ``settings["threads"]`` threads."""

    name = "executorch-cpu"
    format = "pte"
    packages = ("executorch",)

    @classmethod
    def unavailable(cls) -> Optional[str]:
        try:
            import executorch.runtime  # noqa: F401
        except Exception as e:  # noqa: BLE001 - any import failure means "cannot run here"
            return f"executorch's runtime cannot be imported ({type(e).__name__}: {str(e)[:120]}; pip install executorch)"
        return None

    def load(self, path: str, settings: Dict[str, object]) -> float:
        from executorch.runtime import Runtime as ETRuntime

        t0 = time.perf_counter()
        self._names(settings)
        self.threads = _threadpool(int(settings.get("threads") or 0))
        self.method = ETRuntime.get().load_program(path).load_method("forward")
        return time.perf_counter() - t0

    def run(self, feeds: Feeds) -> Outputs:
        return self.named(self.method.execute([feeds[n] for n in self.input_names]))

    def info(self) -> Dict[str, object]:
        return {"executorch": package_version("executorch"), "threads": getattr(self, "threads", None)}
