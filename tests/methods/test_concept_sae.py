"""Tests of the latent-concept world, its recipe and the concept/SAE analysis of `I Predict Therefore I Am`."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.methods import concept_sae as C
from xattr_nb.models.concept_recipes import bayes_kl, concept_gpt2, concept_world, lm_inputs
from xattr_nb.models.sae import L1SAE, train_sae
from xattr_nb.worlds.concepts import concept_lvm

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- the world


def test_prior_and_emissions_are_distributions_and_posteriors_sum_to_one():
    w = concept_lvm(seed=3)
    assert w.configs.shape == (8, 3) and torch.equal(w.configs[5], torch.tensor([1, 0, 1]))
    assert math.isclose(float(w.log_prior.exp().sum()), 1.0, abs_tol=1e-6)
    assert torch.allclose(w.log_emission.exp().sum(-1), torch.ones(8), atol=1e-6)
    d = w.sample(50, seed=1)
    lp = w.exact_log_posterior(d.tokens)
    assert lp.shape == (50, 9, 8)
    assert torch.allclose(lp.exp().sum(-1), torch.ones(50, 9), atol=1e-5)
    assert torch.allclose(lp[:, 0], w.log_prior.expand(50, -1), atol=1e-5)  # t = 0: nothing read, the prior
    nxt = w.bayes_next_token(lp)
    assert torch.allclose(nxt.exp().sum(-1), torch.ones(50, 9), atol=1e-5)


def test_posterior_matches_brute_force_bayes_on_a_two_concept_toy():
    w = concept_lvm(m=2, dag=[(0, 1)], vocab_size=5, seq_len=4, seed=7)
    d = w.sample(6, seed=2)
    lp = w.exact_log_posterior(d.tokens)
    prior, emis = w.log_prior.exp().double(), w.log_emission.exp().double()
    for n, t in itertools.product(range(6), range(5)):
        joint = [prior[k] * math.prod(emis[k, int(x)] for x in d.tokens[n, :t]) for k in range(4)]
        post = torch.tensor(joint) / sum(joint)
        assert torch.allclose(lp[n, t].exp().double(), post, atol=1e-5)
        # per-concept log-odds by summing the configurations by hand (bit i of k = concept i)
        for i in range(2):
            on = sum(post[k] for k in range(4) if (k >> i) & 1)
            ell = w.concept_log_odds(lp[n, t])[i]
            assert math.isclose(float(ell), math.log(on / (1 - on)), abs_tol=1e-4)


def test_prior_follows_the_dag():
    w = concept_lvm(seed=1, dependence=0.0)  # no edges' weight: concepts independent
    p = w.log_prior.exp().view(2, 2, 2)  # index [c2, c1, c0]
    marg = [p.sum(dim=tuple(j for j in range(3) if j != a)) for a in range(3)]
    assert torch.allclose(p, torch.einsum("a,b,c->abc", *marg), atol=1e-6)
    w = concept_lvm(seed=1, dependence=2.0)
    p = w.log_prior.exp().view(2, 2, 2)
    # c1 and c2 depend on c0 only: given c0 they are independent (c0 -> c1, c0 -> c2)
    for c0 in (0, 1):
        q = p[:, :, c0] / p[:, :, c0].sum()
        assert torch.allclose(q, torch.outer(q.sum(1), q.sum(0)), atol=1e-6)
    pc1 = p.sum(0)  # [c1, c0]
    assert abs(float(pc1[1, 1] / pc1[:, 1].sum() - pc1[1, 0] / pc1[:, 0].sum())) > 0.2  # c1 depends on c0


def test_sampling_matches_the_emission_table_and_is_seeded():
    w = concept_lvm(m=1, dag=(), vocab_size=6, seq_len=400, seed=0)
    d = w.sample(60, seed=4)
    assert torch.equal(d.tokens, w.sample(60, seed=4).tokens) and not torch.equal(d.tokens, w.sample(60, seed=5).tokens)
    assert torch.equal(d.concepts[:, 0], d.config)
    for k in (0, 1):
        sel = d.tokens[d.config == k].flatten()
        freq = torch.bincount(sel, minlength=6).float() / sel.numel()
        assert (freq - w.log_emission[k].exp()).abs().max() < 0.02
    assert len(d.split((0.5, 0.5))[0]) == 30


def test_counterfactual_pairs_flip_exactly_one_concept_with_coupled_tokens():
    w = concept_world()
    base, flip = w.counterfactual_pairs(200, 1, seed=3)
    assert torch.equal(base.config ^ flip.config, torch.full((200,), 2))
    assert torch.equal(base.concepts[:, [0, 2]], flip.concepts[:, [0, 2]])
    assert 0.2 < float((base.tokens == flip.tokens).float().mean()) < 1.0  # common random numbers: many equal tokens
    ell = w.concept_log_odds(w.exact_log_posterior(flip.tokens)) - w.concept_log_odds(
        w.exact_log_posterior(base.tokens)
    )
    sign = (flip.concepts[:, 1] - base.concepts[:, 1]).float()
    assert float((ell[:, -1, 1] * sign).mean()) > 1.0  # turning c1 on raises its posterior log-odds


def test_world_input_errors():
    with pytest.raises(InputError, match="parent < child"):
        concept_lvm(dag=[(1, 0)])
    with pytest.raises(InputError, match="m"):
        concept_lvm(m=0)
    with pytest.raises(InputError, match="repeated"):
        concept_lvm(dag=[(0, 1), (0, 1)])
    w = concept_world()
    with pytest.raises(InputError, match="tokens"):
        w.exact_log_posterior(torch.tensor([[0, 32]]))
    with pytest.raises(InputError, match="concept"):
        w.counterfactual_pairs(4, 3)
    with pytest.raises(InputError, match="log_post"):
        w.concept_log_odds(torch.zeros(2, 5))


# ---------------------------------------------------------------------------------------------- the recipe


class _BayesLM(nn.Module):
    """A stand-in LM whose logits are the world's Bayes-optimal next-token log-probabilities and whose last
    hidden state is ``ell @ R``: exactly linear in the concept log-odds."""

    def __init__(self, world, R):
        super().__init__()
        self.world, self.R = world, nn.Parameter(R, requires_grad=False)

    def forward(self, input_ids, output_hidden_states=False):
        lp = self.world.exact_log_posterior(input_ids[:, 1:])
        logits = torch.cat([self.world.bayes_next_token(lp), torch.full((*lp.shape[:2], 1), -1e4)], -1)
        return SimpleNamespace(logits=logits, hidden_states=(self.world.concept_log_odds(lp) @ self.R,))


def test_lm_inputs_and_bayes_kl_is_zero_for_the_bayes_predictor():
    w = concept_world()
    d = w.sample(40, seed=1)
    ids = lm_inputs(d.tokens, 32)
    assert ids.shape == (40, 9) and bool((ids[:, 0] == 32).all()) and torch.equal(ids[:, 1:], d.tokens)
    assert abs(bayes_kl(_BayesLM(w, torch.eye(3)), w, d.tokens)) < 1e-5
    assert bayes_kl(concept_gpt2(seed=0), w, d.tokens) > 0.1
    with pytest.raises(InputError, match="tokens"):
        lm_inputs(torch.tensor([[40]]), 32)


def test_shipped_checkpoint_approaches_the_bayes_predictor():
    from xattr_nb.models import zoo

    w = concept_world()
    model = zoo.load("concept_gpt2")
    assert bayes_kl(model, w, w.sample(300, seed=77).tokens) < 0.05


# ---------------------------------------------------------------------------------------------- the analysis


def test_regression_table_prefers_the_target_f_is_built_from():
    w = concept_world()
    tr, te = w.sample(600, seed=1), w.sample(300, seed=2)
    R = torch.randn(8, 16, generator=torch.Generator().manual_seed(0))
    Ttr = {k: C.rows(v, 2) for k, v in C.concept_targets(w, tr.tokens, tr.config).items()}
    Tte = {k: C.rows(v, 2) for k, v in C.concept_targets(w, te.tokens, te.config).items()}
    tab = C.regression_table({"lin_L": Ttr["L"] @ R}, {"lin_L": Tte["L"] @ R}, Ttr, Tte).set_index("target")["r2"]
    assert tab["L"] > 0.999 and tab["P"] < 0.99 and tab["c"] < tab["L"] - 0.1
    with pytest.raises(InputError, match="target"):
        C.regression_table({"a": Ttr["L"]}, {"a": Tte["L"]}, Ttr, Tte, names=("nope",))


def test_probe_and_directions_recover_the_exact_flip_effects_on_a_linear_model():
    w = concept_world()
    R = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    lm = _BayesLM(w, R)
    tr, te = w.sample(500, seed=1), w.sample(200, seed=2)
    f_tr, f_te = (C.rows(C.final_hidden(lm, d.tokens, 32), 2, 7) for d in (tr, te))
    ell_tr = C.rows(C.concept_targets(w, tr.tokens, tr.config)["ell"], 2, 7)
    ell_te = C.rows(C.concept_targets(w, te.tokens, te.config)["ell"], 2, 7)
    pr = C.log_odds_probes(f_tr, ell_tr, f_te, ell_te, ridge=1e-8)
    assert float(pr["r2"].min()) > 0.9999
    A = C.concept_directions(lm, w, n_pairs=300, t_min=2, t_max=7, seed=5)
    truth = C.true_flip_effects(w, n_pairs=300, t_min=2, t_max=7, seed=5)
    assert torch.allclose(C.wa_matrix(pr["W"], A), truth, atol=1e-3)
    assert math.isclose(C.supervised_mcc(pr["pred"], ell_te), 1.0, abs_tol=1e-5)


def test_explain_chains_the_steps_on_a_model_linear_in_the_log_odds():
    w = concept_world()
    lm = _BayesLM(w, torch.randn(3, 6, generator=torch.Generator().manual_seed(1)))
    rand = concept_gpt2(w.vocab_size, seed=0)  # random weights
    kw = dict(n_train=300, n_test=150, n_pairs=200, sae_width=6, sae_epochs=2, seed=3)
    study = C.explain(lm, w, untrained=rand, **kw)
    assert list(study.r2.index) == ["trained", "untrained"] and list(study.r2.columns) == ["L", "P", "MAP", "c", "next"]
    assert study.r2.loc["trained", "next"] > study.r2.loc["untrained", "next"] + 0.3
    assert float(study.probe_r2.min()) > 0.999 and study.mcc["supervised"] > 0.999
    assert study.wa_rel_error < 0.01 and math.isclose(study.offdiag_ratio, study.offdiag_ratio_exact, abs_tol=0.01)
    exact = C.true_flip_effects(w, n_pairs=200, t_min=2, t_max=7, seed=3)
    assert torch.equal(study.exact, exact)  # the same pairs as the step called alone
    assert set(study.mcc) == {"supervised", "l1", "topk", "structured"} and set(study.sparsity) == set(study.saes)
    assert list(C.explain(lm, w, structured=False, **kw).saes) == ["l1", "topk"]
    with pytest.raises(InputError, match="ConceptLVM"):
        C.explain(lm, "world")


def test_offdiag_ratio_and_wa_errors():
    assert C.offdiag_ratio(torch.eye(3) * 2) == 0.0
    assert math.isclose(C.offdiag_ratio(torch.tensor([[2.0, 1.0], [1.0, 2.0]])), 0.5)
    with pytest.raises(InputError, match="square"):
        C.offdiag_ratio(torch.zeros(2, 3))
    with pytest.raises(InputError, match="do not fit"):
        C.wa_matrix(torch.zeros(3, 5), torch.zeros(4, 3))
    with pytest.raises(InputError, match="clip"):
        C.concept_targets(
            concept_world(), torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, dtype=torch.long), clip=0
        )


@torch.no_grad()
def test_structured_sae_is_a_linear_sem_over_sparse_codes():
    torch.manual_seed(0)
    s = C.StructuredSAE(8, 5, l1=0.01, seed=1)
    x = torch.randn(20, 8)
    plain = L1SAE(8, 5, l1=0.01, seed=1)
    assert torch.allclose(s.encode(x), plain.encode(x))  # B = 0: the plain L1-SAE
    with torch.no_grad():
        s.B_raw.copy_(torch.randn(5, 5))
    assert torch.equal(s.B, s.B * torch.ones(5, 5).tril(-1))  # strictly lower-triangular
    z, eps = s.encode(x), s.exogenous(x)
    assert torch.allclose(z, z @ s.B.T + eps, atol=1e-5)  # z = B z + eps
    loss = s.extra_loss(z).detach()
    assert math.isclose(
        float(loss), 0.01 * float(eps.abs().sum(-1).mean()) + 1e-3 * float(s.B.abs().sum()), rel_tol=1e-4
    )
    nt = C.StructuredSAE(8, 5, structure="notears", seed=1)
    assert float(nt.extra_loss(nt.encode(x)) - 0.01 * nt.exogenous(x).abs().sum(-1).mean()) == pytest.approx(
        0.0, abs=1e-6
    )
    with torch.no_grad():
        nt.B_raw.fill_(0.5)
    assert float(torch.diagonal(nt.B).abs().sum()) == 0.0
    # a cyclic B pays the acyclicity penalty: B∘B = 0.25 (J - I) has eigenvalues 1 and -0.25 (x4)
    h = math.e + 4 * math.exp(-0.25) - 5
    want = 0.01 * float(nt.exogenous(x).abs().sum(-1).mean()) + 1e-3 * 20 * 0.5 + h
    assert math.isclose(float(nt.extra_loss(nt.encode(x)).detach()), want, rel_tol=1e-4)
    with pytest.raises(InputError, match="structure"):
        C.StructuredSAE(8, 5, structure="full")


def test_sae_training_and_mcc_on_planted_sparse_factors():
    g = torch.Generator().manual_seed(0)
    codes = torch.relu(torch.randn(3000, 3, generator=g)) * (torch.rand(3000, 3, generator=g) < 0.4)
    D = torch.randn(3, 12, generator=g)
    x = codes @ D
    saes = C.train_saes(x, width=6, k=3, l1=1e-3, epochs=15, seed=0)  # k: up to 3 factors are active
    assert set(saes) == {"l1", "topk", "structured"}
    for sae in saes.values():
        assert C.sae_mcc(sae, x, codes) > 0.85  # the planted sparse factors are found
    assert C.sparsity(saes["topk"], x) <= 3.0
    untrained = L1SAE(12, 6, seed=0)
    train_sae(untrained, x, epochs=1, lr=1e-9, show_progress=False)
    assert C.sae_mcc(untrained, x, codes) < C.sae_mcc(saes["l1"], x, codes)


def test_sae_seed_table_is_one_row_per_seed_and_matches_single_runs():
    g = torch.Generator().manual_seed(1)
    codes = torch.relu(torch.randn(1200, 3, generator=g)) * (torch.rand(1200, 3, generator=g) < 0.4)
    x = codes @ torch.randn(3, 10, generator=g)
    kw = {"width": 6, "k": 3, "l1": 1e-3, "epochs": 4, "structured": False}
    tab = C.sae_seed_table(x[:900], x[900:], codes[900:], [0, 5], **kw)
    assert list(tab.index) == [0, 5] and list(tab.columns) == ["l1", "topk", "l1_L0", "topk_L0"]
    single = C.train_saes(x[:900], seed=5, **kw)  # the row of seed 5 is that seed's own run
    assert tab.loc[5, "topk"] == pytest.approx(C.sae_mcc(single["topk"], x[900:], codes[900:]))
    assert ((tab[["l1", "topk"]] >= 0) & (tab[["l1", "topk"]] <= 1)).all().all()
    assert tab.loc[5, "topk_L0"] == pytest.approx(C.sparsity(single["topk"], x[900:])) and (tab["topk_L0"] <= 3).all()
    assert tab.loc[0, "l1"] != tab.loc[5, "l1"]  # another seed, another dictionary
    with pytest.raises(InputError, match="seeds"):
        C.sae_seed_table(x[:900], x[900:], codes[900:], [0, 0], **kw)
    with pytest.raises(InputError, match="seeds"):
        C.sae_seed_table(x[:900], x[900:], codes[900:], 3, **kw)
    with pytest.raises(InputError, match="ell_test"):
        C.sae_seed_table(x[:900], x[900:], codes[:10], [0], **kw)


def test_full_scale_path_on_a_local_stand_in(tmp_path):
    from xattr_nb.models.hub import load_causal_lm
    from xattr_nb.models.text import tiny_gpt2, word_tokenizer

    words = sorted({w for ps in C.CONCEPT_WORD_PAIRS.values() for p in ps for w in p})
    tok = word_tokenizer(words)
    tiny_gpt2(len(tok), n_layer=1, d_model=16, n_head=2, seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok2, lm = load_causal_lm(tmp_path, local_files_only=True)
    res = C.text_concept_check(lm, tok2)
    assert res["WA"].shape == (2, 2) and res["A"].shape == (16, 2) and math.isfinite(res["offdiag_ratio"])
    assert res["concepts"] == list(C.CONCEPT_WORD_PAIRS)
    with pytest.raises(InputError, match="pairs"):
        C.text_concept_check(lm, tok2, {"x": [("he", "she"), ("man", "woman")]})


def test_recipe_training_reduces_the_kl_from_the_bayes_predictor():
    from xattr_nb.models.concept_recipes import train_concept_gpt2

    w = concept_world()
    _, metrics = train_concept_gpt2(0, n_train=640, n_test=100, epochs=1)
    assert set(metrics) >= {"test_bayes_kl", "n_train"}
    assert metrics["test_bayes_kl"] < bayes_kl(concept_gpt2(seed=0), w, w.sample(100, seed=10_000).tokens) - 0.3
