"""Tests of xattr_nb.methods.roma, xattr_nb.worlds.multitask and xattr_nb.models.moe_recipes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import roma as R
from xattr_nb.models import load_lm, moe
from xattr_nb.models.moe_recipes import IGNORE, answer_targets, exact_match, multitask_tokenizer
from xattr_nb.models.text import tiny_gpt2
from xattr_nb.worlds.multitask import FAMILIES, PARAPHRASES, answer_digits, multitask_moe, multitask_vocab


def tiny_moe_lm(seed: int = 0):
    lm = tiny_gpt2(len(multitask_vocab()), n_layer=2, d_model=16, n_head=2, n_ctx=20, seed=seed)
    return moe.moeify_gpt2(lm, n_experts=4, k=2, d_ff=8, seed=seed)


# ------------------------------------------------------------------------------ the world


def test_answers_follow_each_family():
    d = [3, 1, 9, 0]
    assert answer_digits("copy", d) == d and answer_digits("reverse", d) == [0, 9, 1, 3]
    assert answer_digits("sort", d) == [0, 1, 3, 9] and answer_digits("add_one", d) == [4, 2, 0, 1]
    with pytest.raises(InputError, match="family"):
        answer_digits("negate", d)


def test_world_layout_and_ground_truth():
    data = multitask_moe(300, rare_share=None, seed=3)
    vocab = data.vocab
    for i in range(0, 300, 37):
        words = data.texts[i].split(" ")
        p = int(data.prompt_len[i])
        assert words[p - 1] == "=" and words[0] == "[BOS]" and words[p + 4] == "[EOS]"
        fam = FAMILIES[int(data.task[i])]
        assert data.instructions[i] in PARAPHRASES[fam]
        j = PARAPHRASES[fam].index(data.instructions[i])
        assert int(data.paraphrase[i]) == int(data.task[i]) * 6 + j and bool(data.rare[i]) == (j >= 2)
        out = answer_digits(fam, data.digits[i].tolist())
        assert [vocab[t] for t in data.answer[i].tolist()] == [str(o) for o in out]
        assert [vocab[t] for t in data.ids[i, : len(words)].tolist()] == words
    assert torch.equal(multitask_moe(50, seed=1).ids, multitask_moe(50, seed=1).ids)
    # a word-level HF tokenizer over the same vocabulary gives the same ids
    tok = multitask_tokenizer()
    assert tok(data.texts[0])["input_ids"] == data.ids[0, : len(data.texts[0].split())].tolist()


def test_rare_share_is_respected():
    imbalanced = multitask_moe(4000, rare_share=0.1, seed=0)
    assert abs(float(imbalanced.rare.float().mean()) - 0.1) < 0.02
    balanced = multitask_moe(4000, rare_share=None, seed=0)
    assert abs(float(balanced.rare.float().mean()) - 4 / 6) < 0.03
    assert set(balanced.paraphrase.tolist()) == set(range(24))
    with pytest.raises(InputError, match="rare_share"):
        multitask_moe(10, rare_share=1.5)
    with pytest.raises(InputError, match="families"):
        multitask_moe(10, families=("copy", "divide"))


def test_answer_targets_and_exact_match():
    data = multitask_moe(6, seed=0)
    tgt = answer_targets(data)
    assert bool(((tgt != IGNORE).sum(1) == 4).all())
    for i in range(6):
        p = int(data.prompt_len[i])
        assert tgt[i, p - 1 : p + 3].tolist() == data.answer[i].tolist()
    perfect = torch.nn.functional.one_hot(tgt.clamp_min(0), 80).float()
    assert bool(exact_match(perfect, tgt).all())
    wrong = perfect.clone()
    wrong[0, int(data.prompt_len[0]) + 1] = 0.0  # one wrong digit fails the whole example
    wrong[0, int(data.prompt_len[0]) + 1, 1] = 1.0
    assert exact_match(wrong, tgt).tolist() == [False] + [True] * 5


# ------------------------------------------------------------------------------ neighbours and loss


def test_successful_neighbours_exclude_self_and_failures():
    emb = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.0, 1.0], [1.0, 0.05]]))
    ok = torch.tensor([True, True, False, True, True])
    idx, w = R.successful_neighbours(emb, ok, k=2)
    for i in range(5):
        assert i not in idx[i].tolist() and all(bool(ok[j]) for j in idx[i].tolist())
    assert set(idx[0].tolist()) == {4, 1}  # the two closest successful samples of sample 0
    assert torch.allclose(w.sum(1), torch.ones(5))
    cos = emb @ emb.T
    assert torch.allclose(w[0], cos[0, idx[0]] / cos[0, idx[0]].sum())
    # fewer successful candidates than k: the missing neighbour is -1 with weight 0
    idx, w = R.successful_neighbours(emb, torch.tensor([True, False, False, False, True]), k=2)
    assert idx[0].tolist() == [4, -1] and w[0].tolist() == [1.0, 0.0]


def test_ties_are_broken_by_the_seed_only():
    emb = torch.nn.functional.normalize(torch.ones(30, 3))
    ok = torch.ones(30, dtype=torch.bool)
    a, _ = R.successful_neighbours(emb, ok, k=3, seed=0)
    b, _ = R.successful_neighbours(emb, ok, k=3, seed=0)
    c, _ = R.successful_neighbours(emb, ok, k=3, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(set(a.flatten().tolist())) > 10  # not everyone pulled to the same three samples


def test_manifold_loss_is_the_weighted_squared_distance():
    r = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    t = torch.tensor([[[[0.0, 1.0]], [[1.0, 0.0]]], [[[0.5, 0.5]], [[0.0, 1.0]]]])
    w = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    # sample 0: 0.25 * 2 + 0.75 * 0; sample 1: 1.0 * 0 + 0 * 0.5
    assert float(R.manifold_loss(r, t, w)) == pytest.approx(0.25)
    with pytest.raises(InputError, match="shapes"):
        R.manifold_loss(r, t[:, :1], w)


def test_alignment_metrics_on_known_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 20)
    centers = np.eye(3) * 5
    clustered = centers[labels] + rng.normal(0, 0.1, (60, 3))
    assert R.knn_task_agreement(clustered, labels, k=5) == 1.0
    assert R.routing_silhouette(clustered, labels) > 0.9
    # two tasks that route identically: a neighbour is as likely from the other task
    mixed = np.where(labels[:, None] == 2, centers[1], centers[labels]) + rng.normal(0, 0.1, (60, 3))
    assert 0.55 < R.knn_task_agreement(mixed, labels, k=5) < 0.85
    # duplicates at distance 0 do not let a sample count itself
    dup = np.zeros((4, 2))
    assert R.knn_task_agreement(dup, np.array([0, 0, 1, 1]), k=1) in (0.0, 0.5, 1.0)
    assert R.knn_task_agreement(np.array([[0.0], [0.0], [9.0], [9.0]]), np.array([0, 1, 0, 1]), k=1) == 0.0
    with pytest.raises(InputError, match="labels"):
        R.knn_task_agreement(clustered, labels[:10])


def test_expert_usage_entropy_is_one_when_balanced_and_log_k_over_log_e_when_collapsed():
    e = 8
    # every expert is in the top 2 equally often: 8 samples, sample i picks experts i and i+1 (mod 8)
    r = torch.full((8, 1, e), 0.01)
    for i in range(8):
        r[i, 0, i], r[i, 0, (i + 1) % e] = 0.5, 0.4
    assert R.expert_usage_entropy(r, 2) == pytest.approx(1.0)
    # every sample picks the same two experts: entropy log 2 / log 8 = 1/3
    same = torch.softmax(torch.tensor([3.0, 2.0, 0, 0, 0, 0, 0, 0]), 0).expand(10, 2, e)
    assert R.expert_usage_entropy(same, 2) == pytest.approx(1 / 3)
    assert R.expert_usage_entropy(same, 1) == pytest.approx(0.0)
    # the mean over layers: one balanced layer, one collapsed layer
    both = torch.cat([r, same[:8, :1]], 1)
    assert R.expert_usage_entropy(both, 2) == pytest.approx((1.0 + 1 / 3) / 2)
    with pytest.raises(InputError, match="top_k"):
        R.expert_usage_entropy(r, 9)
    with pytest.raises(InputError, match="routing"):
        R.expert_usage_entropy(r[:, 0], 2)


def test_cross_group_knn_agreement_ignores_the_own_group():
    rng = np.random.default_rng(1)
    task = np.repeat([0, 1], 40)
    para = np.repeat([0, 1, 2, 3], 20)  # paraphrases 0, 1 of task 0; 2, 3 of task 1
    # routing by paraphrase only, the two paraphrases of one task far apart: perfect same-group agreement,
    # but the nearest *other* paraphrase is as often from the other task
    centers = np.array([[0.0, 0], [10, 0], [5, 0.1], [15, 0.1]])
    by_para = centers[para] + rng.normal(0, 0.01, (80, 2))
    assert R.knn_task_agreement(by_para, task, k=5) == 1.0
    assert R.cross_group_knn_agreement(by_para, task, para, k=5) == 0.0  # 0 is next to 2, 10 to 5 and 15
    # routing by task: the other paraphrase of the same task is right there
    by_task = np.array([[0.0, 0], [10.0, 10]])[task] + rng.normal(0, 0.01, (80, 2))
    assert R.cross_group_knn_agreement(by_task, task, para, k=5) == 1.0
    with pytest.raises(InputError, match="groups"):
        R.cross_group_knn_agreement(by_task, task, np.zeros(80))
    with pytest.raises(InputError, match="k"):
        R.cross_group_knn_agreement(by_task, task, para, k=61)


def test_expert_load_and_max_load():
    e = 8
    r = torch.full((8, 1, e), 0.01)
    for i in range(8):
        r[i, 0, i], r[i, 0, (i + 1) % e] = 0.5, 0.4
    assert torch.allclose(R.expert_load(r, 2), torch.full((1, e), 1 / 8, dtype=torch.float64))
    assert R.max_load(r, 2) == pytest.approx(1.0)
    same = torch.softmax(torch.tensor([3.0, 2.0, 0, 0, 0, 0, 0, 0]), 0).expand(10, 2, e)
    u = R.expert_load(same, 2)
    assert u.shape == (2, e) and torch.allclose(u[:, :2], torch.full((2, 2), 0.5, dtype=torch.float64))
    assert R.max_load(same, 2) == pytest.approx(4.0)  # E / top_k: everything on the same two experts
    assert R.max_load(torch.cat([r, same[:8, :1]], 1), 2) == pytest.approx(2.5)  # the mean over layers
    with pytest.raises(InputError, match="top_k"):
        R.max_load(r, 0)


# ------------------------------------------------------------------------------ training and oracle


@pytest.fixture(scope="module")
def base():
    """The shipped base MoE: it answers most items, so the successful set is not empty."""
    return load_lm("cpu", small="multitask_moe_gpt2").model


def test_finetuning_changes_only_the_chosen_routers_and_aligns_routing(base):
    data = multitask_moe(192, rare_share=None, seed=7)
    emb = torch.nn.functional.one_hot(data.paraphrase, 24).float()  # same instruction ⇔ cosine 1
    kw = dict(layers=[3], epochs=3, lr=5e-2, batch_size=64, seed=0, show_progress=False)
    ce, h_ce = R.finetune_routers(base, data, emb, lam=0.0, **kw)
    rm, h_rm = R.finetune_routers(base, data, emb, lam=20.0, **kw)
    assert h_rm.trainable == ["transformer.h.3.mlp.router.weight"] and h_rm.n_trainable == 8 * 64
    assert 0.3 < h_rm.success[0] < 1.0 and h_ce.success == []
    before = base.state_dict()
    for model in (ce, rm):
        changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
        assert changed == ["transformer.h.3.mlp.router.weight"]
    assert h_ce.manifold == [0.0, 0.0, 0.0] and h_rm.manifold[-1] < h_rm.manifold[0]

    def spread(model):  # mean squared distance of routing to its paraphrase's mean
        r = R.prompt_routing(model, data, [3])[:, 0]
        means = torch.stack([r[data.paraphrase == p].mean(0) for p in range(24)])
        return float(((r - means[data.paraphrase]) ** 2).sum(-1).mean())

    assert spread(rm) < 0.5 * spread(ce)


def test_oracle_without_steps_is_the_model_and_with_steps_fixes_errors(base):
    lm = tiny_moe_lm(1)
    data = multitask_moe(40, rare_share=None, seed=2)
    assert torch.equal(R.oracle_routing(lm, data, [0, 1], steps=0), R.correct(lm, data))
    with pytest.raises(InputError, match="no router"):
        R.oracle_routing(lm, data, [5])
    held_out = multitask_moe(96, rare_share=None, seed=99)
    ok0 = R.correct(base, held_out)
    ok = R.oracle_routing(base, held_out, [2, 3], steps=20)
    assert int(ok.sum()) > int(ok0.sum()) and base.transformer.h[3].mlp.override is None


def test_explain_runs_base_ce_only_and_roma_from_one_base():
    lm = tiny_moe_lm(2)
    train, test = multitask_moe(48, rare_share=None, seed=4), multitask_moe(32, rare_share=None, seed=5)
    emb = torch.nn.functional.one_hot(train.paraphrase, 24).float()
    cmp = R.explain(lm, train, emb, test, layers=[1], seeds=[0, 1], epochs=1, lr=5e-2)
    assert [len(cmp.results[v]) for v in ("base", "ce_only", "roma")] == [1, 2, 2]
    assert len(cmp.histories["roma"]) == 2 and cmp.histories["ce_only"][0].manifold == [0.0]
    assert set(cmp.results["roma"][0]) == {"acc", "acc_rare", "acc_frequent", "knn_agreement", "silhouette",
                                           "usage_entropy", "knn_cross_paraphrase", "max_load"}  # fmt: skip
    assert cmp.results["base"][0] == R.evaluate(lm, test, [1])  # the base model is left untouched
    assert cmp.mean("roma", "acc") == pytest.approx(np.mean(cmp.values("acc")["roma"]))
    with pytest.raises(InputError, match="seeds"):
        R.explain(lm, train, emb, test, layers=[1], seeds=3)


def test_task_embeddings_embed_each_text_once():
    cache = {"a b": torch.tensor([1.0, 0.0]), "c": torch.tensor([0.0, 1.0])}
    out = R.task_embeddings(["c", "a b", "c"], encoder=("unused", "unused"), cache=cache)  # no encoder call
    assert out.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(InputError, match="texts"):
        R.task_embeddings([], cache=cache)


def test_bad_inputs_raise():
    lm = tiny_moe_lm()
    data = multitask_moe(8, seed=0)
    with pytest.raises(InputError, match="MultitaskData"):
        R.correct(lm, data.ids)
    with pytest.raises(InputError, match="emb"):
        R.finetune_routers(lm, data, torch.zeros(3, 4), layers=[1])
    with pytest.raises(InputError, match="L2-normalised"):
        R.successful_neighbours(torch.ones(4, 2), torch.ones(4, dtype=torch.bool))
    with pytest.raises(InputError, match="lr"):
        R.finetune_routers(lm, data, torch.eye(8), layers=[1], lr=0.0)
    with pytest.raises(InputError, match="n_layers"):
        R.last_layers(lm, 3)
    with pytest.raises(InputError, match="router"):
        R.router_names(tiny_gpt2(10, n_layer=1, d_model=8, n_head=2))


# ------------------------------------------------------------------------------ full-scale path on a stand-in


def test_full_scale_path_on_a_local_olmoe(tmp_path):
    from transformers import OlmoeConfig, OlmoeForCausalLM

    cfg = OlmoeConfig(
        vocab_size=96, hidden_size=16, intermediate_size=8, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, max_position_embeddings=32, bos_token_id=2,
        eos_token_id=3, pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    OlmoeForCausalLM(cfg).save_pretrained(tmp_path)
    multitask_tokenizer().save_pretrained(tmp_path)
    model, tok = load_lm("full", small="multitask_moe_gpt2", full=str(tmp_path))
    assert R.router_names(model) == {0: "model.layers.0.mlp.gate", 1: "model.layers.1.mlp.gate"}
    data = multitask_moe(16, rare_share=None, seed=0)
    r = R.prompt_routing(model, data, R.last_layers(model, 1))
    assert r.shape == (16, 1, 4) and torch.allclose(r.sum(-1), torch.ones(16, 1))
    # free text: routing at each text's last real token equals the world's routing at its last prompt token
    prompts = [" ".join(t.split(" ")[: int(p)]) for t, p in zip(data.texts, data.prompt_len, strict=True)]
    assert torch.allclose(R.text_routing(model, tok, prompts, [1]), r, atol=1e-5)
    emb = torch.nn.functional.one_hot(data.paraphrase, 24).float()
    tuned, hist = R.finetune_routers(model, data, emb, layers=[1], epochs=1, lr=0.1, seed=0, show_progress=False)
    assert hist.trainable == ["model.layers.1.mlp.gate.weight"]
    before = model.state_dict()
    changed = [k for k, v in tuned.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["model.layers.1.mlp.gate.weight"]
    ev = R.evaluate(tuned, data, [1])  # top_k read from the OLMoE block
    assert math.isfinite(ev["knn_agreement"]) and 0.0 < ev["usage_entropy"] <= 1.0
