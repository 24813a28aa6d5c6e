"""The method registry behind :func:`~xattr_nb.attribution.attribute`: names → functions, by input kind.

A method is registered with the function itself or with where it lives (``"module:attribute"``),
imported the first time the method is used. The paper modules' methods are listed below by
where they live, so :func:`list_methods` shows them, and :func:`attribute` runs them, whatever
the user imported before; the generic methods register themselves when :mod:`xattr_nb.attribution`
is imported (captum's in :mod:`~xattr_nb.attribution.methods`, token methods in
:mod:`~xattr_nb.attribution.text`, RISE, layer methods in :mod:`~xattr_nb.attribution.layers`).
"""

from __future__ import annotations

import difflib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from xattr_nb.attribution.result import KINDS
from xattr_nb.checks import InputError

__all__ = ["PAPER_METHODS", "MethodSpec", "list_methods", "lookup_method", "register_method"]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method: its name, the input kinds it handles, the function and a one-liner.

    ``source`` is ``"module:attribute"`` for an entry registered by name; its ``fn`` is ``None``
    until :func:`lookup_method` imports it.
    """

    name: str
    kinds: tuple[str, ...]
    fn: Callable[..., Any] | None
    description: str
    source: str = ""

    def resolved(self) -> MethodSpec:
        """This spec with ``fn`` imported (itself when it already has one)."""
        if self.fn is not None:
            return self
        fn = pkgutil.resolve_name(self.source)  # an import error here is a bug in that module: let it show
        if not callable(fn):
            raise InputError(f"method {self.name!r}: {self.source!r} is a {type(fn).__name__}, not a function")
        return replace(self, fn=fn)


# One name may be registered for several kinds by different functions: "saliency" on pixels is
# captum's Saliency on the image, on tokens it is the gradient on the input embeddings.
_REGISTRY: dict[str, list[MethodSpec]] = {}


def _check_source(fn: Any, name: str) -> str:
    module, sep, attr = fn.partition(":")
    if not sep or not module or not attr or not all(p.isidentifier() for p in (*module.split("."), *attr.split("."))):
        raise InputError(f"`fn` for {name!r} must be callable or a 'package.module:function' string; got {fn!r}")
    return fn


def register_method(
    name: str,
    fn: Callable[..., Any] | str,
    *,
    kinds: tuple[str, ...] | list[str] | str,
    description: str,
    overwrite: bool = False,
) -> MethodSpec:
    """Add an attribution method that :func:`attribute` can call by ``name`` on inputs of ``kinds``.

    ``fn(model, inputs, target, **kw)`` gets the model in eval mode, validated inputs and a
    LongTensor ``target`` ``[B]``; it returns scores, ``(scores, meta)`` or an :class:`Attribution`.
    ``fn`` may also be ``"package.module:function"``: the module is imported when the method is
    first used, so listing methods imports nothing. Registering a name again for a kind it already
    handles raises unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise InputError(f"`name` must be an identifier-like string such as 'rise'; got {name!r}")
    source = _check_source(fn, name) if isinstance(fn, str) else ""
    if not source and not callable(fn):
        raise InputError(f"`fn` must be callable fn(model, inputs, target, **kw); got {type(fn).__name__}")
    kinds = (kinds,) if isinstance(kinds, str) else tuple(kinds)
    if not kinds or any(k not in KINDS for k in kinds):
        raise InputError(f"`kinds` must be a non-empty subset of {list(KINDS)}; got {list(kinds)}")
    if not isinstance(description, str) or not description.strip():
        raise InputError("`description` must be a non-empty one-line string")
    specs = _REGISTRY.setdefault(name, [])
    clash = [s for s in specs if set(s.kinds) & set(kinds)]
    if clash and not overwrite:
        raise InputError(
            f"method {name!r} is already registered for {sorted(set(clash[0].kinds) & set(kinds))}; "
            "pass overwrite=True to replace it"
        )
    # Overwriting removes the clashing kinds from the old entry; other kinds keep their function.
    for s in clash:
        specs.remove(s)
        rest = tuple(k for k in s.kinds if k not in kinds)
        if rest:
            specs.append(replace(s, kinds=rest))
    spec = MethodSpec(name, kinds, None if source else fn, description.strip(), source)
    specs.append(spec)
    return spec


def list_methods(kind: str | None = None) -> list[dict[str, str]]:
    """Rows ``{"name", "kinds", "description"}``, one per registered (name, function) pair.

    ``pandas.DataFrame(list_methods())`` prints them as a table. ``kind`` keeps only the methods
    that handle that input kind. Every registered method is listed, the paper methods included,
    whether or not their modules were imported.
    """
    if kind is not None and kind not in KINDS:
        raise InputError(f"`kind` must be one of {list(KINDS)} or None; got {kind!r}")
    rows = []
    for name in sorted(_REGISTRY):
        for s in _REGISTRY[name]:
            if kind is None or kind in s.kinds:
                rows.append({"name": name, "kinds": ", ".join(s.kinds), "description": s.description})
    return rows


def lookup_method(method: Any, kind: str) -> MethodSpec:
    """The registered spec of ``method`` for inputs of ``kind``, its function imported; an
    :class:`InputError` with close names or the methods for ``kind`` otherwise."""
    if not isinstance(method, str):
        raise InputError(f"`method` must be a method name (str); got {type(method).__name__}")
    if method not in _REGISTRY:
        close = difflib.get_close_matches(method, list(_REGISTRY), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise InputError(f"unknown method {method!r}{hint} Known methods: {sorted(_REGISTRY)}")
    specs = _REGISTRY[method]
    for i, s in enumerate(specs):
        if kind in s.kinds:
            if s.fn is None:
                specs[i] = s = s.resolved()
            return s
    handled = sorted({k for s in specs for k in s.kinds})
    others = sorted(r["name"] for r in list_methods(kind))
    raise InputError(f"method {method!r} handles {handled} inputs, not {kind}; methods for {kind}: {others}")


#: The paper modules' methods that :func:`attribute` can run: (name, kinds, where, description).
#: Registered by where they live, so their modules are imported on first use, not before.
PAPER_METHODS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    (
        "lima",
        ("pixels",),
        "xattr_nb.methods.lima:explain",
        "LiMA: bidirectional greedy subset selection of regions from black-box outputs",
    ),
    (
        "reagent",
        ("tokens",),
        "xattr_nb.methods.reagent:explain",
        "ReAGent (Zhao & Shan 2024): recursive importance from random token replacements; forward passes only",
    ),
    (
        "comet",
        ("pixels",),
        "xattr_nb.methods.comet:selector_scores",
        "COMET selector mask (inherently explainable; needs a CometModel)",
    ),
)

for _name, _kinds, _source, _desc in PAPER_METHODS:
    register_method(_name, _source, kinds=_kinds, description=_desc)
