"""Import structure: no cycles among xattr_nb modules, and nothing depends on what was imported first."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import xattr_nb

PACKAGE = Path(xattr_nb.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    """Module → the xattr_nb modules it imports anywhere in its body (function-level imports included:
    a cycle broken only by deferring an import is still a cycle)."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            else:
                continue
            edges[mod] |= {t for t in targets if t in mods and t != mod}
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_cycle_finder_finds_a_planted_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_no_import_cycles_among_xattr_nb_modules():
    edges = _import_graph()
    assert {"xattr_nb.attribution.text", "xattr_nb.models.text", "xattr_nb.kernels"} <= set(edges)
    assert "xattr_nb.models.io" in edges["xattr_nb.kernels"]  # the graph sees real imports
    cycles = _cycles(edges)
    assert not cycles, "import cycles (each list imports itself through the others): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def _fresh(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_list_methods_in_a_fresh_interpreter_lists_the_paper_methods_without_importing_them():
    out = _fresh(
        "import json, sys\n"
        "from xattr_nb.attribution import list_methods\n"
        "rows = list_methods()\n"
        "print(json.dumps({'names': sorted({r['name'] for r in rows}),\n"
        "                  'methods_loaded': sorted(m for m in sys.modules if m.startswith('xattr_nb.methods')),\n"
        "                  'transformers': 'transformers' in sys.modules}))\n"
    )
    paper = {"lima", "reagent", "comet"}
    generic = {"rise", "layer_grad", "layer_grad_x_act", "layer_cam", "guided_backprop", "layer_integrated_gradients"}
    assert paper | generic <= set(out["names"])
    assert out["methods_loaded"] == []  # listed lazily: no paper module imported to list them
    assert not out["transformers"]  # the attribution layer and the model seam stay light


@pytest.mark.parametrize(
    ("module", "check", "expected"),
    [
        ("xattr_nb.attribution.text", "m.attribute_text.__name__", "attribute_text"),
        ("xattr_nb.models.text", "type(m.tiny_gpt2(8, n_layer=1, n_head=2, d_model=8)).__name__", "GPT2LMHeadModel"),
        # a vision-only caller still builds a text architecture: the registry lists it lazily
        (
            "xattr_nb.models.vision",
            "type(m.build({'arch': 'tiny_gpt2', 'kwargs': {'vocab_size': 8}})).__name__",
            "GPT2LMHeadModel",
        ),
    ],
    ids=["attribution.text", "models.text", "models.vision"],
)
def test_module_imports_alone_in_a_fresh_interpreter(module, check, expected):
    out = _fresh(
        f"import importlib, json\nm = importlib.import_module({module!r})\nprint(json.dumps({{'value': {check}}}))\n"
    )
    assert out["value"] == expected
