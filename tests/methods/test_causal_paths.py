"""Tests of xattr_nb.methods.causal_paths: analytic cases of each step, then one test per bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.interventions import Circuit, node_name, run_with_cache, to_circuit
from xattr_nb.methods import causal_paths as cp
from xattr_nb.models import TinyCNN, load_image_model


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids the threads' sync overhead (3x faster on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def net() -> TinyCNN:
    torch.manual_seed(0)
    m = TinyCNN(3, widths=(4, 6, 8)).eval()
    # non-trivial batch-norm statistics, so eval-mode BN is not the identity
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 1.5)
    return m


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(12, 3, 16, 16, generator=g)
    y = torch.arange(12) % 3
    return x, y


class Residual(nn.Module):
    """conv → relu → conv + skip: a fan-out at the second conv meets the un-fanned skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv1(x))
        return self.head((self.conv2(h) + h).mean((2, 3)))


# ------------------------------------------------------------------ layout and references


def test_tinycnn_layout(net: TinyCNN) -> None:
    lay = cp.tinycnn_layout(net)
    assert lay.layer == "blocks.2"
    assert lay.path_convs == ("blocks.2.conv", "blocks.1.conv")
    assert lay.levels == ("blocks.2", "blocks.1", "blocks.0")


def test_reference_output_is_the_mean_map(net: TinyCNN, data) -> None:
    x, _ = data
    _, cache = run_with_cache(net, x, names=["blocks.2"])
    ref = cp.reference(net, "blocks.2", x, batch_size=5)  # batches of 5 still give the exact mean
    torch.testing.assert_close(ref, cache["blocks.2"].mean(0), rtol=1e-5, atol=1e-6)
    assert torch.equal(cp.reference(net, "blocks.2", x, how="zero"), torch.zeros_like(ref))


def test_reference_input_is_the_pooled_previous_block(net: TinyCNN, data) -> None:
    x, _ = data
    _, cache = run_with_cache(net, x, names=["blocks.0"])
    ref_in = cp.reference(net, "blocks.1.conv", x, at="input")
    torch.testing.assert_close(ref_in, F.max_pool2d(cache["blocks.0"], 2).mean(0), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ single interventions


def test_channel_intervention_sets_only_the_chosen_channels(net: TinyCNN, data) -> None:
    x, _ = data
    ref = torch.full((8,), 7.0)
    with cp.channel_intervention(net, "blocks.2", [1, 5], ref):
        _, cache = run_with_cache(net, x, names=["blocks.2"])
    _, clean = run_with_cache(net, x, names=["blocks.2"])
    a, b = cache["blocks.2"], clean["blocks.2"]
    assert bool((a[:, [1, 5]] == 7.0).all())
    keep = [c for c in range(8) if c not in (1, 5)]
    assert torch.equal(a[:, keep], b[:, keep])
    assert not net._forward_hooks and not net.blocks[2]._forward_hooks  # hooks removed on exit


def test_path_intervention_edits_one_output_channel_exactly() -> None:
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 6 * 6, 2)).eval()
    x = torch.rand(5, 3, 6, 6)
    ref_in = torch.rand(3, 6, 6)
    with cp.path_intervention(model, "0", in_ch=2, out_ch=1, ref_in=ref_in):
        _, cache = run_with_cache(model, x, names=["0"])
    x_j = x.clone()
    x_j[:, 2] = ref_in[2]
    want = conv(x).detach()
    want[:, 1] = conv(x_j)[:, 1].detach()  # channel j at its reference, seen by output 1 only
    torch.testing.assert_close(cache["0"], want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ batched effects


def test_channel_effects_logit_is_analytic_for_a_gap_linear_head(net: TinyCNN, data) -> None:
    # The head reads GAP(blocks.2), so do(A_u := a*_u) moves logit t by W[t, u] * (mean A_u − mean a*_u).
    x, y = data
    ref = cp.reference(net, "blocks.2", x[:6])
    eff = cp.channel_effects(net, "blocks.2", x, y, ref, output="logit")
    _, cache = run_with_cache(net, x, names=["blocks.2"])
    want = net.head.weight.detach()[y] * (cache["blocks.2"].mean((2, 3)) - ref.mean((1, 2)))
    torch.testing.assert_close(eff, want, rtol=1e-4, atol=1e-5)


def test_channel_effects_match_one_intervention_at_a_time(net: TinyCNN, data) -> None:
    x, y = data
    ref = cp.reference(net, "blocks.1", x)
    eff = cp.channel_effects(net, "blocks.1", x, y, ref, channels=[0, 3, 5], batch_size=5, max_bytes=2000)
    eff_rep = cp.channel_effects(net, "blocks.1", x, y, ref, channels=[0, 3, 5], fan_out=False)
    p = net(x).softmax(-1).gather(1, y[:, None])[:, 0].detach()
    for s, u in enumerate([0, 3, 5]):
        with cp.channel_intervention(net, "blocks.1", [u], ref):
            q = net(x).softmax(-1).gather(1, y[:, None])[:, 0].detach()
        torch.testing.assert_close(eff[:, s], p - q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(eff, eff_rep, rtol=1e-4, atol=1e-6)


def test_first_per_class_and_class_means() -> None:
    y = torch.tensor([2, 0, 2, 0, 2, 1])
    assert cp.first_per_class(y, 1).tolist() == [True, True, False, False, False, True]
    eff = torch.arange(12.0).view(6, 2)
    torch.testing.assert_close(cp.class_means(eff, y, [0, 2]), torch.tensor([[4.0, 5.0], [4.0, 5.0]]))


def test_node_effects_are_class_means_of_channel_effects(net: TinyCNN, data) -> None:
    x, y = data
    ref = cp.reference(net, "blocks.2", x)
    ce = cp.node_effects(net, "blocks.2", x, y, ref)
    eff = cp.channel_effects(net, "blocks.2", x, y, ref)
    assert ce.shape == (3, 8)
    for c in range(3):
        torch.testing.assert_close(ce[c], eff[y == c].mean(0))


def test_edge_effects_match_path_interventions_and_fan_out_off(net: TinyCNN, data) -> None:
    x, y = data
    ref_in = cp.reference(net, "blocks.2.conv", x, at="input")
    edges = torch.tensor([[0, 0], [5, 3], [2, 7]])
    eff = cp.edge_effects(net, "blocks.2.conv", x, y, edges, ref_in)
    eff_rep = cp.edge_effects(net, "blocks.2.conv", x, y, edges, ref_in, fan_out=False, batch_size=4)
    p = net(x).softmax(-1).gather(1, y[:, None])[:, 0].detach()
    for e, (j, i) in enumerate(edges.tolist()):
        with cp.path_intervention(net, "blocks.2.conv", j, i, ref_in):
            q = net(x).softmax(-1).gather(1, y[:, None])[:, 0].detach()
        torch.testing.assert_close(eff[:, e], p - q, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(eff, eff_rep, rtol=1e-4, atol=1e-6)


def test_edge_at_its_reference_has_zero_effect(net: TinyCNN, data) -> None:
    x, y = data
    _, cache = run_with_cache(net, x[:1], names=["blocks.1"])
    ref_in = F.max_pool2d(cache["blocks.1"], 2)[0]  # the reference equals what the conv reads
    eff = cp.edge_effects(net, "blocks.2.conv", x[:1], y[:1], [[0, 0], [3, 2]], ref_in)
    torch.testing.assert_close(eff, torch.zeros(1, 2), rtol=0, atol=1e-6)


def test_path_effects_cover_every_input_of_each_head(net: TinyCNN, data) -> None:
    x, _ = data
    ref_in = cp.reference(net, "blocks.2.conv", x, at="input")
    pe = cp.path_effects(net, "blocks.2.conv", x[:4], 1, [2, 6], ref_in)
    assert pe.shape == (2, 6)
    edges = [[j, i] for i in (2, 6) for j in range(6)]
    want = cp.edge_effects(net, "blocks.2.conv", x[:4], 1, edges, ref_in).mean(0).view(2, 6)
    torch.testing.assert_close(pe, want)


def test_fan_out_needs_no_skip_connection_and_fan_out_off_works() -> None:
    torch.manual_seed(0)
    m = Residual().eval()
    x = torch.rand(3, 3, 8, 8)
    ref_in = torch.zeros(3, 8, 8)
    with pytest.raises(InputError, match="fan_out=False"):
        cp.edge_effects(m, "conv2", x, 0, [[0, 1], [1, 1]], ref_in)
    eff = cp.edge_effects(m, "conv2", x, 0, [[0, 1], [2, 0]], ref_in, fan_out=False)
    p = m(x).softmax(-1)[:, 0].detach()
    with cp.path_intervention(m, "conv2", 2, 0, ref_in):
        q = m(x).softmax(-1)[:, 0].detach()
    torch.testing.assert_close(eff[:, 1], p - q, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------ graph


def test_top_edges_known_answer() -> None:
    pe = torch.tensor([[0.1, 0.5, 0.3, 0.5], [0.0, -1.0, 2.0, 1.0]])
    e, w = cp.top_edges(pe, torch.tensor([7, 9]), 2)
    assert e.tolist() == [[1, 7], [3, 7], [2, 9], [3, 9]]  # ties broken by channel index
    assert w.tolist() == pytest.approx([0.5, 0.5, 2.0, 1.0])


def test_build_graph_structure(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=3, top_k_edges=2)
    assert g.classes == [0, 1, 2] and g.node_effects.shape == (3, 8) and g.depth == 2
    assert g.layer_names == ["blocks.0", "blocks.1", "blocks.2"]
    for k, c in enumerate(g.classes):
        top = g.channels(c, 0)
        assert top.tolist() == torch.argsort(-g.node_effects[k], stable=True)[:3].tolist()
        for lvl in range(2):
            e, w = g.path_edges(c, lvl)
            assert e.shape == (2 * len(g.channels(c, lvl)), 2)
            assert set(e[:, 1].tolist()) == set(g.channels(c, lvl).tolist())  # heads are the level's nodes
            assert g.channels(c, lvl + 1).tolist() == sorted(set(e[:, 0].tolist()))  # tails are the next level
            pm = g.path_matrices[c][lvl]
            assert torch.equal(w, pm.gather(1, torch.argsort(-pm, dim=1, stable=True)[:, :2]).flatten())
    w = g.weights()
    assert int((w != 0).sum(1).max()) <= 3
    assert g.cost.forward > 0


def test_class_graph_is_a_circuit_of_channels(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=3, top_k_edges=2)
    circ = g.circuits[1]
    assert isinstance(circ, Circuit) and circ.meta["layer_names"] == g.layer_names and circ.meta["class"] == 1
    chans = [n for n in circ.nodes if n.kind == "channel"]
    assert len(chans) + 1 == len(circ.nodes) and circ.node("logits").layer == 3
    for lvl in range(3):
        level = [n for n in chans if n.layer == 2 - lvl]  # level 0 (blocks.2) is the last layer
        assert [n.index for n in level] == g.channels(1, lvl).tolist()
        assert all(n.name == node_name("channel", 2 - lvl, n.index) for n in level)
    k = g.row(1)
    for u in g.channels(1, 0).tolist():  # top nodes: score and edge to the logits are CE_c(u)
        name = f"L2.C{u}"
        assert circ.node(name).score == pytest.approx(float(g.node_effects[k, u]))
        assert [e.weight for e in circ.neighbours(name)["out"]] == pytest.approx([float(g.node_effects[k, u])])
    for lvl in range(2):  # path edges carry PE_c; a lower node scores the sum of its kept out-edges
        e, w = g.path_edges(1, lvl)
        got = {(ed.src, ed.dst): ed.weight for ed in circ.edges}
        for (j, i), pe in zip(e.tolist(), w.tolist(), strict=True):
            assert got[(f"L{1 - lvl}.C{j}", f"L{2 - lvl}.C{i}")] == pe
        for j in set(e[:, 0].tolist()):
            assert circ.node(f"L{1 - lvl}.C{j}").score == pytest.approx(float(w[e[:, 0] == j].sum()))
    n_paths = sum(len(g.path_edges(1, lvl)[0]) for lvl in range(2))
    assert circ.to_networkx().number_of_edges() == len(circ.edges) == 3 + n_paths  # 3 top nodes -> logits


def test_node_effects_round_trip_through_attribution_and_to_circuit(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=2, depth=1)
    a = g.to_attribution()
    assert a.kind == "components" and a.method == "causal_paths" and a.target.tolist() == g.classes
    assert a.scores.shape == (3, 8) and a.labels == [f"L1.C{u}" for u in range(8)]
    assert a.meta["layer_names"] == ["blocks.1", "blocks.2"] and a.cost == g.cost
    for k, c in enumerate(g.classes):
        circ = to_circuit(a, example=k)
        comps = {n.name: n.score for n in circ.nodes if n.kind == "channel"}
        assert comps == {f"L1.C{u}": float(g.node_effects[k, u]) for u in range(8)}
        assert {(e.src, e.weight) for e in circ.edges} == {(f"L1.C{u}", float(g.node_effects[k, u])) for u in range(8)}
        assert "embed" not in {n.name for n in circ.nodes}  # a CNN has no token embeddings
        # the top nodes of the class graph are the top of the same scores
        top = to_circuit(g, example=k, top=2, by="score")
        assert {n.name for n in top.nodes if n.kind == "channel"} == {
            n.name for n in g.circuits[c].nodes if n.layer == 1 and n.kind == "channel"
        }


def test_causal_cam_with_one_hot_weights_is_the_upsampled_channel(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=1, depth=0)
    u = int(g.channels(2)[0])
    cam = cp.causal_cam(net, x[:3], 2, g)
    _, cache = run_with_cache(net, x[:3], names=["blocks.2"])
    want = F.interpolate(
        torch.relu(g.node_effects[2, u] * cache["blocks.2"][:, u : u + 1]), size=(16, 16), mode="bilinear"
    )[:, 0]
    torch.testing.assert_close(cam, want, rtol=1e-5, atol=1e-6)


def test_ablation_cam_uses_the_images_own_effects(net: TinyCNN, data) -> None:
    x, y = data
    ref = cp.reference(net, "blocks.2", x)
    eff = cp.channel_effects(net, "blocks.2", x[:2], y[:2], ref)
    _, cache = run_with_cache(net, x[:2], names=["blocks.2"])
    small = torch.relu(torch.einsum("bc,bchw->bhw", eff, cache["blocks.2"]))
    want = F.interpolate(small[:, None], size=(16, 16), mode="bilinear")[:, 0]
    torch.testing.assert_close(cp.ablation_cam(net, x[:2], y[:2], "blocks.2", ref), want, rtol=1e-5, atol=1e-6)


def test_explain_returns_a_pixel_attribution(net: TinyCNN, data) -> None:
    x, y = data
    a = cp.explain(net, x[:2], y[:2], x_int=x, y_int=y, top_k_nodes=2, top_k_edges=1)
    assert a.kind == "pixels" and a.method == "causal_cam" and a.scores.shape == (2, 16, 16)
    assert a.cost.forward == a.meta["graph"].cost.forward + 2
    b = cp.explain(net, x[:2], y[:2], graph=a.meta["graph"])
    assert torch.equal(a.scores, b.scores)


# ------------------------------------------------------------------ evaluation


def _one_channel_net() -> TinyCNN:
    """A TinyCNN whose head reads channel 0 only: ablating it removes all class evidence."""
    torch.manual_seed(2)
    m = TinyCNN(2, widths=(4,)).eval()
    with torch.no_grad():
        m.head.weight.zero_()
        m.head.weight[0, 0], m.head.weight[1, 0] = 5.0, -5.0
        m.head.bias.zero_()
    return m


def test_graph_faithfulness_analytic() -> None:
    m = _one_channel_net()
    x = torch.rand(40, 3, 8, 8)
    with torch.no_grad():
        feat = m.features(x)[:, 0]
        f = feat.sort().values
        thr = float(f[19] + f[20]) / 2  # between the two middle values: no image sits on the boundary
        m.head.bias[0], m.head.bias[1] = -5.0 * thr, 5.0 * thr  # logit gap 10 (f − thr)
    y = (feat < thr).long()  # class 0 = the images whose channel-0 mean is above the threshold
    g = cp.build_graph(m, x, y, top_k_nodes=1, depth=0, output="logit")
    assert g.channels(0).tolist() == [0] and g.channels(1).tolist() == [0]
    f = cp.graph_faithfulness(m, x, y, g, n_random=3)
    assert f["recall"].tolist() == [1.0, 1.0]
    # ablated, channel 0 is its mean map for every image: one logit vector, one predicted class
    assert sorted(f["graph_drop_per_class"].tolist()) == [0.0, 1.0]
    assert f["random_drop"] == 0.0  # the head ignores every other channel


def test_graph_faithfulness_uses_the_shared_class_recall(net: TinyCNN, data) -> None:
    from xattr_nb.metrics import class_recall

    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=2, depth=0)
    f = cp.graph_faithfulness(net, x, y, g, n_random=1)
    ref = g.refs[g.layout.layer]
    for k, c in enumerate(g.classes):
        base = class_recall(net, x, y, c)
        assert f["recall"][k] == base
        ablated = class_recall(net, x, y, c, ablate=g.channels(c, 0), layer=g.layout.layer, ref=ref)
        assert f["graph_drop_per_class"][k] == pytest.approx(base - ablated)


# ------------------------------------------------------------------ figures


def test_figures_are_built_on_plots_and_returned(data) -> None:
    from matplotlib.figure import Figure

    _, y = data
    eff = torch.randn(12, 8)
    ce = cp.class_means(eff, y, [0, 1, 2])
    fig = cp.plot_effects(eff, ce, y, ["a", "b", "c"])
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # two panels and a colour bar
    pe = torch.randn(2, 5)
    heads = torch.tensor([3, 1])
    edges, _ = cp.top_edges(pe, heads, 2)
    fig = cp.plot_path_effects(pe, heads, edges, title="t")
    assert isinstance(fig, Figure) and len(fig.axes[0].collections) == 1  # the circled kept edges


def test_hf_resnet_stand_in_through_the_shared_loader(tmp_path) -> None:
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    torch.manual_seed(0)
    ResNetForImageClassification(cfg).save_pretrained(tmp_path)
    m = load_image_model("full", small="shapes_cnn", full=str(tmp_path))  # the notebook's scale switch
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want = m.hf(pixel_values=(x - mean) / std).logits
        torch.testing.assert_close(m(x), want)
    # the method runs on it: fan-out for the nodes (after the last residual), repeats for the paths
    lay = cp.hf_resnet_layout(m)
    last = "hf.resnet.encoder.stages.1.layers.0.layer"
    assert lay.layer == "hf.resnet.encoder.stages.1"
    assert lay.path_convs == (f"{last}.1.convolution", f"{last}.0.convolution")
    assert lay.levels == ("stage2", "stage2.conv2.in", "stage2.conv1.in")
    g = cp.build_graph(m, x, torch.tensor([0, 1]), layout=lay, top_k_nodes=2, top_k_edges=1, classes=[0])
    assert g.depth == 2 and g.node_effects.shape == (1, 16)
    assert g.circuits[0].meta["layer_names"] == ["stage2.conv1.in", "stage2.conv2.in", "stage2"]
    ref_in = g.refs[lay.path_convs[0]]
    edges, effects = g.path_edges(0, 0)
    j, i = (int(v) for v in edges[0])
    with torch.no_grad():
        p = m(x[:1]).softmax(-1)[0, 0]
        with cp.path_intervention(m, lay.path_convs[0], j, i, ref_in):
            q = m(x[:1]).softmax(-1)[0, 0]
    torch.testing.assert_close(effects[0], p - q, rtol=1e-4, atol=1e-6)


def test_bad_model(data) -> None:
    with pytest.raises(InputError, match="`model`"):
        cp.reference("not a model", "blocks.2", data[0])


def test_bad_images(net: TinyCNN) -> None:
    with pytest.raises(InputError, match="`x`"):
        cp.reference(net, "blocks.2", torch.rand(3, 16, 16))


def test_bad_how(net: TinyCNN, data) -> None:
    with pytest.raises(InputError, match="`how`"):
        cp.reference(net, "blocks.2", data[0], how="median")


def test_bad_output(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`output`"):
        cp.channel_effects(net, "blocks.2", x, y, torch.zeros(8), output="kl")


def test_bad_layer_name(net: TinyCNN, data) -> None:
    with pytest.raises(InputError, match="no module named"):
        cp.reference(net, "blocks.9", data[0])


def test_bad_ref_channels(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`ref` has 5 channels"):
        cp.channel_effects(net, "blocks.2", x, y, torch.zeros(5))


def test_bad_ref_map_size(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`ref` maps"):
        cp.channel_effects(net, "blocks.2", x, y, torch.zeros(8, 3, 3))


def test_bad_ref_nan(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="NaN"):
        cp.channel_effects(net, "blocks.2", x, y, torch.full((8,), float("nan")))


def test_bad_channels(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`channels` must lie in"):
        cp.channel_effects(net, "blocks.2", x, y, torch.zeros(8), channels=[8])


def test_bad_target(net: TinyCNN, data) -> None:
    x, _ = data
    with pytest.raises(InputError, match="`target` must lie in"):
        cp.channel_effects(net, "blocks.2", x, 3, torch.zeros(8))


def test_bad_labels_missing_class(net: TinyCNN, data) -> None:
    x, _ = data
    with pytest.raises(InputError, match="no image of class"):
        cp.node_effects(net, "blocks.2", x, torch.zeros(12, dtype=torch.long), torch.zeros(8))


def test_bad_conv_not_conv(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match=r"nn\.Conv2d"):
        cp.edge_effects(net, "blocks.2", x, y, [[0, 0]], torch.zeros(6))


def test_bad_conv_grouped(data) -> None:
    m = nn.Sequential(nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(InputError, match="groups=1"):
        cp.path_intervention(m, "0", 0, 0, torch.zeros(4)).__enter__()


def test_bad_edges_shape(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match=r"\[E, 2\]"):
        cp.edge_effects(net, "blocks.2.conv", x, y, torch.zeros(3, 3, dtype=torch.long), torch.zeros(6))


def test_bad_edges_range(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="input channels"):
        cp.edge_effects(net, "blocks.2.conv", x, y, [[6, 0]], torch.zeros(6))


def test_bad_path_channel(net: TinyCNN) -> None:
    with pytest.raises(InputError, match="`out_ch`"):
        cp.path_intervention(net, "blocks.2.conv", 0, 8, torch.zeros(6)).__enter__()


def test_bad_top_k_nodes(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="top_k_nodes"):
        cp.build_graph(net, x, y, top_k_nodes=9, depth=0)


def test_bad_depth(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`depth`"):
        cp.build_graph(net, x, y, depth=3)


def test_bad_layout(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`layout`"):
        cp.build_graph(net, x, y, layout="blocks.2")


def test_bad_layout_model() -> None:
    with pytest.raises(InputError, match=r"model\.blocks"):
        cp.tinycnn_layout(nn.Sequential(nn.Conv2d(3, 3, 3)))


def test_bad_graph(net: TinyCNN, data) -> None:
    x, y = data
    with pytest.raises(InputError, match="`graph`"):
        cp.causal_cam(net, x, y, graph={"nodes": []})


def test_bad_target_not_in_graph(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=1, depth=0, classes=[0, 1])
    with pytest.raises(InputError, match="does not cover"):
        cp.causal_cam(net, x[:1], 2, g)


def test_bad_graph_queries(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=1, depth=0, classes=[0, 1])
    with pytest.raises(InputError, match="not in this graph"):
        g.channels(2)
    with pytest.raises(InputError, match="`level`"):
        g.channels(0, level=1)
    with pytest.raises(InputError, match="no path level"):
        g.path_edges(0, 0)
    with pytest.raises(InputError, match="describe the same levels"):
        cp.class_circuit(0, g.node_effects[0], [torch.tensor([1])], [torch.tensor([[0, 1]])], [torch.ones(1)], ["a"])


def test_bad_explain_without_graph_or_data(net: TinyCNN, data) -> None:
    with pytest.raises(InputError, match="intervention set"):
        cp.explain(net, data[0][:1], 0)


def test_bad_n_random(net: TinyCNN, data) -> None:
    x, y = data
    g = cp.build_graph(net, x, y, top_k_nodes=1, depth=0)
    with pytest.raises(InputError, match="`n_random`"):
        cp.graph_faithfulness(net, x, y, g, n_random=0)


def test_bad_resnet_layout(net: TinyCNN) -> None:
    with pytest.raises(InputError, match="Hugging Face ResNet"):
        cp.hf_resnet_layout(net)


def test_bad_class_means_shape() -> None:
    with pytest.raises(InputError, match="`effects`"):
        cp.class_means(torch.zeros(4), torch.zeros(4, dtype=torch.long), [0])


def test_bad_top_edges_k() -> None:
    with pytest.raises(InputError, match="`k`"):
        cp.top_edges(torch.zeros(2, 3), torch.tensor([0, 1]), 4)
