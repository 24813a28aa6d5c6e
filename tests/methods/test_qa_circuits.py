"""Tests of the AttnAttrib / QA-circuits method (xattr_nb.methods.qa_circuits) and its KV-QA recipe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.interventions import ContrastPairs
from xattr_nb.interventions.circuit import Circuit, to_circuit
from xattr_nb.interventions.hooks import patch_output
from xattr_nb.methods import qa_circuits as Q
from xattr_nb.metrics import bootstrap_ci
from xattr_nb.models import kv_recipes as K
from xattr_nb.models import load_lm
from xattr_nb.worlds.text import FAMOUS_FACTS, kv_qa

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return K.kv_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return K.kv_gpt2(len(tok), seed=0)


@pytest.fixture(scope="module")
def data():
    return kv_qa(12, p_conflict=0.3, seed=5)


@pytest.fixture(scope="module")
def batch(data, tok):
    return Q.encode_items(data, tok)


# ---------------------------------------------------------------- data


def test_encode_items_maps_sentences_answers_and_twins(data, batch, tok):
    vocab = data.vocab
    assert batch.ids.shape == (12, len(data.words[0]) + 1)  # [BOS] + words, one length: no padding
    for i in range(len(data)):
        words = ["[BOS]", *data.words[i]]
        assert [vocab[t] for t in batch.ids[i].tolist()] == words
        for j, (a, b) in enumerate(data.sent_spans[i].tolist()):
            assert (batch.sent_index[i, a + 1 : b + 1] == j).all()
        assert int((batch.sent_index[i] >= 0).sum()) == int(data.sent_spans[i, -1, 1])  # nothing else is context
        assert vocab[int(batch.answer[i])] == data.answers[i]
        assert vocab[int(batch.pairs.wrong[i])] == data.corrupted_answers[i]
        diff = (batch.pairs.clean_ids[i] != batch.pairs.corr_ids[i]).nonzero().flatten().tolist()
        assert diff == [int(data.answer_pos[i]) + 1]  # the twin differs only at the asked value
        mem = data.memory_answers[i]
        assert (int(batch.memory[i]) == -1) if not mem else vocab[int(batch.memory[i])] == mem
    assert batch.gold.tolist() == data.gold_sentence.tolist()
    assert (batch.last == batch.ids.shape[1] - 1).all()
    p = batch.pairs  # the twins as ContrastPairs: clean side = the batch itself, masks set
    assert (
        isinstance(p, ContrastPairs) and torch.equal(p.clean_ids, batch.ids) and torch.equal(p.clean_mask, batch.mask)
    )
    assert torch.equal(p.answer, batch.answer) and p.corr_mask.bool().all() and p.texts == batch.texts
    steered = Q.encode_items(data, tok, texts=list(data.texts))
    assert steered.pairs is None and (steered.gold == -1).all()  # replaced prompts have no twins


def test_contrast_pairs_pad_both_sides_to_one_length():
    clean = {"ids": torch.tensor([[5, 6, 7]]), "mask": torch.ones(1, 3, dtype=torch.long), "tokens": [["a", "b", "c"]]}
    corr = {"ids": torch.tensor([[5, 8, 9, 7]]), "mask": torch.ones(1, 4, dtype=torch.long)}
    p = Q._contrast(clean, corr, [1], [2], ["a b c"], pad=0)
    assert p.clean_ids.tolist() == [[5, 6, 7, 0]] and p.clean_mask.tolist() == [[1, 1, 1, 0]]
    assert p.corr_ids.tolist() == [[5, 8, 9, 7]] and p.corr_mask.tolist() == [[1, 1, 1, 1]]


def test_closed_book_pairs_ask_famous_keys(data, tok):
    cb = Q.closed_book_pairs(data, tok, seed=1)
    vocab = data.vocab
    famous = {k: v for (_, k), v in FAMOUS_FACTS.items()}
    for i in range(len(cb)):
        key, ckey = vocab[int(cb.ids[i, -4])], vocab[int(cb.pairs.corr_ids[i, -4])]
        assert key in famous and ckey in famous and key != ckey
        assert vocab[int(cb.answer[i])] == famous[key] and vocab[int(cb.pairs.wrong[i])] == famous[ckey]
        assert (cb.ids[i, :-6] == cb.pairs.corr_ids[i, :-6]).all()  # the context is untouched
    assert (cb.gold == -1).all()


def test_repeat_sentence_texts_inserts_before_question(data):
    texts = Q.repeat_sentence_texts(data, torch.zeros(len(data), dtype=torch.long))
    w = data.words[0]
    a, b = data.sent_spans[0, 0].tolist()
    end = int(data.sent_spans[0, -1, 1])
    assert texts[0] == " ".join(w[:end] + w[a:b] + w[end:])
    assert texts[0].endswith("answer :") and len(texts[0].split()) == len(w) + (b - a)
    with pytest.raises(InputError, match="sentence"):
        Q.repeat_sentence_texts(data, torch.full((len(data),), 5))


# ---------------------------------------------------------------- CMA


def test_cma_is_zero_when_clean_equals_corrupted(model, batch):
    p = batch.pairs
    same = ContrastPairs(p.clean_ids, p.clean_ids, p.answer, p.wrong, p.clean_mask, p.clean_mask)
    res = Q.cma(model, same)  # CMA reads ContrastPairs, given directly or as QABatch.pairs
    assert torch.allclose(res.ie, torch.zeros_like(res.ie), atol=1e-5)
    assert torch.allclose(res.m_clean, res.m_corr)
    assert res.cost.forward == (2 + 15) * len(batch) and res.skipped == 0
    assert res.names[:5] == ["L0.H0", "L0.H1", "L0.H2", "L0.H3", "L1.H0"] and res.names[-1] == "L2.MLP"


def test_head_patch_matches_a_patch_of_the_projection_output(model, batch):
    """Patching head h's slice of z equals adding (z_clean - z_corr)[h] @ W_O[h] to the c_proj output."""
    res = Q.cma(model, batch)
    layer, h = 1, 2
    proj = model.transformer.h[layer].attn.c_proj
    got = {}

    def grab(key):
        def fn(_m, args):
            got[key] = args[0].detach().clone()

        return fn

    with torch.no_grad():
        for key, ids in (("clean", batch.ids), ("corr", batch.pairs.corr_ids)):
            handle = proj.register_forward_pre_hook(grab(key))
            model(input_ids=ids)
            handle.remove()
        sl = slice(h * 24, (h + 1) * 24)
        delta = torch.zeros_like(got["corr"])
        delta[:, -1, sl] = got["clean"][:, -1, sl] - got["corr"][:, -1, sl]
        add = delta[..., sl] @ proj.weight[sl]
        with patch_output(model, f"transformer.h.{layer}.attn.c_proj", lambda out: out + add):
            logits = model(input_ids=batch.pairs.corr_ids).logits[:, -1]
    rows = torch.arange(len(batch))
    m = logits[rows, batch.answer] - logits[rows, batch.pairs.wrong]
    i = res.names.index(f"L{layer}.H{h}")
    assert torch.allclose(res.ie[i], m - res.m_corr, atol=1e-4)


def test_mlp_patch_matches_patch_output(model, batch):
    res = Q.cma(model, batch)
    with torch.no_grad():
        from xattr_nb.interventions.hooks import run_with_cache

        _, cache = run_with_cache(model, input_ids=batch.ids, names=["transformer.h.0.mlp"])
        clean = cache["transformer.h.0.mlp"]

        def put(out):
            out = out.clone()
            out[:, -1] = clean[:, -1]
            return out

        with patch_output(model, "transformer.h.0.mlp", put):
            logits = model(input_ids=batch.pairs.corr_ids).logits[:, -1]
    rows = torch.arange(len(batch))
    m = logits[rows, batch.answer] - logits[rows, batch.pairs.wrong]
    assert torch.allclose(res.ie[res.names.index("L0.MLP")], m - res.m_corr, atol=1e-4)


def _cma_result():
    names = ["L0.H0", "L0.H1", "L0.MLP", "L1.H0", "L1.H1", "L1.MLP"]
    ie = torch.tensor([[1.0, 3.0], [5.0, 4.0], [0.5, 0.0], [3.0, 2.0], [-2.0, -8.0], [4.0, 1.0]])
    return Q.CMAResult(names, ie, torch.tensor([2.0, 2.0]), torch.tensor([0.0, 0.0]), Q.Cost(forward=14))


def test_cma_as_attribution_and_circuit_keep_the_top_k_by_signed_ie():
    res = _cma_result()
    a = res.to_attribution(normalized=True)
    assert a.kind == "components" and a.method == "CMA" and a.labels == res.names and a.cost == res.cost
    assert a.scores.shape == (1, 6) and a.target.tolist() == [0]
    assert dict(zip(a.labels, a.scores[0].tolist(), strict=True)) == res.mean(True)  # the same numbers
    per = res.to_attribution(per_example=True)
    assert per.scores.shape == (2, 6) and torch.equal(per.scores.float(), res.ie.T)
    circ = to_circuit(a, top=3, by="score", edges="io", n_layers=2)
    comps = {n.name: n.score for n in circ.nodes if n.kind in ("head", "mlp")}
    # normalised by the gap m_clean - m_corr = 2; L1.H1 has the largest |IE| but a negative one
    assert comps == {"L0.H1": 2.25, "L1.MLP": 1.25, "L1.H0": 1.25}
    assert {(e.src, e.dst): e.weight for e in circ.edges} == {
        **{("embed", n): s for n, s in comps.items()},
        **{(n, "logits"): s for n, s in comps.items()},
    }
    assert isinstance(circ, Circuit) and circ.node("logits").layer == 2
    assert {n.name for n in to_circuit(a, top=1, edges="io").nodes} == {"embed", "L1.H1", "logits"}  # by |IE|
    heads, mlps = res.grid(2, 2)
    assert heads.tolist() == [[2.0, 4.5], [2.5, -5.0]] and mlps.tolist() == [0.25, 2.5]


def test_cma_round_trip_through_to_circuit_keeps_nodes_and_weights():
    res = _cma_result()
    for normalized in (False, True):
        circ = to_circuit(res.to_attribution(normalized=normalized))
        comps = {n.name: n.score for n in circ.nodes if n.kind in ("head", "mlp")}
        assert comps == res.mean(normalized)
        assert {e.src: e.weight for e in circ.edges if e.dst == "logits"} == res.mean(normalized)
    # per-pair rows: their mean is the mean IE
    circ = to_circuit(res.to_attribution(per_example=True))
    assert {n.name: n.score for n in circ.nodes if n.kind in ("head", "mlp")} == pytest.approx(res.mean())
    assert to_circuit(res).node("L1.H1").score == res.mean()["L1.H1"]  # a result converts itself


# ---------------------------------------------------------------- AttnAttrib and sentences


def test_attn_attrib_reads_one_head_on_the_context(model, batch):
    a = Q.attn_attrib(model, batch, (2, 3))
    with torch.no_grad():
        out = model(input_ids=batch.ids, output_attentions=True)
    expect = out.attentions[2][:, 3, -1] * batch.context
    assert torch.allclose(a.scores, expect)
    assert (a.scores[~batch.context] == 0).all()
    assert a.cost.forward == len(batch) and a.cost.backward == 0
    assert a.target.tolist() == out.logits[:, -1].argmax(-1).tolist()
    with pytest.raises(InputError, match="head"):
        Q.attn_attrib(model, batch, (3, 0))


def test_predict_sentence_rules(batch):
    scores = torch.zeros(batch.ids.shape)
    i0 = int((batch.sent_index[0] == 3).nonzero()[0])
    scores[0, i0] = 1.0  # one strong token in sentence 3, weaker mass spread over sentence 1
    sel = (batch.sent_index[0] == 1).nonzero().flatten()
    scores[0, sel] = 0.4
    scores[0, -1] = 9.0  # a question token: never attributable
    assert int(Q.predict_sentence(scores, batch, rule="argmax")[0]) == 3
    assert int(Q.predict_sentence(scores, batch, rule="max")[0]) == 3
    assert int(Q.predict_sentence(scores, batch, rule="sum")[0]) == 1  # 7 tokens x 0.4 > 1.0
    ss = Q.sentence_scores(scores, batch.sent_index, batch.n_sent)
    assert ss[0].tolist() == pytest.approx([0.0, 0.4 * len(sel), 0.0, 1.0, 0.0])
    with pytest.raises(InputError, match="rule"):
        Q.predict_sentence(scores, batch, rule="mean")


def test_select_head_argmax_ties_and_circuit_restriction():
    s = torch.tensor([[0.1, 0.9], [0.9, 0.2]])
    assert Q.select_head(s) == (0, 1)  # tie: the earlier head
    circ = Circuit.from_scores({"L1.H0": 1.0, "L1.MLP": 0.5})
    assert Q.select_head(s, among=circ) == (1, 0)
    with pytest.raises(InputError, match="among"):
        Q.select_head(s, among=Circuit.from_scores({"L0.MLP": 1.0}))


def test_head_scores_mass_and_accuracy(model, batch):
    mass = Q.head_scores(model, batch, criterion="mass")
    acc = Q.head_scores(model, batch, criterion="accuracy")
    assert mass.shape == acc.shape == (3, 4)
    assert ((mass >= 0) & (mass <= 1)).all() and ((acc >= 0) & (acc <= 1)).all()
    with torch.no_grad():
        att = model(input_ids=batch.ids, output_attentions=True).attentions[1][:, 2, -1]
    gold = batch.sent_index == batch.gold[:, None]
    assert float(mass[1, 2]) == pytest.approx(float((att * gold).sum(1).mean()), abs=1e-6)


def test_leave_one_sentence_out_is_the_logit_drop(model, batch):
    target = batch.answer
    a = Q.leave_one_sentence_out(model, batch, target, pad_id=0)
    assert a.cost.forward == (1 + batch.n_sent + 1) * len(batch)  # original + 5 sentences + the question group
    with torch.no_grad():
        full = model(input_ids=batch.ids).logits[:, -1].gather(1, target[:, None])[:, 0]
        for j in (0, 4):
            ids = batch.ids.masked_fill(batch.sent_index == j, 0)
            drop = full - model(input_ids=ids).logits[:, -1].gather(1, target[:, None])[:, 0]
            tok = (batch.sent_index[0] == j).nonzero()[0, 0]
            assert torch.allclose(a.scores[:, tok], drop, atol=1e-4)


def test_evaluate_accuracy_ci_and_costs(batch):
    res = Q.evaluate(batch, {"gold": batch.gold, "off": (batch.gold + 1) % 5}, {"gold": Q.Cost(24, 12, 1.2)})
    assert res["gold"]["accuracy"] == 1.0 and res["gold"]["ci_lo"] == res["gold"]["ci_hi"] == 1.0
    assert res["off"]["accuracy"] == 0.0
    assert res["gold"]["forwards"] == 2.0 and res["gold"]["backwards"] == 1.0
    assert res["gold"]["wall_ms"] == pytest.approx(100.0)
    lo, hi = bootstrap_ci(np.r_[np.zeros(50), np.ones(50)], seed=0)
    assert 0.35 < lo < 0.5 < hi < 0.65
    off = res["off"]  # the CI is metrics.bootstrap_ci of the per-item hits, at the seed given
    assert (off["ci_lo"], off["ci_hi"]) == bootstrap_ci(np.zeros(len(batch)), seed=0)


def test_random_sentences_are_seeded_and_in_range(batch):
    r = Q.random_sentences(batch, seed=3)
    assert torch.equal(r, Q.random_sentences(batch, seed=3)) and ((r >= 0) & (r < 5)).all()


def test_bad_inputs_raise(model, batch, tok):
    with pytest.raises(InputError, match="KVData"):
        Q.encode_items(["a text"], tok)
    with pytest.raises(InputError, match="QABatch"):
        Q.cma(model, "not a batch")
    with pytest.raises(InputError, match="QABatch"):  # steered prompts have no twins
        Q.cma(model, Q.encode_items(kv_qa(3, seed=0), tok, texts=list(kv_qa(3, seed=0).texts)))
    cb = Q.closed_book_pairs(kv_qa(4, seed=1), tok)
    with pytest.raises(InputError, match="gold"):
        Q.head_scores(model, cb)
    with pytest.raises(InputError, match="criterion"):
        Q.head_scores(model, batch, criterion="entropy")
    with pytest.raises(InputError, match="texts"):
        Q.encode_items(kv_qa(3, seed=0), tok, texts=["x"])


# ---------------------------------------------------------------- recipe and loaders


def test_kv_lm_batch_labels_only_the_answer():
    b = K.kv_lm_batch(200, seed=3)
    vocab = K.kv_vocab()
    famous = set(FAMOUS_FACTS.values())
    labelled = b["labels"] != K.IGNORE
    assert (labelled.sum(1) == 1).all()
    names = list(K.KV_MIX)
    for i in range(200):
        t = int(labelled[i].nonzero()[0])
        assert int(b["labels"][i, t]) == int(b["ids"][i, t + 1])  # the next token is the answer
        kind = names[int(b["kind"][i])]
        if kind in ("closed_book", "consistent", "memory"):
            assert vocab[int(b["ids"][i, t + 1])] in famous
        if kind == "same_attribute":  # every fact has the asked attribute
            words = [vocab[j] for j in b["ids"][i].tolist()]
            attrs = {words[j + 1] for j, w in enumerate(words) if w == "the"}
            assert len(attrs) == 1
    assert set(b["kind"].tolist()) == set(range(len(names)))
    with pytest.raises(InputError, match="mix"):
        K.kv_lm_batch(4, seed=0, mix={"copy": 1.0})


def test_full_scale_path_on_a_local_folder(tmp_path, model, tok, data):
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m2, t2 = load_lm("full", small="kv_gpt2", full=str(tmp_path))
    assert m2.config._attn_implementation == "eager" and t2.pad_token_id is not None
    b2 = Q.encode_items(data, t2)
    b1 = Q.encode_items(data, tok)
    assert torch.equal(b2.ids, b1.ids) and torch.equal(b2.sent_index, b1.sent_index)
    a1, s1 = Q.explain(model, b1, (2, 0))
    a2, s2 = Q.explain(m2, b2, (2, 0))
    assert torch.allclose(a1.scores, a2.scores, atol=1e-6) and torch.equal(s1, s2)


def test_steering_counts_context_and_memory_answers_on_conflict_items(model, tok):
    data, batch = Q.eval_items(16, tok, p_conflict=0.5, seed=2)
    n_conf = int(data.is_conflict.sum())
    out = Q.steering(model, tok, data, {"gold": batch.gold})
    assert set(out) == {"none", "gold"} and out["none"]["n"] == n_conf > 0
    sub = Q.encode_items(data.subset(data.is_conflict.nonzero().flatten()), tok)
    f = Q.context_faithfulness(model, sub)
    assert out["none"]["context"] == pytest.approx(float(f["context"].float().mean()))
    assert 0.0 <= out["gold"]["memory"] <= 1.0
    with pytest.raises(InputError, match="conflict"):
        Q.steering(model, tok, kv_qa(4, seed=0), {})


def test_model_shape_and_plot(model):
    assert Q.model_shape(model) == (3, 4)
    fig = Q.plot_components(np.zeros((3, 4)), np.ones(3), title="t")
    assert len(fig.axes) == 2  # the grid and its colour bar
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["H0", "H1", "H2", "H3", "MLP"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["L0", "L1", "L2"]
    with pytest.raises(InputError, match="heads"):
        Q.plot_components(np.zeros(4))


def test_shipped_checkpoint_reproduces_its_manifest_metrics():
    from xattr_nb.models import zoo

    entry = {e.name: e for e in zoo.entries()}["kv_gpt2"]
    model, tok = load_lm("cpu", small="kv_gpt2")
    assert len(tok) == len(K.kv_tokenizer()) and not model.training
    assert model.config.n_layer == 3 and model.config.n_head == 4 and model.config.n_embd == 96
    got = K.conflict_rates(model, seed=entry.metrics["seed"] + 10_000)
    for key in ("copy_accuracy", "context_rate", "memory_rate", "closed_book_accuracy"):
        assert round(got[key], 4) == entry.metrics[key], key


def test_find_head_chains_cma_circuit_and_selection(model, batch):
    choice = Q.find_head(model, batch, k=4)
    comps = [n for n in choice.circuit.nodes if n.kind in ("head", "mlp")]
    assert len(comps) == 4
    assert choice.head == Q.select_head(Q.head_scores(model, batch))
    assert choice.in_circuit == (f"L{choice.head[0]}.H{choice.head[1]}" in {n.name for n in comps})
    restricted = Q.find_head(model, batch, k=4, among_circuit=True)
    if any(n.kind == "head" for n in comps):
        assert restricted.in_circuit


# ----------------------------------------------------------------------------------------------
# The attribute shortcut and its model-free control (issue 13).


def _one_attribute(d):
    """``d`` with every fact rewritten to the color attribute (distinct values): only the key identifies the fact."""
    words = []
    for w, sp in zip(d.words, d.sent_spans.tolist(), strict=True):
        w = list(w)
        for a, _e in sp:
            w[a + 1] = "color"
        w[-6] = "color"
        words.append(w)
    return d.__class__(**{**d.__dict__, "words": words})


def test_attribute_count_and_shortcut_known_answers():
    d = kv_qa(30, n_facts=4, seed=3)
    same = _one_attribute(d)
    assert Q.attribute_count(same).tolist() == [4] * 30
    assert Q.shortcut_copy_rate(same) == pytest.approx(0.25)
    one = kv_qa(20, n_facts=1, seed=3)
    assert Q.attribute_count(one).tolist() == [1] * 20 and Q.shortcut_copy_rate(one) == 1.0
    counts = Q.attribute_count(d)
    assert Q.shortcut_copy_rate(d) == pytest.approx(float((1.0 / counts.float()).mean()))


def test_attribute_match_picks_a_fact_of_the_asked_attribute():
    d = kv_qa(60, n_facts=5, seed=4)
    pick = Q.attribute_match_sentences(d, seed=1)
    for w, sp, j, g in zip(d.words, d.sent_spans.tolist(), pick.tolist(), d.gold_sentence.tolist(), strict=True):
        assert w[sp[j][0] + 1] == w[sp[g][0] + 1] == w[-6]
    unique = Q.attribute_count(d) == 1
    assert bool((pick[unique] == d.gold_sentence[unique]).all())  # exactly right where the attribute is unique
    assert torch.equal(pick, Q.attribute_match_sentences(d, seed=1))
    with pytest.raises(InputError, match="data"):
        Q.attribute_match_sentences(["not", "kv"])


def test_short_template_keeps_draws_vocab_and_gold():
    from xattr_nb.worlds.text import kv_memory_texts, kv_template_offsets

    nat, short = kv_qa(20, p_conflict=0.3, seed=9), kv_qa(20, p_conflict=0.3, seed=9, template="short")
    assert short.vocab == nat.vocab and short.answers == nat.answers
    assert torch.equal(short.gold_sentence, nat.gold_sentence) and torch.equal(short.is_conflict, nat.is_conflict)
    off = kv_template_offsets("short")
    for w, a, pos, sp, g in zip(short.words, short.answers, short.answer_pos.tolist(), short.sent_spans.tolist(),
                                short.gold_sentence.tolist(), strict=True):  # fmt: skip
        assert w[pos] == a and w[sp[g][0] + off["key"]] == w[off["q_key"]] == w[-1]
    assert kv_template_offsets()["value"] == 5 and kv_memory_texts("short")[0] == "color sun yellow ."
    with pytest.raises(InputError, match="template"):
        kv_qa(2, template="long")


def test_lookup_batch_labels_are_the_asked_values():
    b = K.kv_lookup_batch(40, n_facts=3, seed=2, more_questions=4)
    vocab = K.kv_vocab()
    n_lab = (b["labels"] != K.IGNORE).sum(1)
    kinds = [list(K.LOOKUP_MIX)[k] for k in b["kind"].tolist()]
    for r, kind in enumerate(kinds):
        assert int(n_lab[r]) == (5 if kind in ("copy", "same_attribute", "counterfactual") else 1)
        words = [vocab[i] for i in b["ids"][r].tolist() if i != 0]
        if kind in ("copy", "same_attribute"):
            facts = {(words[i], words[i + 1]): words[i + 2] for i in range(1, 12, 4)}  # "A K V ." x3
            for t in (b["labels"][r] != K.IGNORE).nonzero().flatten().tolist():
                assert (words[t - 1], words[t]) in facts and facts[(words[t - 1], words[t])] == words[t + 1]


def test_shipped_lookup_model_beats_the_attribute_shortcut():
    """The shipped kv_gpt2_lookup answers by key: perfect on two facts of one attribute (chance 0.5),
    well above chance on five (0.2), and above the attribute shortcut on ordinary items."""
    m, _tok = load_lm("cpu", small="kv_gpt2_lookup")
    assert K.lookup_accuracy(m, 100, n_facts=2, seed=123) >= 0.95
    assert K.lookup_accuracy(m, 200, n_facts=5, seed=123) >= 0.4
    d = kv_qa(200, seed=321, template="short")
    pred = K.answer_predictions(m, d.texts, d.vocab)
    copy = float(np.mean([p == a for p, a in zip(pred, d.answers, strict=True)]))
    assert copy > Q.shortcut_copy_rate(d) + 0.1
