"""Circuit: validation (one test per bad input), pruning with known answers, networkx round trip, to_circuit."""

from __future__ import annotations

import math

import networkx as nx
import pytest
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.interventions import Circuit, CircuitEdge, CircuitNode, node_name, to_circuit


def small() -> Circuit:
    """embed -> L0.H0 (0.5) -> L0.MLP (-2.0) -> logits, plus a weak embed -> L0.H1 -> logits path."""
    return Circuit.from_scores(
        {"embed": 0.0, "L0.H0": 0.9, "L0.H1": -0.1, "L0.MLP": 0.4, "logits": 1.0},
        {
            ("embed", "L0.H0"): 0.5,
            ("L0.H0", "L0.MLP"): -2.0,
            ("L0.MLP", "logits"): 1.5,
            ("embed", "L0.H1"): 0.05,
            ("L0.H1", "logits"): 0.1,
        },
    )


def test_node_names_and_from_scores_parse_layers_and_heads():
    c = small()
    assert node_name("head", 3, 5) == "L3.H5" and node_name("mlp", 2) == "L2.MLP" and node_name("embed") == "embed"
    assert c.node("L0.H1") == CircuitNode("L0.H1", "head", 0, 1, -0.1)
    assert c.node("embed").layer == -1 and c.node("logits").layer == 1
    assert (c.n_layers, c.n_heads, len(c), len(c.edges)) == (1, 2, 5, 5)
    assert repr(c) == "Circuit(5 nodes: 1 embed, 2 head, 1 mlp, 1 logits; 5 edges)"


def test_threshold_keeps_strong_edges_and_drops_isolated_components():
    c = small().threshold(0.5)
    assert {(e.src, e.dst) for e in c.edges} == {("embed", "L0.H0"), ("L0.H0", "L0.MLP"), ("L0.MLP", "logits")}
    assert [n.name for n in c.nodes] == ["embed", "L0.H0", "L0.MLP", "logits"]  # L0.H1 lost both its edges
    assert c.meta["threshold"] == 0.5
    kept = small().threshold(0.5, drop_isolated=False)
    assert len(kept.nodes) == 5 and len(kept.edges) == 3
    assert len(small().threshold(0.0).edges) == 5


def test_top_k_by_absolute_score_with_io_and_edges_among_kept():
    c = small().top(1)
    assert [n.name for n in c.nodes] == ["embed", "L0.H0", "logits"]
    assert [(e.src, e.dst) for e in c.edges] == [("embed", "L0.H0")]
    c2 = small().top(2, keep_io=False)
    assert [n.name for n in c2.nodes] == ["L0.H0", "L0.MLP"]
    assert [(e.src, e.dst, e.weight) for e in c2.edges] == [("L0.H0", "L0.MLP", -2.0)]


def test_networkx_round_trip_keeps_everything():
    c = small()
    g = c.to_networkx()
    assert isinstance(g, nx.DiGraph) and nx.is_directed_acyclic_graph(g)
    assert g.nodes["L0.H0"] == {"kind": "head", "layer": 0, "head": 0, "score": 0.9}
    assert g.edges["L0.H0", "L0.MLP"]["weight"] == -2.0
    back = Circuit.from_networkx(g)
    assert back.nodes == c.nodes and set(back.edges) == set(c.edges) and back.meta == c.meta
    # networkx does the graph algorithms: the strongest path by |weight| product goes through the MLP.
    assert nx.has_path(g, "embed", "logits")


def test_neighbours_and_to_dict():
    c = small()
    nb = c.neighbours("L0.MLP")
    assert [e.src for e in nb["in"]] == ["L0.H0"] and [e.dst for e in nb["out"]] == ["logits"]
    d = c.to_dict()
    assert d["nodes"][1] == {"name": "L0.H0", "kind": "head", "layer": 0, "head": 0, "score": 0.9}
    assert len(d["edges"]) == 5


def test_random_circuit_is_seeded_and_full_size():
    a, b = Circuit.random(12, 12, seed=3), Circuit.random(12, 12, seed=3)
    assert a.nodes == b.nodes and a.edges == b.edges
    assert Circuit.random(12, 12, seed=4).edges != a.edges
    assert sum(n.kind == "head" for n in a.nodes) == 144 and sum(n.kind == "mlp" for n in a.nodes) == 12
    assert (a.n_layers, a.n_heads) == (12, 12)
    assert nx.is_directed_acyclic_graph(a.to_networkx())


def cnn() -> Circuit:
    """Channels of two conv layers feeding a dense unit, then the logits."""
    return Circuit.from_scores(
        {"L0.C3": 0.2, "L0.C7": -0.4, "L1.C0": 1.0, "L2.U5": 0.5},
        {("L0.C3", "L1.C0"): 0.3, ("L0.C7", "L1.C0"): -0.1, ("L1.C0", "L2.U5"): 0.8, ("L2.U5", "logits"): 0.5},
    )


def test_channels_and_units_are_nodes_with_layer_and_index():
    c = cnn()
    assert node_name("channel", 2, 17) == "L2.C17" and node_name("unit", 1, 4) == "L1.U4"
    assert c.node("L0.C7") == CircuitNode("L0.C7", "channel", 0, None, -0.4, 7)
    assert c.node("L2.U5").index == 5 and c.node("L2.U5").position == 5 and c.node("logits").layer == 3
    assert (c.n_layers, c.n_heads) == (3, 0)
    assert repr(c) == "Circuit(5 nodes: 3 channel, 1 unit, 1 logits; 4 edges)"
    assert [n.name for n in c.top(2).nodes] == ["L1.C0", "L2.U5", "logits"]
    assert [n.name for n in c.top(1, by="score", keep_io=False).nodes] == ["L1.C0"]
    assert [n.name for n in c.top(3, by="score").nodes] == ["L0.C3", "L1.C0", "L2.U5", "logits"]  # not C7 (-0.4)
    assert [n.name for n in c.threshold(0.3).nodes] == ["L0.C3", "L1.C0", "L2.U5", "logits"]


def test_channels_round_trip_through_networkx_and_dict():
    c = cnn()
    g = c.to_networkx()
    assert g.nodes["L0.C3"] == {"kind": "channel", "layer": 0, "head": None, "score": 0.2, "index": 3}
    back = Circuit.from_networkx(g)
    assert back.nodes == c.nodes and set(back.edges) == set(c.edges)
    assert c.to_dict()["nodes"][0] == {
        "name": "L0.C3",
        "kind": "channel",
        "layer": 0,
        "head": None,
        "score": 0.2,
        "index": 3,
    }


def components(scores, labels, **meta) -> Attribution:
    s = torch.as_tensor(scores, dtype=torch.float32)
    return Attribution(s, "components", "m", torch.zeros(s.shape[0], dtype=torch.long), labels=labels, meta=meta)


def test_to_circuit_from_component_scores():
    a = components([[1.0, -3.0, 0.5], [3.0, 1.0, 0.5]], ["L0.C1", "L0.C2", "L1.U0"])
    mean = to_circuit(a)  # several rows: their mean
    assert {n.name: n.score for n in mean.nodes} == {"L0.C1": 2.0, "L0.C2": -1.0, "L1.U0": 0.5, "logits": 0.0}
    assert mean.meta == {"method": "m", "title": "m", "example": "mean"}
    first = to_circuit(a, example=0, title="first")
    assert first.node("L0.C2").score == -3.0 and first.meta["title"] == "first" and first.meta["example"] == 0
    assert {(e.src, e.dst, e.weight) for e in first.edges} == {
        ("L0.C1", "logits", 1.0),
        ("L0.C2", "logits", -3.0),
        ("L1.U0", "logits", 0.5),
    }
    assert to_circuit(a, example=-1).node("L0.C2").score == 1.0
    assert [n.name for n in to_circuit(a, example=0, top=1).nodes] == ["L0.C2", "logits"]
    assert [n.name for n in to_circuit(a, example=0, top=1, by="score").nodes] == ["L0.C1", "logits"]
    assert to_circuit(a, edges="none").edges == [] and len(to_circuit(a, edges="none").nodes) == 3
    # explicit edges; nodes named only by an edge get score 0; layer names pass on to the circuit
    b = components([[1.0, 2.0]], ["L1.C0", "L1.C1"], layer_names=["conv1", "conv2"], n_layers=2)
    circ = to_circuit(b, edges={("L0.C4", "L1.C0"): 0.7, ("L1.C1", "logits"): 2.0})
    assert circ.node("L0.C4").score == 0.0 and circ.node("logits").layer == 2
    assert circ.meta["layer_names"] == ["conv1", "conv2"]


def test_to_circuit_of_heads_adds_embeddings_and_io_edges():
    a = components([[0.5, -1.0]], ["L0.H1", "L1.MLP"])
    circ = to_circuit(a, edges="io", n_layers=4)
    assert [n.name for n in circ.nodes] == ["embed", "L0.H1", "L1.MLP", "logits"] and circ.node("logits").layer == 4
    assert {(e.src, e.dst): e.weight for e in circ.edges} == {
        ("embed", "L0.H1"): 0.5,
        ("embed", "L1.MLP"): -1.0,
        ("L0.H1", "logits"): 0.5,
        ("L1.MLP", "logits"): -1.0,
    }


# ------------------------------------------------------------------ bad inputs, one each


def test_rejects_empty_nodes():
    with pytest.raises(InputError, match="`nodes` must be a non-empty"):
        Circuit([])


def test_rejects_duplicate_names():
    with pytest.raises(InputError, match="unique names"):
        Circuit([CircuitNode("embed", "embed", -1), CircuitNode("embed", "embed", -1)])


def test_rejects_unknown_kind():
    with pytest.raises(InputError, match=r"nodes\[0\]\.kind"):
        Circuit([CircuitNode("x", "attention", 0)])


def test_rejects_head_without_index():
    with pytest.raises(InputError, match=r"nodes\[0\]\.head"):
        Circuit([CircuitNode("L0.H0", "head", 0, None)])


def test_rejects_head_index_on_mlp():
    with pytest.raises(InputError, match=r"nodes\[0\]\.head` must be None"):
        Circuit([CircuitNode("L0.MLP", "mlp", 0, 3)])


def test_rejects_nan_score():
    with pytest.raises(InputError, match=r"nodes\[0\]\.score"):
        Circuit([CircuitNode("embed", "embed", -1, None, math.nan)])


def test_rejects_nan_weight():
    nodes = [CircuitNode("embed", "embed", -1), CircuitNode("logits", "logits", 1)]
    with pytest.raises(InputError, match=r"edges\[0\]\.weight"):
        Circuit(nodes, [CircuitEdge("embed", "logits", math.inf)])


def test_rejects_edge_to_unknown_node():
    with pytest.raises(InputError, match=r"edges\[0\]\.dst.*'L9.H9'"):
        Circuit([CircuitNode("embed", "embed", -1)], [CircuitEdge("embed", "L9.H9", 1.0)])


def test_rejects_backward_edge():
    with pytest.raises(InputError, match="against the forward pass"):
        Circuit.from_scores({"L0.MLP": 1.0, "L0.H0": 1.0}, {("L0.MLP", "L0.H0"): 1.0})


def test_rejects_duplicate_edge():
    nodes = [CircuitNode("embed", "embed", -1), CircuitNode("logits", "logits", 1)]
    with pytest.raises(InputError, match="repeats the edge"):
        Circuit(nodes, [CircuitEdge("embed", "logits", 1.0), CircuitEdge("embed", "logits", 2.0)])


def test_rejects_badly_named_node():
    with pytest.raises(InputError, match=r"'layer3\.head5' is not one of"):
        Circuit.from_scores({"layer3.head5": 1.0})


def test_rejects_graph_without_attributes():
    g = nx.DiGraph()
    g.add_node("L0.H0", kind="head")
    with pytest.raises(InputError, match=r"lacks the attribute\(s\) \['layer'\]"):
        Circuit.from_networkx(g)


def test_rejects_unknown_node_lookup_with_suggestion():
    with pytest.raises(InputError, match="did you mean"):
        small().node("L0.H2")


def test_rejects_negative_threshold_and_zero_k():
    with pytest.raises(InputError, match="min_weight"):
        small().threshold(-1.0)
    with pytest.raises(InputError, match="`k`"):
        small().top(0)


def test_rejects_channel_without_index():
    with pytest.raises(InputError, match=r"nodes\[0\]\.index` must be an int >= 0 for a channel"):
        Circuit([CircuitNode("L0.C1", "channel", 0)])


def test_rejects_index_on_a_head():
    with pytest.raises(InputError, match=r"nodes\[0\]\.index` must be None"):
        Circuit([CircuitNode("L0.H1", "head", 0, 1, 0.0, 1)])


def test_rejects_channel_before_layer_zero():
    with pytest.raises(InputError, match=r"nodes\[0\]\.layer` must be >= 0 for a unit"):
        Circuit([CircuitNode("u", "unit", -1, None, 0.0, 0)])


def test_rejects_edge_between_channels_of_one_layer():
    with pytest.raises(InputError, match="against the forward pass"):
        Circuit.from_scores({"L1.C0": 1.0, "L1.C1": 1.0}, {("L1.C0", "L1.C1"): 1.0})


def test_rejects_node_name_without_index():
    with pytest.raises(InputError, match="`index` must be an int for a channel"):
        node_name("channel", 2)


def test_to_circuit_rejects_other_sources():
    with pytest.raises(InputError, match="to_attribution"):
        to_circuit({"L0.H0": 1.0})


def test_to_circuit_rejects_unknown_labels():
    with pytest.raises(InputError, match=r"\['neuron 3'\] name no circuit component"):
        to_circuit(components([[1.0, 2.0]], ["L0.C1", "neuron 3"]))


def test_to_circuit_rejects_embed_as_a_component():
    with pytest.raises(InputError, match=r"\['embed'\] name no circuit component"):
        to_circuit(components([[1.0]], ["embed"]))


def test_to_circuit_rejects_bad_example_and_edges_and_layers():
    a = components([[1.0, 2.0]], ["L0.C1", "L2.C0"])
    with pytest.raises(InputError, match="`example`"):
        to_circuit(a, example=1)
    with pytest.raises(InputError, match="`edges`"):
        to_circuit(a, edges="all")
    with pytest.raises(InputError, match="`by`"):
        to_circuit(a, top=1, by="rank")
    with pytest.raises(InputError, match="`n_layers`"):
        to_circuit(a, n_layers=2)
