"""Model adapters: what the harness needs to know about each model family, one module per model.

An adapter (:class:`ModelAdapter`) names the model's inputs and outputs and their ONNX dynamic axes,
builds the eager module for a cell, wraps it for TorchScript, turns validation inputs into feeds, and
says how a candidate is judged where the model needs more than elementwise closeness (BGMv2's
selection-aware near-tie judge). Exporters and runtimes only see names and modules, so a second model
(RobustVideoMatting, issue 11) is a new adapter plus ``model/<name>/``. See docs/architecture.md.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple


class ModelAdapter:
    """Base of the model adapters (class attributes; methods are overridden per model)."""

    name: str = ""
    input_names: Tuple[str, ...] = ()
    output_names: Tuple[str, ...] = ()
    dynamic_axes: Dict[str, Dict[int, str]] = {}

    def construct(self, kwargs: Dict[str, Any]) -> Any:
        """The eager module from its constructor arguments (what the ``eager`` exporter stores)."""
        raise NotImplementedError

    def torchscript_module(self, model: Any) -> Any:
        """The module to ``torch.jit.script`` for ``model`` (default: the model itself)."""
        return model

    def settings_fields(self) -> Dict[str, Any]:
        """The model settings every record of this model carries (``{name: type}``, :mod:`harness.record`)."""
        return {}

    def record_fields(self) -> Dict[str, Any]:
        """The fields this model's judge (and model-specific checks) write (``{name: type}``)."""
        return {}


MODELS: Dict[str, ModelAdapter] = {}


def register_model(adapter: ModelAdapter) -> ModelAdapter:
    """Add an adapter instance to :data:`MODELS` under ``adapter.name``."""
    MODELS[adapter.name] = adapter
    return adapter


def adapter(name: str) -> ModelAdapter:
    """The adapter called ``name``.

    Raises:
        KeyError: an unknown model (names the known ones)."""
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; expected one of {sorted(MODELS)}")
    return MODELS[name]


from . import bgmv2  # noqa: E402,F401 - registers itself
