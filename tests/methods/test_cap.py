"""Tests of CAP (paper 09): analytic cases of each step, one test per bad input."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.methods import cap
from xattr_nb.worlds.shortcut_text import shortcut_splits, shortcut_topics
from xattr_nb.worlds.text import topics


class BagClassifier(nn.Module):
    """logits = Σ_t mask_t · E[id_t] @ W with E[pad] = 0: linear, so IG = grad × input exactly."""

    def __init__(self, vocab: int, w: torch.Tensor):
        super().__init__()
        self.emb = nn.Embedding(vocab, w.shape[0])
        with torch.no_grad():
            self.emb.weight.copy_(torch.eye(vocab, w.shape[0]))
            self.emb.weight[0] = 0.0
        self.w = nn.Parameter(w.clone())
        self.config = SimpleNamespace(pad_token_id=0)

    def get_input_embeddings(self) -> nn.Module:
        return self.emb

    def forward(self, input_ids, attention_mask=None):
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return SimpleNamespace(logits=(self.emb(input_ids) * m[..., None]).sum(1) @ self.w)


def _enc(ids):
    ids = torch.as_tensor(ids)
    wid = torch.arange(ids.shape[1])[None].repeat(ids.shape[0], 1) - 1  # position 0 is [CLS]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "word_ids": wid}


def test_cholesky_ridge_recovers_linear_coefficients_and_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    z = (torch.rand(200, 5, generator=g) < 0.6).float()
    phi = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0])
    t = 4.0 + z @ phi
    assert torch.allclose(cap.cholesky_ridge(z, t, 1e-6).float(), phi, atol=1e-4)
    w = torch.rand(200, generator=g)
    zc = z.double() - (w[:, None] * z).sum(0) / w.sum()
    tc = t.double() - (w * t).sum() / w.sum()
    a = zc.T @ (w[:, None].double() * zc) + 2.0 * torch.eye(5, dtype=torch.float64)
    want = torch.linalg.solve(a, zc.T @ (w.double() * tc))
    assert torch.allclose(cap.cholesky_ridge(z, t, 2.0, w), want, atol=1e-10)


def test_class_aware_scores_analytic_margin():
    labels = torch.eye(3)
    states = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    masks = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g = cap.class_aware_scores(states, masks, labels, 0, torch.tensor([1]), tau=0.5)
    assert torch.allclose(g, torch.tensor([2.0, -2.0, 0.0]), atol=1e-6)  # cos / tau margins


def test_keep_masks_shape_determinism_and_no_empty_row():
    z = cap.keep_masks(4, 50, 0.05, seed=3)
    assert z.shape == (50, 4) and bool((z.sum(1) >= 1).all())
    assert torch.equal(z, cap.keep_masks(4, 50, 0.05, seed=3))


def test_word_token_maps_split_and_sum():
    wid = torch.tensor([[-1, 0, 1, 1, -1]])
    tok = cap.word_to_token(torch.tensor([[0.4, 0.6]]), wid)
    assert torch.allclose(tok, torch.tensor([[0.0, 0.4, 0.3, 0.3, 0.0]]))
    assert torch.allclose(cap.token_to_word(tok, wid, 2), torch.tensor([[0.4, 0.6]]))


def test_hybrid_prior_mean_and_max():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 3.0]])
    assert torch.allclose(cap.hybrid_prior([a, b]), torch.tensor([[0.625, 0.375]]))
    assert torch.allclose(cap.hybrid_prior([a, b], agg="max"), torch.tensor([[1 / 1.75, 0.75 / 1.75]]))


def test_prior_mass_by_role():
    mass = cap.prior_mass(torch.tensor([[0.5, 0.25, 0.25]]), [["disc", "filler", "disc"]])
    assert mass == {"disc": 0.75, "filler": 0.25}


def test_ig_and_lime_priors_find_the_only_weighted_word():
    w = torch.zeros(4, 2)
    w[2, 0] = 3.0  # only word id 2 moves class 0
    model = BagClassifier(5, w).eval()
    enc = _enc([[4, 1, 2, 3]])
    y = torch.tensor([0])
    ig = cap.ig_prior(model, enc, y, 3, n_steps=4)
    assert torch.allclose(ig, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-5)
    lime = cap.lime_prior(model, enc, y, 3, n_samples=32, seed=0)
    assert int(lime[0].argmax()) == 1 and lime[0, 1] > 0.9


def test_student_tokenizer_encode_and_local_stand_in(tmp_path):
    data = topics(4, seed=0)
    tok = cap.student_tokenizer(data.vocab)
    enc = cap.encode_student(tok, data.words)
    assert bool((enc["input_ids"][:, 0] == tok.convert_tokens_to_ids("[BOS]")).all())
    assert enc["word_ids"][0].tolist() == [-1, *range(len(data.words[0]))]
    model = cap.tiny_student(len(data.vocab), 6, seed=0)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    from xattr_nb.models import load_classifier

    tok2, model2 = load_classifier(tmp_path, num_labels=6)  # the full-scale path: roberta-base by name
    assert model2.config.num_labels == 6
    assert torch.equal(cap.encode_student(tok2, data.words)["input_ids"], enc["input_ids"])


def test_cap_prior_on_minilm_prefers_discriminative_words():
    data = topics(24, spurious=0.9, seed=5)
    from xattr_nb.models import load_encoder

    teacher = cap.make_teacher(*load_encoder(), data.classes)
    conf = cap.confusable_sets(teacher.labels, 2)
    assert all(s in row for s, row in zip([1, 0, 3, 2, 5, 4], conf.tolist(), strict=True))  # siblings in C(y)
    prior, _ = cap.cap_prior(teacher, data.words, data.labels, n_masks=32)
    assert torch.allclose(prior.sum(1), torch.ones(24))
    mass = cap.prior_mass(prior, data.roles)
    assert mass["disc"] > mass["shared"] + 0.2 and mass["disc"] > mass["spurious"] + 0.2


def test_train_student_is_deterministic():
    data = topics(12, seed=1)
    tok = cap.student_tokenizer(data.vocab)
    enc = cap.encode_student(tok, data.words)
    prior = torch.rand(12, 10, generator=torch.Generator().manual_seed(0))
    outs, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread avoids the sync overhead of a busy machine
    try:
        for _ in range(2):
            m = cap.train_student(cap.tiny_student(len(data.vocab), 6, seed=2), enc, data.labels, prior, steps=2)
            outs.append(m(**{k: enc[k] for k in ("input_ids", "attention_mask")}).logits)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(outs[0], outs[1])


# ---------------------------------------------------------------- bad inputs, one test each


def test_bad_ridge_lambda_zero():
    with pytest.raises(InputError, match="lam"):
        cap.cholesky_ridge(torch.ones(4, 2), torch.ones(4), 0.0)


def test_bad_ridge_target_length():
    with pytest.raises(InputError, match="`t`"):
        cap.cholesky_ridge(torch.ones(4, 2), torch.ones(3), 1.0)


def test_bad_ridge_negative_weights():
    with pytest.raises(InputError, match="weights"):
        cap.cholesky_ridge(torch.ones(4, 2), torch.ones(4), 1.0, -torch.ones(4))


def test_bad_keep_probability():
    with pytest.raises(InputError, match="keep"):
        cap.keep_masks(4, 8, 1.0)


def test_bad_mask_count():
    with pytest.raises(InputError, match="n_masks"):
        cap.keep_masks(4, 1)


def test_bad_scores_shape_mismatch():
    with pytest.raises(InputError, match="disagree"):
        cap.class_aware_scores(torch.ones(2, 3), torch.ones(4, 3), torch.eye(3), 0, torch.tensor([1]))


def test_bad_scores_empty_mask_row():
    with pytest.raises(InputError, match="keeps no word"):
        cap.class_aware_scores(torch.ones(2, 3), torch.tensor([[0.0, 0.0]]), torch.eye(3), 0, torch.tensor([1]))


def test_bad_confusable_set_contains_gold():
    with pytest.raises(InputError, match="conf"):
        cap.class_aware_scores(torch.ones(2, 3), torch.ones(1, 2), torch.eye(3), 0, torch.tensor([0]))


def test_bad_tau_zero():
    with pytest.raises(InputError, match="tau"):
        cap.class_aware_scores(torch.ones(2, 3), torch.ones(1, 2), torch.eye(3), 0, torch.tensor([1]), tau=0.0)


def test_bad_confusable_m_too_large():
    with pytest.raises(InputError, match="`m`"):
        cap.confusable_sets(torch.eye(3), 3)


def test_bad_hybrid_single_prior():
    with pytest.raises(InputError, match="priors"):
        cap.hybrid_prior([torch.ones(1, 2)])


def test_bad_hybrid_negative_prior():
    with pytest.raises(InputError, match="non-negative"):
        cap.hybrid_prior([torch.ones(1, 2), -torch.ones(1, 2)])


def test_bad_hybrid_agg():
    with pytest.raises(InputError, match="agg"):
        cap.hybrid_prior([torch.ones(1, 2), torch.ones(1, 2)], agg="median")


def test_bad_prior_mass_roles_length():
    with pytest.raises(InputError, match="roles"):
        cap.prior_mass(torch.ones(2, 3), [["disc"] * 3])


def test_bad_student_vocab():
    with pytest.raises(InputError, match="vocab"):
        cap.student_tokenizer(["a", "b"])


def test_bad_encode_unknown_word():
    tok = cap.student_tokenizer(topics(2, seed=0).vocab)
    with pytest.raises(InputError, match="UNK"):
        cap.encode_student(tok, [["zebra", "stadium"]])


def test_bad_word_ids_do_not_index_scores():
    with pytest.raises(InputError, match="word_ids"):
        cap.word_to_token(torch.ones(1, 2), torch.tensor([[0, 5]]))


def test_bad_train_prior_rows():
    data = topics(6, seed=0)
    enc = cap.encode_student(cap.student_tokenizer(data.vocab), data.words)
    with pytest.raises(InputError, match="prior"):
        cap.train_student(cap.tiny_student(len(data.vocab), 6), enc, data.labels, torch.ones(5, 10), steps=1)


def test_bad_cap_variant():
    with pytest.raises(InputError, match="variant"):
        cap.cap_prior(None, [["a"]], torch.tensor([0]), variant="llm")


def test_bad_explain_variant():
    with pytest.raises(InputError, match="variants"):
        cap.explain(topics(6, seed=0), {}, None, variants=["CE+SHAP"])


def test_bad_explain_tokenizer_without_student():
    with pytest.raises(InputError, match="make_student"):
        cap.explain(topics(6, seed=0), {}, None, tokenizer=object())


def test_bad_explain_no_teacher_and_no_priors():
    with pytest.raises(InputError, match="`teacher`"):
        cap.explain(topics(6, seed=0), {}, None)


def test_bad_explain_priors_missing_a_variant():
    with pytest.raises(InputError, match="`priors`"):
        cap.explain(topics(6, seed=0), {}, None, priors={"IG": torch.ones(6, 10)}, variants=["CE", "CE+CAP"])


def test_bad_teacher_missing_description():
    with pytest.raises(InputError, match="descriptions"):
        cap.make_teacher(None, None, ["sport", "chess"])


def test_explain_with_given_priors_trains_every_variant_and_seed():
    data = topics(12, spurious=0.9, seed=4)
    tests = {"clean": topics(12, seed=5)}
    prior = torch.rand(12, max(len(w) for w in data.words), generator=torch.Generator().manual_seed(0))
    res = cap.explain(data, tests, None, priors={"CAP": prior}, variants=["CE", "CE+CAP"], seeds=[0, 1], warm_steps=2,
                      steps=2, show_progress=False)  # fmt: skip
    assert set(res.results) == {"CE", "CE+CAP"} and res.metric("CE+CAP", "clean", "accuracy").shape == (2,)
    assert set(res.mass) == {"CAP"} and set(res.results["CE"]["clean"][0]) == {"accuracy", "pair_confusion"}
    res = cap.explain(data, tests, None, priors={"CAP": prior}, variants=["CE"], seeds=[0], warm_steps=2, steps=2,
                      show_progress=False, auprc=True)  # fmt: skip
    assert 0.0 <= res.metric("CE", "clean", "auprc")[0] <= 1.0


def test_oracle_and_random_priors_are_area_matched():
    data = shortcut_topics(30, agree=1.0, seed=2)
    orc, rnd = cap.oracle_prior(data), cap.random_prior(data, seed=1)
    assert orc.shape == rnd.shape == (30, 10)
    assert torch.allclose(orc.sum(1), torch.ones(30)) and torch.allclose(rnd.sum(1), torch.ones(30))
    assert cap.prior_mass(orc, data.roles)["disc"] == pytest.approx(1.0)
    for i, gold in enumerate(data.gold_words):
        assert (orc[i] > 0).nonzero().flatten().tolist() == gold
        assert int((rnd[i] > 0).sum()) == len(gold)  # as many marked words as the oracle
    assert torch.equal(rnd, cap.random_prior(data, seed=1)) and not torch.equal(rnd, cap.random_prior(data, seed=2))
    # random words: on average the disc words get their share of the text, far from the oracle's 1
    assert cap.prior_mass(cap.random_prior(shortcut_topics(600, seed=0)), shortcut_topics(600, seed=0).roles)[
        "disc"
    ] == pytest.approx(0.15, abs=0.03)


def test_evaluate_follows_tag_counts_predictions_of_the_tag_class():
    _, tests = shortcut_splits(0, n_test=24)
    adv = tests["adversarial"]
    tok = cap.student_tokenizer(adv.vocab)
    enc = cap.encode_student(tok, adv.words)

    class ReadsTag(nn.Module):  # predicts the class of the tag word: the pure shortcut
        def forward(self, input_ids, attention_mask=None):
            logits = torch.full((input_ids.shape[0], 6), -5.0)
            logits[torch.arange(len(adv)), adv.tag_class] = 5.0
            return SimpleNamespace(logits=logits)

    out = cap.evaluate(ReadsTag(), enc, adv)
    assert out == {"accuracy": 0.0, "pair_confusion": 1.0, "follows_tag": 1.0}


def test_bad_oracle_input():
    with pytest.raises(InputError, match="`data`"):
        cap.oracle_prior([["a", "b"]])


def test_bad_random_seed():
    with pytest.raises(InputError, match="`seed`"):
        cap.random_prior(shortcut_topics(6, seed=0), seed=-1)


def test_bad_explain_control_without_its_prior():
    with pytest.raises(InputError, match="`priors`"):
        cap.explain(topics(6, seed=0), {}, None, priors={"CAP": torch.ones(6, 10)}, variants=["CE+Oracle"])


def test_ridge_figure_draws_one_bar_per_word():
    fig = cap.ridge_figure(torch.randn(20), torch.tensor([0.5, -0.2, 0.1]), ["a", "b", "c"], ["disc", "filler", "disc"])
    assert len(fig.axes[1].patches) == 3
    with pytest.raises(InputError, match="`words`"):
        cap.ridge_figure(torch.randn(20), torch.tensor([0.5]), ["a", "b"], ["disc", "filler"])
