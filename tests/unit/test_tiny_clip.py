"""TinyCLIP: features, prompt hooks, loader round-trip, world_version refusal, the shipped checkpoint."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from xattr_nb.checks import InputError
from xattr_nb.models import clip as C
from xattr_nb.models import zoo
from xattr_nb.worlds import captions as W


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return C.tiny_clip(), C.clip_tokenizer()


def _hf(out):
    return out.pooler_output if hasattr(out, "pooler_output") else out


def test_features_match_hf_without_prompts(small):
    model, tok = small
    x = torch.rand(3, 3, 32, 32)
    ids, mask = C.tokenize(tok, ["a photo of a circle", "a red star", "there is a striped heart in the top left"])
    assert ids[:, 0].eq(tok.convert_tokens_to_ids("[SOS]")).all()
    img, txt = C.encode_image(model, x), C.encode_text(model, ids, mask)
    assert img.shape == (3, 64) and txt.shape == (3, 64)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    ref_img = F.normalize(_hf(model.get_image_features(pixel_values=C._preprocess(model, x))), dim=-1)
    ref_txt = F.normalize(_hf(model.get_text_features(input_ids=ids, attention_mask=mask)), dim=-1)
    assert torch.allclose(img, ref_img, atol=1e-5)
    assert torch.allclose(txt, ref_txt, atol=1e-5)
    # padding does not change a caption's features
    alone = C.encode_text(model, *C.tokenize(tok, ["a red star"]))
    assert torch.allclose(alone[0], txt[1], atol=1e-5)
    assert torch.equal(C.encode_image(model, x, prompts={}), img)
    with pytest.raises(InputError, match="outside the vocabulary"):
        C.tokenize(tok, ["a photo of a unicorn"])


def test_prompt_hooks_change_features_and_get_gradients(small):
    model, tok = small
    x = torch.rand(2, 3, 32, 32)
    ids, mask = C.tokenize(tok, ["circle", "star"])
    d = 64
    vis = {i: torch.randn(4, d, requires_grad=True) for i in range(3)}
    txt = {i: torch.randn(4, d, requires_grad=True) for i in range(3)}
    f_img = C.encode_image(model, x, prompts=vis)
    f_txt = C.encode_text(model, ids, mask, prompts=txt)
    assert not torch.allclose(f_img, C.encode_image(model, x), atol=1e-4)
    assert not torch.allclose(f_txt, C.encode_text(model, ids, mask), atol=1e-4)
    (f_img.sum() + f_txt.sum()).backward()
    for p in (*vis.values(), *txt.values()):  # every depth's tokens reach the output
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    # k = 0 tokens are no prompt at all
    empty = {0: torch.zeros(0, d)}
    assert torch.allclose(C.encode_image(model, x, prompts=empty), C.encode_image(model, x), atol=1e-6)
    assert torch.allclose(C.encode_text(model, ids, mask, prompts=empty), C.encode_text(model, ids, mask), atol=1e-6)


def test_text_prompt_at_layer0_is_coop_context(small):
    """Inserting the word embeddings of "a photo of a" at layer 0 reproduces the caption "a photo of a circle"."""
    model, tok = small
    ctx_ids, _ = C.tokenize(tok, ["a photo of a"])
    ctx = model.text_model.embeddings.token_embedding(ctx_ids[0, 1:-1])  # the 4 words, no SOS/EOS
    got = C.encode_text(model, *C.tokenize(tok, ["circle"]), prompts={0: ctx})
    want = C.encode_text(model, *C.tokenize(tok, ["a photo of a circle"]))
    assert torch.allclose(got, want, atol=1e-5)


def test_deep_replacement_only_matters_where_values_differ(small):
    """Replacing the slots at layer 2 with what they already hold there changes nothing; other values do."""
    model, _ = small
    x = torch.rand(2, 3, 32, 32)
    p0 = torch.randn(3, 64)
    vm = model.vision_model
    h = vm.pre_layrnorm(torch.cat([vm.embeddings(C._preprocess(model, x)), p0.expand(2, -1, -1)], 1))
    for layer in vm.encoder.layers[:2]:
        h = layer(h, None)
    same = C.encode_image(model, x, prompts={0: p0, 2: h[:, -3:]})
    assert torch.allclose(same, C.encode_image(model, x, prompts={0: p0}), atol=1e-5)
    other = C.encode_image(model, x, prompts={0: p0, 2: torch.randn(3, 64)})
    assert not torch.allclose(other, same, atol=1e-4)


def test_prompt_checks(small):
    model, _ = small
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(InputError, match="layer"):
        C.encode_image(model, x, prompts={7: torch.zeros(2, 64)})
    with pytest.raises(InputError, match="same number"):
        C.encode_image(model, x, prompts={0: torch.zeros(2, 64), 1: torch.zeros(3, 64)})
    with pytest.raises(InputError, match=r"\[k, 64\]"):
        C.encode_image(model, x, prompts={0: torch.zeros(2, 32)})
    with pytest.raises(InputError, match="EOS"):
        C.encode_text(model, torch.tensor([[2, 6, 7]]))


def test_clip_loss_prefers_matched_pairs():
    torch.manual_seed(0)
    a = F.normalize(torch.randn(8, 16), dim=-1)
    matched = C.clip_loss(a, a, torch.tensor(2.0))
    shuffled = C.clip_loss(a, a[torch.randperm(8)], torch.tensor(2.0))
    assert float(matched) < float(shuffled)


def test_save_pretrained_round_trip_through_full_loader(small, tmp_path):
    model, tok = small
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = C.load_clip("full", full=tmp_path)
    x = torch.rand(2, 3, 32, 32)
    ids, mask = C.tokenize(loaded.tokenizer, ["a photo of a star"])
    assert torch.equal(ids, C.tokenize(tok, ["a photo of a star"])[0])
    assert torch.allclose(C.encode_image(loaded.model, x), C.encode_image(model, x), atol=1e-6)
    assert torch.allclose(C.encode_text(loaded.model, ids, mask), C.encode_text(model, ids, mask), atol=1e-6)


def _shipped():
    names = {e.name for e in zoo.entries()}
    if "tiny_clip" not in names:
        pytest.fail("tiny_clip is not in data/manifest.json: run `xattr-nb zoo train tiny_clip`")
    return C.load_clip()


def test_world_version_refusal(tmp_path):
    _shipped()
    root = zoo.default_root()
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(root / "checkpoints" / "tiny_clip.safetensors", tmp_path / "checkpoints")
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["checkpoints"]["tiny_clip"]
    (tmp_path / "manifest.json").write_text(json.dumps({"checkpoints": {"tiny_clip": entry}}))
    assert isinstance(C.load_clip(root=tmp_path).model, torch.nn.Module)
    entry["metrics"]["world_version"] = "0000000000000000"
    (tmp_path / "manifest.json").write_text(json.dumps({"checkpoints": {"tiny_clip": entry}}))
    with pytest.raises(InputError, match="world_version"):
        C.load_clip(root=tmp_path)


def test_shipped_checkpoint_reads_shape_and_colour_zero_shot():
    model, tok = _shipped()
    entry = {e.name: e for e in zoo.entries()}["tiny_clip"]
    assert entry.metrics["world_version"] == W.world_version()
    data = W.labelled(W.SHAPES, 320, seed=424242)  # a fresh draw, never trained on
    acc = float(
        (C.zeroshot_logits(model, data.images, C.zeroshot_weights(model, tok, W.SHAPES)).argmax(1) == data.labels)
        .float()
        .mean()
    )
    assert acc >= 0.75, f"16-way zero-shot shape accuracy {acc:.3f} (the manifest says about 0.86)"
    # colour is read zero-shot on the held-out (shape, colour) pairs (8-way; a composite never seen in training)
    held = W.holdout_set(10, seed=424243)
    pairs = [(s, c) for c in W.COLORS for s in W.SHAPES]
    wp = C.zeroshot_weights(model, tok, [f"{c} {s}" for s, c in pairs], ("an image showing a {x}",), slot="x")
    pred = C.zeroshot_logits(model, held.images, wp).argmax(1) // len(W.SHAPES)
    colour = float((pred == held.color_ids).float().mean())
    assert colour >= 0.85, f"8-way colour on held-out pairs {colour:.3f} (the manifest says about 0.96)"


def test_conv_stem_keeps_the_patch_grid_and_round_trips_through_the_zoo(tmp_path):
    torch.manual_seed(0)
    model = C.tiny_clip(stem="conv")
    stem = model.vision_model.embeddings.patch_embedding
    assert isinstance(stem, C.ConvStem)
    x = torch.rand(2, 3, 32, 32)
    assert stem(C._preprocess(model, x)).shape == (2, 64, 4, 4)  # the 8×8-patch grid, 16 tokens + CLS
    assert stem.weight is stem[-1].weight
    feats = C.encode_image(model, x)
    ref = F.normalize(_hf(model.get_image_features(pixel_values=C._preprocess(model, x))), dim=-1)
    assert torch.allclose(feats, ref, atol=1e-5)  # prompt-free features are still CLIPModel's own
    entry = zoo.save(
        "clip_conv", model, config={"arch": "tiny_clip", "kwargs": {"stem": "conv"}}, metrics={}, root=tmp_path
    )
    loaded = zoo.load("clip_conv", root=tmp_path)
    assert isinstance(loaded.vision_model.embeddings.patch_embedding, C.ConvStem)
    assert torch.allclose(C.encode_image(loaded, x), feats, atol=1e-6)  # batch-norm statistics travel too
    assert entry.sha256


def test_stem_checks():
    with pytest.raises(InputError, match="stem"):
        C.tiny_clip(stem="resnet")
    with pytest.raises(InputError, match="patch"):
        C.ConvStem(64, 6)
    with pytest.raises(InputError, match="norm"):
        C.ConvStem(64, 8, norm="layer")
    x = torch.rand(2, 3, 32, 32)
    for norm in ("group", "none"):  # per-sample or no normalisation: no batch statistics
        stem = C.ConvStem(64, 8, norm=norm).train()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in stem.modules())
        assert torch.allclose(stem(x)[:1], stem(x[:1]), atol=1e-5)  # an image's tokens do not depend on the batch


def test_shipped_conv_stem_checkpoint_reads_shapes():
    if "tiny_clip_conv" not in {e.name for e in zoo.entries()}:
        pytest.fail("tiny_clip_conv is not in data/manifest.json: run `xattr-nb zoo train tiny_clip_conv`")
    model, tok = C.load_clip(small="tiny_clip_conv")
    assert isinstance(model.vision_model.embeddings.patch_embedding, C.ConvStem)
    data = W.labelled(W.SHAPES, 320, seed=424244)  # a fresh draw, never trained on
    logits = C.zeroshot_logits(model, data.images, C.zeroshot_weights(model, tok, W.SHAPES))
    acc = float((logits.argmax(1) == data.labels).float().mean())
    assert acc >= 0.75, f"16-way zero-shot shape accuracy {acc:.3f} (the manifest says about 0.87)"


def test_hybrid_stem_sums_its_paths_and_hides_colour_from_the_conv_path_in_training(tmp_path):
    torch.manual_seed(0)
    stem = C.HybridStem(64, 8)
    x = torch.rand(4, 3, 32, 32)
    stem.eval()
    assert torch.allclose(stem(x), stem.conv(x) + stem.linear(x))
    assert stem.weight is stem.linear.weight
    stem.train()
    stem.conv.eval()  # running statistics: the conv path is a fixed function of its input
    grey = x[:, :1].expand(-1, 3, -1, -1).contiguous()
    assert torch.allclose(stem(grey), stem.conv(grey) + stem.linear(grey), atol=1e-6)  # channel order is moot
    conv_part = stem(x) - stem.linear(x)
    orders = [stem.conv(x[:, list(p)]) for p in itertools.permutations(range(3))]
    for i in range(len(x)):  # each image's conv path saw one ordering of its colour channels
        assert any(torch.allclose(conv_part[i], o[i], atol=1e-5) for o in orders)
    assert not torch.allclose(conv_part, stem.conv(x), atol=1e-5)  # and not always the identity
    model = C.tiny_clip(stem="hybrid")
    zoo.save(
        "clip_hybrid", model, config={"arch": "tiny_clip", "kwargs": {"stem": "hybrid"}}, metrics={}, root=tmp_path
    )
    loaded = zoo.load("clip_hybrid", root=tmp_path)
    assert isinstance(loaded.vision_model.embeddings.patch_embedding, C.HybridStem)
    assert torch.allclose(C.encode_image(loaded, x), C.encode_image(model, x), atol=1e-6)


def test_training_batches_are_halves_pure_in_one_attribute():
    from xattr_nb.models.clip_recipes import _batches

    ids = torch.arange(40) % 4
    batches = _batches(ids, 10, 2, torch.Generator().manual_seed(0))
    assert batches and all(len(b) == 10 for b in batches)
    for b in batches:
        assert len(set(ids[b[:5]].tolist())) == 1 and len(set(ids[b[5:]].tolist())) == 1
    flat = torch.cat(batches)
    assert len(flat.unique()) == len(flat)  # no image twice in an epoch
