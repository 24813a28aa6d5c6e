"""methods.tjepa: masks, EMA, effective rank, tokenizer/encoder shapes, the SSL arms, the probe, scale='full'."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from xattr_nb.checks import InputError
from xattr_nb.methods import tjepa as M
from xattr_nb.worlds.tabular import load_tabular, make_latent_factor_table


@pytest.fixture(scope="module")
def small():
    return make_latent_factor_table(n=600, n_test=150, n_labelled=40, seed=5)


@pytest.mark.parametrize("n_features", [5, 24, 40])
def test_masks_never_leak_targets_into_context(n_features):
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        ctx, tgts = M.sample_jepa_masks(n_features, 64, num_preds=3, generator=g)
        assert len(tgts) == 3
        for t in tgts:
            assert not (t.unsqueeze(2) == ctx.unsqueeze(1)).any()
            assert t.max() < n_features and t.min() >= 0
            # no repeated index within a row's target set
            assert all(len(set(r.tolist())) == t.shape[1] for r in t)
        assert all(len(set(r.tolist())) == ctx.shape[1] for r in ctx)
        assert ctx.shape[1] + tgts[0].shape[1] <= n_features


def test_mask_sizes_follow_shares():
    g = torch.Generator().manual_seed(1)
    ctx, tgts = M.sample_jepa_masks(100, 8, ctx_share=(0.3, 0.3), tgt_share=(0.2, 0.2), generator=g)
    assert ctx.shape == (8, 30) and tgts[0].shape == (8, 20)


def test_ema_update_hand_numbers():
    online, target = nn.Linear(1, 1), nn.Linear(1, 1)
    with torch.no_grad():
        online.weight.fill_(2.0), online.bias.fill_(0.0)
        target.weight.fill_(1.0), target.bias.fill_(10.0)
    M.ema_update(target, online, 0.9)
    assert target.weight.item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    assert target.bias.item() == pytest.approx(9.0)
    M.ema_update(target, online, 1.0)  # m = 1 freezes the target
    assert target.weight.item() == pytest.approx(1.1)
    M.ema_update(target, online, 0.0)  # m = 0 copies the online net
    assert target.weight.item() == 2.0


def test_schedules():
    assert M.momentum_schedule(0, 100) == pytest.approx(0.996)
    assert M.momentum_schedule(100, 100) == 1.0 and M.momentum_schedule(50, 100) == pytest.approx(0.998)
    assert M.cosine_with_warmup(0, 100, 10, 1.0) == 0.0
    assert M.cosine_with_warmup(5, 100, 10, 1.0) == pytest.approx(0.5)
    assert M.cosine_with_warmup(10, 100, 10, 1.0) == pytest.approx(1.0)
    assert M.cosine_with_warmup(100, 100, 10, 1.0) == pytest.approx(0.0, abs=1e-12)


def test_effective_rank_known_matrices():
    d = 6
    # centred rows that span d equal orthogonal directions: ±e_i
    eye = np.concatenate([np.eye(d), -np.eye(d)])
    assert M.effective_rank(eye) == pytest.approx(d, rel=1e-6)
    rng = np.random.default_rng(0)
    rank1 = rng.normal(size=(50, 1)) @ rng.normal(size=(1, d))
    assert M.effective_rank(rank1) == pytest.approx(1.0, abs=1e-6)
    assert M.effective_rank(np.ones((10, d))) == 0.0  # every row equal: complete collapse
    two = np.zeros((4, 3))
    two[:, 0], two[:, 1] = [1, -1, 0, 0], [0, 0, 1, -1]
    assert M.effective_rank(two) == pytest.approx(2.0)
    assert M.effective_rank(torch.eye(4) - 0.25) == pytest.approx(3.0, rel=1e-6)  # centred identity has rank d - 1


def test_collapse_metrics_hand_case():
    z = np.array([[0.0, 0.0], [3.0, 4.0]])
    c = M.collapse_metrics(z, n_pairs=2000, seed=0)
    assert 2.0 < c["pairwise_l2"] < 3.0  # half the pairs are distance 5, half 0
    assert c["dim_std"] == pytest.approx((1.5 + 2.0) / 2)
    assert c["effective_rank"] == pytest.approx(1.0)


def test_tokenizer_and_encoder_shapes(small):
    enc = M.Encoder(small.x_num.shape[1], small.cat_cardinalities, d=8, layers=1, heads=2, ffn=16, n_reg=2)
    xn, xc = torch.as_tensor(small.x_num[:5]), torch.as_tensor(small.x_cat[:5])
    assert enc(xn, xc).shape == (5, 2 + 24, 8)
    keep = torch.tensor([[0, 3, 23]] * 5)
    assert enc(xn, xc, keep=keep).shape == (5, 2 + 3, 8)
    # a context encoder output depends only on the kept features
    xn2 = xn.clone()
    xn2[:, 5] += 1.0
    enc.eval()
    assert torch.allclose(enc(xn, xc, keep=keep), enc(xn2, xc, keep=keep))
    assert not torch.allclose(enc(xn, xc), enc(xn2, xc))
    pred = M.Predictor(24, d=8, d_pred=4, layers=1, heads=2, n_reg=2)
    assert pred(enc(xn, xc, keep=keep), keep, torch.tensor([[1, 2]] * 5)).shape == (5, 2, 8)


def test_pretrain_arms_same_budget_and_target_is_ema(small):
    cfg = dict(steps=6, batch_size=32, d=8, ffn=16, log_every=3)
    runs = {m: M.pretrain(small, m, seed=0, **cfg) for m in ("tjepa", "mae", "no_ema", "random")}
    assert len({repr(r.config) for r in runs.values()}) == 1
    assert all(len(runs[m].losses) == 6 for m in ("tjepa", "mae", "no_ema")) and runs["random"].losses == []
    assert all(np.isfinite(runs[m].losses).all() for m in ("tjepa", "mae", "no_ema"))
    # the T-JEPA encoder returned is the EMA target: after few steps at m ≈ 0.996 it is close to the initial one
    init = runs["random"].encoder.state_dict()
    moved = max(
        float((v - init[k]).abs().max())
        for k, v in runs["tjepa"].encoder.state_dict().items()
        if v.dtype.is_floating_point
    )
    moved_online = max(
        float((v - init[k]).abs().max())
        for k, v in runs["no_ema"].encoder.state_dict().items()
        if v.dtype.is_floating_point
    )
    assert moved < moved_online
    z = M.embed(runs["tjepa"].encoder, small, small.test_idx[:7])
    assert z.shape == (7, 25 * 8)


def test_no_ema_control_collapses(small):
    # without EMA and stop-gradient the latent MSE is minimised by constant tokens: the spread shrinks
    cfg = dict(steps=60, batch_size=64, d=8, ffn=16, log_every=59, lr=3e-3)
    ctl = M.pretrain(small, "no_ema", seed=0, **cfg)
    assert ctl.history[-1]["dim_std"] < 0.5 * ctl.history[0]["dim_std"]


def test_linear_probe_separable():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    y = (x[:, 0] > 0).astype(int)
    out = M.linear_probe(x[:100], y[:100], x[100:], y[100:])
    assert out["acc"] > 0.95
    with pytest.raises(InputError, match="`z_train`"):
        M.linear_probe(x[:10], y[:9], x, y)


def test_scale_full_on_a_small_csv(tmp_path):
    t = make_latent_factor_table(n=300, n_test=60, n_labelled=40, seed=0)
    cols = [f"f{j}" for j in range(t.x_num.shape[1])]
    lines = [",".join([*cols, "colour", "y"])]
    for i in range(300):
        lines.append(",".join(f"{v:.4f}" for v in t.x_num[i]) + f",c{t.x_cat[i, 0]},{t.y[i]}")
    p = tmp_path / "table.csv"
    p.write_text("\n".join(lines) + "\n")
    full = load_tabular("full", data_csv=p, target="y", n_labelled=40, seed=0)
    assert full.n_features == t.x_num.shape[1] + 1 and full.cat_cardinalities == [4]
    acc, _ = M.compare(full, arms=("tjepa", "random"), steps=3, batch_size=32, d=8, ffn=16)
    assert set(acc) >= {"raw LR", "raw MLP", "raw GBDT", "tjepa", "random"}
    assert all(0.0 <= v <= 1.0 for v in acc.values())


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda t: M.pretrain(t, "byol"), "`mode`"),
        (lambda t: M.pretrain(t, steps=0), "`steps`"),
        (lambda t: M.pretrain("not a table"), "`table`"),
        (lambda t: M.sample_jepa_masks(1, 4), "`n_features`"),
        (lambda t: M.sample_jepa_masks(10, 4, ctx_share=(0.6, 0.2)), "`ctx_share`"),
        (lambda t: M.sample_jepa_masks(10, 4, tgt_share=(0.0, 0.2)), "`tgt_share`"),
        (lambda t: M.effective_rank(np.ones(3)), "`z`"),
        (lambda t: M.collapse_metrics(np.ones((1, 3))), "`z`"),
        (lambda t: M.ema_update(nn.Linear(1, 1), nn.Linear(1, 1), 1.5), "`m`"),
    ],
)
def test_bad_input(small, call, name):
    with pytest.raises(InputError, match=name):
        call(small)


def test_explain_runs(small):
    out = M.explain(small, steps=3, batch_size=32, d=8, ffn=16)
    assert 0.0 <= out["probe"]["acc"] <= 1.0 and out["run"].mode == "tjepa"
    assert copy.deepcopy(out["run"].encoder) is not None
