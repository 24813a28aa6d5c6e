"""Property-based bad-input suite over the public surface.

Every public function (``__all__``) of ``attribution``, ``metrics``, ``interventions``, ``kernels``,
``worlds``, ``training`` and the method modules' ``explain`` entry points is called with values drawn
by hypothesis for its required arguments: ``None``, strings, NaN / inf, negative or zero counts, empty
tensors, NaN tensors, tensors of a wrong rank or dtype, empty containers, devices that do not exist.
Each call must either raise :class:`~xattr_nb.checks.InputError` whose message names one of the
function's arguments, or return; never another exception (a deep torch traceback, an
``AttributeError`` on ``None``...). ``tests/unit/test_bad_input_table.py`` holds the one-argument-at-a-
time cases for the functions people call most, where the other arguments are valid.
"""

from __future__ import annotations

import importlib
import inspect
import math
import pkgutil
import signal
import warnings
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xattr_nb.checks import InputError

PACKAGES = ("xattr_nb.attribution", "xattr_nb.metrics", "xattr_nb.interventions", "xattr_nb.kernels",
            "xattr_nb.worlds", "xattr_nb.training")  # fmt: skip


def _modules() -> list:
    mods = []
    for pkg in PACKAGES:
        m = importlib.import_module(pkg)
        mods.append(m)
        for info in pkgutil.iter_modules(getattr(m, "__path__", [])):
            if not info.name.startswith("_"):
                mods.append(importlib.import_module(f"{pkg}.{info.name}"))
    import xattr_nb.methods as methods

    for info in pkgutil.iter_modules(methods.__path__):
        mods.append(importlib.import_module(f"xattr_nb.methods.{info.name}"))
    return mods


def public_functions() -> dict[str, Callable]:
    found: dict[str, Callable] = {}
    for m in _modules():
        names = getattr(m, "__all__", [])
        if m.__name__.startswith("xattr_nb.methods."):
            names = [n for n in names if n == "explain"]  # the method modules' entry point
        for n in names:
            f = getattr(m, n, None)
            if inspect.isfunction(f) and f.__module__.startswith("xattr_nb"):
                found.setdefault(f"{f.__module__}.{f.__name__}", f)
    return found


FUNCTIONS = public_functions()


def _required(f: Callable) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in inspect.signature(f).parameters.values() if p.default is p.empty and p.kind in kinds]


nan_tensor = st.sampled_from([(2, 3), (4,), (1, 3, 8, 8)]).map(lambda s: torch.full(s, math.nan))
wrong_rank = st.sampled_from([(), (3,), (2, 2, 2, 2, 2)]).map(torch.rand)
wrong_dtype = st.sampled_from([torch.ones(3, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool)])
BAD = st.one_of(
    st.none(),
    st.sampled_from(["", "x", "cuda:9", "not-a-device"]),
    st.sampled_from([math.nan, math.inf, -math.inf, -1.5]),
    st.integers(min_value=-5, max_value=0),
    st.sampled_from([[], (), {}, [None], [[]], ["x"]]),
    st.just(torch.empty(0)),
    nan_tensor,
    wrong_rank,
    wrong_dtype,
)


class _Timeout(Exception):
    pass


def _alarm(*_):
    raise _Timeout


@pytest.fixture(params=sorted(FUNCTIONS), ids=lambda n: n.removeprefix("xattr_nb."))
def fn(request) -> Callable:
    return FUNCTIONS[request.param]


def test_the_surface_is_covered():
    """A floor, so a broken discovery (an import error, an empty __all__) cannot pass by testing nothing."""
    assert len(FUNCTIONS) >= 200


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_bad_input_raises_input_error_naming_an_argument_or_returns(fn, data):
    required = _required(fn)
    if not required:
        return
    args = {name: data.draw(BAD, label=name) for name in required}
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(10)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(**args)
    except InputError as exc:
        msg = str(exc)
        params = inspect.signature(fn).parameters
        assert any(p in msg for p in params), f"InputError does not name an argument of {fn.__name__}: {msg}"
    except _Timeout:
        pytest.fail(f"{fn.__module__}.{fn.__name__} ran over 10 s on bad input {args!r}")
    except Exception as exc:  # the point: nothing else may escape
        pytest.fail(f"{fn.__module__}.{fn.__name__}({args!r}) raised {type(exc).__name__}: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
