from __future__ import annotations

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.models.vision import ARCHITECTURES, TinyCNN, TinyViT, build, register_architecture


@pytest.fixture
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _capture(module):
    seen = {}
    handle = module.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
    return seen, handle


# ---- TinyCNN -------------------------------------------------------------------------------------


def test_cnn_features_are_gap_of_last_conv_and_head_reads_them(images):
    torch.manual_seed(0)
    model = TinyCNN(5).eval()
    seen, h = _capture(model.last_conv)
    logits = model(images)
    h.remove()
    assert logits.shape == (3, 5)
    assert seen["out"].shape == (3, 64, 8, 8)  # two 2x2 pools between three blocks
    gap = seen["out"].mean(dim=(2, 3))
    torch.testing.assert_close(model.features(images), gap)
    torch.testing.assert_close(logits, gap @ model.head.weight.T + model.head.bias)
    assert model.last_conv is model.blocks[-1]


def test_cnn_taps_see_input_middle_final(images):
    model = TinyCNN(4, widths=(8, 16, 32, 48)).eval()
    caps = {k: _capture(m) for k, m in model.taps.items()}
    model(images)
    for _, h in caps.values():
        h.remove()
    assert torch.equal(caps["input"][0]["out"], images)
    assert caps["middle"][0]["out"].shape == (3, 16, 16, 16)  # after block 1 of 4
    assert caps["final"][0]["out"].shape == (3, 48, 4, 4)


def test_cnn_weights_stored_once(images):
    keys = TinyCNN(3).state_dict().keys()
    assert not any(k.startswith("last_conv") for k in keys)


def test_cnn_rejects_3d_input():
    with pytest.raises(InputError, match=r"4-D"):
        TinyCNN(3)(torch.rand(3, 32, 32))


def test_cnn_rejects_wrong_channels():
    with pytest.raises(InputError, match="3 channel"):
        TinyCNN(3)(torch.rand(2, 1, 32, 32))


def test_cnn_rejects_integer_images():
    with pytest.raises(InputError, match="floating-point"):
        TinyCNN(3)(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_cnn_rejects_too_small_images():
    with pytest.raises(InputError, match="at least 4"):
        TinyCNN(3)(torch.rand(2, 3, 3, 3))


def test_cnn_rejects_one_class():
    with pytest.raises(InputError, match="n_classes"):
        TinyCNN(1)


def test_cnn_rejects_empty_widths():
    with pytest.raises(InputError, match="widths"):
        TinyCNN(3, widths=())


def test_cnn_rejects_nonpositive_width():
    with pytest.raises(InputError, match=r"widths\[1\]"):
        TinyCNN(3, widths=(8, 0))


# ---- TinyViT -------------------------------------------------------------------------------------


def test_vit_attention_maps_are_row_stochastic(images):
    torch.manual_seed(0)
    model = TinyViT(4, image_size=32, patch=8, dim=32, depth=3, heads=4).eval()
    logits = model(images, keep_attn=True)
    assert logits.shape == (3, 4)
    maps = model.attn_maps
    assert len(maps) == 3
    assert all(m.shape == (3, 4, 17, 17) for m in maps)  # 1 CLS + (32/8)^2 patches
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(3, 4, 17))
    assert model.keep_attn is False  # the per-call flag does not stick


def test_vit_probs_hook_sees_the_kept_attention(images):
    model = TinyViT(3).eval()
    model.keep_attn = True
    seen, h = _capture(model.blocks[1].attn.probs)
    model(images)
    h.remove()
    assert torch.equal(seen["out"], model.blocks[1].attn.last_attn)


def test_vit_patching_attention_changes_output(images):
    """Attention really flows through `probs`: forcing uniform attention changes the logits."""
    torch.manual_seed(0)
    model = TinyViT(3, dim=32).eval()
    base = model(images)
    h = model.blocks[0].attn.probs.register_forward_hook(lambda m, i, o: torch.full_like(o, 1.0 / o.shape[-1]))
    patched = model(images)
    h.remove()
    assert not torch.allclose(base, patched)
    torch.testing.assert_close(model(images), base)


def test_vit_features_are_the_normalised_cls_token(images):
    model = TinyViT(3).eval()
    seen, h = _capture(model.taps["final"])
    feats = model.features(images)
    h.remove()
    torch.testing.assert_close(feats, model.norm(seen["out"][:, 0]))


def test_vit_attn_maps_without_keep_attn_raises(images):
    model = TinyViT(3)
    model(images)
    with pytest.raises(InputError, match="keep_attn"):
        _ = model.attn_maps


def test_vit_rejects_wrong_image_size():
    with pytest.raises(InputError, match="32×32"):
        TinyViT(3)(torch.rand(2, 3, 28, 28))


def test_vit_rejects_wrong_channels():
    with pytest.raises(InputError, match="channel"):
        TinyViT(3)(torch.rand(2, 1, 32, 32))


def test_vit_rejects_patch_not_dividing_image():
    with pytest.raises(InputError, match="multiple of `patch`"):
        TinyViT(3, image_size=30, patch=4)


def test_vit_rejects_dim_not_divisible_by_heads():
    with pytest.raises(InputError, match="multiple of `heads`"):
        TinyViT(3, dim=30, heads=4)


def test_vit_rejects_one_class():
    with pytest.raises(InputError, match="n_classes"):
        TinyViT(1)


def test_vit_rejects_non_bool_keep_attn():
    with pytest.raises(InputError, match="keep_attn"):
        TinyViT(3).keep_attn = 1


# ---- build / registry ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", [TinyCNN(3, in_ch=1, widths=(4, 8)), TinyViT(5, image_size=16, patch=4, dim=16)])
def test_build_rebuilds_the_same_architecture(model):
    rebuilt = build(model.arch_config)
    assert type(rebuilt) is type(model)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_registry_holds_vision_and_text_builders():
    build({"arch": "TinyCNN", "kwargs": {"n_classes": 2}})  # triggers the text registrations too
    assert {"TinyCNN", "TinyViT", "tiny_gpt2", "hf", "EncoderClassifier"} <= set(ARCHITECTURES)


def test_build_rejects_unknown_arch():
    with pytest.raises(InputError, match=r"known: .*TinyCNN"):
        build({"arch": "ResNet9000", "kwargs": {}})


def test_build_rejects_wrong_kwargs():
    with pytest.raises(InputError, match="do not fit"):
        build({"arch": "TinyCNN", "kwargs": {"n_classes": 3, "colour": "red"}})


def test_build_rejects_non_dict():
    with pytest.raises(InputError, match="must be a dict"):
        build("TinyCNN")


def test_build_rejects_extra_keys():
    with pytest.raises(InputError, match="keys"):
        build({"arch": "TinyCNN", "kwargs": {"n_classes": 3}, "weights": "x"})


def test_register_architecture_rejects_non_callable():
    with pytest.raises(InputError, match="callable"):
        register_architecture("broken", 3)


# ---- dtype / device of the images (issue 10, item 6) ----------------------------------------------


@pytest.mark.parametrize("model", [TinyCNN(3), TinyViT(3)], ids=["cnn", "vit"])
def test_float64_images_name_both_dtypes(model, images):
    with pytest.raises(InputError, match=r"`x` is float64 but the model's parameters are float32"):
        model(images.double())
    assert model.double()(images.double()).dtype == torch.float64  # matching dtypes are fine
    model.float()


@pytest.mark.parametrize("model", [TinyCNN(3), TinyViT(3)], ids=["cnn", "vit"])
def test_meta_images_are_refused(model):
    with pytest.raises(InputError, match=r"`x` is on the meta device"):
        model(torch.empty(2, 3, 32, 32, device="meta"))
