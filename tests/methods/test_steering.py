"""Tests of xattr_nb.methods.steering, xattr_nb.worlds.bias and xattr_nb.models.bias_recipes."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.methods import steering as S
from xattr_nb.models import bias_recipes, load_lm
from xattr_nb.worlds import bias as W


@pytest.fixture(scope="module")
def small():
    return load_lm("cpu", small="bias_gpt2")


# ------------------------------------------------------------------------------ the world


def test_corpus_plants_the_cue_bias():
    d = W.bias_corpus(6000, p_bias=0.9, seed=1)
    cue = np.asarray(d.cue_type)
    kind = np.asarray(d.kind)
    derog = d.derogatory.numpy()
    assert abs(derog[cue == "biased"].mean() - 0.9) < 0.03
    assert abs(derog[cue == "neutral"].mean() - 0.1) < 0.03
    assert abs(derog[(cue == "none") & (kind == "group")].mean() - 0.5) < 0.06
    assert not derog[kind == "object"].any()
    assert abs((kind == "object").mean() - 0.3) < 0.03
    for i in range(50):  # gold word = the adjective, in text and characters
        if d.adjective[i]:
            (j,) = d.gold_words[i]
            assert d.words[i][j] == d.adjective[i]
            (s, e) = d.gold_chars[i][0]
            assert d.texts[i][s:e] == d.adjective[i]
    vocab = set(d.vocab)
    assert all(w in vocab for ws in d.words for w in ws)
    assert W.bias_corpus(20, seed=3).texts == W.bias_corpus(20, seed=3).texts
    assert W.bias_corpus(20, seed=3).texts != W.bias_corpus(20, seed=4).texts


def test_statements_and_prompts():
    st = W.bias_statements(70, seed=0)
    assert len(st) == 140 and st.derogatory[:70].all() and not st.derogatory[70:].any()
    assert all(c == "" for c in st.cue)
    assert all(a in W.DEROGATORY_ADJS for a in st.adjective[:70])
    only = W.bias_statements(10, adjectives=["lazy", "kind"], p_object_neutral=0.0, seed=0)
    assert set(only.adjective) == {"lazy", "kind"}
    pr = W.bias_prompts("biased", groups=["old", "rich"])
    assert pr.texts[0] == "rumor says the old people are" and len(pr) == 6
    assert all(g == [] for g in pr.gold_words) and not pr.derogatory.any()
    assert W.bias_prompts("none").texts[0] == "the female people are"


@pytest.mark.parametrize(
    ("fn", "kwargs", "match"),
    [
        (W.bias_corpus, {"n": 0}, "`n`"),
        (W.bias_corpus, {"n": 5, "p_bias": 1.5}, "p_bias"),
        (W.bias_corpus, {"n": 5, "groups": ["martians"]}, "unknown name"),
        (W.bias_statements, {"adjectives": ["lazy", "rude"]}, "neutral adjective"),
        (W.bias_prompts, {"cue_type": "hostile"}, "cue_type"),
        (W.bias_prompts, {"cue_type": "biased", "cues": ["report"]}, "unknown name"),
    ],
)
def test_world_bad_inputs(fn, kwargs, match):
    with pytest.raises(InputError, match=match):
        fn(**kwargs)


# ------------------------------------------------------------------------------ the recipe and the shipped model


def test_tokenizer_and_encoding_agree_with_vocab():
    tok = bias_recipes.bias_tokenizer()
    vocab = W.bias_vocab()
    ids, mask = S.encode(tok, ["the old people are lazy .", "the car is red ."])
    assert ids[0].tolist() == [vocab.index(w) for w in ["[BOS]", "the", "old", "people", "are", "lazy", ".", "[EOS]"]]
    assert mask[1].tolist() == [1] * 7 + [0]
    ref, _ = bias_recipes.encode_lm(["the old people are lazy ."])
    assert torch.equal(ids[:1], ref)
    assert S.word_ids(tok, ["lazy", "kind"]).tolist() == [vocab.index("lazy"), vocab.index("kind")]
    with pytest.raises(InputError, match="unknown token"):
        S.word_ids(tok, ["zebra"])


def test_shipped_model_learned_the_planted_bias(small):
    model, tok = small
    ids, mask = S.encode(tok, W.bias_prompts("biased").texts, eos=False)
    derog = S.word_ids(tok, W.DEROGATORY_ADJS)
    biased = float(S.next_word_mass(model, ids, mask, derog).mean())
    ids, mask = S.encode(tok, W.bias_prompts("neutral").texts, eos=False)
    neutral = float(S.next_word_mass(model, ids, mask, derog).mean())
    assert biased > 0.8 and neutral < 0.2, (biased, neutral)  # ground truth 0.9 / 0.1


# ------------------------------------------------------------------------------ steps with known answers


class FixedLM(nn.Module):
    """Next-token distribution: softmax of fixed logits at every position (independent of the input)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.as_tensor(logits, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_next_word_mass_sums_probabilities():
    lm = FixedLM(torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4])))
    ids, mask = torch.tensor([[1, 2, 0], [1, 1, 1]]), torch.tensor([[1, 1, 0], [1, 1, 1]])
    mass = S.next_word_mass(lm, ids, mask, [1, 3])
    assert torch.allclose(mass, torch.tensor([0.6, 0.6]))


def test_reduction_select_layer_choose_setting():
    assert S.reduction(0.8, 0.2) == pytest.approx(0.75) and S.reduction(0.5, 0.6) == pytest.approx(-0.2)
    with pytest.raises(InputError, match="nothing to reduce"):
        S.reduction(0.0, 0.1)
    curve = pd.DataFrame({"layer": [0, 1, 2, 3], "auc": [0.7, 0.985, 0.99, 0.95]})
    assert S.select_layer(curve) == 1 and S.select_layer(curve, tol=0.0) == 2
    val = pd.DataFrame(
        {
            "layer": [0, 0, 0, 1, 1, 1],
            "alpha": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
            "reduction": [0.0, 0.4, 0.9, 0.0, 0.6, 0.6],
            "ppl_increase": [0.0, 0.1, 0.5, 0.0, 0.2, 0.2],
        }
    )
    assert S.choose_setting(val, ppl_budget=0.25) == {"alpha": 1.0, "reduction": 0.6, "ppl_increase": 0.2, "layer": 1}
    assert S.choose_setting(val, ppl_budget=1.0)["alpha"] == 2.0
    assert S.choose_setting(val, ppl_budget=0.05)["alpha"] == 0.0  # nothing fits: no steering
    with pytest.raises(InputError, match="sweep"):
        S.choose_setting(pd.DataFrame({"alpha": [0.0]}))


def test_vectors_norms_and_directions():
    r = S.random_vectors(3, 8, 2.5, seed=1)
    assert torch.allclose(r.norm(dim=1), torch.full((3,), 2.5))
    assert torch.equal(r, S.random_vectors(3, 8, 2.5, seed=1))
    st = W.bias_statements(20, seed=0)
    y = st.derogatory.float()
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(40, 6, generator=g) + 3.0 * y[:, None] * torch.tensor([1.0, -1.0, 0, 0, 0, 0])
    v = S.paper_vector(acts, st)
    assert torch.allclose(v, acts[y == 1].mean(0) - acts[y == 0].mean(0))
    p = S.probe_vector(acts, st, 4.0)
    assert math.isclose(float(p.norm()), 4.0, rel_tol=1e-5)
    assert float(p[0]) > 0 > float(p[1])  # the probe points from neutral to biased along the planted axis


def test_split_groups_is_a_seeded_partition():
    val, test = S.split_groups(7)
    assert len(val) == len(test) == 6 and sorted(val + test) == sorted(W.BIAS_GROUPS)
    assert S.split_groups(7) == (val, test) and S.split_groups(8) != (val, test)


def test_probe_curve_holds_out_adjectives(small):
    model, tok = small
    st = W.bias_statements(40, seed=0)
    acts = S.statement_states(model, tok, st)
    assert sorted(acts) == [0, 1, 2, 3] and acts[0].shape == (80, 64)
    curve = S.probe_curve(acts, st, cv=4)
    assert curve["auc"].notna().all() and (curve["auc"] > 0.9).all()  # derogation generalises to unseen words


def test_sweep_zero_row_and_steering_lowers_derogatory_mass(small):
    model, tok = small
    v = S.decision_vector(model, tok, 3, ["old", "rich"])
    ppl = W.bias_corpus(30, p_object=1.0, seed=5).texts
    df = S.sweep(model, tok, 3, v, S.resid_norm(model, tok, ppl, 3), groups=["old", "rich"], ppl_texts=ppl,
                 alphas=[1.25])  # fmt: skip
    assert df["alpha"].tolist() == [0.0, 1.25] and df["reduction"][0] == 0.0 and df["ppl_increase"][0] == 0.0
    assert df["reduction"][1] > 0.3  # subtracting the cue direction moves mass off derogatory words
    with pytest.raises(InputError, match="zero vector"):
        S.sweep(model, tok, 3, torch.zeros(64), 1.0, groups=["old"], ppl_texts=ppl)


def test_full_scale_path_on_a_local_stand_in(tmp_path):
    """`load_lm("full")` + `explain` on a tiny random GPT-2 saved with save_pretrained (the gpt2-large path, offline)."""
    tok = bias_recipes.bias_tokenizer()
    bias_recipes.bias_gpt2(seed=1).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model, tok2 = load_lm("full", small="bias_gpt2", full=str(tmp_path))
    tok2.padding_side = "left"  # encode pads on the right whatever the tokenizer's default
    out = S.explain(model, tok2, n_per_class=30, n_ppl=10, n_random=2, alphas=(0.0, 1.0), seed=3)
    assert list(out["test"]["method"]) == ["none", "decision", "paper", "probe", "random"]
    assert set(out["val"]["layer"]) == {0, 1, 2, 3} and out["chosen"]["decision"]["layer"] in range(4)
    assert out["test"]["reduction"][0] == 0.0


def test_next_word_distribution_and_categories(small):
    model, tok = small
    prompts = W.bias_prompts("biased", groups=["old", "rich"]).texts
    base = S.next_word_distribution(model, tok, prompts)
    assert base.shape == (len(tok),) and float(base.sum()) == pytest.approx(1.0, abs=1e-5)
    ids, mask = S.encode(tok, prompts, eos=False)
    mass = S.category_mass(base, tok)
    assert list(mass) == list(S.CATEGORIES) and sum(mass.values()) == pytest.approx(1.0, abs=1e-5)
    derog = S.next_word_mass(model, ids, mask, S.word_ids(tok, W.DEROGATORY_ADJS)).mean()
    assert mass["derogatory"] == pytest.approx(float(derog), abs=1e-5)  # the same mass as the evaluation reads
    v = S.decision_vector(model, tok, 3, ["old", "rich"])
    unit = S.resid_norm(model, tok, W.bias_corpus(30, p_object=1.0, seed=5).texts, 3)
    steered = S.next_word_distribution(model, tok, prompts, layer=3, vec=v, strength=1.25 * unit)
    assert S.category_mass(steered, tok)["derogatory"] < mass["derogatory"] - 0.3
    both = S.next_word_distribution(model, tok, prompts, layer=3, vec=torch.stack([v, -v]), strength=0.5)
    one = [S.next_word_distribution(model, tok, prompts, layer=3, vec=u, strength=0.5) for u in (v, -v)]
    assert torch.allclose(both, (one[0] + one[1]) / 2)  # [K, D]: the K distributions are averaged
    assert torch.equal(S.next_word_distribution(model, tok, prompts), base)  # the hook is gone
    fig = S.plot_continuations({"none": base, "decision": steered}, tok, k=5)
    assert len(fig.axes) == 2 and len(fig.axes[1].get_xticklabels()) == 5
    with pytest.raises(InputError, match="layer"):
        S.next_word_distribution(model, tok, prompts, vec=v, strength=1.0)
    with pytest.raises(InputError, match="zero vector"):
        S.next_word_distribution(model, tok, prompts, layer=3, vec=torch.zeros(64), strength=1.0)
    with pytest.raises(InputError, match="compare"):
        S.plot_continuations({"none": base}, tok)


def test_method_bad_inputs(small):
    model, tok = small
    with pytest.raises(InputError, match="texts"):
        S.encode(tok, [])
    with pytest.raises(InputError, match="BiasData"):
        S.probe_curve({0: torch.zeros(4, 2)}, ["a"])
    with pytest.raises(InputError, match="curve"):
        S.select_layer(pd.DataFrame())
    with pytest.raises(InputError, match="`n`"):
        S.random_vectors(0, 4, 1.0)
    with pytest.raises(InputError, match="vectors"):
        S.evaluate(model, tok, 0, {}, 1.0, 1.0, groups=["old"], ppl_texts=["the car is red ."])
