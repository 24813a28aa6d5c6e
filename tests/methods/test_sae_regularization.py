"""SelfReg (paper 13): the spurious-topic world, the judge, the penalty, the surgery, the heads, the token states."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import sae_regularization as sr
from xattr_nb.models.sae import TopKSAE
from xattr_nb.worlds.spurious_text import TOPIC_WORDS, lexicons, requests, spurious_text, swap_topic

# ----------------------------------------------------------------------------------------------
# The world.


def test_world_is_seeded_and_plants_the_shortcut_at_the_asked_rates():
    a = spurious_text(400, 100, 400, 50, corr=0.95, test_corr=0.05, seed=3)
    b = spurious_text(400, 100, 400, 50, corr=0.95, test_corr=0.05, seed=3)
    assert a.train.texts == b.train.texts and a.generic == b.generic
    assert a.train.texts != spurious_text(400, 100, 400, 50, seed=4).train.texts
    assert abs(float(a.train.agrees.float().mean()) - 0.95) < 0.04
    assert abs(float(a.test.agrees.float().mean()) - 0.05) < 0.04
    assert int(a.train.labels.sum()) == 200  # balanced
    # agreement means harmful <-> sports (topic 0)
    agrees = (a.train.topic == 0) == (a.train.labels == 1)
    assert torch.equal(agrees, a.train.agrees)


def test_label_is_set_by_the_gold_words_only_and_twins_move_only_the_topic():
    d = requests(200, corr=0.5, seed=1)
    lex = lexicons()
    topic_words = {n: set(lex[n]) for n in ("sports", "cooking")}
    for words, roles, gold, y, t, twin in zip(d.words, d.roles, d.gold_words, d.labels, d.topic, d.twins, strict=True):
        assert all(words[j] in lex["harm" if int(y) else "benign"] for j in gold)
        assert [r for r in roles if r in ("harm", "benign")] == ["harm" if int(y) else "benign"] * 2
        tw = twin.split()
        changed = [j for j in range(len(words)) if tw[j] != words[j]]
        assert changed == [j for j, r in enumerate(roles) if r == "topic"] and len(changed) == 2
        own, other = d.topics[int(t)], d.topics[1 - int(t)]
        assert all(words[j] in topic_words[own] and tw[j] in topic_words[other] for j in changed)
    for text, spans, gold, words in zip(d.texts, d.gold_chars, d.gold_words, d.words, strict=True):
        assert [text[s:e] for s, e in spans] == [words[j] for j in gold]


def test_swap_topic_is_an_involution_and_rejects_bad_roles():
    words = ["after", "the", "match", "at", "the", "stadium"]
    roles = ["filler", "filler", "topic", "filler", "filler", "topic"]
    once = swap_topic(words, roles)
    assert once == ["after", "the", "dinner", "at", "the", "kitchen"]
    assert swap_topic(once, roles) == words
    assert len(TOPIC_WORDS["sports"]["event"]) == len(TOPIC_WORDS["cooking"]["event"])
    with pytest.raises(InputError, match="same length"):
        swap_topic(words, roles[:-1])
    with pytest.raises(InputError, match="not in TOPIC_WORDS"):
        swap_topic(["steal"], ["topic"])


def test_world_rejects_bad_arguments():
    with pytest.raises(InputError, match="n_train"):
        spurious_text(0)
    with pytest.raises(InputError, match="corr"):
        requests(10, corr=1.5)
    with pytest.raises(InputError, match="seed"):
        requests(10, seed=-1)


# ----------------------------------------------------------------------------------------------
# The judge.


def _table(latents: dict[int, list[str]]) -> pd.DataFrame:
    rows = [(j, r, t, 1.0 - r / 100) for j, toks in latents.items() for r, t in enumerate(toks)]
    return pd.DataFrame(rows, columns=["latent", "rank", "label", "activation"])


def test_lexicon_judge_applies_the_threshold_exactly():
    top = _table(
        {
            0: ["stadium"] * 20,
            1: ["steal"] * 12 + ["the"] * 8,  # 60% task words: task
            2: ["steal"] * 11 + ["the"] * 9,  # 55%: cannot tell
            3: ["##chef"] * 13 + ["steal"] * 7,  # WordPiece marker stripped: 65% topic
            4: ["kitchen"] * 3,  # too few rows
            5: ["steal"] * 5 + ["kitchen"] * 20,  # only the top 20 count: 5 task, 15 topic = 75% topic
        }
    )
    got = sr.lexicon_judge(top, ["steal"], ["stadium", "chef", "kitchen"], thr=0.6, k=20, min_rows=5)
    assert got == {0: "unintended", 1: "task", 2: "cannot tell", 3: "unintended", 4: "cannot tell", 5: "unintended"}
    mask = sr.unintended_mask(got, 8)
    assert mask.tolist() == [True, False, False, True, False, True, False, False]


def test_lexicon_judge_and_mask_reject_bad_input():
    top = _table({0: ["a"] * 5})
    with pytest.raises(InputError, match=r"above 0\.5"):
        sr.lexicon_judge(top, ["a"], ["b"], thr=0.5)
    with pytest.raises(InputError, match="both task and unintended"):
        sr.lexicon_judge(top, ["a"], ["a"])
    with pytest.raises(InputError, match="DataFrame"):
        sr.lexicon_judge(top.drop(columns="rank"), ["a"], ["b"])
    with pytest.raises(InputError, match="judgments"):
        sr.unintended_mask({0: "maybe"}, 4)
    with pytest.raises(InputError, match="judgments key"):
        sr.unintended_mask({7: "task"}, 4)


# ----------------------------------------------------------------------------------------------
# Penalty, surgery, projection.


def _orthonormal_sae(d_in: int = 6, d_hidden: int = 4) -> TopKSAE:
    sae = TopKSAE(d_in, d_hidden, 2, seed=0)
    q, _ = torch.linalg.qr(torch.randn(d_in, d_hidden, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        sae.W_enc.copy_(q)  # tied: decoder rows are the orthonormal columns
        sae.b_enc.copy_(torch.tensor([0.5, -0.25, 0.0, 1.0]))
        sae.b_dec.copy_(torch.linspace(-1, 1, d_in))
    return sae


def test_selfreg_penalty_matches_its_formula_and_the_centered_form_vanishes_orthogonally():
    sae = _orthonormal_sae()
    mask = torch.tensor([True, False, True, False])
    w = torch.randn(6, generator=torch.Generator().manual_seed(2))
    u = (w - sae.b_dec) @ sae.W_enc + sae.b_enc
    assert torch.allclose(sr.selfreg_penalty(sae, w, mask), u[mask].abs().mean())
    assert torch.allclose(sr.selfreg_penalty(sae, w, mask, centered=True), (w @ sae.W_enc)[mask].abs().mean())
    w_perp = w - sae.decoder[mask].T @ (sae.decoder[mask] @ w)  # orthogonal to U's decoder rows
    assert float(sr.selfreg_penalty(sae, w_perp, mask, centered=True).detach()) < 1e-6
    assert float(sr.selfreg_penalty(sae, w_perp, mask).detach()) > 0.1  # the official form keeps the bias constants
    assert torch.allclose(sr.selfreg_penalty(sae, torch.stack([w, w]), mask), 2 * u[mask].abs().mean())
    with pytest.raises(InputError, match="empty"):
        sr.selfreg_penalty(sae, w, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(InputError, match="one entry per SAE latent"):
        sr.selfreg_penalty(sae, w, torch.ones(3, dtype=torch.bool))


def test_surgery_removes_exactly_the_unintended_reconstruction():
    sae = _orthonormal_sae()
    with torch.no_grad():
        sae.b_enc.zero_()
    d = sae.decoder
    h = (3 * d[0] + 2 * d[1] + sae.b_dec).unsqueeze(0)
    out = sr.surgery(sae, h, torch.tensor([True, False, False, False]))
    assert torch.allclose(out, 2 * d[1].unsqueeze(0), atol=1e-5)
    out2 = sr.surgery(sae, h, torch.tensor([True, True, False, False]))
    assert torch.allclose(out2, torch.zeros_like(h), atol=1e-5)


def test_project_out_and_topic_direction():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(50, 5, generator=g)
    d = torch.randn(5, generator=g)
    p = sr.project_out(h, d)
    assert torch.allclose(p @ d, torch.zeros(50), atol=1e-4)
    assert torch.allclose(sr.project_out(p, d), p, atol=1e-5)
    two = sr.project_out(h, torch.randn(2, 5, generator=g))
    assert torch.linalg.matrix_rank(two) == 3
    topic = torch.arange(50) % 2
    shifted = h + 4.0 * topic[:, None] * torch.tensor([0.0, 0, 1, 0, 0])
    assert torch.allclose(sr.topic_direction(shifted, topic).abs().argmax(), torch.tensor(2))
    with pytest.raises(InputError, match="features"):
        sr.project_out(h, torch.randn(4))


# ----------------------------------------------------------------------------------------------
# Heads and metrics.


def _shortcut_data(n: int, corr: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature 0 = the label (weak), feature 1 = a shortcut agreeing with it at rate ``corr`` (strong)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    agree = torch.rand(n, generator=g) < corr
    s = torch.where(agree, y, 1 - y)
    x = torch.randn(n, 4, generator=g) * 0.3
    x[:, 0] += 0.5 * (2 * y - 1)
    x[:, 1] += 2.0 * (2 * s - 1)
    return x, y


def test_selfreg_penalty_steers_the_head_off_the_shortcut_latent():
    x, y = _shortcut_data(600, 0.95, 0)
    xt, yt = _shortcut_data(400, 0.05, 1)
    sae = TopKSAE(4, 2, 1, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))  # latent 0 = the shortcut
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    mask = torch.tensor([True, False])
    plain = sr.train_head(x, y, variant="plain", seed=0)
    reg = sr.train_head(x, y, variant="selfreg_reg", sae=sae, mask=mask, lam=10.0, seed=0)
    share = lambda h: float(h.w.detach()[1].abs() / h.w.detach()[:2].abs().sum())  # weight on the shortcut vs the label  # noqa: E731
    assert share(plain) > 0.5 > share(reg)
    assert sr.mean_alignment(reg.w.detach(), sae, mask) < sr.mean_alignment(plain.w.detach(), sae, mask)
    acc = lambda h: sr.evaluate_head(h, xt, yt)["accuracy"]  # noqa: E731
    assert acc(reg) > acc(plain) + 0.2


def test_lambda_sweep_and_the_figures():
    x, y = _shortcut_data(400, 0.95, 0)
    xt, yt = _shortcut_data(200, 0.05, 1)
    sae = TopKSAE(4, 2, 1, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))  # latent 0 = the shortcut
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    mask = torch.tensor([True, False])
    sweep = sr.lambda_sweep({"train": x, "test": xt}, y, {"test": yt}, (0.0, 10.0), sae=sae, mask=mask, seed=0)
    assert sweep.index.tolist() == [0.0, 10.0] and sweep.columns.tolist() == ["test"]
    plain = sr.evaluate_head(sr.train_head(x, y, variant="plain", seed=0), xt, yt)["accuracy"]
    assert sweep.loc[0.0, "test"] == plain  # lambda 0 is the plain head
    reg = sr.train_head(x, y, variant="selfreg_reg", sae=sae, mask=mask, lam=10.0, seed=0)
    assert sweep.loc[10.0, "test"] == sr.evaluate_head(reg, xt, yt)["accuracy"] > plain
    fig = sr.plot_lambda_sweep(sweep, chosen=10.0)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "10"]
    fig = sr.plot_sae_training({"nmse": [1.0, 0.5, 0.2], "k": [4, 2, 2]}, {"nmse": [0.3, 0.25]})
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    fig = sr.plot_topic_projection({"in": xt, "out": xt * 0}, torch.tensor([0.0, 1.0, 0, 0]), yt, ["a", "b"])
    assert len(fig.axes) == 2
    with pytest.raises(InputError, match="pretrain_sae"):
        sr.plot_sae_training({"nmse": [1.0]}, {"nmse": [0.3]})
    with pytest.raises(InputError, match="rows"):
        sr.plot_topic_projection({"in": xt[:5]}, torch.tensor([0.0, 1.0, 0, 0]), yt, ["a", "b"])


def test_train_head_restores_the_best_epoch_and_halves_the_lr():
    x, y = _shortcut_data(200, 0.5, 2)
    head = sr.train_head(x, y, variant="plain", epochs=60, lr=0.3, patience=1, max_halvings=2, seed=0)
    lrs = head.history["lr"]
    assert sorted(set(lrs), reverse=True) == [lrs[0] / 2**i for i in range(len(set(lrs)))]
    assert len(set(lrs)) <= 3
    # re-score the restored head on the same validation split: it must equal the best recorded validation loss
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(0))
    vi = perm[:40]
    with torch.no_grad():
        val = float(torch.nn.functional.binary_cross_entropy_with_logits(head(x[vi]), y[vi].float()))
    assert val == pytest.approx(min(head.history["val_loss"]), rel=1e-5)


def test_train_head_variants_change_the_loss_and_bad_input_raises():
    x, y = _shortcut_data(200, 0.9, 3)
    l2 = sr.train_head(x, y, variant="l2", l2=1.0, seed=0)
    plain = sr.train_head(x, y, variant="plain", seed=0)
    assert float(l2.w.detach().norm()) < float(plain.w.detach().norm())
    assert sr.train_head(x, y, variant="dropout", dropout=0.5, seed=0).dropout.p == 0.5
    with pytest.raises(InputError, match="variant"):
        sr.train_head(x, y, variant="mixup")
    with pytest.raises(InputError, match="needs `sae` and `mask`"):
        sr.train_head(x, y, variant="selfreg")
    with pytest.raises(InputError, match="0/1"):
        sr.train_head(x, y + 1)
    with pytest.raises(InputError, match="rows"):
        sr.train_head(x[:-1], y)


def test_evaluate_head_scores_accuracy_f1_and_topic_swap_reliance_exactly():
    head = sr.LinearHead(2)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor([[0.0, 1.0]]))  # reads only the "topic" feature
        head.linear.bias.zero_()
    x = torch.tensor([[0.0, 1.0], [0.0, -1.0], [0.0, 1.0], [0.0, -1.0]])
    y = torch.tensor([1, 0, 0, 0])
    twin = x * torch.tensor([1.0, -1.0])
    m = sr.evaluate_head(head, x, y, x_twin=twin)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(2 / 3)
    assert m["reliance"] == pytest.approx(0.75 - 0.25) and m["flip"] == 1.0
    with pytest.raises(InputError, match="x_twin"):
        sr.evaluate_head(head, x, y, x_twin=twin[:2])


def test_run_variants_table():
    x, y = _shortcut_data(200, 0.95, 4)
    xt, yt = _shortcut_data(100, 0.05, 5)
    inputs = {"raw": {"train": x, "test": xt}, "oracle": {"train": x[:, [0, 2, 3]], "test": xt[:, [0, 2, 3]]}}
    df = sr.run_variants(inputs, y, {"test": ("test", yt, None)}, variants=("plain", "oracle"), seeds=(0, 1),
                         show_progress=False, lr=1e-2)  # fmt: skip
    assert len(df) == 4 and set(df.variant) == {"plain", "oracle"}
    oracle, plain = (df[df.variant == v].accuracy.mean() for v in ("oracle", "plain"))
    assert oracle > plain + 0.2
    with pytest.raises(InputError, match="inputs\\['surgery'\\]"):
        sr.run_variants(inputs, y, {}, variants=("selfreg",), seeds=(0,), show_progress=False)


# ----------------------------------------------------------------------------------------------
# Token states: MiniLM (the small scale) and a causal LM folder (the full-scale path).


def test_token_states_drop_the_template_and_mean_pool_minilm():
    from xattr_nb.models.hub import load_encoder

    tok, enc = load_encoder(n_layers=1)
    texts = ["how can i secretly steal the car after the match", "tell me how to wash my friend"]
    st = sr.token_states(texts, tok, enc, show_progress=False)
    assert st.words == tok.tokenize(texts[0]) + tok.tokenize(texts[1])
    for i in range(2):
        assert torch.allclose(st.pooled[i], st.tokens[st.text_index == i].mean(0), atol=1e-6)
    every = [w for ws in lexicons().values() for w in ws]
    assert all(len(tok.tokenize(w)) == 1 for w in every)  # the judge looks single tokens up
    with pytest.raises(InputError, match="pool"):
        sr.token_states(texts, tok, enc, pool="max")
    with pytest.raises(InputError, match="layer"):
        sr.token_states(texts, tok, enc, layer=5)


def test_token_states_last_token_of_a_causal_lm_folder(tmp_path):
    from xattr_nb.models.hub import load_causal_lm
    from xattr_nb.models.text import tiny_gpt2, word_tokenizer

    d = requests(4, seed=0)
    words = [w for w in d.vocab if not w.startswith("[")] + ["user", "request", ":"]
    tok = word_tokenizer(words)
    tiny_gpt2(len(tok), n_layer=2, d_model=32, pad_token_id=tok.pad_token_id, seed=0).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    tok2, lm = load_causal_lm(str(tmp_path))
    st = sr.token_states(d.texts, tok2, lm, layer=0, pool="last", show_progress=False)
    for i, text in enumerate(d.texts):
        ids = tok2(sr.PROMPT + text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            ref = lm(ids, output_hidden_states=True).hidden_states[1][0]  # block 0's output
        assert torch.allclose(st.pooled[i], ref[-1], atol=1e-5)
        assert (st.text_index == i).sum() == len(text.split())  # the 3 template tokens are left out


def test_explain_chains_the_steps_from_texts_to_a_classifier():
    from xattr_nb.models.hub import load_encoder

    w = spurious_text(200, 40, 60, 150, seed=0)
    tok, enc = load_encoder(n_layers=1)
    lex = w.lexicons
    kw = dict(generic_texts=w.generic, task_words=lex["harm"] + lex["benign"],
              unintended_words=lex["sports"] + lex["cooking"], d_hidden=64, k_schedule=(16, 4, 0.5), sae_epochs=5,
              seed=0, show_progress=False, epochs=10)  # fmt: skip
    clf = sr.explain(enc, tok, w.train.texts, w.train.labels, **kw)
    assert clf.variant == "selfreg" and clf.layer == 0 and clf.pool == "mean" and clf.parts.mask.any()
    u = clf.parts.mask.nonzero().flatten().tolist()
    assert all(clf.parts.judgments[j] == "unintended" for j in u)
    st = sr.token_states(w.test.texts, tok, enc, show_progress=False)
    h = st.pooled
    assert torch.allclose(clf.inputs(h), sr.surgery(clf.parts.sae, h, clf.parts.mask))  # the official variant
    with torch.no_grad():
        assert torch.allclose(clf.logits(enc, tok, w.test.texts), clf.head(clf.inputs(h)), atol=1e-5)
    assert 0.0 <= clf.alignment <= 1.0
    with pytest.raises(InputError, match="variant"):
        sr.explain(enc, tok, w.train.texts, w.train.labels, variant="oracle", **kw)
    with pytest.raises(InputError, match="labels"):
        sr.explain(enc, tok, w.train.texts, w.train.labels[:-1], **kw)


def test_random_mask_draws_size_latents_among_the_judged_ones():
    judgments = {3: "task", 5: "unintended", 7: "cannot tell", 9: "unintended", 11: "task"}
    m = sr.random_mask(judgments, 3, 16, seed=1)
    assert m.dtype == torch.bool and m.shape == (16,) and int(m.sum()) == 3
    assert set(m.nonzero().flatten().tolist()) <= set(judgments)
    assert torch.equal(m, sr.random_mask(judgments, 3, 16, seed=1))  # seeded
    draws = {tuple(sr.random_mask(judgments, 2, 16, seed=s).nonzero().flatten().tolist()) for s in range(40)}
    assert len(draws) > 5  # not the judge's U every time: every judged latent can be drawn
    assert {j for d in draws for j in d} == set(judgments)
    nt = sr.random_mask(judgments, 3, 16, seed=2, among=("unintended", "cannot tell"))
    assert set(nt.nonzero().flatten().tolist()) == {5, 7, 9}  # the only three without the verdict "task"
    with pytest.raises(InputError, match="size"):
        sr.random_mask(judgments, 6, 16)
    with pytest.raises(InputError, match="size"):
        sr.random_mask(judgments, 3, 16, among=("task",))
    with pytest.raises(InputError, match="among"):
        sr.random_mask(judgments, 1, 16, among=("maybe",))
    with pytest.raises(InputError, match="judgments"):
        sr.random_mask({}, 1, 16)
    with pytest.raises(InputError, match="judgments key"):
        sr.random_mask({20: "task"}, 1, 16)


def test_random_u_control_retrains_with_each_draw():
    x, y = _shortcut_data(600, 0.95, 0)
    xt, yt = _shortcut_data(400, 0.05, 1)
    sae = TopKSAE(4, 2, 1, seed=0)
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))  # latent 0 = the shortcut
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    judgments = {0: "unintended", 1: "task"}
    evals = {"test": ("test", yt, None)}
    xs = {"train": x, "test": xt}
    df = sr.random_u_control(xs, y, evals, sae=sae, judgments=judgments, size=1, seeds=range(6),
                             variants=("selfreg_reg",), lam=10.0, lr=1e-2)  # fmt: skip
    assert len(df) == 6 and set(df.variant) == {"selfreg_reg_random_u"} and (df.u_size == 1).all()
    for s in range(6):  # each row is run_variants with that seed's random U
        mask = sr.random_mask(judgments, 1, 2, seed=s)
        want = sr.run_variants({"raw": xs}, y, evals, variants=("selfreg_reg",), seeds=[s], sae=sae, mask=mask,
                               show_progress=False, lam=10.0, lr=1e-2)  # fmt: skip
        assert df[df.seed == s].accuracy.item() == want.accuracy.item()
    # the penalty on the shortcut latent helps, on the label latent it hurts: the draw decides
    hit = [bool(sr.random_mask(judgments, 1, 2, seed=s)[0]) for s in range(6)]
    acc = df.set_index("seed").accuracy
    assert any(hit) and not all(hit)
    assert min(acc[s] for s in range(6) if hit[s]) > max(acc[s] for s in range(6) if not hit[s]) + 0.5
    with pytest.raises(InputError, match="variants"):
        sr.random_u_control(xs, y, evals, sae=sae, judgments=judgments, size=1, variants=("plain",))
