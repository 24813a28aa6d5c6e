"""methods.kalm_embedding: the cached top layer equals the model, mining and its filter, training, soups,
evaluation on known answers, and the scale="full" path on a tiny BERT saved with save_pretrained."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError
from xattr_nb.methods import kalm_embedding as K
from xattr_nb.models.hub import minilm_path
from xattr_nb.worlds.retrieval import make_retrieval_world


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    return tok, BertModel(cfg).eval()


@pytest.fixture(scope="module")
def world():
    return make_retrieval_world(24, 12, seed=5)


def test_the_cached_top_layer_reproduces_the_model(tiny, world):
    tok, model = tiny
    table = K.text_table(world)
    cache = K.encode_cached(table.texts, tok, model, n_train_layers=1, batch_size=16)
    enc = K.CachedTopEncoder(model, cache)
    ids = torch.arange(len(table.texts))
    assert torch.allclose(K.embed_ids(enc, ids), cache.zero_shot, atol=1e-5)
    # and the zero-shot embeddings are the mean-pooled, normalised last states of a plain forward
    batch = tok(table.texts[:5], padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    assert torch.allclose(cache.zero_shot[:5], F.normalize((h * m).sum(1) / m.sum(1), dim=-1), atol=1e-5)
    assert set(enc.state_dict()) == {k for k in enc.state_dict() if k.startswith("layers.")}


def test_mining_skips_the_positive_respects_the_window_and_filters_what_beats_the_positive():
    q = F.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    angles = torch.tensor([0.1, 0.3, 0.2, 0.5, 0.7, 0.9, 1.2])  # doc 2 is the positive; docs 0 and 1... see below
    docs = torch.stack([angles.cos(), angles.sin()], 1)
    pos = torch.tensor([2])  # cos ranks: 0 (0.1) > 2 (0.2, positive) > 1 (0.3) > 3 > 4 > 5 > 6
    neg, st = K.mine_hard_negatives(q, docs, pos, n_hard=2, window=(0, 2), filter_above_positive=True)
    assert sorted(neg[0].tolist()) == [1, 3] and st["filtered"] == 1.0  # doc 0 scored above the positive
    neg, st = K.mine_hard_negatives(q, docs, pos, n_hard=2, window=(0, 2), filter_above_positive=False)
    assert sorted(neg[0].tolist()) == [0, 1] and st["filtered"] == 0.0
    neg, _ = K.mine_hard_negatives(q, docs, pos, n_hard=2, window=(2, 4), filter_above_positive=True)
    assert sorted(neg[0].tolist()) == [4, 5]


def test_random_negatives_never_return_the_positive():
    pos = torch.tensor([0, 5, 9])
    neg = K.random_negatives(3, 10, pos, n_hard=9, seed=0)
    for i in range(3):
        assert sorted(neg[i].tolist()) == [j for j in range(10) if j != int(pos[i])]


def test_mining_stats_count_false_negatives_by_the_worlds_truth(world):
    dup = torch.tensor([world.train_doc_kind.index("paraphrase", int(p)) for p in world.train_positive])
    own_swap = torch.tensor([world.train_doc_kind.index("role_swap", int(p)) for p in world.train_positive])
    st = K.mining_stats(torch.stack([dup, own_swap], 1), world)
    assert st == pytest.approx({"false_negatives": 0.5, "own_slot": 0.0, "own_role_swap": 0.5})


def test_evaluation_of_oracle_and_adversarial_embeddings(world):
    n_doc = len(world.eval_docs)
    d = torch.eye(n_doc)
    q = d[world.eval_positive]  # each query is its positive: perfect retrieval
    m = K.evaluate_embeddings(q, d, world)
    assert m == pytest.approx({"ndcg@10": 1.0, "recall@1": 1.0, "recall@10": 1.0, "mrr@10": 1.0, "hard_neg_acc": 1.0})
    q_bad = d[world.eval_hard[:, 1]]  # each query is its role swap: the positive never wins
    assert K.evaluate_embeddings(q_bad, d, world)["hard_neg_acc"] == 0.0


def test_training_is_paired_by_seed_moves_only_the_top_layer_and_lowers_the_loss(tiny, world):
    tok, model = tiny
    table = K.text_table(world)
    cache = K.encode_cached(table.texts, tok, model, n_train_layers=1)
    zq, zd = cache.zero_shot[table.part("train_q")], cache.zero_shot[table.part("train_d")]
    negs, _ = K.mine_hard_negatives(zq, zd, world.train_positive, n_hard=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runs = []
    for _ in range(2):
        enc, losses = K.train_embedder(K.CachedTopEncoder(model, cache), table, world.train_positive, negs,
                                       K.Recipe(), steps=30, batch_size=8, lr=3e-3, seed=1)  # fmt: skip
        runs.append((enc, losses))
    assert runs[0][1] == runs[1][1]  # same seed, same batches and mixing draws
    assert sum(runs[0][1][-5:]) < sum(runs[0][1][:5])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the base model is untouched
    souped = K.soup([runs[0][0], runs[1][0]])
    ids = table.part("eval_q")
    assert torch.allclose(K.embed_ids(souped, ids), K.embed_ids(runs[0][0], ids), atol=1e-6)


def test_ablate_returns_a_row_per_arm_and_run(tiny, world):
    tok, model = tiny
    table = K.text_table(world)
    cache = K.encode_cached(table.texts, tok, model, n_train_layers=1)
    negs = {"random": K.random_negatives(24, len(world.train_docs), world.train_positive, n_hard=2)}
    arms = {"a": K.Recipe(negatives="random"), "b": K.Recipe(negatives="none", gamma=0.0, mix=False)}
    res, models = K.ablate(lambda: K.CachedTopEncoder(model, cache), table, world, negs, arms=arms, n_runs=2,
                           steps=2, batch_size=8, keep=("a",))  # fmt: skip
    assert sorted(zip(res.arm, res.run, strict=True)) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert set(models) == {("a", 0), ("a", 1)}
    with pytest.raises(InputError, match="`negatives`"):
        K.ablate(lambda: K.CachedTopEncoder(model, cache), table, world, {}, arms=arms, n_runs=1, steps=1)


def test_full_scale_path_on_a_tiny_bert_saved_with_save_pretrained(tiny, world, tmp_path):
    tok, model = tiny
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    out = K.explain(world, scale="full", full_model=str(tmp_path), n_hard=2, steps=3, batch_size=8, lr=1e-3)
    assert isinstance(out["model"], K.FullEncoder)
    assert type(out["model"].model).__name__ == "BertModel"
    assert set(out["metrics"]) == {"ndcg@10", "recall@1", "recall@10", "mrr@10", "hard_neg_acc"}
    assert len(out["losses"]) == 3 and out["mining"] is not None
    moved = [not torch.equal(a, b) for a, b in zip(out["model"].model.parameters(), model.parameters(), strict=True)]
    assert any(moved)  # the whole model was fine-tuned, the saved one left as is


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: K.Recipe(negatives="hard"), "`negatives`"),
        (lambda: K.Recipe(gamma=-1.0), "`gamma`"),
        (lambda: K.mine_hard_negatives(torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 9])), "`positive`"),
        (
            lambda: K.mine_hard_negatives(torch.randn(2, 3), torch.randn(5, 3), torch.tensor([0, 1]), window=(3, 1)),
            "`window`",
        ),
        (lambda: K.text_table("world"), "`world`"),
        (lambda: K.explain(make_retrieval_world(4, 2), scale="gpu"), "`scale`"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=name):
        call()
