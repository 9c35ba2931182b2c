"""Content-addressed cache shared between runs: exported artifacts, eager reference outputs, calibrated
weights, finished cell results and built tools (the libtorch-cpp runner).

Every entry lives under ``<root>/<kind>/<key[:2]>/<key>/`` where ``key`` is the SHA-256 of a canonical
JSON description of *everything that can change it*: the weights identity, the export-relevant axes,
input shapes and content, the versions of torch/torchvision/onnx/onnxsim/onnxruntime, and a hash of
the source code that produces it (``model/`` for artifacts and references, all of ``harness/`` too
for cell results). Change any of these and the key changes; nothing is ever invalidated in place.

Writes are atomic (a temporary directory renamed into place), so concurrent workers and a run killed
mid-write never leave a half-written entry; if two workers race, the first rename wins.

Default root: ``$MATRIX_CACHE_DIR``, else ``$XDG_CACHE_HOME/matting-export-matrix``, else
``~/.cache/matting-export-matrix``. ``--no-cache`` disables lookups and stores.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("artifact", "reference", "weights", "result", "tool", "export-failure", "rounds")
_VERSIONED = ("torch", "torchvision", "onnx", "onnxsim", "onnxruntime", "onnxscript", "numpy", "openvino",
              "onnxruntime-gpu", "tensorrt")
BASE_PACKAGES = ("torch", "torchvision", "numpy")


def default_root() -> Path:
    """Cache directory from ``MATRIX_CACHE_DIR`` / ``XDG_CACHE_HOME`` / ``~/.cache``."""
    if os.environ.get("MATRIX_CACHE_DIR"):
        return Path(os.environ["MATRIX_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "matting-export-matrix"


@functools.lru_cache(maxsize=None)
def package_version(name: str) -> Optional[str]:
    """Installed version of distribution ``name`` (None if absent), from package metadata (no import)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: Iterable[str] = _VERSIONED) -> Dict[str, Optional[str]]:
    """Installed versions of ``names`` (default: every package that influences exports and results)."""
    return {name: package_version(name) for name in names}


@functools.lru_cache(maxsize=None)
def code_hash(*packages: str) -> str:
    """SHA-256 (first 16 hex digits) over every ``*.py``/``*.j2``/``*.cpp``/``CMakeLists.txt`` file of the
    given packages (folders relative to the repository root; a file path is hashed as itself; the C++
    runner's sources change libtorch-cpp results too)."""
    h = hashlib.sha256()
    for pkg in packages:
        top = ROOT / pkg
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if (path.suffix in (".py", ".j2", ".cpp") or path.name == "CMakeLists.txt") and "__pycache__" not in path.parts:
                h.update(str(path.relative_to(ROOT)).encode())
                h.update(path.read_bytes())
    return h.hexdigest()[:16]


def file_hash(paths: Iterable[Path]) -> str:
    """SHA-256 (16 hex digits) over the bytes of ``paths`` in the given order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()[:16]


def make_key(kind: str, parts: Dict[str, Any], packages: Iterable[str] = BASE_PACKAGES) -> str:
    """Key of a ``kind`` entry: SHA-256 of the canonical JSON of ``parts`` plus the installed versions of
    ``packages`` (default torch, torchvision, numpy; exporters and runtimes declare their own, see
    :mod:`harness.targets` and :attr:`harness.runtimes.Runtime.packages`).

    Raises:
        ValueError: ``kind`` is not one of :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"cache kind {kind!r}; expected one of {KINDS}")
    versions = package_versions(sorted(set(BASE_PACKAGES) | set(packages)))
    blob = json.dumps({"kind": kind, "versions": versions, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Cache:
    """The cache under ``root``; with ``enabled=False`` every lookup misses and nothing is stored.

    ``hits``/``misses`` count lookups per kind in this process (reported per cell and per run).
    """

    def __init__(self, root: Optional[Path] = None, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_root()
        self.enabled = enabled
        self.hits: Dict[str, int] = {k: 0 for k in KINDS}
        self.misses: Dict[str, int] = {k: 0 for k in KINDS}

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / key

    def get(self, kind: str, key: str) -> Optional[Path]:
        """The entry's directory if present (and caching is enabled), else None."""
        if not self.enabled or (kind == "result" and os.environ.get("MATRIX_FAULTS")):
            return None  # with injected faults every cell really runs
        p = self.path(kind, key)
        if (p / "meta.json").is_file():
            self.hits[kind] += 1
            return p
        self.misses[kind] += 1
        return None

    def meta(self, kind: str, key: str) -> Dict[str, Any]:
        return json.loads((self.path(kind, key) / "meta.json").read_text())

    def put(self, kind: str, key: str, files: Dict[str, Path], meta: Dict[str, Any]) -> Optional[Path]:
        """Store ``files`` (name in the entry -> existing file, hard-linked or copied) and ``meta``.

        Returns the entry directory, or None when caching is disabled or the cache is not writable
        (a cache problem never fails a cell)."""
        if not self.enabled or os.environ.get("MATRIX_FAULTS"):  # injected faults must not reach the cache
            return None
        final = self.path(kind, key)
        if (final / "meta.json").is_file():
            return final
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
            for name, src in files.items():
                link_or_copy(Path(src), tmp / name)
            (tmp / "meta.json").write_text(json.dumps(meta, default=str))
            try:
                os.rename(tmp, final)
            except OSError:  # another worker stored it first
                shutil.rmtree(tmp, ignore_errors=True)
            return final
        except OSError:
            return None

    def get_json(self, kind: str, key: str) -> Optional[Dict[str, Any]]:
        p = self.get(kind, key)
        return None if p is None else json.loads((p / "meta.json").read_text())

    def put_json(self, kind: str, key: str, meta: Dict[str, Any]) -> None:
        self.put(kind, key, {}, meta)


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (same file system), else copy it. Replaces an existing ``dst``."""
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
