"""Hooks by module name that never leak, activation caches and output patching.

Everything here addresses a module by its name in ``model.named_modules()`` (``"transformer.h.0"``,
``"bert.encoder.layer.3.output"``), the vocabulary of Hugging Face checkpoints, so the same code
runs on HF GPT-2/BERT and on our tiny models. Hooks are registered inside context managers
(as zennit does) and removed on exit, also when the body raises: a failed cell in a notebook
never leaves a hook behind to corrupt the next run.

- :func:`hooks`: register forward (or forward-pre) hooks by name for the body of a ``with``.
- :func:`run_with_cache`: one forward that records module outputs into an :class:`ActivationCache`.
- :func:`block_names`: the residual blocks of a transformer (GPT-2, BERT, ``blocks``/``layers``).
- :func:`patch_output`: replace a module's output (activation patching, ablations).

TransformerLens and nnsight offer the same ideas on their own model classes; this is the thin
layer for plain ``nn.Module`` / HF models, written by hand on ``register_forward_hook``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_choice
from xattr_nb.models.io import check_model

__all__ = ["ActivationCache", "block_names", "first_tensor", "get_module", "hooks", "patch_output", "run_with_cache"]


def get_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name`` (``""`` is the model itself); an unknown name suggests close ones."""
    check_model(model)
    if not isinstance(name, str):
        raise InputError(f"module name must be a str such as 'transformer.h.0'; got {type(name).__name__}")
    modules = dict(model.named_modules())
    if name not in modules:
        close = difflib.get_close_matches(name, [n for n in modules if n], n=3, cutoff=0.5)
        hint = f"; did you mean {close}?" if close else "; see [n for n, _ in model.named_modules()]"
        raise InputError(f"{type(model).__name__} has no module named {name!r}{hint}")
    return modules[name]


def first_tensor(output: Any) -> torch.Tensor | None:
    """The tensor a module "outputs": the output itself, the first element of a tuple, or the first
    field of a HF ``ModelOutput`` (e.g. ``last_hidden_state``); ``None`` if there is none."""
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    return None


def _replace_first(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return new
    if isinstance(output, tuple):
        return (new, *output[1:])
    if isinstance(output, list):
        return [new, *output[1:]]
    if hasattr(output, "to_tuple"):  # HF ModelOutput: a dict whose first field is the tensor
        key = next(iter(output.keys()))
        output[key] = new
        return output
    raise InputError(f"cannot replace the output of type {type(output).__name__}")


@contextmanager
def hooks(
    model: nn.Module, fns: Mapping[str, Callable[..., Any]], *, kind: str = "forward"
) -> Iterator[dict[str, torch.utils.hooks.RemovableHandle]]:
    """Register ``fns`` by module name for the body of the ``with``; every handle is removed on exit.

    ``kind="forward"``: ``fn(module, args, output)``, returning a new output or ``None`` (torch's
    ``register_forward_hook``). ``kind="pre"``: ``fn(module, args)``, returning new args or ``None``
    (``register_forward_pre_hook``). All names are resolved before anything is registered, so a
    typo registers nothing.
    """
    check_model(model)
    check_choice(kind, ("forward", "pre"), "kind")
    if not isinstance(fns, Mapping) or not fns:
        raise InputError("`fns` must be a non-empty dict {module name: hook function}")
    targets = {}
    for name, fn in fns.items():
        if not callable(fn):
            raise InputError(f"hook for {name!r} must be callable; got {type(fn).__name__}")
        targets[name] = (get_module(model, name), fn)
    handles: dict[str, torch.utils.hooks.RemovableHandle] = {}
    try:
        for name, (mod, fn) in targets.items():
            reg = mod.register_forward_hook if kind == "forward" else mod.register_forward_pre_hook
            handles[name] = reg(fn)
        yield handles
    finally:
        for h in handles.values():
            h.remove()


class ActivationCache(Mapping):
    """Module outputs of one forward, by module name: ``cache["transformer.h.0"]``.

    A read-only mapping (``keys()``, ``items()``, ``in``). ``calls[name]`` says how many times the
    module ran in the forward; when more than once (a weight-shared block), the cache holds the
    last output.
    """

    def __init__(self, data: dict[str, torch.Tensor], calls: dict[str, int] | None = None) -> None:
        self._data = dict(data)
        self.calls = dict(calls or {})

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._data:
            close = difflib.get_close_matches(str(name), list(self._data), n=3, cutoff=0.5)
            hint = f"; did you mean {close}?" if close else ""
            raise KeyError(f"{name!r} is not in this cache{hint} ({len(self._data)} entries)")
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def stack(self, names: list[str]) -> torch.Tensor:
        """The cached tensors of ``names`` stacked on a new first dim (e.g. all blocks: ``[L, B, T, D]``)."""
        return torch.stack([self[n] for n in names])

    def __repr__(self) -> str:
        items = ", ".join(f"{k}: {tuple(v.shape)}" for k, v in list(self._data.items())[:6])
        more = f", ... ({len(self._data)} entries)" if len(self._data) > 6 else ""
        return f"ActivationCache({items}{more})"


def run_with_cache(
    model: nn.Module, *args: Any, names: list[str] | None = None, detach: bool = True, **kwargs: Any
) -> tuple[Any, ActivationCache]:
    """Run ``model(*args, **kwargs)`` once and return ``(output, cache)`` of module outputs by name.

    ``names``: which modules to record (the first tensor of each output, see :func:`first_tensor`);
    ``None`` records every submodule whose output holds a tensor. ``detach=False`` keeps the
    autograd graph, for gradients with respect to activations (attribution patching).
    """
    check_model(model)
    if names is None:
        chosen = [n for n, _ in model.named_modules() if n]
        strict = False
    else:
        if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names:
            raise InputError("`names` must be a non-empty list of module names, or None for every module")
        chosen, strict = list(names), True
    data: dict[str, torch.Tensor] = {}
    calls: dict[str, int] = {}

    def make(name: str) -> Callable[..., None]:
        def save(_m: nn.Module, _args: Any, output: Any) -> None:
            t = first_tensor(output)
            if t is None:
                if strict:
                    raise InputError(f"module {name!r} returned {type(output).__name__}, which holds no tensor")
                return
            data[name] = t.detach() if detach else t
            calls[name] = calls.get(name, 0) + 1

        return save

    with hooks(model, {n: make(n) for n in chosen}):
        output = model(*args, **kwargs)
    return output, ActivationCache(data, calls)


# Where popular architectures keep their residual blocks, most specific first.
_BLOCK_PATHS = (
    "transformer.h",  # GPT2LMHeadModel and friends
    "h",  # GPT2Model
    "bert.encoder.layer",  # BertFor...
    "roberta.encoder.layer",
    "encoder.layer",  # BertModel
    "model.layers",  # Llama, Mistral, Qwen, OLMoE
    "model.decoder.layers",  # OPT
    "gpt_neox.layers",
    "blocks",  # our tiny models, TransformerLens-style
    "layers",
)


def block_names(model: nn.Module) -> list[str]:
    """Names of the residual blocks, in order: ``transformer.h.{i}`` (GPT-2), ``encoder.layer.{i}`` or
    ``bert.encoder.layer.{i}`` (BERT), or ``blocks.{i}`` / ``layers.{i}`` for any model that keeps its
    blocks in an ``nn.ModuleList`` under that name."""
    check_model(model)
    modules = dict(model.named_modules())
    for path in _BLOCK_PATHS:
        if isinstance(modules.get(path), nn.ModuleList):
            return [f"{path}.{i}" for i in range(len(modules[path]))]
    lists = [n for n, m in modules.items() if isinstance(m, nn.ModuleList)]
    raise InputError(
        f"cannot find the residual blocks of {type(model).__name__} (looked for {list(_BLOCK_PATHS)}); "
        f"its nn.ModuleLists are {lists}: pass module names explicitly"
    )


@contextmanager
def patch_output(
    model: nn.Module, name: str, value: torch.Tensor | float | Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[nn.Module]:
    """Within the ``with``, module ``name`` outputs ``value`` instead of what it computes.

    ``value``: a tensor of exactly the output's shape (e.g. an activation cached on another
    input: activation patching), a number (every entry set to it: zero/constant ablation), or a
    function ``f(output) -> new output`` of the same shape (mean ablation, steering, patching
    some positions only). For tuple outputs (HF blocks in older transformers) only the first
    element is replaced; the rest passes through.
    """
    mod = get_module(model, name)
    if isinstance(value, bool) or not (isinstance(value, (torch.Tensor, int, float)) or callable(value)):
        raise InputError(f"`value` must be a tensor, a number or a function of the output; got {type(value).__name__}")

    def hook(_m: nn.Module, _args: Any, output: Any) -> Any:
        out = first_tensor(output)
        if out is None:
            raise InputError(f"module {name!r} returned {type(output).__name__}, which holds no tensor to patch")
        if isinstance(value, torch.Tensor):
            new = value.to(device=out.device, dtype=out.dtype)
        elif isinstance(value, (int, float)):
            new = torch.full_like(out, float(value))
        else:
            new = value(out)
            if not isinstance(new, torch.Tensor):
                raise InputError(f"the patch function for {name!r} must return a tensor; got {type(new).__name__}")
        if tuple(new.shape) != tuple(out.shape):
            raise InputError(
                f"patch for {name!r} has shape {tuple(new.shape)} but the module outputs {tuple(out.shape)}"
            )
        return _replace_first(output, new)

    with hooks(model, {name: hook}):
        yield mod
