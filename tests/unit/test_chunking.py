"""Chunk sizing by a device budget (issue 19): known sizes, budgets respected, same scores for any
chunking in activation patching, IG-patching and Layer IG (length grouping included)."""

from __future__ import annotations

import os

import pytest
import torch
from test_attribution_text import tiny_bert, word_tokenizer  # plain helpers (tests/unit is on sys.path)
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from xattr_nb.attribution import attribute, attribute_text
from xattr_nb.checks import InputError
from xattr_nb.interventions.patching import activation_patching, ig_patching, normalized_logit_diff
from xattr_nb.kernels import (
    CHUNK_BYTES_ENV,
    activation_row_bytes,
    cpu_cache_bytes,
    device_budget,
    length_groups,
    masked_outputs,
    rows_per_chunk,
    widest_activation,
)
from xattr_nb.models.text import tiny_gpt2


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.delenv(CHUNK_BYTES_ENV, raising=False)


# ---------------------------------------------------------------------------------------------- budget


def test_cpu_cache_is_read_and_level_checked():
    l2 = cpu_cache_bytes(2)
    assert l2 is None or (isinstance(l2, int) and l2 >= 16 << 10)
    with pytest.raises(InputError, match="`level`"):
        cpu_cache_bytes(0)
    with pytest.raises(InputError, match="`level`"):
        cpu_cache_bytes("2")


def test_device_budget_cpu_follows_the_cache_and_the_override(monkeypatch):
    threads = min(torch.get_num_threads(), os.cpu_count() or 1)
    assert device_budget("cpu") == (cpu_cache_bytes(2) or 1 << 20) * threads
    assert device_budget("cpu", grad=True) == (cpu_cache_bytes(3) or 8 << 20)
    monkeypatch.setenv(CHUNK_BYTES_ENV, "4M")
    assert device_budget("cpu") == 4 << 20 == device_budget("cpu", grad=True)
    monkeypatch.setenv(CHUNK_BYTES_ENV, "12345")
    assert device_budget(torch.device("cpu")) == 12345
    monkeypatch.setenv(CHUNK_BYTES_ENV, "lots")
    with pytest.raises(InputError, match=CHUNK_BYTES_ENV):
        device_budget("cpu")


def test_device_budget_cpu_grows_with_the_threads():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = device_budget("cpu")
        assert one == (cpu_cache_bytes(2) or 1 << 20)
        if (os.cpu_count() or 1) >= 2:
            torch.set_num_threads(2)
            assert device_budget("cpu") == 2 * one
            assert device_budget("cpu", grad=True) == (cpu_cache_bytes(3) or 8 << 20)  # the shared L3 does not
    finally:
        torch.set_num_threads(before)


def test_device_budget_rejects_bad_arguments():
    with pytest.raises(InputError, match="`device`"):
        device_budget("warp-drive")
    with pytest.raises(InputError, match="`device`"):
        device_budget(3.5)
    with pytest.raises(InputError, match="`grad`"):
        device_budget("cpu", grad="yes")


def test_rows_per_chunk_known_values():
    assert rows_per_chunk(100, budget=1000) == 10
    assert rows_per_chunk(100, budget=1000, multiple=4) == 8  # rounded down to whole units
    assert rows_per_chunk(100, budget=50, multiple=4) == 4  # at least one unit, even over the budget
    assert rows_per_chunk(100, budget=10**6, multiple=4, total=5) == 8  # never past the job, in whole units
    assert rows_per_chunk(1, budget=10**6, total=3) == 3


@pytest.mark.parametrize("row", [1, 7, 100, 4096, 10**6])
@pytest.mark.parametrize("multiple", [1, 3, 8])
def test_rows_per_chunk_respects_the_budget(row, multiple):
    budget = 65536
    rows = rows_per_chunk(row, budget=budget, multiple=multiple)
    assert rows % multiple == 0 and rows >= multiple
    assert rows * row <= budget or rows == multiple
    assert (rows + multiple) * row > budget  # and is the largest such count


def test_rows_per_chunk_rejects_bad_arguments():
    for kw, name in (
        ({"row_bytes": 0}, "row_bytes"),
        ({"row_bytes": 1.5}, "row_bytes"),
        ({"row_bytes": 8, "budget": 0}, "budget"),
        ({"row_bytes": 8, "multiple": 0}, "multiple"),
        ({"row_bytes": 8, "total": 0}, "total"),
        ({"row_bytes": 8, "grad": 1}, "grad"),
    ):
        with pytest.raises(InputError, match=f"`{name}`"):
            rows_per_chunk(**kw)


def test_activation_row_bytes_known_models():
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    # max(T*d_ff = 10*64, 3*T*d = 480, H*T*T = 200, T*V = 500) floats
    assert activation_row_bytes(lm, 10) == 4 * 640
    assert activation_row_bytes(lm, 30) == 4 * max(30 * 64, 2 * 900, 30 * 50)  # the scores grow as T^2
    cfg = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=40)
    cls = BertForSequenceClassification(cfg)
    assert activation_row_bytes(cls, 5) == 4 * 5 * 48  # 3*T*d beats T*d_ff = 200; no T*V logits for a classifier
    with pytest.raises(InputError, match="config"):
        activation_row_bytes(torch.nn.Linear(3, 3), 5)
    with pytest.raises(InputError, match="`seq_len`"):
        activation_row_bytes(lm, 0)


def test_length_groups_known_cases():
    assert length_groups([5, 7, 5, 20, 21, 9, 10]) == [[0, 2], [1], [5], [6], [3, 4]]
    assert length_groups([5, 5, 6], slack=0) == [[0, 1], [2]]
    assert length_groups([3, 30, 4], slack=10.0) == [[0, 1, 2]]
    assert length_groups(torch.tensor([2, 2])) == [[0, 1]]
    groups = length_groups([8, 9, 3, 12, 11, 3, 4])
    assert sorted(i for g in groups for i in g) == list(range(7))  # a partition
    lens = [8, 9, 3, 12, 11, 3, 4]
    assert all(max(lens[i] for i in g) <= 1.1 * min(lens[i] for i in g) for g in groups)


def test_length_groups_rejects_bad_input():
    with pytest.raises(InputError, match="`lengths`"):
        length_groups([])
    with pytest.raises(InputError, match=r"`lengths\[1\]`"):
        length_groups([3, -1])
    with pytest.raises(InputError, match="`lengths`"):
        length_groups("345")
    with pytest.raises(InputError, match="`slack`"):
        length_groups([3, 4], slack=-0.5)


# ---------------------------------------------------------------------------------------------- patching


@pytest.fixture(scope="module")
def patch_setup():
    model = tiny_gpt2(30, n_layer=2, n_head=4, d_model=32, seed=3)
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(5, 30, (4, 6), generator=g)
    corr = clean.clone()
    corr[:, 1] = (clean[:, 1] + 7) % 25 + 5
    ans, wrong = torch.randint(5, 30, (4,), generator=g), torch.randint(5, 30, (4,), generator=g)
    return model, clean, corr, normalized_logit_diff(model, clean, corr, ans, wrong)


def test_activation_patching_same_scores_for_any_chunking(patch_setup, monkeypatch):
    model, clean, corr, metric = patch_setup
    sites = ("head", "mlp_out")
    auto = activation_patching(model, clean, corr, metric, sites=sites)
    b = clean.shape[0]
    expected = rows_per_chunk(activation_row_bytes(model, clean.shape[1]), multiple=b, total=b * 60)
    assert auto.meta["rows_per_chunk"] == expected
    for rows in (1, b, 3 * b + 1, 10_000):
        other = activation_patching(model, clean, corr, metric, sites=sites, max_rows=rows)
        assert torch.allclose(auto.flat(), other.flat(), atol=1e-6)
    monkeypatch.setenv(CHUNK_BYTES_ENV, "1")  # a budget below one row: one component (B rows) per forward
    tight = activation_patching(model, clean, corr, metric, sites=sites)
    assert tight.meta["rows_per_chunk"] == b
    assert torch.allclose(auto.flat(), tight.flat(), atol=1e-6)
    monkeypatch.setenv(CHUNK_BYTES_ENV, "64K")
    row = activation_row_bytes(model, clean.shape[1])
    mid = activation_patching(model, clean, corr, metric, sites=sites)
    assert mid.meta["rows_per_chunk"] * row <= 64 << 10
    assert torch.allclose(auto.flat(), mid.flat(), atol=1e-6)


def test_ig_patching_same_scores_for_any_chunking(patch_setup):
    model, clean, corr, metric = patch_setup
    auto = ig_patching(model, clean, corr, metric, sites=("mlp_out",), steps=6)
    one = ig_patching(model, clean, corr, metric, sites=("mlp_out",), steps=6, max_rows=1)
    assert torch.allclose(auto.flat(), one.flat(), atol=1e-6)
    assert auto.meta["rows_per_chunk"] % clean.shape[0] == 0


def test_patching_rejects_bad_max_rows(patch_setup):
    model, clean, corr, metric = patch_setup
    with pytest.raises(InputError, match="`max_rows`"):
        activation_patching(model, clean, corr, metric, max_rows=0)
    with pytest.raises(InputError, match="`max_rows`"):
        ig_patching(model, clean, corr, metric, max_rows="all")


# ---------------------------------------------------------------------------------------------- Layer IG


@pytest.fixture(scope="module")
def bert():
    return tiny_bert(max_positions=16), word_tokenizer()


TEXTS = ["the cat sat on the mat", "a dog ran", "the big red dog ran home fast", "cat", "a cat sat", "dog ran fast"]


def test_layer_ig_same_scores_grouped_or_padded_and_any_chunking(bert):
    model, tok = bert
    target = [0, 1, 2, 0, 1, 2]
    padded = attribute_text(model, tok, TEXTS, target, n_steps=8, group_lengths=False, internal_batch_size=48)
    grouped = attribute_text(model, tok, TEXTS, target, n_steps=8)
    assert grouped.meta["length_groups"] > 1 and padded.meta["length_groups"] == 1
    assert torch.allclose(padded.scores, grouped.scores, atol=1e-5)
    assert torch.all(grouped.scores[grouped.mask == 0] == 0)  # padding still scores exactly 0
    for ibs in (1, 6, 13, 1000):
        other = attribute_text(model, tok, TEXTS, target, n_steps=8, internal_batch_size=ibs)
        assert torch.allclose(grouped.scores, other.scores, atol=1e-5)
    # completeness holds row by row after grouping: scores sum to f(x) - f(baseline)
    assert torch.allclose(grouped.scores.sum(1), padded.scores.sum(1), atol=1e-5)


def test_layer_ig_auto_chunks_are_whole_steps_within_budget(bert, monkeypatch):
    model, tok = bert
    monkeypatch.setenv(CHUNK_BYTES_ENV, "2K")
    res = attribute_text(model, tok, TEXTS, 0, n_steps=8)
    chunks = res.meta["internal_batch_size"]
    lengths = res.mask.sum(1).tolist()
    groups = length_groups(lengths)
    assert len(chunks) == len(groups)
    for g, rows in zip(groups, chunks, strict=True):
        assert rows % len(g) == 0 and rows <= len(g) * 8
        row = activation_row_bytes(model, max(lengths[i] for i in g))
        assert rows * row <= 2 << 10 or rows == len(g)


def test_layer_ig_left_padding_and_models_without_config_run_as_before(bert):
    model, _ = bert
    ids = torch.tensor([[0, 0, 2, 5, 6, 3], [2, 7, 8, 9, 10, 3]])
    mask = (ids != 0).long()
    a = attribute(model, ids, 1, "layer_integrated_gradients", attention_mask=mask, baseline=4, n_steps=6)
    b = attribute(
        model, ids, 1, "layer_integrated_gradients", attention_mask=mask, baseline=4, n_steps=6, group_lengths=False
    )
    assert a.meta["length_groups"] == 1  # left padding: every row reaches the last column
    assert torch.allclose(a.scores, b.scores, atol=1e-6)
    with pytest.raises(InputError, match="`group_lengths`"):
        attribute(model, ids, 1, "layer_integrated_gradients", attention_mask=mask, group_lengths="yes")


def test_masked_outputs_sizes_chunks_from_the_widest_activation_and_gives_the_same_outputs():
    torch.manual_seed(0)
    wide = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), torch.nn.Flatten(), torch.nn.LazyLinear(5))
    x = torch.rand(3, 16, 16)
    keep = torch.rand(50, 16, 16) > 0.5
    sizes = []
    wide.register_forward_pre_hook(lambda _m, a: sizes.append(a[0].shape[0]))
    with torch.no_grad():
        fixed = masked_outputs(wide, x, keep, batch_size=50)
        sizes.clear()
        budget_rows = rows_per_chunk(64 * 16 * 16 * 4, total=50)
        auto = masked_outputs(wide, x, keep)
    assert torch.allclose(auto, fixed, atol=1e-5)
    # the first 8 masks measure the widest activation ([64, 16, 16] floats a row), the rest follow the budget
    assert sizes[0] == 8 and sum(sizes) == 50 and max(sizes[1:]) == min(42, budget_rows)
    assert len(sizes) == 1 + -(-42 // min(42, budget_rows))


def test_widest_activation_measures_the_widest_output_or_what_a_backward_keeps():
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    x = torch.zeros(3, 4)
    with widest_activation() as widest:
        net(x)
    assert widest == [3 * 8 * 4]  # the [3, 8] float32 hidden layer; the Sequential's [3, 2] output is smaller
    with widest_activation(kept=True) as kept:
        net(x)
    assert kept == [3 * (8 + 8 + 2) * 4]  # the three leaves' outputs; the Sequential itself is not a leaf
    with widest_activation() as after:
        pass
    assert after == [0]  # the hook is gone outside its block
