"""Activation patching, AtP/RelP and IG-patching on a tiny random HF GPT-2, with exact invariants."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.attribution.result import Attribution
from xattr_nb.checks import InputError
from xattr_nb.interventions import to_circuit
from xattr_nb.interventions.patching import (
    PatchingResult,
    activation_patching,
    attribution_patching,
    compare,
    component_sites,
    ig_patching,
    logit_diff,
    normalized_logit_diff,
    site_label,
)
from xattr_nb.models.text import tiny_gpt2

ALL = ("resid_pre", "attn_out", "mlp_out", "head")


@pytest.fixture(scope="module")
def setup():
    model = tiny_gpt2(30, n_layer=2, n_head=4, d_model=32, seed=3)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(5, 30, (6, 7), generator=g)
    corr = clean.clone()
    corr[:, 2] = (clean[:, 2] + 7) % 25 + 5  # differs at position 2 only
    ans, wrong = torch.randint(5, 30, (6,), generator=g), torch.randint(5, 30, (6,), generator=g)
    metric = normalized_logit_diff(model, clean, corr, ans, wrong)
    return model, clean, corr, metric


def _n_hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_sites_of_gpt2(setup):
    st = component_sites(setup[0])
    assert st.blocks[1] == "transformer.h.1" and st.attn[0] == "transformer.h.0.attn"
    assert st.out_proj[1] == "transformer.h.1.attn.c_proj" and (st.n_heads, st.d_head) == (4, 8)


def test_metric_is_zero_on_corrupted_and_one_on_clean(setup):
    model, clean, corr, metric = setup
    with torch.no_grad():
        assert float(metric(model(clean).logits)) == pytest.approx(1.0, abs=1e-4)  # float32 over a small LD gap
        assert float(metric(model(corr).logits)) == pytest.approx(0.0, abs=1e-4)
    logits = torch.zeros(2, 3, 5)
    logits[0, -1, 1], logits[1, 0, 2] = 2.0, -1.0
    ld = logit_diff(logits, torch.tensor([1, 2]), torch.tensor([0, 0]), torch.tensor([2, 0]))
    assert ld.tolist() == [2.0, -1.0]


def test_ap_exact_cases_and_batching_invariance(setup):
    model, clean, corr, metric = setup
    ap = activation_patching(model, clean, corr, metric, sites=ALL, max_rows=60)
    # the runs differ only at position 2: patching the embedding there restores the clean run ...
    assert float(ap["resid_pre"][0, 2]) == pytest.approx(1.0, abs=1e-5)
    # ... and nothing before position 2 differs, so patching there does nothing
    assert ap["resid_pre"][:, :2].abs().max() < 1e-6 and ap["head"][:, :2].abs().max() < 1e-6
    one = activation_patching(model, clean, corr, metric, sites=ALL, max_rows=1)
    assert torch.allclose(ap.flat(), one.flat(), atol=1e-5)
    n = clean.shape[0]  # costs are totals over the batch
    assert ap.cost.forward == n * (2 + 3 * 2 * 7 + 2 * 7 * 4) and ap["head"].shape == (2, 7, 4)
    assert ap.n_examples == n


def test_head_scores_sum_to_attention_output(setup):
    """attn_out = sum_h z_h W_h + b is linear in the heads, so AtP over heads adds up to AtP on attn_out."""
    model, clean, corr, metric = setup
    for mode in ("grad", "relp"):
        r = attribution_patching(model, clean, corr, metric, sites=("attn_out", "head"), mode=mode)
        assert torch.allclose(r["head"].sum(-1), r["attn_out"], atol=1e-6)
        assert r.cost.forward == 2 * clean.shape[0] and r.cost.backward == clean.shape[0]


def test_ig_matches_ap_where_one_position_matters(setup):
    """The last MLP's output reaches the metric only at the final position, so the whole-layer path
    integral equals patching that one position (up to quadrature error)."""
    model, clean, corr, metric = setup
    ap = activation_patching(model, clean, corr, metric, sites=("mlp_out",), positions=[-1])
    ig = ig_patching(model, clean, corr, metric, sites=("mlp_out",), steps=32, max_rows=64)
    assert abs(float(ig["mlp_out"][1, -1]) - float(ap["mlp_out"][1, 0])) < 1e-3
    assert ig["mlp_out"][1, :-1].abs().max() < 1e-7
    n = clean.shape[0]
    assert ig.cost.forward == n * (2 + 32 * 2) and ig.cost.backward == n * 64


def test_estimators_agree_with_ap_on_a_small_corruption(setup):
    model, clean, corr, metric = setup
    ap = activation_patching(model, clean, corr, metric, sites=ALL)
    for r in (
        attribution_patching(model, clean, corr, metric, sites=ALL),
        ig_patching(model, clean, corr, metric, sites=ALL),
    ):
        assert compare(r, ap)["pearson"] > 0.9


def test_compare_known_values():
    t = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0])
    assert compare(t, t, 2) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0), "jaccard": 1.0}
    c = compare(-t, t, 2)
    assert c["pearson"] == pytest.approx(-1.0) and c["jaccard"] == 1.0
    assert compare(torch.tensor([0.0, 0.0, 1.0, 0.1, 2.0]), t, 2)["jaccard"] == pytest.approx(1 / 3)


def test_to_circuit_sums_positions(setup):
    model, clean, corr, metric = setup
    r = attribution_patching(model, clean, corr, metric, sites=("head", "mlp_out"))
    circ = to_circuit(r)
    assert circ.node("L1.H2").score == pytest.approx(float(r["head"][1, :, 2].sum()))
    assert circ.node("L0.MLP").score == pytest.approx(float(r["mlp_out"][0].sum()))
    assert circ.node("logits").layer == 2 and circ.meta["method"] == "AtP" and circ.meta["positions"] == r.positions
    assert len(to_circuit(r, top=3).nodes) == 3 + 2  # plus embed and logits


def test_results_as_component_attributions(setup):
    model, clean, corr, metric = setup
    r = activation_patching(model, clean, corr, metric, sites=ALL, positions=[2, 6], per_example=True)
    a = r.to_attribution()
    assert a.kind == "components" and a.method == "AP" and a.cost == r.cost and a.target.tolist() == [0]
    n = 2 + 2 + 2 + 2 * 4  # resid_pre, attn_out, mlp_out per layer, then 4 heads per layer
    assert a.scores.shape == (1, n) and len(a.labels) == n
    assert a.labels[:6] == ["L0.RESID", "L1.RESID", "L0.ATTN", "L1.ATTN", "L0.MLP", "L1.MLP"]
    assert a.labels[6:] == [f"L{layer}.H{h}" for layer in range(2) for h in range(4)]
    assert a.scores[0, 4] == r["mlp_out"][0].sum() and a.scores[0, 6 + 4 + 3] == r["head"][1, :, 3].sum()
    assert a.meta["positions"] == [2, 6] and a.meta["n_layers"] == 2 and a.meta["sites"] == list(ALL)
    # per position: the order of flat(), positions named after the "@"
    each = r.to_attribution(sum_positions=False)
    assert torch.equal(each.scores[0], r.flat()) and each.labels[:3] == ["L0.RESID@2", "L0.RESID@6", "L1.RESID@2"]
    assert each.labels[-2:] == ["L1.H2@6", "L1.H3@6"]
    # per prompt: one row each, whose mean is the batch-mean score
    pe = r.to_attribution(kinds=("head",), per_example=True)
    assert pe.scores.shape == (6, 8) and pe.target.tolist() == [0] * 6
    torch.testing.assert_close(pe.scores.mean(0), r["head"].sum(1).reshape(-1), rtol=1e-5, atol=1e-6)
    assert site_label("attn_out", 3) == "L3.ATTN" and site_label("head", 1, 2) == "L1.H2"


@pytest.mark.parametrize("estimator", ["AP", "AtP", "RelP", "IG"])
def test_round_trip_result_attribution_circuit_keeps_nodes_and_weights(setup, estimator):
    model, clean, corr, metric = setup
    kw = {"sites": ("head", "mlp_out"), "positions": [2, -1]}
    if estimator == "AP":
        r = activation_patching(model, clean, corr, metric, **kw)
    elif estimator == "IG":
        r = ig_patching(model, clean, corr, metric, steps=2, **kw)
    else:
        r = attribution_patching(model, clean, corr, metric, mode="grad" if estimator == "AtP" else "relp", **kw)
    want = {f"L{layer}.H{h}": float(r["head"][layer, :, h].sum()) for layer in range(2) for h in range(4)}
    want |= {f"L{layer}.MLP": float(r["mlp_out"][layer].sum()) for layer in range(2)}
    for circ in (to_circuit(r), to_circuit(r.to_attribution())):
        assert {n.name: n.score for n in circ.nodes if n.kind in ("head", "mlp")} == want  # exactly
        assert {e.src: e.weight for e in circ.edges} == want and {e.dst for e in circ.edges} == {"logits"}
        assert [n.name for n in circ.nodes if n.kind in ("embed", "logits")] == ["embed", "logits"]
    top = to_circuit(r, top=4)
    kept = sorted(want, key=lambda k: -abs(want[k]))[:4]
    assert {n.name for n in top.nodes} == {*kept, "embed", "logits"} and len(top.edges) == 4


def test_to_circuit_needs_circuit_components(setup):
    model, clean, corr, metric = setup
    r = attribution_patching(model, clean, corr, metric)  # resid_pre, attn_out, mlp_out
    with pytest.raises(InputError, match=r"'L0\.RESID'.*kinds=\('head', 'mlp_out'\)"):
        to_circuit(r)
    circ = to_circuit(r.to_attribution(kinds="mlp_out"))
    assert [n.name for n in circ.nodes] == ["embed", "L0.MLP", "L1.MLP", "logits"]
    with pytest.raises(InputError, match="per-prompt scores"):
        r.to_attribution(per_example=True)
    with pytest.raises(InputError, match="no 'head' scores"):
        r.to_attribution(kinds=("head",))
    with pytest.raises(InputError, match="at least one"):
        r.to_attribution(kinds=())
    with pytest.raises(InputError, match="kind='components'"):
        to_circuit(Attribution(torch.ones(1, 3), "tokens", "x", torch.zeros(1, dtype=torch.long)))
    with pytest.raises(InputError, match="repeat"):
        to_circuit(
            Attribution(torch.ones(1, 2), "components", "x", torch.zeros(1, dtype=torch.long), labels=["L0.MLP"] * 2)
        )
    with pytest.raises(InputError, match="no `labels`"):
        to_circuit(Attribution(torch.ones(1, 2), "components", "x", torch.zeros(1, dtype=torch.long)))


def test_bad_inputs_raise(setup):
    model, clean, corr, metric = setup
    with pytest.raises(InputError, match="same shape"):
        activation_patching(model, clean, corr[:, :5], metric)
    with pytest.raises(InputError, match="sites"):
        attribution_patching(model, clean, corr, metric, sites=("resid_post",))
    with pytest.raises(InputError, match="positions"):
        activation_patching(model, clean, corr, metric, positions=[9])
    with pytest.raises(InputError, match="mode"):
        attribution_patching(model, clean, corr, metric, mode="lrp")
    with pytest.raises(InputError, match="scalar"):
        attribution_patching(model, clean, corr, lambda logits: logits[:, -1, 0])
    with pytest.raises(InputError, match="metric"):
        ig_patching(model, clean, corr, "logit_diff")
    with pytest.raises(InputError, match="same logit difference"):
        normalized_logit_diff(model, clean, clean, torch.ones(6, dtype=torch.long), torch.ones(6, dtype=torch.long))
    with pytest.raises(InputError, match="to_attribution"):
        to_circuit({"head": torch.zeros(2, 1, 4)})
    with pytest.raises(InputError, match="constant"):
        compare(torch.ones(4), torch.arange(4.0), 2)


def test_no_hook_leaks_on_error(setup):
    model, clean, corr, metric = setup
    n = _n_hooks(model)

    def broken(logits):
        raise RuntimeError("metric failed")

    for fn in (activation_patching, attribution_patching, ig_patching):
        with pytest.raises(RuntimeError, match="metric failed"):
            fn(model, clean, corr, broken, sites=ALL)
        assert _n_hooks(model) == n
    r = attribution_patching(model, clean, corr, metric, mode="relp", ah=True)
    assert isinstance(r, PatchingResult) and model.config._attn_implementation == "eager" and _n_hooks(model) == n
