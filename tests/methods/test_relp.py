"""RelP's IOI study: data pairing, the estimators' bookkeeping, the bootstrap and the full-scale path."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.interventions import ContrastPairs, to_circuit
from xattr_nb.interventions.patching import attribution_patching
from xattr_nb.methods.relp import (
    HEAD_SITES,
    correlations,
    cost_table,
    encode_pairs,
    explain,
    ioi_pairs,
    make_metric,
    prompt_accuracy,
    run_methods,
)
from xattr_nb.metrics import bootstrap_delta
from xattr_nb.models import load_lm
from xattr_nb.models.lm_recipes import _gpt2_4l, ioi_held_out_pair, ioi_pair_items, ioi_tokenizer, ioi_vocab
from xattr_nb.worlds.text import encode_words


@pytest.fixture(scope="module")
def tok():
    return ioi_tokenizer()


@pytest.fixture(scope="module")
def model():
    return _gpt2_4l(len(ioi_vocab()), seed=5)


def test_encode_pairs_swaps_names(tok):
    data = ioi_pair_items(6, seed=1, held_out=True)
    data = data.subset(torch.as_tensor([i for i in range(6) if len(data.words[i]) == 14]))
    p = encode_pairs(tok, data)
    assert isinstance(p, ContrastPairs) and p.clean_mask is None and p.corr_mask is None
    assert p.texts == list(data.texts)
    ids, _ = encode_words([f"[BOS] {t}" for t in data.texts], data.vocab)
    assert torch.equal(p.clean_ids, ids)
    idx = {w: i for i, w in enumerate(data.vocab)}
    for i in range(len(p)):
        assert int(p.answer[i]) == idx[data.answers[i]] and int(p.wrong[i]) == idx[data.wrong[i]]
        swapped = torch.where(p.clean_ids[i] == p.answer[i], p.wrong[i], p.clean_ids[i])
        swapped = torch.where(p.clean_ids[i] == p.wrong[i], p.answer[i], swapped)
        assert torch.equal(p.corr_ids[i], swapped)
    assert p.tokens[0] == "[BOS]" and p.tokens[10] == "S2" and p.tokens[-1] == "to"


def test_batches_are_disjoint_held_out_and_aligned(tok):
    batches = ioi_pairs(12, n_batches=3, seed=4)
    texts = [t for b in batches for t in b.texts]
    assert len(set(texts)) == 36 and all(b.clean_ids.shape == (12, 15) for b in batches)
    vocab = ioi_vocab()
    for b in batches:
        assert all(ioi_held_out_pair(vocab[a], vocab[w]) for a, w in zip(b.answer, b.wrong, strict=True))
    train = ioi_pairs(12, seed=4, held_out=False)[0]
    assert not any(ioi_held_out_pair(vocab[a], vocab[w]) for a, w in zip(train.answer, train.wrong, strict=True))


def test_run_methods_costs_and_rules_off(model):
    pairs = ioi_pairs(6, seed=2)[0]
    res = run_methods(model, pairs, ig_steps=2, per_example=True)
    t = pairs.clean_ids.shape[1]
    assert res["AP"].cost.forward == 6 * (2 + 3 * 4 * t)  # totals over the 6 prompts
    assert (res["AtP"].cost.forward, res["AtP"].cost.backward) == (12, 6)
    assert (res["RelP"].cost.forward, res["RelP"].cost.backward) == (12, 6)
    assert res["IG"].cost.forward == 6 * (2 + 2 * 12) and res["IG"].examples["mlp_out"].shape == (6, 4, t)
    off = attribution_patching(model, pairs.clean_ids, pairs.corr_ids, make_metric(model, pairs), mode="relp", rules=())
    assert (off.flat() - res["AtP"].flat()).abs().max() < 1e-6
    table = correlations(res)
    assert len(table) == 4 * 3 and set(table["site"]) == {"resid_pre", "attn_out", "mlp_out"}
    assert table["pearson"].between(-1, 1).all() and table["jaccard"].between(0, 1).all()
    costs = cost_table(res).set_index("method")  # per prompt
    assert costs.loc["AP", "forward"] == 2 + 12 * t and costs.loc["IG", "backward"] == 24


def test_bootstrap_of_the_gap_reads_the_per_prompt_scores(model):
    """metrics.bootstrap_delta on RelP's per-prompt scores: the delta on the sample is the Pearson gap
    of the batch means (the correlations table's numbers), a method against itself gives 0."""
    pairs = ioi_pairs(6, seed=2)[0]
    res = run_methods(model, pairs, methods=("AP", "AtP", "RelP"), per_example=True)
    ex = {m: r.examples["mlp_out"] for m, r in res.items()}
    same = bootstrap_delta(ex["AtP"], ex["AtP"], truth=ex["AP"], statistic="pearson", n_boot=50)
    assert same["delta"] == 0.0 and same["lo"] == same["hi"] == 0.0
    d = bootstrap_delta(ex["RelP"], ex["AtP"], truth=ex["AP"], statistic="pearson", n_boot=50, seed=1)
    table = correlations(res, sites=("mlp_out",)).set_index("method")["pearson"]
    assert d["delta"] == pytest.approx(table["RelP"] - table["AtP"], abs=1e-5)
    assert d["lo"] <= d["hi"] and d["n_boot"] <= 50
    # the batch-mean scores are the per-prompt scores averaged
    assert torch.allclose(ex["RelP"].mean(0), res["RelP"]["mlp_out"], atol=1e-5)


def test_relp_heads_round_trip_through_attribution_to_circuit(model):
    pairs = ioi_pairs(6, seed=4)[0]
    res = run_methods(model, pairs, sites=HEAD_SITES, positions=[-1], methods=("AP", "RelP"))
    for name, r in res.items():
        a = r.to_attribution()
        assert a.kind == "components" and a.method == name and a.cost == r.cost and a.scores.shape == (1, 4 * 4 + 4)
        circ = to_circuit(a, top=8, title=name)
        kept = {n.name: n.score for n in circ.nodes if n.kind in ("head", "mlp")}
        assert len(kept) == 8 and circ.meta["title"] == name and circ.node("logits").layer == 4
        for label, score in kept.items():  # the same numbers as the result's own grids
            layer, rest = int(label[1]), label.split(".")[1]
            want = r["mlp_out"][layer, 0] if rest == "MLP" else r["head"][layer, 0, int(rest[1:])]
            assert score == float(want)
        assert {e.src: e.weight for e in circ.edges} == kept


def test_study_takes_median_over_batches(model):
    batches = ioi_pairs(4, n_batches=3, seed=3)
    out = explain(model, batches, methods=("AP", "AtP"), show_progress=False)
    pb = out["per_batch"]
    assert set(pb["batch"]) == {0, 1, 2} and set(pb["site"]) == {"resid_pre", "attn_out", "mlp_out", "head"}
    m = out["median"].set_index(["method", "site"]).loc[("AtP", "mlp_out"), "pearson"]
    assert m == pytest.approx(pb[(pb.method == "AtP") & (pb.site == "mlp_out")]["pearson"].median())


def test_full_scale_path_on_a_local_stand_in(tmp_path, tok, model):
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    lm, tok2 = load_lm("full", small="ioi_gpt2_4l", full=str(tmp_path))
    pairs = ioi_pairs(4, seed=0, tokenizer=tok2)[0]
    res = run_methods(lm, pairs, methods=("AP", "RelP"))
    ref = run_methods(model, pairs, methods=("AP", "RelP"))
    assert torch.allclose(res["RelP"].flat(), ref["RelP"].flat(), atol=1e-5)


def test_shipped_model_through_load_lm_solves_held_out_prompts():
    lm, tok = load_lm("cpu", small="ioi_gpt2_4l")
    assert not lm.training and tok.convert_ids_to_tokens(0) is not None
    pairs = ioi_pairs(16, seed=7, tokenizer=tok)[0]
    assert prompt_accuracy(lm, pairs) >= 0.9


def test_bad_inputs_raise(model, tok):
    pairs = ioi_pairs(4, seed=0)[0]
    with pytest.raises(InputError, match="methods"):
        run_methods(model, pairs, methods=("EAP",))
    with pytest.raises(InputError, match="pairs"):
        run_methods(model, pairs.clean_ids)
    with pytest.raises(InputError, match="scale"):
        load_lm("gpu", small="ioi_gpt2_4l")
    with pytest.raises(InputError, match="IOIData"):
        encode_pairs(tok, ["when mary and john"])
    with pytest.raises(InputError, match="batches"):
        explain(model, pairs)
    assert isinstance(pairs, ContrastPairs)


def test_activation_change_is_the_norm_of_the_difference(model):
    from xattr_nb.interventions.patching import _keys, _run_cache, component_sites
    from xattr_nb.methods.relp import activation_change

    pairs = ioi_pairs(4, seed=3)[0]
    same = activation_change(model, pairs.clean_ids, pairs.clean_ids, sites=("resid_pre", "head"))
    assert same["resid_pre"].abs().max() == 0 and same["head"].abs().max() == 0  # nothing changes, nothing scores
    res = run_methods(model, pairs, methods=("ActDiff",), sites=("resid_pre", "mlp_out", "head"), per_example=True)
    r = res["ActDiff"]
    assert (r.cost.forward, r.cost.backward) == (8, 0) and (r["resid_pre"] >= 0).all()
    st = component_sites(model)
    keys = _keys(st, ("resid_pre", "head"))
    _, a = _run_cache(model, pairs.clean_ids, st, keys, None, grad=False)
    _, b = _run_cache(model, pairs.corr_ids, st, keys, None, grad=False)
    want = (a[("resid_pre", 2)] - b[("resid_pre", 2)]).norm(dim=-1)  # [B, T]
    assert torch.allclose(r.examples["resid_pre"][:, 2], want, atol=1e-6)
    assert torch.allclose(r["resid_pre"][2], want.mean(0), atol=1e-6)
    d = (a[("head", 1)] - b[("head", 1)]).view(4, -1, st.n_heads, st.d_head)[:, :, 3].norm(dim=-1)
    assert torch.allclose(r.examples["head"][:, 1, :, 3], d, atol=1e-6)
    # layer 0's residual stream differs only at the swapped names: the control is zero everywhere else
    names = (pairs.clean_ids != pairs.corr_ids).any(0)
    assert (r["resid_pre"][0][~names] == 0).all() and (r["resid_pre"][0][names] > 0).all()
    with pytest.raises(InputError, match="methods"):
        run_methods(model, pairs, methods=("Norm",))
