"""Analytic tests of `xattr_nb.attribution.attribute` on linear models and a small CNN."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from xattr_nb.attribution import Attribution, attribute, list_methods, register_method
from xattr_nb.attribution import methods as M
from xattr_nb.attribution import registry as R
from xattr_nb.checks import InputError


@pytest.fixture
def linear():
    torch.manual_seed(0)
    return nn.Linear(6, 3).eval()


@pytest.fixture
def x():
    return torch.randn(4, 6, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def pix_linear():
    """A linear model on images [B, 2, 5, 5]; its weight image for class t is W[t].view(2, 5, 5)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 5 * 5, 3)).eval()


@pytest.fixture
def img():
    return torch.randn(3, 2, 5, 5, generator=torch.Generator().manual_seed(2))


def _w(model, t):
    lin = model if isinstance(model, nn.Linear) else model[1]
    return lin.weight[t].detach()


# ----------------------------------------------------------------------------- analytic, features


def test_ig_linear_equals_delta_times_w_and_is_complete(linear, x):
    base = torch.randn(6, generator=torch.Generator().manual_seed(3))
    a = attribute(linear, x, 2, "integrated_gradients", baselines=base, n_steps=5)
    assert isinstance(a, Attribution) and a.kind == "features" and a.scores.shape == (4, 6)
    torch.testing.assert_close(a.scores, (x - base) * _w(linear, 2), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        gap = linear(x)[:, 2] - linear(base.expand_as(x))[:, 2]
    torch.testing.assert_close(a.scores.sum(1), gap, atol=1e-5, rtol=1e-5)


def test_ig_per_example_targets(linear, x):
    t = torch.tensor([0, 1, 2, 0])
    a = attribute(linear, x, t, "integrated_gradients", baselines=0.5, n_steps=3, quadrature="riemann_middle")
    w = linear.weight.detach()[t]
    torch.testing.assert_close(a.scores, (x - 0.5) * w, atol=1e-5, rtol=1e-5)
    assert a.target.tolist() == [0, 1, 2, 0]


def test_ig_captum_trapezoid_is_not_complete(linear, x):
    # captum 0.9's riemann_trapezoid step sizes sum to (n-1)/n, not 1: on a linear model IG comes out
    # scaled by (n-1)/n. Pinned so that we notice when captum changes; prefer "gausslegendre".
    a = attribute(linear, x, 0, "integrated_gradients", n_steps=4, quadrature="riemann_trapezoid")
    torch.testing.assert_close(a.scores, 0.75 * x * _w(linear, 0), atol=1e-5, rtol=1e-5)


def test_saliency_linear_is_abs_w_by_default_and_w_signed(linear, x):
    a = attribute(linear, x, 1, "saliency")
    torch.testing.assert_close(a.scores, _w(linear, 1).abs().expand(4, 6))
    s = attribute(linear, x, 1, "saliency", abs=False)
    torch.testing.assert_close(s.scores, _w(linear, 1).expand(4, 6))
    assert not x.requires_grad  # the caller's tensor is not flipped to requires_grad


def test_input_x_gradient_linear_is_x_w(linear, x):
    a = attribute(linear, x, 0, "input_x_gradient")
    torch.testing.assert_close(a.scores, x * _w(linear, 0))


def test_feature_ablation_linear_is_delta_w(linear, x):
    a = attribute(linear, x, 0, "feature_ablation", baselines=-1.0)
    torch.testing.assert_close(a.scores, (x + 1.0) * _w(linear, 0), atol=1e-5, rtol=1e-5)


def test_gradient_shap_linear_single_baseline_is_exact_and_seeded(linear, x):
    a = attribute(linear, x, 1, "gradient_shap", baselines=torch.zeros(1, 6), n_samples=4, seed=3)
    torch.testing.assert_close(a.scores, x * _w(linear, 1), atol=1e-5, rtol=1e-5)
    refs = torch.randn(5, 6, generator=torch.Generator().manual_seed(4))
    b1 = attribute(linear, x, 1, "gradient_shap", baselines=refs, n_samples=6, seed=7)
    b2 = attribute(linear, x, 1, "gradient_shap", baselines=refs, n_samples=6, seed=7)
    torch.testing.assert_close(b1.scores, b2.scores)
    b3 = attribute(linear, x, 1, "gradient_shap", baselines=refs, n_samples=6, seed=8)
    assert not torch.allclose(b1.scores, b3.scores)


# ----------------------------------------------------------------------------- analytic, pixels


def test_ig_pixels_linear_channel_summed_and_complete(pix_linear, img):
    a = attribute(pix_linear, img, 1, "integrated_gradients", baselines=0.0, n_steps=4)
    assert a.kind == "pixels" and a.scores.shape == (3, 5, 5)
    expect = (img * _w(pix_linear, 1).view(2, 5, 5)).sum(1)
    torch.testing.assert_close(a.scores, expect, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        gap = pix_linear(img)[:, 1] - pix_linear(torch.zeros_like(img))[:, 1]
    torch.testing.assert_close(a.scores.sum((1, 2)), gap, atol=1e-5, rtol=1e-5)


def test_occlusion_one_pixel_window_linear_is_delta_w(pix_linear, img):
    base = torch.full((2, 5, 5), 0.3)
    a = attribute(pix_linear, img, 2, "occlusion", window=1, baselines=base)
    expect = ((img - base) * _w(pix_linear, 2).view(2, 5, 5)).sum(1)
    torch.testing.assert_close(a.scores, expect, atol=1e-5, rtol=1e-5)
    assert a.meta["window"] == (1, 1)


def test_feature_ablation_pixels_with_regions(pix_linear, img):
    regions = torch.zeros(1, 5, 5, dtype=torch.long)
    regions[:, :, 3:] = 1  # two regions: columns 0-2 and 3-4
    a = attribute(pix_linear, img, 0, "feature_ablation", feature_mask=regions)
    contrib = (img * _w(pix_linear, 0).view(2, 5, 5)).sum(1)  # per-pixel x·w
    left, right = contrib[:, :, :3].sum((1, 2)), contrib[:, :, 3:].sum((1, 2))
    torch.testing.assert_close(a.scores[:, 0, 0], left, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.scores[:, 4, 4], right, atol=1e-5, rtol=1e-5)


class CamNet(nn.Module):
    """conv → ReLU → conv → global average pool → linear: Grad-CAM at conv2 equals CAM."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        a = self.conv2(torch.relu(self.conv1(x)))
        return self.fc(a.mean((2, 3)))


def test_grad_cam_equals_cam_on_gap_net_and_is_nonnegative():
    torch.manual_seed(0)
    net = CamNet().eval()
    x = torch.randn(2, 3, 6, 6)
    a = attribute(net, x, 1, "grad_cam")  # default layer: the last Conv2d
    assert a.kind == "pixels" and a.scores.shape == (2, 6, 6) and a.meta["layer"] == "conv2"
    assert bool((a.scores >= 0).all())
    with torch.no_grad():
        acts = net.conv2(torch.relu(net.conv1(x)))
    # ∂y/∂A_k = w_k / (h·w) everywhere, so Grad-CAM = ReLU(Σ_k w_k/(hw) · A_k) (same size: no upsampling)
    cam = torch.relu((net.fc.weight[1].view(1, 5, 1, 1) / 36 * acts).sum(1))
    torch.testing.assert_close(a.scores, cam, atol=1e-5, rtol=1e-5)
    signed = attribute(net, x, 1, "grad_cam", relu=False)
    assert bool((signed.scores < 0).any())


def test_grad_cam_upsamples_and_accepts_layer_by_name_or_module():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(2, 3, 8, 8)
    by_name = attribute(net, x, 0, "grad_cam", layer="0")
    by_mod = attribute(net, x, 0, "grad_cam", layer=net[0])
    assert by_name.scores.shape == (2, 8, 8) and by_name.meta["layer_size"] == (8, 8)
    torch.testing.assert_close(by_name.scores, by_mod.scores)
    last = attribute(net, x, 0, "grad_cam")  # default: the ReLU after the last conv (the block's output)
    assert last.meta["layer"] == "4" and last.meta["layer_size"] == (4, 4) and last.scores.shape == (2, 8, 8)


# ----------------------------------------------------------------------------- cost


class Counting(nn.Module):
    """Counts rows forwarded and rows back-propagated, independently of count_passes."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.fwd, self.bwd = inner, 0, 0

    def forward(self, x):
        self.fwd += x.shape[0]
        y = self.inner(x)
        if y.requires_grad:
            rows = x.shape[0]

            def on_grad(g):
                self.bwd += rows

            y.register_hook(on_grad)
        return y


@pytest.mark.parametrize("ibs", [None, 5])
def test_ig_cost_is_b_times_steps(linear, x, ibs):
    model = Counting(linear).eval()
    b, k = x.shape[0], 7
    a = attribute(model, x, 1, "integrated_gradients", n_steps=k, internal_batch_size=ibs)
    # `target` is checked on the method's first forward, not by a probe of its own; the one-row forward
    # that sizes IG's chunks (internal_batch_size=None: _widest_row_bytes) is not charged to the method
    sizing = 1 if ibs is None else 0
    assert (model.fwd - sizing, model.bwd) == (a.cost.forward, a.cost.backward)
    # captum 0.9 runs exactly B·k forwards and B·k backwards (no extra pass at x: no convergence delta)
    assert (a.cost.forward, a.cost.backward) == (b * k, b * k)
    assert a.cost.wall_s > 0


def test_costs_of_other_methods(linear, x):
    b, f = x.shape
    assert (attribute(linear, x, 0, "saliency").cost.forward, attribute(linear, x, 0, "saliency").cost.backward) == (
        b,
        b,
    )
    occ = attribute(linear, x, 0, "occlusion").cost  # one forward at x, then one per window
    assert (occ.forward, occ.backward) == (b * (1 + f), 0)
    gs = attribute(linear, x, 0, "gradient_shap", n_samples=3).cost
    assert (gs.forward, gs.backward) == (3 * b, 3 * b)


# ----------------------------------------------------------------------------- eval mode, registry


def test_training_model_warns_runs_in_eval_and_restores_flags():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 2), nn.BatchNorm1d(2))
    net.train()
    net[0].eval()  # a submodule in its own mode must keep it
    x = torch.randn(4, 6)
    before = net[3].running_mean.clone()
    with pytest.warns(UserWarning, match="training mode"):
        a1 = attribute(net, x, 0, "saliency")
    with pytest.warns(UserWarning):
        a2 = attribute(net, x, 0, "saliency")
    torch.testing.assert_close(a1.scores, a2.scores)  # dropout off: deterministic
    torch.testing.assert_close(net[3].running_mean, before)  # batch-norm statistics untouched
    assert net.training and net[1].training and not net[0].training
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attribute(net, x, 0, "saliency")


def test_register_and_list_methods(linear, x):
    def const(model, inputs, target, *, value: float = 1.0):
        return torch.full(inputs.shape, value)

    register_method("test_const", const, kinds=("features",), description="constant scores (test)")
    try:
        row = next(r for r in list_methods() if r["name"] == "test_const")
        assert row == {"name": "test_const", "kinds": "features", "description": "constant scores (test)"}
        a = attribute(linear, x, 0, "test_const", value=2.0)
        assert a.method == "test_const" and bool((a.scores == 2.0).all()) and a.cost.forward == 0
        with pytest.raises(InputError, match="already registered"):
            register_method("test_const", const, kinds="features", description="again")
        assert {r["name"] for r in list_methods("tokens")} >= {"layer_integrated_gradients", "saliency"}
        assert "grad_cam" not in {r["name"] for r in list_methods("features")}
    finally:
        R._REGISTRY.pop("test_const", None)


def test_register_method_by_source_imports_on_first_use(linear, x):
    src = "xattr_nb.attribution.methods:input_x_gradient"
    register_method("test_lazy", src, kinds="features", description="lazy (test)")
    try:
        (spec,) = R._REGISTRY["test_lazy"]
        assert spec.fn is None and spec.source == src
        assert any(r["name"] == "test_lazy" for r in list_methods("features"))
        a = attribute(linear, x, 0, "test_lazy")
        torch.testing.assert_close(a.scores, attribute(linear, x, 0, "input_x_gradient").scores)
        assert R.lookup_method("test_lazy", "features").fn is M.input_x_gradient
        with pytest.raises(InputError, match=r"does not take \['nope'\]"):
            attribute(linear, x, 0, "test_lazy", nope=1)  # keywords checked against the imported function
    finally:
        R._REGISTRY.pop("test_lazy", None)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (3, "must be callable"),
        ("no_colon", "'package.module:function' string"),
        ("mod:", "'package.module:function' string"),
        (":attr", "'package.module:function' string"),
        ("a-b:c", "'package.module:function' string"),
    ],
)
def test_register_method_rejects_bad_fn(fn, message):
    with pytest.raises(InputError, match=message):
        register_method("test_bad", fn, kinds="features", description="bad (test)")
    assert "test_bad" not in R._REGISTRY


def test_paper_and_layer_methods_are_listed_without_importing_their_modules():
    names = {r["name"] for r in list_methods()}
    assert {
        "lima",
        "reagent",
        "comet",
        "rise",
        "layer_grad",
        "layer_grad_x_act",
        "layer_cam",
        "guided_backprop",
    } <= names
    assert {r["name"] for r in list_methods("tokens")} >= {"reagent", "layer_integrated_gradients"}
    for name, kinds, source, _ in R.PAPER_METHODS:
        assert R.lookup_method(name, kinds[0]).fn is not None, source


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_shape(linear):
    with pytest.raises(InputError, match=r"\[B, C, H, W\]"):
        attribute(linear, torch.randn(2, 3, 6), 0)


def test_bad_inputs_not_tensor(linear):
    with pytest.raises(InputError, match=r"torch.Tensor"):
        attribute(linear, [[0.0] * 6], 0)


def test_bad_inputs_nan(linear, x):
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        attribute(linear, x, 0, "saliency")


def test_bad_target_out_of_range(linear, x):
    with pytest.raises(InputError, match=r"\[0, 3\)"):
        attribute(linear, x, 3, "saliency")


def test_bad_target_length(linear, x):
    with pytest.raises(InputError, match="4"):
        attribute(linear, x, [0, 1], "saliency")


def test_bad_unknown_method_lists_known(linear, x):
    with pytest.raises(InputError, match=r"did you mean \['saliency'\].*integrated_gradients"):
        attribute(linear, x, 0, "salency")


def test_bad_method_for_kind(linear, x):
    with pytest.raises(InputError, match=r"grad_cam.*features"):
        attribute(linear, x, 0, "grad_cam")


def test_bad_layer_not_found(img):
    net = CamNet().eval()
    with pytest.raises(InputError, match=r"did you mean \['conv2'"):
        attribute(net, torch.randn(1, 3, 6, 6), 0, "grad_cam", layer="conv3")


def test_bad_layer_not_submodule():
    with pytest.raises(InputError, match="not a submodule"):
        attribute(CamNet().eval(), torch.randn(1, 3, 6, 6), 0, "grad_cam", layer=nn.Conv2d(4, 5, 3))


def test_bad_no_conv_for_grad_cam(pix_linear, img):
    with pytest.raises(InputError, match="no Conv2d"):
        attribute(pix_linear, img, 0, "grad_cam")


def test_bad_unknown_keyword(linear, x):
    with pytest.raises(InputError, match=r"does not take.*n_steps"):
        attribute(linear, x, 0, "saliency", n_steps=5)


def test_bad_baseline_shape(linear, x):
    with pytest.raises(InputError, match="baselines"):
        attribute(linear, x, 0, "integrated_gradients", baselines=torch.zeros(5))


def test_bad_quadrature(linear, x):
    with pytest.raises(InputError, match="quadrature"):
        attribute(linear, x, 0, "integrated_gradients", quadrature="simpson")


def test_bad_n_steps(linear, x):
    with pytest.raises(InputError, match="n_steps"):
        attribute(linear, x, 0, "integrated_gradients", n_steps=0)


def test_bad_model_output_not_logits(x):
    class Scalar(nn.Module):
        def forward(self, z):
            return z.sum(1)

    with pytest.raises(InputError, match=r"logits \[B, C\]"):
        attribute(Scalar().eval(), x, 0, "saliency")


def test_bad_model_not_module(x):
    with pytest.raises(InputError, match=r"nn.Module"):
        attribute(lambda z: z, x, 0)


def test_bad_window_too_large(pix_linear, img):
    with pytest.raises(InputError, match="larger than the input"):
        attribute(pix_linear, img, 0, "occlusion", window=6)


# ----------------------------------------------------------------------------- issue 10, items 6-9


def _tiny_cnn():
    from xattr_nb.models import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN(4, widths=(4, 8)).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, so conv and block outputs differ
        for block in model.blocks:
            block.norm.running_mean.uniform_(-0.5, 0.5)
            block.norm.running_var.uniform_(0.5, 2.0)
    return model


def test_grad_cam_default_layer_is_the_last_conv_blocks_output():
    model = _tiny_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert M.default_cam_layer(model) is model.last_conv
    a = attribute(model, x, 1, "grad_cam")
    assert a.meta["layer"] == "blocks.1"  # the ConvBlock: after its batch norm and ReLU
    by_hand = attribute(model, x, 1, "grad_cam", layer=model.last_conv)  # what the tour picks by hand
    torch.testing.assert_close(a.scores, by_hand.scores)
    raw_conv = attribute(model, x, 1, "grad_cam", layer=model.last_conv.conv)
    assert not torch.allclose(a.scores, raw_conv.scores)  # the old default: a different map


def test_default_cam_layer_rules_for_other_models():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            return torch.relu(self.norm(self.conv(x)))

    class Net(nn.Module):  # no `last_conv`: the parent block of the last conv is its output
        def __init__(self) -> None:
            super().__init__()
            self.body, self.fc = Block(), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    net = Net().eval()
    assert M.default_cam_layer(net) is net.body
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten())
    assert M.default_cam_layer(seq) is seq[2]  # conv -> norm -> ReLU in a Sequential: the ReLU
    assert M.default_cam_layer(CamNet()).__class__ is nn.Conv2d  # nothing follows conv2: the conv itself
    assert M.find_layer(seq, None, default=nn.BatchNorm2d) is seq[1]  # other default types: last of the type


def test_float64_inputs_into_float32_model_name_both_dtypes(linear, x):
    with pytest.raises(InputError, match=r"`inputs` is float64 but the model's parameters are float32"):
        attribute(linear, x.double(), 0, "saliency")
    model = _tiny_cnn()
    images = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    for method in ("integrated_gradients", "grad_cam", "occlusion"):
        with pytest.raises(InputError, match=r"`inputs` is float64 but the model's parameters are float32"):
            attribute(model, images, 0, method)
    assert x.dtype == torch.float32  # nothing was cast in place either


def test_meta_inputs_and_meta_model_rejected_up_front(linear):
    with pytest.raises(InputError, match=r"`inputs` is on the meta device"):
        attribute(linear, torch.empty(4, 6, device="meta"), 0, "saliency")
    with pytest.raises(InputError, match=r"model's parameters are on the meta device"):
        attribute(nn.Linear(6, 3, device="meta"), torch.randn(4, 6), 0, "saliency")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_inputs_on_another_device_name_both_devices(linear, x):
    with pytest.raises(InputError, match=r"`inputs` is on cuda:0 but the model's parameters are on cpu"):
        attribute(linear, x.cuda(), 0, "saliency")


class Named(nn.Module):
    """A linear classifier that names its classes, as HF classifiers do in config.id2label."""

    def __init__(self, inner: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.inner, self.id2label = inner, dict(enumerate(names))

    def forward(self, z):
        return self.inner(z)


def test_target_class_names_through_id2label(linear, x):
    named = Named(linear, ["circle", "square", "triangle"]).eval()
    by_name = attribute(named, x, "square", "saliency")
    torch.testing.assert_close(by_name.scores, attribute(linear, x, 1, "saliency").scores)
    assert by_name.target.tolist() == [1, 1, 1, 1]
    per = attribute(named, x, ["circle", "square", "triangle", "circle"], "saliency")
    assert per.target.tolist() == [0, 1, 2, 0]
    with pytest.raises(InputError, match=r"`target` 'cirlce' is not a class.*did you mean \['circle'\].*'triangle'"):
        attribute(named, x, "cirlce", "saliency")


def test_target_string_without_id2label_says_what_target_may_be(linear, x):
    with pytest.raises(InputError, match=r"'circle' is a class name.*no `config.id2label`.*an int, a list of ints"):
        attribute(linear, x, "circle", "saliency")
    with pytest.raises(InputError, match=r"`target` must be an int class index, a list of ints.*got float"):
        attribute(linear, x, 1.0, "saliency")


def test_cost_is_total_over_the_batch_as_documented(linear, x):
    from xattr_nb.runtime import Cost

    one = attribute(linear, x[:1], 0, "saliency").cost
    four = attribute(linear, x, 0, "saliency").cost
    assert (one.forward, one.backward) == (1, 1)
    assert (four.forward, four.backward) == (4, 4)  # rows through the model, summed over the batch
    ig = attribute(linear, x, 0, "integrated_gradients", n_steps=5).cost
    assert (ig.forward, ig.backward) == (4 * 5, 4 * 5)
    for doc in (Cost.__doc__, Attribution.__doc__, attribute.__doc__, M.__doc__):
        assert "totalled over the batch" in doc and "(per example)" not in doc


def test_target_class_names_refused_when_id2label_does_not_describe_the_head(linear, x):
    named = Named(linear, ["circle", "square"]).eval()  # 2 names, 3 logits
    with pytest.raises(InputError, match=r"cannot look up `target` 'square'.*returns 3 logits"):
        attribute(named, x, "square", "saliency")
