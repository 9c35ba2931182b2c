"""The layers of docs/architecture.md, held against the code (issue 24).

- The import graph of harness/ and model/ (every ``import`` statement, at module level or inside a function,
  plus the package ``__init__`` that importing a submodule runs) has no circle, and no module imports one of
  a higher layer: values -> judges -> plug-ins -> matrix -> pipeline -> outputs -> CLI.
- Imports inside functions are only of heavy or optional backends, or of the few harness modules that
  import torch (a worker needs them, the coordinator must start without them): :data:`LAZY_OK`.
- No file of the core (harness/ outside harness/models/) names a registered model, in code or strings.

The checks read the source with :mod:`ast` (nothing is imported), so each failure names the file, the line
and the edge.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parent.parent

# Bottom to top. A module belongs to the first layer with a matching prefix (``harness.pool`` covers its
# submodules). docs/architecture.md draws the same table.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("values", ("harness.values", "harness.runs", "harness.results", "harness.system", "harness.cache", "harness.benchmark", "harness.rounds",
                "harness.inputs", "harness.faults", "harness.divergence", "harness.mutants", "harness.onnx_analysis",
                "harness.cpp_runner", "harness.data", "model")),
    ("judges", ("harness.parity", "harness.verdict", "harness.rules", "harness.probes")),
    ("plug-ins", ("harness.models", "harness.targets", "harness.runtimes", "harness.exporters")),
    ("matrix", ("harness.config", "harness.keys", "harness.record")),
    ("pipeline", ("harness.stages", "harness.runner", "harness.pool")),
    ("outputs", ("harness.report", "harness.decide", "harness.diff", "harness.verify", "harness.shard")),
    ("cli", ("harness.__main__", "harness")),
]

# Modules a function may import lazily, with the reason (everything else is imported at module level).
LAZY_OK: Dict[str, str] = {
    "torch": "2-3 s to import; the coordinator, the report and `run --list` never need it",
    "torchvision": "imports torch",
    "harness.runner": "imports torch at module level (the worker's services); the coordinator starts without it",
    "model": "the model packages build on torch (adapters construct models only in workers)",
    "onnx": "optional backend (extra [onnx])",
    "onnxruntime": "optional backend (extra [onnx])",
    "onnxsim": "optional backend (extra [onnx])",
    "onnxscript": "optional backend (extra [onnx])",
    "openvino": "optional backend (extra [openvino])",
    "executorch": "optional backend (extra [executorch])",
    "tensorrt": "optional backend (GPU machines only)",
    "matplotlib": "the report's figures only (~1 s to import)",
    "skimage": "sample generation only (harness/data/make_samples.py)",
    "PIL": "image decoding, only where user images are read",
    "psutil": "optional: harness/system.py falls back to os without it",
    "yaml": "matrix.yaml only",
    "pandas": "the report's tables only (~0.5 s to import)",
    "jinja2": "the report's HTML only",
    "rich": "progress display only",
    "tqdm": "progress display only",
    "imageio": "video decoding only",
    "av": "video decoding only",
    "packaging": "version specifiers of rules only",
    "pytest_benchmark": "benchmarks only",
    "xml": "JUnit writer only",
}


def _modules(root: Path = ROOT) -> Dict[str, Tuple[Path, bool]]:
    out = {}
    for p in sorted(list((root / "harness").rglob("*.py")) + list((root / "model").rglob("*.py"))):
        parts = list(p.relative_to(root).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (p, is_pkg)
    return out


MODULES = _modules()


def _known(name: str, mods: Dict[str, Tuple[Path, bool]]) -> str:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name


def _imports(mod: str, mods: Dict[str, Tuple[Path, bool]] = MODULES) -> List[Tuple[str, int, bool, str]]:
    """``(imported name, line, inside a function, top-level package)`` of every import in ``mod``."""
    path, is_pkg = mods[mod]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_fn: Set[int] = set()
    type_only: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_fn.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    out = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        names: List[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = mod.split(".") if is_pkg else mod.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
        for n in names:
            out.append((n, node.lineno, id(node) in in_fn, n.split(".")[0]))
    return out


def _graph(mods: Dict[str, Tuple[Path, bool]] = MODULES) -> Dict[str, Dict[str, int]]:
    """``{module: {imported module: line}}`` over harness/ and model/, with the package ``__init__`` of every
    imported submodule (importing ``a.b.c`` runs ``a`` and ``a.b`` first)."""
    g: Dict[str, Dict[str, int]] = {m: {} for m in mods}
    for m in mods:
        for name, line, _, _ in _imports(m, mods):
            t = _known(name, mods)
            while t:
                if t != m and not m.startswith(t + "."):  # a module's own packages are already running
                    g[m].setdefault(t, line)
                t = t.rpartition(".")[0] if "." in t else ""
                t = _known(t, mods) if t else ""
    return g


def _layer(mod: str) -> int:
    best, found = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (mod == p or mod.startswith(p + ".")) and len(p) > best:
                best, found = len(p), i
    assert found is not None, f"{mod} is in no layer of tests/test_architecture.py LAYERS: add it"
    return found


def test_every_module_has_a_layer():
    for m in MODULES:
        _layer(m)


def _circles(mods: Dict[str, Tuple[Path, bool]]) -> List[str]:
    g = _graph(mods)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    circles: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    return [f"{a} -> {b} (line {g[a][b]})" for c in circles for a in c for b in g[a] if b in c]


def _upward(mods: Dict[str, Tuple[Path, bool]]) -> List[str]:
    g = _graph(mods)
    return [f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]}) at line {line}"
            for a in g for b, line in g[a].items() if _layer(b) > _layer(a)]


def _lazy(mods: Dict[str, Tuple[Path, bool]]) -> List[str]:
    bad = []
    for m in mods:
        for name, line, in_fn, top in _imports(m, mods):
            if not in_fn:
                continue
            key = next((k for k in LAZY_OK if name == k or name.startswith(k + ".")), None)
            if key is None and top in ("harness", "model"):
                bad.append(f"{m} imports {name} inside a function (line {line})")
    return bad


def test_no_import_circle():
    found = _circles(MODULES)
    assert not found, "import circles:\n  " + "\n  ".join(found)


def test_no_upward_import():
    found = _upward(MODULES)
    assert not found, "imports from a higher layer:\n  " + "\n  ".join(found)


def test_model_packages_know_no_harness_and_no_other_model():
    bad = []
    for m in MODULES:
        if not m.startswith("model."):
            continue
        own = m.split(".")[1]
        for name, line, _, top in _imports(m):
            other = name.split(".")[1] if name.startswith("model.") and name.count(".") >= 1 else own
            if top == "harness" or (top == "model" and other not in (own, "errors", "checkpoint")):
                bad.append(f"{MODULES[m][0].relative_to(ROOT)}:{line}: {m} imports {name}")
    assert not bad, "\n".join(bad)


def test_imports_inside_functions_are_heavy_or_optional_backends_only():
    bad = _lazy(MODULES)
    assert not bad, ("internal imports inside functions (move them to module level, or name the heavy backend "
                     "in LAZY_OK with its reason):\n  " + "\n  ".join(bad))


# ------------------------------------------------------------------ no model named in the core
def _model_words() -> List[str]:
    from harness.models import MODELS

    words: Set[str] = set()
    for name, a in MODELS.items():
        words.add(name)
        words.update(getattr(a, "aliases", ()))
    return sorted(words)


# Upstream issue numbers cited as evidence ("RVM #238") are references to another repository, not code
# that knows the model.
CITATION = re.compile(r"\b[A-Za-z0-9]+ #\d+")


def _core_mentions(words: List[str]) -> List[str]:
    pat = re.compile("|".join(re.escape(w) for w in words), re.I)
    found = []
    for p in sorted((ROOT / "harness").rglob("*.py")):
        rel = p.relative_to(ROOT)
        if rel.parts[1] == "models":
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        docs = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    docs.add(id(first.value))
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                text = CITATION.sub("", node.value)
            elif isinstance(node, ast.Name):
                text = node.id
            elif isinstance(node, ast.Attribute):
                text = node.attr
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                text = node.name
            elif isinstance(node, ast.alias):
                text = f"{node.name} {node.asname or ''}"
            elif isinstance(node, ast.ImportFrom):
                text = node.module or ""
            elif isinstance(node, ast.arg):
                text = node.arg
            if text and pat.search(text):
                found.append(f"{rel}:{getattr(node, 'lineno', '?')}: {text[:90]!r}")
    for p in sorted((ROOT / "harness" / "templates").glob("*")):
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if pat.search(CITATION.sub("", line)):
                found.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()[:90]!r}")
    return found


def test_core_names_no_registered_model():
    found = _core_mentions(_model_words())
    assert not found, ("the core names a registered model (move it to harness/models/<name>.py or model/<name>/, "
                       "or ask the registry: harness.models.default_model / owner / record_owner):\n  "
                       + "\n  ".join(found))


def test_the_model_name_check_finds_a_model_named_in_the_core():
    """The check above must fail on a mutant: a core file with a model name in a string and in an import."""
    mutant = ROOT / "harness" / "_mutant_names_a_model.py"
    name = _model_words()[0]
    mutant.write_text(f"from model.{name} import x  # noqa\nDEFAULT = {name!r}\n")
    try:
        found = _core_mentions(_model_words())
    finally:
        mutant.unlink()
    assert any("_mutant_names_a_model.py:1" in f for f in found) and any("_mutant_names_a_model.py:2" in f for f in found)
    assert not any("_mutant" in f for f in _core_mentions(_model_words()))


def test_the_graph_checks_find_a_circle_an_upward_import_and_a_lazy_one(tmp_path):
    """Mutants on a copy of the tree: a values module importing the pipeline inside a function is a circle
    (the pipeline imports values), an upward import and a lazy internal import; a judge importing a plug-in
    at module level is upward only."""
    for d in ("harness", "model"):
        shutil.copytree(ROOT / d, tmp_path / d, ignore=shutil.ignore_patterns("__pycache__", "data", "cpp"))
    clean = _modules(tmp_path)
    assert not _circles(clean) and not _upward(clean) and not _lazy(clean)
    values = tmp_path / "harness" / "values.py"
    values.write_text(values.read_text() + "\n\ndef _m():\n    from .stages import PIPELINE  # noqa\n")
    mods = _modules(tmp_path)
    assert any(e.startswith("harness.values -> harness.stages") for e in _circles(mods))
    assert any(e.startswith("harness.values (values) imports harness.stages (pipeline)") for e in _upward(mods))
    assert any(e.startswith("harness.values imports harness.stages inside a function") for e in _lazy(mods))
    values.write_text((ROOT / "harness" / "values.py").read_text())
    rules = tmp_path / "harness" / "rules.py"
    rules.write_text(rules.read_text().replace("from .values import Strict as _Strict\n",
                                               "from .values import Strict as _Strict\nfrom .runtimes import RUNTIMES\n", 1))
    mods = _modules(tmp_path)
    assert not _circles(mods)  # no plug-in imports the rules: upward without a circle
    assert any(e.startswith("harness.rules (judges) imports harness.runtimes (plug-ins)") for e in _upward(mods))
