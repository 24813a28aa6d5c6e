"""CREAM (paper 25): judging, soft-label DPO training, the loop's bookkeeping, the full-scale path on a stand-in."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import cream as CR
from xattr_nb.models.loaders import load_lm
from xattr_nb.models.policy import char_tokenizer, encode_prompts, encode_responses, sequence_logprob, tiny_gpt2
from xattr_nb.worlds.sorting import SortTask

TASK = SortTask(length=3)


@pytest.fixture(scope="module")
def models():
    tok = char_tokenizer(TASK.alphabet)
    m0 = tiny_gpt2(len(tok), n_layer=1, n_embd=16, n_head=2, seed=0)
    ps, rs = TASK.noisy_corpus(200, seed=0)
    CR.lm_train(m0, tok, ps, rs, steps=30, lr=1e-2, batch_size=32, seed=0)
    m1 = CR.lm_train(copy.deepcopy(m0), tok, ps[:50], [TASK.target(p) for p in ps[:50]], steps=10, lr=1e-2, seed=0)
    return tok, m0, m1


def test_pair_accuracy_hand_case():
    r_true = np.array([[1.0, 0.5, 0.5]])  # pairs separated by r*: (0,1), (0,2)
    assert CR.pair_accuracy(torch.tensor([[3.0, 1.0, 2.0]]), r_true) == 1.0
    assert CR.pair_accuracy(torch.tensor([[0.0, 1.0, 2.0]]), r_true) == 0.0
    assert CR.pair_accuracy(torch.tensor([[1.5, 1.0, 2.0]]), r_true) == 0.5
    assert np.isnan(CR.pair_accuracy(torch.zeros(1, 3), np.ones((1, 3))))
    with pytest.raises(InputError, match="`r_model`"):
        CR.pair_accuracy(torch.zeros(2, 3), np.zeros((2, 4)))


def test_judge_first_iteration_uses_length_normalised_base(models):
    tok, m0, m1 = models
    prompts = TASK.prompts(6, seed=1)
    j = CR.judge(m1, m0, m0, tok, TASK, prompts, first=True, n=4, seed=3)
    assert j.resp_ids.shape[:2] == (6, 4) and j.r_cur.shape == (6, 4) and j.consistency.shape == (6,)
    p = encode_prompts(tok, prompts).repeat_interleave(4, 0)
    r = j.resp_ids.reshape(24, -1)
    with torch.no_grad():
        want_prev = sequence_logprob(m0, p, r, length_norm=True).reshape(6, 4)
        want_cur = (sequence_logprob(m1, p, r) - sequence_logprob(m0, p, r)).reshape(6, 4)
    assert torch.allclose(j.r_prev, want_prev, atol=1e-5)
    assert torch.allclose(j.r_cur, want_cur, atol=1e-5)
    # later iterations: r_prev = log π_{t−1} − log π_0; with π_{t−1} = π_t it equals r_cur, so C = 1
    j2 = CR.judge(m1, m1, m0, tok, TASK, prompts, first=False, n=4, seed=3)
    assert torch.allclose(j2.r_prev, j2.r_cur, atol=1e-5) and bool((j2.consistency == 1).all())


def test_dpo_train_moves_the_margin_and_keeps_the_reference(models):
    tok, _, m1 = models
    prompts = ["312=", "221="]
    p = encode_prompts(tok, prompts)
    ch, rej = encode_responses(tok, ["123", "122"]), encode_responses(tok, ["321", "212"])
    before = [t.clone() for t in m1.parameters()]
    with torch.no_grad():
        h0 = sequence_logprob(m1, p, ch) - sequence_logprob(m1, p, rej)
    new = CR.dpo_train(m1, p, ch, rej, lr=1e-2, epochs=5, batch_size=2)
    assert all(torch.equal(a, b) for a, b in zip(before, m1.parameters(), strict=True))  # the reference is untouched
    with torch.no_grad():
        h1 = sequence_logprob(new, p, ch) - sequence_logprob(new, p, rej)
    assert bool((h1 > h0).all())
    # C = 0 pushes the other way
    flipped = CR.dpo_train(m1, p, ch, rej, soft_label=torch.zeros(2), lr=1e-2, epochs=5, batch_size=2)
    with torch.no_grad():
        hf = sequence_logprob(flipped, p, ch) - sequence_logprob(flipped, p, rej)
    assert bool((hf < h0).all())
    with pytest.raises(InputError, match="same number of rows"):
        CR.dpo_train(m1, p, ch[:1], rej)


def test_self_rewarding_bookkeeping(models):
    tok, m0, m1 = models
    pools = [TASK.prompts(8, seed=10), TASK.prompts(8, seed=11)]
    test = TASK.prompts(6, seed=12)
    res = CR.self_rewarding(m0, m1, tok, TASK, pools, test, n=4, eval_samples=1, seed=0, show_progress=False)
    h = res.history
    assert len(h) == len(CR.ARMS) * 3 and set(res.policies) == set(CR.ARMS)
    t1 = h[h.t == 1].set_index("arm")
    # at t = 1 every arm judged the same samples: same consistency and judge accuracy
    assert t1["consistency"].nunique() == 1 and t1["judge_pair_acc"].nunique() <= 1
    assert t1.loc["srlm", "soft_label"] == 1.0
    assert t1.loc["cream_avg", "soft_label"] == pytest.approx(t1.loc["cream_avg", "consistency"])
    oracle = h[(h.arm == "oracle") & (h.t > 0) & (h.n_pairs > 0)]
    assert bool((oracle["label_acc"] == 1.0).all())
    with pytest.raises(InputError, match="`arms`"):
        CR.self_rewarding(m0, m1, tok, TASK, pools, test, arms=("dpo",))
    with pytest.raises(InputError, match="`variant`"):
        CR.explain(m0, m1, tok, TASK, pools, test, variant="srlm")


def test_full_scale_path_on_a_saved_tiny_gpt2(tmp_path, models):
    tok, m0, _ = models
    m0.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    base, tk = load_lm("full", small="tinylm_sort_m0", full=str(tmp_path))
    assert type(base).__name__ == "GPT2LMHeadModel"
    ds = TASK.prompts(20, seed=2)
    sft = CR.lm_train(copy.deepcopy(base), tk, ds, [TASK.target(p) for p in ds], steps=3, seed=0)
    model, hist = CR.explain(base, sft, tk, TASK, [TASK.prompts(6, seed=3)], TASK.prompts(4, seed=4), n=3,
                             eval_samples=1, show_progress=False)  # fmt: skip
    assert len(hist) == 2 and model is not sft
