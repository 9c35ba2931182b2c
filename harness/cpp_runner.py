"""The ``libtorch-cpp`` runtime's C++ side: build ``harness/cpp/matting_runner`` once, and talk to it.

Build: CMake against the libtorch inside the installed torch wheel (``torch.utils.cmake_prefix_path``),
once per torch installation and compiler. The binary is stored in the content-addressed cache (kind
``tool``; key: the C++ sources, torch version and install path, compiler and CMake versions), so every
worker and every later run reuses it; a file lock makes concurrent workers wait for one build instead
of racing. With ``--no-cache`` the build lives in the run's ``tools/`` folder, still once per run.

Client: :class:`RunnerProcess` starts the binary on one TorchScript artifact (hoisted attributes set
with ``Module::setattr`` from ``--set NAME=VALUE``) and exchanges TAB-separated requests and one-line
JSON replies over pipes; tensors travel as ``.npy`` files in a private temporary folder (``/dev/shm``
when present). Latency is timed inside the binary (``bench``), so process start-up and the ``.npy``
transfer never enter the numbers.

torchvision's operators: a ``roi_align`` artifact needs ``torchvision::roi_align`` registered in the C++
process. The torchvision wheel ships its operators as a Python extension (``_C.so``/``_C_stable.so``
linking ``libtorch_python.so``), which does not load outside Python ("undefined symbol: Py..."), so such
artifacts fail to load unless ``MATRIX_TORCHVISION_OPS`` names a C++ build of torchvision's operators
(e.g. ``libtorchvision.so`` from torchvision's CMake project). The reason says so.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cache import Cache, file_hash, make_key

SOURCE_DIR = Path(__file__).resolve().parent / "cpp"
SOURCES = ("CMakeLists.txt", "matting_runner.cpp")
BINARY = "matting_runner"
TORCHVISION_OPS_ENV = "MATRIX_TORCHVISION_OPS"
_BUILT: Dict[str, Tuple[Path, Dict[str, Any]]] = {}  # per process: key -> (binary, build facts)


class BuildError(RuntimeError):
    """The C++ runner did not build; the message holds the failing command and the log's tail."""


def compiler() -> Optional[str]:
    """The C++ compiler CMake will use: ``$CXX``, else ``c++`` or ``g++`` on PATH (None if absent)."""
    cxx = os.environ.get("CXX")
    if cxx and shutil.which(cxx):
        return shutil.which(cxx)
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def unavailable() -> Optional[str]:
    """Why the runner cannot be built here (None when CMake, a C++ compiler and libtorch headers exist)."""
    if compiler() is None:
        return "no C++ compiler on PATH (c++, g++ or clang++; the libtorch-cpp runner is built with CMake)"
    if shutil.which("cmake") is None:
        return "cmake is not on PATH (the libtorch-cpp runner is built with CMake)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    root = Path(torch.utils.cmake_prefix_path).parent.parent
    if not (root / "include" / "torch" / "script.h").is_file():
        return f"this torch installation ships no C++ headers ({root / 'include' / 'torch' / 'script.h'} is missing)"
    return None


def _first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0].strip() if out else "?"


@functools.lru_cache(maxsize=None)
def toolchain_id() -> Dict[str, str]:
    """Torch-free identity of the runner's build: its sources, the compiler and CMake (the torch version
    is in every key already). Part of libtorch-cpp result keys; computed once per process."""
    return {"sources": file_hash(SOURCE_DIR / s for s in SOURCES),
            "compiler": _first_line([compiler() or "c++", "--version"]),
            "cmake": _first_line(["cmake", "--version"])}


@functools.lru_cache(maxsize=None)
def build_key() -> Tuple[str, Dict[str, Any]]:
    """Cache key of the binary and the facts it depends on (computed once per process: it hashes the
    sources and runs ``c++ --version`` and ``cmake --version``). Callers must not mutate ``parts``."""
    import torch

    parts = {
        **toolchain_id(),
        "torch": torch.__version__,
        "torch_prefix": str(Path(torch.utils.cmake_prefix_path).resolve()),
        "cxx11_abi": int(torch.compiled_with_cxx11_abi()),
    }
    return make_key("tool", parts), parts


def _build(build_dir: Path, parts: Dict[str, Any]) -> float:
    """Configure and build into ``build_dir``; returns seconds. Raises BuildError with the log's tail."""
    import torch

    build_dir.mkdir(parents=True, exist_ok=True)
    log = build_dir / "build.log"
    t0 = time.perf_counter()
    env = dict(os.environ, CXX=compiler() or "c++")
    commands = [
        ["cmake", "-S", str(SOURCE_DIR), "-B", str(build_dir / "cmake"), "-DCMAKE_BUILD_TYPE=Release",
         f"-DTORCH_CMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", f"-DTORCH_CXX11_ABI={parts['cxx11_abi']}"],
        ["cmake", "--build", str(build_dir / "cmake"), "--parallel", str(max(1, os.cpu_count() or 1))],
    ]
    with open(log, "w") as f:
        for cmd in commands:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
            if rc != 0:
                tail = log.read_text(errors="replace").strip().splitlines()[-12:]
                raise BuildError(f"building the libtorch-cpp runner failed ({' '.join(cmd[:2])} exit {rc}); "
                                 f"log {log}: " + " | ".join(tail))
    shutil.copy2(build_dir / "cmake" / BINARY, build_dir / BINARY)
    return time.perf_counter() - t0


def ensure_binary(cache: Cache, work_dir: Path) -> Tuple[Path, Dict[str, Any]]:
    """Path of a built runner and build facts (``cpp_build_s``, ``cpp_build_cached``, ``cpp_compiler``).

    Looks in ``cache`` first; otherwise builds under ``work_dir/tools/`` holding a file lock (other
    workers wait for it, then reuse the result) and stores the binary in the cache.

    Raises:
        BuildError: CMake or the compiler failed (a failure is remembered for the rest of the run).
    """
    key, parts = build_key()
    if key in _BUILT:
        binary, facts = _BUILT[key]
        return binary, dict(facts, cpp_build_cached=True)  # built earlier in this process
    facts: Dict[str, Any] = {"cpp_compiler": parts["compiler"], "cpp_build_key": key[:16]}

    def from_cache() -> bool:
        hit = cache.get("tool", key)
        if hit is not None:
            facts.update(cpp_build_cached=True, cpp_build_s=cache.meta("tool", key).get("build_s"))
            _BUILT[key] = (hit / BINARY, facts)
        return hit is not None

    if from_cache():
        return _BUILT[key]
    tools = Path(work_dir) / "tools"
    tools.mkdir(parents=True, exist_ok=True)
    build_dir = tools / f"libtorch-cpp-{key[:16]}"
    with open(tools / f".libtorch-cpp-{key[:16]}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        failed = build_dir / "FAILED"
        if failed.is_file():
            raise BuildError(failed.read_text())
        if from_cache():  # another worker built it while this one waited for the lock
            return _BUILT[key]
        binary = build_dir / BINARY
        meta_file = build_dir / "build.json"
        if binary.is_file() and meta_file.is_file():  # built by another worker of this run (no cache)
            facts.update(cpp_build_cached=True, cpp_build_s=json.loads(meta_file.read_text())["build_s"])
        else:
            try:
                seconds = _build(build_dir, parts)
            except BuildError as e:
                failed.write_text(str(e))
                raise
            meta_file.write_text(json.dumps({"build_s": round(seconds, 2), **parts}))
            facts.update(cpp_build_cached=False, cpp_build_s=round(seconds, 2))
            stored = cache.put("tool", key, {BINARY: binary, "build.log": build_dir / "build.log"},
                               {"build_s": round(seconds, 2), **parts})
            if stored is not None:
                binary = stored / BINARY
    _BUILT[key] = (binary, facts)
    return _BUILT[key]


def torchvision_ops_libraries() -> List[str]:
    """Operator libraries to offer the runner: ``$MATRIX_TORCHVISION_OPS`` if set, else the compiled
    extension(s) of the installed torchvision wheel (which usually fail outside Python; see above)."""
    if os.environ.get(TORCHVISION_OPS_ENV):
        return [p for p in os.environ[TORCHVISION_OPS_ENV].split(os.pathsep) if p]
    try:
        import importlib.util

        spec = importlib.util.find_spec("torchvision")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(list(spec.submodule_search_locations)[0])
    return [str(p) for p in sorted(root.glob("_C*.so"))]


class RunnerError(RuntimeError):
    """The runner refused a request or died; the message is the runner's own error text."""


class RunnerProcess:
    """One running ``matting_runner`` serving one TorchScript artifact.

    Args:
        binary: the built runner.
        model: TorchScript ``.pt`` path.
        attributes: hoisted attributes to set (name -> value; floats, ints, bools and strings).
        threads: intra-op threads (``at::set_num_threads``); 0 keeps libtorch's default.

    Raises:
        RunnerError: the model did not load (message from libtorch, plus why operator libraries
            did not load when the model needs torchvision's operators).
    """

    def __init__(self, binary: Path, model: str, attributes: Dict[str, Any], threads: int = 0) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="libtorch-cpp-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        self.stderr = open(self.workdir / "stderr.log", "w+")
        cmd = [str(binary), "--model", str(model), "--threads", str(int(threads or 0))]
        for lib in torchvision_ops_libraries():
            cmd += ["--ops-library", lib]
        for name, value in attributes.items():
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            cmd += ["--set", f"{name}={text}"]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)
        ready = self._read()
        self.start_s = time.perf_counter() - t0
        if not ready.get("ready"):
            self.close()
            raise RunnerError(_explain_load_error(ready))
        self.ready = ready
        self.n = 0

    def _read(self) -> Dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            rc = self.proc.wait(timeout=30)
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-8:])
            raise RunnerError(f"the libtorch-cpp runner exited with code {rc}" + (f": {tail}" if tail else ""))
        return json.loads(line)

    def request(self, *fields: str) -> Dict[str, Any]:
        """Send one TAB-separated request; return the reply. Raises RunnerError on ``ok: false``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\t".join(fields) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if not reply.get("ok"):
            raise RunnerError(f"libtorch-cpp: {reply.get('error', reply)}")
        return reply

    def _inputs(self, arrays: Sequence[np.ndarray]) -> List[str]:
        paths = []
        for k, a in enumerate(arrays):
            path = self.workdir / f"in{k}.npy"
            np.save(path, np.ascontiguousarray(a))
            paths.append(str(path))
        return paths

    def set_threads(self, n: int) -> None:
        """Intra-op threads for the following requests (``at::set_num_threads``)."""
        if n and n != self.ready.get("threads"):
            self.ready["threads"] = int(self.request("threads", str(int(n)))["threads"])

    def run(self, *arrays: np.ndarray) -> Tuple[List[np.ndarray], float]:
        """One inference on the artifact's inputs in ``forward()``'s order (BGMv2: ``src``, ``bgr`` ``(B,3,H,W)``;
        RVM: ``src``, ``r1i..r4i``, ``downsample_ratio``), in the artifact's dtype; returns the outputs and the
        forward time measured inside the runner (ms)."""
        paths = self._inputs(arrays)
        out = self.workdir / f"out-{self.n}"
        self.n += 1
        out.mkdir()
        reply = self.request("run", *paths, str(out))
        outs = [np.load(out / f"out{k}.npy") for k in range(int(reply["outputs"]))]
        shutil.rmtree(out, ignore_errors=True)
        return outs, float(reply["ms"])

    def bench(self, *args: Any) -> Dict[str, Any]:
        """``bench(*arrays, what, protocol)``: run the latency protocol inside the runner on the inputs (as
        :meth:`run`); ``what``: ``end-to-end`` or ``compute``.

        Returns the reply: ``samples_ms``, ``warmup_runs``, ``warmup_s``, ``measure_s``, ``clock`` and
        ``threads`` (``at::get_num_threads()`` while timing)."""
        *arrays, what, protocol = args
        paths = self._inputs(arrays)
        p = protocol
        return self.request("bench", *paths, what, repr(float(p.warmup_min_s)), str(int(p.warmup_min_runs)),
                            repr(float(p.measure_min_s)), str(int(p.measure_min_runs)), repr(float(p.measure_max_s)))

    def close(self) -> None:
        """Ask the runner to quit (kill it after 5 s) and delete the temporary folder."""
        proc = getattr(self, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait()
        for stream in (getattr(proc, "stdin", None), getattr(proc, "stdout", None)):
            if stream is not None:
                stream.close()
        self.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _explain_load_error(ready: Dict[str, Any]) -> str:
    error = " ".join(str(ready.get("error", ready)).split())
    if "Unknown builtin op: torchvision::" in error:
        op = error.split("Unknown builtin op: ", 1)[1].split()[0].rstrip(".")
        why = "; ".join(" ".join(w.rsplit("/", 1)[-1] for w in e.split(" ")) for e in ready.get("ops_errors") or [])
        return (f"libtorch has no {op}: torchvision's wheel ships its operators as a Python extension that "
                f"does not load in C++ ({why or 'no operator library found'}); build torchvision's C++ "
                f"library and set {TORCHVISION_OPS_ENV}")
    return f"libtorch-cpp could not load the model: {error[:600]}"
