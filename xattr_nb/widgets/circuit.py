"""``CircuitView``: a circuit (heads and MLPs, CNN channels, units) drawn as a layered graph, two-way with Python."""

from __future__ import annotations

import math
from typing import Any

import anywidget
import traitlets

from xattr_nb.checks import InputError, check_float
from xattr_nb.interventions import COMPONENT_KINDS, Circuit, CircuitEdge, CircuitNode
from xattr_nb.widgets._common import StaticFallback, css_rgb, diverging_rgb, esc, read_asset

__all__ = ["CircuitView", "circuit_layout"]

X0, DX, Y0, DY = 34.0, 64.0, 34.0, 24.0  # margins and spacing of the layout, in SVG units


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _describe(n: CircuitNode, layer_names: list[str] | None) -> str:
    """What the tooltip says a node is: ``head 5 of layer 3``, ``channel 17 of blocks.2``, ..."""
    where = f"layer {n.layer}"
    if layer_names is not None and 0 <= n.layer < len(layer_names):
        where = layer_names[n.layer]
    if n.kind == "head":
        return f"head {n.head} of {where}"
    if n.kind == "mlp":
        return f"MLP of {where}"
    if n.kind in ("channel", "unit"):
        return f"{n.kind} {n.index} of {where}"
    return n.kind


def circuit_layout(circuit: Circuit) -> dict[str, Any]:
    """Positions and sizes for drawing ``circuit`` (computed here, drawn by the ES module and the static SVG).

    Columns follow the forward pass: the embeddings on the left, then per layer a column of
    heads (head ``h`` on row ``h``) and, half a column further, its MLP, then the logits. Channels
    and units share their layer's column, in index order, centred (below the heads if the circuit
    has heads too), each labelled with its index (``C17``, ``U4``). Columns are labelled
    ``L0, L1, ...`` or by ``circuit.meta["layer_names"]``. Node radius grows with
    ``sqrt(|score| / max|score|)`` (area ~ score), colour is the diverging scale of
    ``score / max|score|``; edge width grows with ``|weight| / max|weight|``, red for positive
    weights and blue for negative ones. Edges are cubic curves between their nodes. Each node also
    carries what the front end needs without knowing node kinds: ``shape`` (``rect`` for MLPs,
    ``circle`` otherwise), ``component`` (whether it fades when pruned), an optional ``label`` with
    its anchor, and ``desc`` for the tooltip.
    """
    n_layers = max([circuit.n_layers] + [n.layer for n in circuit.nodes if n.kind == "logits"])
    n_heads = circuit.n_heads
    stacks: dict[int, list[CircuitNode]] = {}
    for n in circuit.nodes:
        if n.kind in ("channel", "unit"):
            stacks.setdefault(n.layer, []).append(n)
    tallest = max((len(v) for v in stacks.values()), default=0)
    rows = max(1, n_heads + tallest)
    mid = Y0 + DY * (rows - 1) / 2
    slot: dict[str, float] = {}
    for layer_nodes in stacks.values():
        ordered = sorted(layer_nodes, key=lambda n: (n.kind, n.index))
        for i, n in enumerate(ordered):
            # below the heads, or centred on the middle row when there are no heads
            row = n_heads + i if n_heads else (rows - 1) / 2 + i - (len(ordered) - 1) / 2
            slot[n.name] = Y0 + DY * row
    names = circuit.meta.get("layer_names")
    names = [str(x) for x in names] if isinstance(names, (list, tuple)) and len(names) >= n_layers else None
    smax = max((abs(n.score) for n in circuit.nodes), default=0.0) or 1.0
    wmax = max((abs(e.weight) for e in circuit.edges), default=0.0) or 1.0
    nodes, index = [], {}
    for i, n in enumerate(circuit.nodes):
        if n.kind == "embed":
            x, y = X0, mid
        elif n.kind == "logits":
            x, y = X0 + DX * (n_layers + 1), mid
        elif n.kind == "head":
            x, y = X0 + DX * (n.layer + 1), Y0 + DY * (n.head or 0)
        elif n.kind in ("channel", "unit"):
            x, y = X0 + DX * (n.layer + 1), slot[n.name]
        else:
            x, y = X0 + DX * (n.layer + 1.5), mid
        index[n.name] = i
        r = round(3.0 + 7.0 * math.sqrt(abs(n.score) / smax), 2)
        node = {
            "name": n.name,
            "kind": n.kind,
            "layer": n.layer,
            "head": n.head,
            "score": n.score,
            "x": x,
            "y": y,
            "r": r,
            "fill": css_rgb(diverging_rgb(n.score / smax)),
            "shape": "rect" if n.kind == "mlp" else "circle",
            "component": n.kind in COMPONENT_KINDS,
            "desc": _describe(n, names),
        }
        if n.kind in ("embed", "logits"):
            node |= {"label": n.kind, "label_x": x, "label_y": y + r + 11, "label_anchor": "middle"}
        elif n.kind in ("channel", "unit"):
            node |= {"index": n.index, "label": f"{'C' if n.kind == 'channel' else 'U'}{n.index}",
                     "label_x": x + r + 2, "label_y": y + 3, "label_anchor": "start"}  # fmt: skip
        nodes.append(node)
    edges = []
    for e in circuit.edges:
        a, b = nodes[index[e.src]], nodes[index[e.dst]]
        cx = (a["x"] + b["x"]) / 2
        edges.append(
            {
                "src": e.src,
                "dst": e.dst,
                "w": e.weight,
                "d": f"M{_fmt(a['x'])},{_fmt(a['y'])} C{_fmt(cx)},{_fmt(a['y'])} {_fmt(cx)},{_fmt(b['y'])} "
                f"{_fmt(b['x'])},{_fmt(b['y'])}",
                "width": round(0.6 + 3.4 * abs(e.weight) / wmax, 2),
                "stroke": css_rgb(diverging_rgb(0.85 if e.weight >= 0 else -0.85)),
            }
        )
    return {
        "nodes": nodes,
        "edges": edges,
        "width": X0 * 2 + DX * (n_layers + 1),
        "height": Y0 + DY * (rows - 1) + 30.0,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "max_weight": wmax,
        "max_score": smax,
        "row_y": [Y0 + DY * h for h in range(n_heads)],
        "col_x": [X0 + DX * (layer + 1) for layer in range(n_layers)],
        "col_labels": names[:n_layers] if names else [f"L{layer}" for layer in range(n_layers)],
    }


class CircuitView(StaticFallback, anywidget.AnyWidget):
    """A :class:`~xattr_nb.interventions.Circuit` as a layered graph (SVG, layout computed in Python).

    Node colour and size show the score, edge width the weight (see :func:`circuit_layout`); heads,
    channels and units are circles, MLPs squares. The slider sets ``threshold``: edges with ``|weight| < threshold``
    are pruned from view (the same rule as :meth:`Circuit.threshold`), and components left without
    a visible edge fade. A click on a node sets ``selected`` to its name, so the next cell can read
    :attr:`selected_node` or :meth:`details`. Accepts a Circuit or a ``networkx.DiGraph`` with the
    attributes of :meth:`Circuit.to_networkx`.
    """

    _esm = read_asset("circuit_view.js")
    _css = read_asset("circuit_view.css")

    threshold = traitlets.Float(0.0).tag(sync=True)
    selected = traitlets.Unicode("").tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    _graph = traitlets.Dict().tag(sync=True)

    def __init__(self, circuit: Circuit | Any, *, threshold: float = 0.0, title: str = "", **kwargs: Any) -> None:
        if not isinstance(circuit, Circuit):
            import networkx as nx

            if not isinstance(circuit, nx.DiGraph):
                raise InputError(f"`circuit` must be a Circuit or a networkx.DiGraph; got {type(circuit).__name__}")
            circuit = Circuit.from_networkx(circuit)
        self.circuit = circuit
        threshold = check_float(threshold, "threshold", low=0.0)
        super().__init__(threshold=threshold, title=str(title), **kwargs)
        self._graph = circuit_layout(circuit)

    @traitlets.validate("threshold")
    def _check_threshold(self, proposal: Any) -> float:
        return check_float(proposal["value"], "threshold", low=0.0)

    @traitlets.validate("selected")
    def _check_selected(self, proposal: Any) -> str:
        v = proposal["value"]
        if v:
            self.circuit.node(v)  # raises InputError naming close matches
        return v

    def visible_edges(self, threshold: float | None = None) -> list[CircuitEdge]:
        """The edges the view draws at ``threshold`` (default: the current one): ``|weight| >= threshold``."""
        t = self.threshold if threshold is None else check_float(threshold, "threshold", low=0.0)
        return [e for e in self.circuit.edges if abs(e.weight) >= t]

    @property
    def selected_node(self) -> CircuitNode | None:
        """The clicked node, or ``None``."""
        return self.circuit.node(self.selected) if self.selected else None

    def details(self, name: str | None = None) -> dict[str, Any]:
        """What a notebook shows for a component: the node and its incoming and outgoing edges, strongest first."""
        name = name or self.selected
        if not name:
            raise InputError("`name`: no node is selected; click one in the view or pass a name")
        node = self.circuit.node(name)
        nb = self.circuit.neighbours(name)
        key = lambda e: -abs(e.weight)  # noqa: E731
        return {"node": node, "in": sorted(nb["in"], key=key), "out": sorted(nb["out"], key=key)}

    # ---------------------------------------------------------------- fallbacks

    def _plain(self) -> str:
        sel = f", selected={self.selected!r}" if self.selected else ""
        return (
            f"CircuitView({len(self.circuit.nodes)} nodes, {len(self.circuit.edges)} edges, "
            f"threshold={self.threshold:g}: {len(self.visible_edges())} shown{sel})"
        )

    def _static_html(self) -> str:
        return (
            '<div class="xcv-root xcv-static" style="font-family:sans-serif">'
            f'<div style="font-size:12px">{esc(self.title) + " · " if self.title else ""}'
            f"{len(self.circuit.nodes)} nodes; edges with |weight| ≥ {self.threshold:.3g}: "
            f"{len(self.visible_edges())} of {len(self.circuit.edges)}; static view</div>{self.svg()}</div>"
        )

    def svg(self) -> str:
        """The graph at the current threshold as a self-contained SVG string."""
        g = self._graph
        t = self.threshold
        shown = [e for e in g["edges"] if abs(e["w"]) >= t]
        touched = {e["src"] for e in shown} | {e["dst"] for e in shown}
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_fmt(g["width"])} {_fmt(g["height"])}" '
            f'width="{_fmt(g["width"])}" style="max-width:100%;height:auto;font:9px sans-serif">'
        ]
        for x, label in zip(g["col_x"], g["col_labels"], strict=True):
            parts.append(f'<text x="{_fmt(x)}" y="14" text-anchor="middle" fill="#555">{esc(label)}</text>')
        for h, y in enumerate(g["row_y"]):
            parts.append(
                f'<text x="{_fmt(g["col_x"][0] - 14)}" y="{_fmt(y + 3)}" text-anchor="end" fill="#888">H{h}</text>'
            )
        parts.append('<g fill="none" stroke-opacity="0.55">')
        parts += [f'<path d="{e["d"]}" stroke="{e["stroke"]}" stroke-width="{e["width"]}"/>' for e in shown]
        parts.append("</g>")
        for n in g["nodes"]:
            fade = ' opacity="0.25"' if n["component"] and n["name"] not in touched else ""
            tip = f"<title>{esc(n['name'])} ({esc(n['desc'])}): score {n['score']!r}</title>"
            if n["shape"] == "rect":
                s = n["r"]
                parts.append(
                    f'<rect x="{_fmt(n["x"] - s)}" y="{_fmt(n["y"] - s)}" width="{_fmt(2 * s)}" height="{_fmt(2 * s)}" '
                    f'rx="2" fill="{n["fill"]}" stroke="#333" stroke-width="0.8"{fade}>{tip}</rect>'
                )
            else:
                parts.append(
                    f'<circle cx="{_fmt(n["x"])}" cy="{_fmt(n["y"])}" r="{n["r"]}" fill="{n["fill"]}" stroke="#333" '
                    f'stroke-width="0.8"{fade}>{tip}</circle>'
                )
            if "label" in n:
                parts.append(
                    f'<text x="{_fmt(n["label_x"])}" y="{_fmt(n["label_y"])}" text-anchor="{n["label_anchor"]}"{fade}>'
                    f"{esc(n['label'])}</text>"
                )
        parts.append("</svg>")
        return "".join(parts)
