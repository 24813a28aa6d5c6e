"""Tests of xattr_nb.methods.laquer: the grounded-facts world, the localization steps, the metrics."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import laquer as L


@pytest.fixture(scope="module")
def data() -> L.GroundedFactsData:
    return L.grounded_facts(12, seed=3)


@pytest.fixture(scope="module")
def minilm():
    from xattr_nb.models import load_encoder

    # one thread: short texts gain nothing from more, and a shared CPU makes extra threads thrash
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_encoder()
    torch.set_num_threads(threads)


# ------------------------------------------------------------------ the world


def test_world_is_deterministic_and_seeded() -> None:
    a, b, c = L.grounded_facts(5, seed=1), L.grounded_facts(5, seed=1), L.grounded_facts(5, seed=2)
    assert a.texts == b.texts and a.instances == b.instances
    assert a.texts != c.texts


def test_world_gold_clause_states_the_fact(data: L.GroundedFactsData) -> None:
    for inst in data.instances:
        assert len(inst.sources) == 3 and all(len(doc) == 4 for doc in inst.sources)
        for k, (subj, rel, val) in enumerate(inst.facts):
            d, s, a, b = inst.gold[k]
            assert (d, s) == inst.coarse[k] and inst.sources[d][s][0] == subj == inst.subject
            clause = inst.sources[d][s][a:b]
            assert clause[-1] == val and " ".join(w for w in clause if w != "who") == f"{rel} {val}"
            # the highlight is the paraphrased relation + the same value, never the source wording
            para = dict(pair for pairs in L.RELATIONS.values() for pair in pairs)[rel]
            assert L.highlight_text(inst, k) == f"{para} {val}"


def test_world_without_paraphrase_copies_relations() -> None:
    inst = L.grounded_facts(3, paraphrase=False, seed=0).instances[0]
    for k, (_, rel, val) in enumerate(inst.facts):
        assert L.highlight_text(inst, k) == f"{rel} {val}"


def test_world_shared_values_make_both_clauses_end_alike() -> None:
    for inst in L.grounded_facts(4, p_shared_value=1.0, seed=0).instances:
        for d, s in inst.coarse:
            (_a1, b1), (_a2, b2) = L.candidate_units(inst.sources[d][s])[1:]
            assert inst.sources[d][s][b1 - 1] == inst.sources[d][s][b2 - 1]


def test_split_keeps_instances_and_texts_aligned(data: L.GroundedFactsData) -> None:
    a, b = data.split((0.5, 0.5), seed=0)
    assert len(a) + len(b) == len(data)
    assert all(" ".join(i.output) == t for i, t in zip(a.instances, a.texts, strict=True))


# ------------------------------------------------------------------ steps


def test_candidate_units_split_on_commas_and_who() -> None:
    words = ["alice", ",", "who", "lives", "in", "paris", ",", "works", "as", "a", "baker", "."]
    assert L.candidate_units(words) == [(0, 1), (2, 6), (7, 11)]


def test_candidates_two_stage_vs_e2e(data: L.GroundedFactsData) -> None:
    inst = data.instances[0]
    assert len(L.candidates(inst, "two_stage")) == 3 * 3 and len(L.candidates(inst, "e2e")) == 12 * 3
    assert set(inst.gold) <= set(L.candidates(inst))


def test_decontextualize_and_content_words() -> None:
    assert L.decontextualize("alice", "resides in paris") == "alice resides in paris"
    assert L.content_words("alice resides in paris") == {"alice", "resides", "paris"}
    assert L.content_words("alice resides in paris", normalize=True) == {"alice", "lives", "paris"}


def test_greedy_select_adds_only_recall_gains() -> None:
    units = [{"lives", "paris"}, {"alice"}, {"paris"}, {"bob"}]
    fact = {"alice", "lives", "paris"}
    # unit 2 adds nothing new, unit 3 nothing of the fact: only 0 then 1
    assert L.greedy_select([0, 2, 1, 3], units, fact, [True] * 4) == [0, 1]
    # an ineligible unit (cosine < tau) is never added
    assert L.greedy_select([0, 1], units[:2], fact, [True, False]) == [0]


def test_span_metrics_on_gold_and_sentence(data: L.GroundedFactsData) -> None:
    inst = data.instances[0]
    m = L.span_metrics(inst, 0, [inst.gold[0]])
    assert m["precision"] == m["recall"] == m["f1"] == m["ais"] == 1.0
    sent = L.span_metrics(inst, 0, L.localize_sentence(inst, 0))
    n_words = sum(sum(w not in (",", ".") for w in inst.sources[d][s]) for d, s in inst.coarse)
    gold_len = inst.gold[0][3] - inst.gold[0][2]
    assert sent["length"] == n_words and sent["recall"] == 1.0 and sent["ais"] == 1.0
    assert sent["precision"] == pytest.approx(gold_len / n_words)
    assert L.span_metrics(inst, 0, [])["ais"] == 0.0


def test_lexical_is_exact_without_paraphrase() -> None:
    d = L.grounded_facts(8, paraphrase=False, p_shared_value=1.0, seed=0)
    res = L.evaluate(d, ("sentence", "lexical"))
    assert res["lexical"]["ais"].mean() == 1.0
    assert res["lexical"]["length"].mean() < res["sentence"]["length"].mean() / 3


def test_lexical_with_synonyms_is_exact_under_paraphrase() -> None:
    # the oracle control: given the world's synonym table, word overlap finds every gold clause, even
    # when both clauses of the cited sentence share their value; without it, it cannot tell them apart
    d = L.grounded_facts(10, p_shared_value=1.0, seed=0)
    res = L.evaluate(d, ("lexical", "lexical_syn"))
    assert res["lexical_syn"]["ais"].mean() == 1.0 and res["lexical_syn"]["f1"].min() > 0.5
    assert res["lexical"]["ais"].mean() < 0.9
    inst = d.instances[0]
    for k in range(3):
        assert inst.gold[k] in L.localize_lexical(inst, k, synonyms=True)
        a = L.explain(inst, k, "lexical_syn")
        assert a.meta["spans"] == L.localize_lexical(inst, k, synonyms=True)


def test_shared_value_marks_highlights_only_the_relation_separates() -> None:
    assert L.shared_value(L.grounded_facts(4, p_shared_value=1.0, seed=1)).all()
    d = L.grounded_facts(4, p_shared_value=0.0, seed=1)
    flags = L.shared_value(d)
    assert flags.shape == (12,) and not flags.any()


def test_bad_synonyms_flag(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`synonyms`"):
        L.localize_lexical(data.instances[0], 0, synonyms="yes")  # type: ignore[arg-type]


def test_shared_value_bad_data() -> None:
    with pytest.raises(InputError, match="`data`"):
        L.shared_value([])  # type: ignore[arg-type]


def test_map_spans_exact_fuzzy_and_missing() -> None:
    text = "alice , who lives in paris , works as a baker ."
    assert L.map_spans(text, ["lives in paris"]) == [(12, 26)]
    a, b = L.map_spans(text, ["lives in pariss"])[0]
    assert text[a:b].startswith("lives in paris")
    assert L.map_spans(text, ["zzzzzzzzzz"]) == [None]


# ------------------------------------------------------------------ MiniLM


def test_embedding_cache_encodes_each_text_once(minilm) -> None:
    cache = L.EmbeddingCache(*minilm)
    e = cache(["alice lives in paris", "alice lives in paris", "bob"])
    assert cache.n_encoded == 2 and torch.allclose(e[0], e[1])
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    cache(["bob"])
    assert cache.n_encoded == 2


def test_embed_and_internals_beat_sentence_level_precision(minilm, data: L.GroundedFactsData) -> None:
    tok, model = minilm
    small = data.subset([0, 1])
    res = L.evaluate(small, tokenizer=tok, model=model)
    for m in ("embed", "internals"):
        assert res[m]["precision"].mean() > res["sentence"]["precision"].mean() + 0.2
    matches = L.token_matches(small.instances[0], tok, model)
    assert matches["sim"].shape == (len(matches["out_word"]), len(matches["src_word"]))
    assert float(matches["sim"].max()) <= 1.0 + 1e-5


def test_embed_without_synonyms_counts_words_as_written(minilm, data: L.GroundedFactsData) -> None:
    cache = L.EmbeddingCache(*minilm)
    for inst in data.instances[:3]:
        for k in range(3):
            with_t, sims = L.localize_embed(inst, k, cache, synonyms=True)
            without, sims2 = L.localize_embed(inst, k, cache, synonyms=False)
            assert torch.equal(sims, sims2) and with_t[0] == without[0]  # same cosine ranking, same top-1
            # the greedy step by hand on the words as written: a paraphrase word ("resides") is never covered
            cands = L.candidates(inst)
            order = torch.argsort(sims, descending=True, stable=True).tolist()
            uw = [L.content_words(L.span_text(inst, c)) for c in cands]
            fact = L.content_words(L.decontextualize(inst.subject, L.highlight_text(inst, k)))
            assert without == [cands[i] for i in L.greedy_select(order, uw, fact, (sims >= 0.5).tolist())]
    res = L.evaluate(data.subset([0, 1]), ("embed", "embed_nosyn"), cache=cache)
    assert set(res) == {"embed", "embed_nosyn"}
    with pytest.raises(InputError, match="`synonyms`"):
        L.localize_embed(data.instances[0], 0, cache, synonyms=None)  # type: ignore[arg-type]


def test_llm_localize_on_a_local_stand_in(tmp_path, data: L.GroundedFactsData) -> None:
    from xattr_nb.models import load_lm, tiny_gpt2, word_tokenizer

    words = sorted({w for i in data.instances for doc in i.sources for s in doc for w in s} | {";"})
    tok = word_tokenizer(words)
    tiny_gpt2(len(tok), n_ctx=256, pad_token_id=tok.pad_token_id).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    llm = load_lm("full", small="unused", full=str(tmp_path))  # LoadedLM(model, tokenizer)
    inst = data.instances[0]
    spans = L.llm_localize(inst, 0, *llm, max_new_tokens=4)
    assert set(spans) <= set(L.candidates(inst))
    res = L.evaluate(data.subset([0]), ("llm",), llm=llm)
    assert res["llm"]["ais"].shape == (3,) and set(res["llm"]["ais"].tolist()) <= {0.0, 1.0}
    att = L.explain(inst, 0, "llm", llm=llm)
    assert att.cost.forward == 1 and set(att.meta["spans"]) <= set(L.candidates(inst))


def test_explain_returns_word_attribution_matching_the_spans(minilm, data: L.GroundedFactsData) -> None:
    tok, model = minilm
    inst = data.instances[1]
    cache = L.EmbeddingCache(tok, model)
    for method in L.METHODS:
        att = L.explain(inst, 2, method, tokenizer=tok, model=model, cache=cache)
        words, mask = L.word_mask(inst, att.meta["spans"])
        assert att.kind == "tokens" and att.method == f"laquer.{method}" and att.target.tolist() == [2]
        assert att.labels == [words] and att.scores[0].tolist() == mask.tolist()
        assert att.meta["highlight"] == L.highlight_text(inst, 2)
    assert L.explain(inst, 2, "sentence").scores.sum() == sum(
        sum(w not in (",", ".") for w in inst.sources[d][s]) for d, s in inst.coarse
    )
    # embed counts only the texts it had to encode: a second call on the same cache is free
    assert L.explain(inst, 2, "embed", cache=cache).cost.forward == 0
    assert L.explain(inst, 2, "internals", tokenizer=tok, model=model).cost.forward == 1
    e2e = L.explain(inst, 0, "lexical", setting="e2e")
    assert len(e2e.labels[0]) == sum(len(s) for doc in inst.sources for s in doc)


def test_match_figure_marks_and_shape_checks() -> None:
    fig = L.match_figure(
        [[0.1, 0.9], [0.5, 0.2]], ["a", "b"], ["x", "y"], boxes=[[0, 1], [1, 0]], dots=[[0, 1], [0, 0]]
    )
    assert len(fig.axes[0].patches) == 2
    with pytest.raises(InputError, match="`boxes`"):
        L.match_figure([[0.1, 0.9]], ["a"], ["x", "y"], boxes=[[1, 0, 0]])


# ------------------------------------------------------------------ bad input (one test each)


def test_bad_n() -> None:
    with pytest.raises(InputError, match="`n`"):
        L.grounded_facts(0)


def test_bad_n_docs() -> None:
    with pytest.raises(InputError, match="`n_docs`"):
        L.grounded_facts(2, n_docs=7)


def test_bad_p_shared_value() -> None:
    with pytest.raises(InputError, match="`p_shared_value`"):
        L.grounded_facts(2, p_shared_value=1.5)


def test_bad_paraphrase() -> None:
    with pytest.raises(InputError, match="`paraphrase`"):
        L.grounded_facts(2, paraphrase="yes")  # type: ignore[arg-type]


def test_bad_words_for_units() -> None:
    with pytest.raises(InputError, match="`words`"):
        L.candidate_units([])


def test_bad_setting(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`setting`"):
        L.candidates(data.instances[0], "all")


def test_bad_instance() -> None:
    with pytest.raises(InputError, match="`inst`"):
        L.localize_sentence("alice", 0)  # type: ignore[arg-type]


def test_bad_highlight_index(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`k`"):
        L.localize_lexical(data.instances[0], 3)


def test_empty_subject() -> None:
    with pytest.raises(InputError, match="`subject`"):
        L.decontextualize(" ", "resides in paris")


def test_greedy_empty_order() -> None:
    with pytest.raises(InputError, match="`order`"):
        L.greedy_select([], [], set(), [])


def test_greedy_order_out_of_range() -> None:
    with pytest.raises(InputError, match="`order`"):
        L.greedy_select([5], [{"a"}], {"a"}, [True])


def test_greedy_length_mismatch() -> None:
    with pytest.raises(InputError, match="`eligible`"):
        L.greedy_select([0], [{"a"}], {"a"}, [True, False])


def test_bad_span_in_metrics(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`spans`"):
        L.span_metrics(data.instances[0], 0, [(0, 1)])  # type: ignore[list-item]


def test_bad_method(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`method`"):
        L.explain(data.instances[0], 0, "gpt")


def test_embed_without_model(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="needs `cache`"):
        L.explain(data.instances[0], 0, "embed")


def test_internals_without_model(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`tokenizer` and `model`"):
        L.explain(data.instances[0], 0, "internals")


def test_llm_without_model(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`llm="):
        L.explain(data.instances[0], 0, "llm")


def test_explain_bad_setting(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`setting`"):
        L.explain(data.instances[0], 0, "sentence", setting="all")


def test_bad_cache(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`cache`"):
        L.localize_embed(data.instances[0], 0, {})  # type: ignore[arg-type]


def test_bad_tau(minilm, data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`tau`"):
        L.localize_embed(data.instances[0], 0, L.EmbeddingCache(*minilm), tau=2.0)


def test_bad_matches(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`matches`"):
        L.localize_internals(data.instances[0], 0, {})


def test_evaluate_bad_data() -> None:
    with pytest.raises(InputError, match="`data`"):
        L.evaluate([], ("sentence",))  # type: ignore[arg-type]


def test_evaluate_bad_methods(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`methods`"):
        L.evaluate(data, [])


def test_evaluate_needs_model(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="need `tokenizer`"):
        L.evaluate(data, ("internals",))


def test_evaluate_llm_without_model(data: L.GroundedFactsData) -> None:
    with pytest.raises(InputError, match="`llm="):
        L.evaluate(data, ("llm",))


def test_map_spans_empty_text() -> None:
    with pytest.raises(InputError, match="`text`"):
        L.map_spans("", ["a"])


def test_map_spans_string_spans() -> None:
    with pytest.raises(InputError, match="`spans`"):
        L.map_spans("alice", "alice")  # type: ignore[arg-type]


def test_cache_tokenizer_mismatch(minilm) -> None:
    from xattr_nb.models import tiny_gpt2

    with pytest.raises(InputError, match="tokenizer does not match"):
        L.EmbeddingCache(minilm[0], tiny_gpt2(10))


def test_batched_token_matches_equal_one_by_one(minilm, data: L.GroundedFactsData) -> None:
    tok, model = minilm
    insts = data.instances[:3]
    batched = L.batch_token_matches(insts, tok, model, batch_size=2)
    for inst, b in zip(insts, batched, strict=True):
        one = L.token_matches(inst, tok, model)
        assert b["out_word"] == one["out_word"] and b["src_word"] == one["src_word"]
        assert torch.allclose(b["sim"], one["sim"], atol=1e-4)


def test_batch_token_matches_bad_input(minilm) -> None:
    with pytest.raises(InputError, match="`insts`"):
        L.batch_token_matches([], *minilm)
