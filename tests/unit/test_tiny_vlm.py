"""TinyVLM: image-free modes do not read the image, padding and caching change nothing, greedy decoding
is deterministic and equals a cache-free loop (with and without a contrast), the loader refuses
another world, bad input names the argument, and the shipped checkpoint carries its planted prior."""

from __future__ import annotations

import json

import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.models import vlm as M
from xattr_nb.models import zoo
from xattr_nb.models.vlm_recipes import TRAIN
from xattr_nb.worlds import captions as W
from xattr_nb.worlds import vqa as V

QUESTIONS = ["what shape is this ?", "is there a red star ?", "describe the image .", "what color is the heart ?"]


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = M.tiny_vlm(vision_stem=TRAIN["vision_stem"])  # the shipped recipe's tower, so it saves as "tiny_vlm"
    with torch.no_grad():  # larger weights than GPT-2's init, so logits are far from ties
        for p in (*model.lm.parameters(), *model.projector.parameters()):
            p.normal_(0, 0.4)
    ids, mask = M.encode_questions(model.tokenizer, QUESTIONS)
    images = V.images(len(QUESTIONS), seed=1).images
    return model, ids, mask, images


def test_image_free_modes_do_not_read_the_image(small):
    model, ids, mask, images = small
    other = torch.rand_like(images)
    with torch.no_grad():
        assert not torch.allclose(
            model.logits(images, ids, attention_mask=mask), model.logits(other, ids, attention_mask=mask)
        )
        for mode in ("none", "unk", "noise"):
            a = model.logits(images, ids, mode, attention_mask=mask)
            assert torch.equal(a, model.logits(other, ids, mode, attention_mask=mask)), mode
            assert torch.equal(a, model.logits(None, ids, mode, attention_mask=mask)), mode
        # the three image-free inputs are different inputs
        none, unk = (
            model.logits(None, ids, "none", attention_mask=mask),
            model.logits(None, ids, "unk", attention_mask=mask),
        )
        assert not torch.allclose(none, unk)


def test_masked_prefix_is_exactly_mode_none(small):
    """Training's text-only rows (prefix_mask = 0) compute what mode "none" computes."""
    model, ids, mask, images = small
    with torch.no_grad():
        masked = model(images, ids, mask, prefix_mask=torch.zeros(len(ids)))[:, -1]
        assert torch.allclose(masked, model.logits(None, ids, "none", attention_mask=mask), atol=1e-5)
        seen = model(images, ids, mask, prefix_mask=torch.ones(len(ids)))[:, -1]
        assert torch.allclose(seen, model.logits(images, ids, attention_mask=mask), atol=1e-6)


def test_left_padding_does_not_change_a_row(small):
    model, ids, mask, images = small
    with torch.no_grad():
        batch = model.logits(images, ids, attention_mask=mask)
        for i, q in enumerate(QUESTIONS):
            alone = model.logits(images[i : i + 1], *M.encode_questions(model.tokenizer, [q])[:1])
            assert torch.allclose(alone[0], batch[i], atol=1e-5)


def test_answer_probs_are_the_renormalised_softmax(small):
    model, ids, mask, images = small
    tok = model.tokenizer
    with torch.no_grad():
        p = model.answer_probs(images, ids, ["yes", "no"], attention_mask=mask)
        full = model.logits(images, ids, attention_mask=mask).softmax(-1)
    yes, no = tok.convert_tokens_to_ids(["yes", "no"])
    want = torch.stack([full[:, yes], full[:, no]], 1)
    assert torch.allclose(p, want / want.sum(1, keepdim=True), atol=1e-6)
    assert torch.allclose(p.sum(1), torch.ones(len(ids)))
    assert M.answer_token_ids(tok, [" Yes", "NO"]) == [[yes], [no]]


def _greedy_loop(model, images, ids, mask, steps, contrast=None):
    """Reference decoder: no cache, the whole sequence recomputed each step."""
    out = []
    for _ in range(steps):
        with torch.no_grad():
            l = model.logits(images, ids, attention_mask=mask)
            if contrast is not None:
                cf = 0.5 * (
                    model.logits(None, ids, "none", attention_mask=mask)
                    + model.logits(None, ids, "unk", attention_mask=mask)
                )
                l = contrast(l, cf)
        nxt = l.argmax(-1, keepdim=True)
        out.append(nxt)
        ids, mask = torch.cat([ids, nxt], 1), torch.cat([mask, torch.ones_like(nxt)], 1)
    return torch.cat(out, 1)


def test_greedy_generation_is_deterministic_and_equals_the_loop(small):
    model, ids, mask, images = small
    g1 = model.generate(images, ids, temperature=0, max_new=5, attention_mask=mask, return_ids=True)
    g2 = model.generate(images, ids, temperature=0, max_new=5, attention_mask=mask, return_ids=True)
    assert torch.equal(g1, g2)
    ref = _greedy_loop(model, images, ids, mask, g1.shape[1])
    eos = model.tokenizer.eos_token_id
    for row, want in zip(g1.tolist(), ref.tolist(), strict=True):  # equal up to each row's [EOS]
        n = row.index(eos) + 1 if eos in row else len(row)
        assert row[:n] == want[:n]


def test_contrast_runs_its_own_cache_and_matches_the_loop(small):
    model, ids, mask, images = small

    def contrast(l, cf):
        return 2.0 * l - cf

    g = model.generate(images, ids, contrast, temperature=0, max_new=4, attention_mask=mask, return_ids=True)
    ref = _greedy_loop(model, images, ids, mask, g.shape[1], contrast)
    eos = model.tokenizer.eos_token_id
    for row, want in zip(g.tolist(), ref.tolist(), strict=True):
        n = row.index(eos) + 1 if eos in row else len(row)
        assert row[:n] == want[:n]
    # an identity contrast changes nothing
    plain = model.generate(images, ids, temperature=0, max_new=4, attention_mask=mask, return_ids=True)
    same = model.generate(images, ids, lambda l, cf: l, temperature=0, max_new=4, attention_mask=mask, return_ids=True)
    assert torch.equal(plain, same)


def test_sampling_is_reproducible_with_a_seed(small):
    model, ids, mask, images = small
    kw = dict(temperature=0.9, top_p=0.9, top_k=10, max_new=6, attention_mask=mask, seed=3)
    assert model.generate(images, ids, **kw) == model.generate(images, ids, **kw)
    texts = model.generate(images, ids, **kw)
    assert len(texts) == len(QUESTIONS) and all(isinstance(t, str) for t in texts)


def test_bad_input_names_the_argument(small):
    model, ids, mask, images = small
    with pytest.raises(InputError, match="mode"):
        model.logits(images, ids, "picture", attention_mask=mask)
    with pytest.raises(InputError, match="images"):
        model.logits(None, ids, "image", attention_mask=mask)
    with pytest.raises(InputError, match="images"):
        model.logits(images[:2], ids, attention_mask=mask)
    with pytest.raises(InputError, match="question_ids"):
        model.logits(images, ids.float(), attention_mask=mask)
    with pytest.raises(InputError, match="attention_mask"):
        model.logits(images, ids, attention_mask=mask[:, 1:])
    with pytest.raises(InputError, match="temperature"):
        model.generate(images, ids, temperature=-1.0, attention_mask=mask)
    with pytest.raises(InputError, match="max_new"):
        model.generate(images, ids, max_new=100, attention_mask=mask)
    with pytest.raises(InputError, match="contrast_inputs"):
        model.generate(images, ids, lambda l, cf: l, temperature=0, attention_mask=mask, contrast_inputs="image")
    with pytest.raises(InputError, match="questions"):
        M.encode_questions(model.tokenizer, ["what is a unicorn ?"])
    with pytest.raises(InputError, match="answers"):
        model.answer_probs(images, ids, ["maybe"], attention_mask=mask)


def test_loader_round_trip_and_world_version_refusal(small, tmp_path):
    model = small[0]
    metrics = {"world_version": W.world_version(), "qa_version": V.world_version()}
    zoo.save("tiny_vlm", model, metrics=metrics, root=tmp_path)
    loaded = M.load_tiny_vlm(root=tmp_path)
    ids, mask, images = small[1], small[2], small[3]
    with torch.no_grad():
        assert torch.equal(
            loaded.logits(images, ids, attention_mask=mask), model.logits(images, ids, attention_mask=mask)
        )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    for key in ("world_version", "qa_version"):
        bad = json.loads(json.dumps(manifest))
        bad["checkpoints"]["tiny_vlm"]["metrics"][key] = "0000000000000000"
        (tmp_path / "manifest.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=key):
            M.load_tiny_vlm(root=tmp_path)


def _shipped():
    if "tiny_vlm" not in {e.name for e in zoo.entries()}:
        pytest.fail("tiny_vlm is not in data/manifest.json: run `xattr-nb zoo train tiny_vlm`")
    return M.load_tiny_vlm(), {e.name: e for e in zoo.entries()}["tiny_vlm"]


def test_shipped_checkpoint_reads_colour_and_carries_the_prior():
    model, entry = _shipped()
    assert entry.metrics["world_version"] == W.world_version()
    ev = V.images(300, seed=434343)  # fresh, decorrelated
    tok = model.tokenizer
    qa = V.qa_set(ev, "color_named")
    ids, mask = M.encode_questions(tok, qa.questions)
    with torch.no_grad():
        img = model.answer_probs(qa.images, ids, list(W.COLORS), attention_mask=mask).argmax(1)
        none = model.answer_probs(None, ids, list(W.COLORS), "none", attention_mask=mask).argmax(1)
    assert float((img == qa.color_ids).float().mean()) >= 0.5  # reads the colour (chance 0.125)
    prior = torch.as_tensor([W.COLORS.index(W.PRIOR_COLOR[a["shape"]]) for a in qa.attrs])
    assert float((none == prior).float().mean()) >= 0.5  # without the image it answers the prior colour


def test_shipped_checkpoint_yes_ratio_on_balanced_pope():
    """The spec's load check: the planted prior shows as a yes-ratio in [0.6, 0.75] on balanced
    Tiny-POPE (fresh images, the training fraction of hard images), and image-free it is higher.
    A property of the shipped (training seed 0) checkpoint: seed 1 of the same recipe gives 0.55
    (see :mod:`xattr_nb.models.vlm_recipes`); a retrained checkpoint must be checked again."""
    model, entry = _shipped()
    k = entry.metrics["train"]
    ev = V.images(300, seed=454545, hard=k["hard"], visibility=k["visibility"])
    tok = model.tokenizer
    ratios, ratios_none = [], []
    for kind in V.NEGATIVE_KINDS:
        p = V.pope(ev, kind, seed=1)
        assert float(p.yes.float().mean()) == 0.5
        ids, mask = M.encode_questions(tok, p.questions)
        with torch.no_grad():
            ratios.append(
                float(
                    model.answer_probs(p.images, ids, ["yes", "no"], attention_mask=mask).argmax(1).eq(0).float().mean()
                )
            )
            none = model.answer_probs(None, ids, ["yes", "no"], "none", attention_mask=mask)
        ratios_none.append(float(none.argmax(1).eq(0).float().mean()))
    mean = sum(ratios) / len(ratios)
    assert 0.6 <= mean <= 0.75, ratios
    assert sum(ratios_none) / 3 > mean, (ratios, ratios_none)


def test_conv_stem_tower_rebuilds_from_its_config():
    from xattr_nb.models.architectures import build
    from xattr_nb.models.clip import ConvStem

    model = M.tiny_vlm(vision_stem="conv")
    assert model.arch_config["kwargs"]["vision_stem"] == "conv"
    assert "vision_stem" not in M.tiny_vlm().arch_config["kwargs"]  # old manifests still match
    rebuilt = build(model.arch_config)
    assert isinstance(rebuilt.vision.embeddings.patch_embedding, ConvStem)
    assert model.vision_features(torch.rand(2, 3, 32, 32)).shape == (2, 17, 64)
