"""The architecture registry: model builders by name, and :func:`build` from a plain config dict.

A model is rebuilt from ``{"arch": name, "kwargs": {...}}``; that is how the zoo stores one (the
config as JSON, the weights as safetensors, never a pickled object). The project's own builders
are listed here by where they live (``"module:attribute"``) and imported on first use, so
``build`` finds a text or MoE architecture whatever the caller imported before, and no model
module has to import another to register it. :func:`register_architecture` adds more.

This module sits below every model module (it imports none of them), which is what keeps
:mod:`~xattr_nb.models.vision` and :mod:`~xattr_nb.models.text` free of each other.
"""

from __future__ import annotations

import pkgutil
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch import nn

from xattr_nb.checks import InputError

__all__ = ["ARCHITECTURES", "build", "register_architecture"]

#: The project's builders, resolved (imported) the first time they are looked up.
_BUILTIN: dict[str, str] = {
    "TinyCNN": "xattr_nb.models.vision:TinyCNN",
    "TinyViT": "xattr_nb.models.vision:TinyViT",
    "TinyGridDetector": "xattr_nb.models.detection:TinyGridDetector",
    "tiny_gpt2": "xattr_nb.models.text:tiny_gpt2",
    "hf": "xattr_nb.models.text:build_hf",
    "EncoderClassifier": "xattr_nb.models.text:EncoderClassifier.from_config",
    "moe_gpt2": "xattr_nb.models.moe:build_moe_gpt2",
    "TinyT2I": "xattr_nb.models.t2i:TinyT2INet",
    "tiny_clip": "xattr_nb.models.clip:tiny_clip",
    # A paper's own architecture that ships in the zoo is named here too (resolved on first use), so a
    # checkpoint loads without its method module having been imported first.
    "TinySelector": "xattr_nb.methods.comet:TinySelector",
    "CometModel": "xattr_nb.methods.comet:comet_model",
    "TinyVLM": "xattr_nb.models.vlm:TinyVLM",
}


class _Architectures(Mapping):
    """Name → builder; built-in entries are imported on first access, registered ones are kept as given."""

    def __init__(self, lazy: dict[str, str]):
        self._lazy = dict(lazy)
        self._loaded: dict[str, Callable[..., nn.Module]] = {}

    def __getitem__(self, name: str) -> Callable[..., nn.Module]:
        if name not in self._loaded and name in self._lazy:
            self._loaded[name] = pkgutil.resolve_name(self._lazy.pop(name))
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted({*self._loaded, *self._lazy}))

    def __len__(self) -> int:
        return len({*self._loaded, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy

    def _set(self, name: str, builder: Callable[..., nn.Module]) -> None:
        self._lazy.pop(name, None)
        self._loaded[name] = builder

    def __repr__(self) -> str:
        return f"ARCHITECTURES({sorted(self)})"


#: Model builders by name: a class or a function taking keyword arguments and returning a module.
ARCHITECTURES: _Architectures = _Architectures(_BUILTIN)


def register_architecture(name: str, builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make ``builder`` (a class or a function of keyword arguments) buildable by :func:`build` as ``name``."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("`name` must be a non-empty string")
    if not callable(builder):
        raise InputError(
            f"`builder` for {name!r} must be callable (a class or a function); got {type(builder).__name__}"
        )
    ARCHITECTURES._set(name, builder)
    return builder


def build(config: dict[str, Any]) -> nn.Module:
    """Build a fresh (randomly initialised) model from ``{"arch": name, "kwargs": {...}}``.

    >>> build({"arch": "TinyCNN", "kwargs": {"n_classes": 4}})  # doctest: +ELLIPSIS
    TinyCNN(...)
    """
    if not isinstance(config, dict):
        raise InputError(f"`config` must be a dict {{'arch': ..., 'kwargs': {{...}}}}; got {type(config).__name__}")
    unknown_keys = set(config) - {"arch", "kwargs"}
    if "arch" not in config or unknown_keys:
        raise InputError(f"`config` must have the keys 'arch' and (optionally) 'kwargs'; got {sorted(config)}")
    arch = config["arch"]
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        raise InputError(f"`config['arch']` {arch!r} is not a known architecture; known: {sorted(ARCHITECTURES)}")
    kwargs = config.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise InputError(f"`config['kwargs']` must be a dict; got {type(kwargs).__name__}")
    try:
        return ARCHITECTURES[arch](**kwargs)
    except TypeError as exc:  # an unexpected or missing keyword
        raise InputError(f"`config['kwargs']` do not fit architecture {arch!r}: {exc}") from exc
