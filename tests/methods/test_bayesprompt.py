"""methods.bayesprompt: prompts, injection, the answer head, and the full path on a tiny saved BERT."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from xattr_nb.checks import InputError
from xattr_nb.methods import bayesprompt as B
from xattr_nb.models.hub import minilm_path
from xattr_nb.worlds.relations import RELATIONS, relation_world


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer BERT with MiniLM's vocabulary, written by save_pretrained and loaded as scale='full'."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(minilm_path())
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return B.backbone("full", full=str(folder))


@pytest.fixture(scope="module")
def world():
    return relation_world(n_pool=70, n_unlabeled=70, n_test=21, seed=0)


def test_prompt_positions(tiny, world):
    tok, _ = tiny
    p = B.build_prompts(world.test, tok, "knowprompt")
    ar = torch.arange(len(p))
    assert bool((p.input_ids[ar, p.mask_pos] == tok.mask_token_id).all())
    assert bool((p.input_ids[ar, p.sub_pos] == tok.unk_token_id).all())
    assert bool((p.input_ids[ar, p.obj_pos] == tok.unk_token_id).all())
    # the subject's tokens sit between [sub] and [MASK], the object's after [obj]
    first = tok.decode(p.input_ids[0, p.sub_pos[0] + 1 : p.mask_pos[0]])
    assert first == world.test.subjects[0]
    m = B.build_prompts(world.test, tok, "manual")
    assert bool((m.input_ids[ar, m.mask_pos] == tok.mask_token_id).all()) and bool((m.sub_pos == -1).all())
    assert "the relation between" in tok.decode(m.input_ids[0])


def test_mask_features_equal_a_hand_forward_with_the_rows_overwritten(tiny, world):
    tok, enc = tiny
    p = B.build_prompts(world.test.subset(torch.arange(3)), tok, "knowprompt")
    d = enc.config.hidden_size
    sub, obj = torch.randn(d), torch.randn(3, d)
    got = B.mask_features(enc, p, sub=sub, obj=obj, batch_size=2)
    emb = enc.get_input_embeddings()(p.input_ids).detach().clone()
    for i in range(3):
        emb[i, p.sub_pos[i]] = sub
        emb[i, p.obj_pos[i]] = obj[i]
    with torch.no_grad():
        hid = enc(inputs_embeds=emb, attention_mask=p.attention_mask).last_hidden_state
    torch.testing.assert_close(got, hid[torch.arange(3), p.mask_pos], atol=1e-5, rtol=1e-5)
    # the injected rows are read: a different vector gives different features
    other = B.mask_features(enc, p, sub=torch.randn(d), obj=obj)  # (a constant shift would vanish in LayerNorm)
    assert not torch.allclose(other, got)
    with pytest.raises(InputError, match="`sub`"):
        B.mask_features(enc, p)


def test_reduced_reps_are_means_of_static_embeddings(tiny):
    tok, enc = tiny
    ids = tok("kor an was born", add_special_tokens=False)["input_ids"]
    got = B.reduced_reps(["kor an was born"], tok, enc)
    torch.testing.assert_close(got[0], enc.get_input_embeddings().weight[ids].mean(0).detach())


def test_injection_draws_and_random_control():
    parts = torch.arange(12.0).view(4, 3)
    g = torch.Generator().manual_seed(0)
    all_four = B.injection_draws(parts, 3, 4, g)
    torch.testing.assert_close(all_four, parts.mean(0).expand(3, 3))  # m = n: every draw is the mean
    one = B.injection_draws(parts, 20, 1, g)
    assert all(any(torch.equal(r, p) for p in parts) for r in one)  # m = 1: single particles
    rnd = B.random_like(one, g)
    torch.testing.assert_close(rnd.norm(dim=1), one.norm(dim=1))
    assert not torch.allclose(rnd, one)
    with pytest.raises(InputError, match="`m`"):
        B.injection_draws(parts, 2, 5, g)


def test_answer_head_learns_a_separable_problem_and_epoch0_reads_plain():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 3
    y = torch.arange(3).repeat(10)
    x = centers[y] + 0.1 * torch.randn(30, 8, generator=g)
    w0 = torch.zeros(3, 8)
    assert B.evaluate(w0, x, y)["accuracy"] == pytest.approx(1 / 3)  # all-zero logits: argmax is class 0
    w = B.train_answer_head(x, y, w0, epochs=30, lr=0.05)
    assert B.evaluate(w, x, y)["accuracy"] == 1.0
    # one epoch with `plain`: only plain's features are read (feats of garbage change nothing)
    wa = B.train_answer_head(torch.randn(2, 30, 8), y, w0, plain=x, epochs=1, lr=0.05)
    wb = B.train_answer_head(torch.randn(2, 30, 8) * 100, y, w0, plain=x, epochs=1, lr=0.05)
    torch.testing.assert_close(wa, wb)
    with pytest.raises(InputError, match="`labels`"):
        B.train_answer_head(x, y + 5, w0)


def test_evaluate_micro_f1_excludes_no_relation():
    r = len(RELATIONS)
    y = torch.tensor([0, 1, r - 1, r - 1])
    feats = torch.eye(r)[[0, 2, r - 1, 0]]  # predictions 0, 2, none, 0
    out = B.evaluate(torch.eye(r), feats, y)
    assert out["accuracy"] == pytest.approx(0.5)
    # positives: predicted {0, 2, 0} vs gold {0, 1}: tp 1, fp 2, fn 1 -> P 1/3, R 1/2, F1 0.4
    assert out["micro_f1"] == pytest.approx(0.4)


def test_particle_stats():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert B.mean_pairwise_distance(x) == pytest.approx(5.0)
    with pytest.raises(InputError, match="`x`"):
        B.mean_pairwise_distance(x[:1])


def test_full_path_end_to_end_on_a_tiny_saved_bert(tiny, world):
    tok, enc = tiny
    res = B.explain(enc, tok, world, k=2, run=0, n_draws=2, svgd_iter=20, epochs=2)
    assert set(res.table) == set(B.ARMS)
    n_params = {a: v["n_params"] for a, v in res.table.items()}
    assert len(set(n_params.values())) == 1 == len({(len(RELATIONS) * 32.0)} | set(n_params.values()))
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in res.table.values())
    assert res.particles_after.shape == res.particles_before.shape == (2 * len(RELATIONS), 32)
    assert not torch.allclose(res.particles_after, res.particles_before)  # SVGD moved them
    assert res.draws["bayes"].shape == (2, 32)
    with pytest.raises(InputError, match="`arms`"):
        B.explain(enc, tok, world, arms=("plain", "magic"))


def test_backbone_rejects_unknown_scale():
    with pytest.raises(InputError, match="`scale`"):
        B.backbone("huge")


def test_toy_check_covers_the_three_components():
    toy = B.toy_check(0)
    assert toy["mass_error"] < 0.1 and toy["mean_error"] < 0.1  # the spec's check 1 at seed 0
    assert toy["x0"].std() < 0.15 < toy["x"].std()  # started narrow, ended spread over the mixture
