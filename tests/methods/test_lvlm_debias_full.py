"""Paper 22 at scale="full": the LLaVA adapter, load_vlm("full") and load_pope on a tiny local
stand-in (a LlavaForConditionalGeneration of a few thousand weights, its processor and a word-level
tokenizer, all written here with save_pretrained; POPE files and PNG images written by the test)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tokenizers import pre_tokenizers
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from xattr_nb.checks import InputError
from xattr_nb.methods import lvlm_debias as M
from xattr_nb.models.llava import LLAVA_V1_PROMPT, LlavaVLM, load_llava
from xattr_nb.models.text import word_tokenizer

QUESTIONS = ["Is there a cat in the image ?", "Is there a dog in the image ?", "Is there a red car ?"]
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<mask>", "<image>"]


def _words() -> list[str]:
    text = " ".join([LLAVA_V1_PROMPT.format(image="", question=""), *QUESTIONS, "Yes yes No no"])
    return list(dict.fromkeys(w for w, _ in pre_tokenizers.Whitespace().pre_tokenize_str(text)))


def _processor(tok, *, patch_size=4):
    ip = CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    return LlavaProcessor(
        image_processor=ip,
        tokenizer=tok,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def tiny_llava(folder):
    """Write a LLaVA stand-in to ``folder``: CLIP tower 16 px / patch 4 (16 image tokens), 2-layer Llama,
    word vocabulary."""
    tok = word_tokenizer(_words(), specials=SPECIALS)
    vision = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=16, patch_size=4
    )
    text = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    _processor(tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return tiny_llava(tmp_path_factory.mktemp("tiny_llava"))


def _pope(tmp_path, name="coco_pope_adversarial.json", n_images=3):
    rng = np.random.default_rng(0)
    images = tmp_path / "val2014"
    images.mkdir(exist_ok=True)
    for i in range(n_images):  # different sizes: read_image resizes and crops
        arr = rng.integers(0, 256, size=(20 + 4 * i, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(images / f"COCO_val2014_{i:012d}.png")
    rows = [
        (0, QUESTIONS[0], "yes"),
        (1, QUESTIONS[0], "no"),  # same text, another image
        (2, QUESTIONS[0], "no"),
        (0, QUESTIONS[1], "no"),
        (1, QUESTIONS[2], "yes"),
        (2, QUESTIONS[1], "yes"),
    ]
    qfile = tmp_path / name
    qfile.write_text(
        "\n".join(
            json.dumps({"question_id": k, "image": f"COCO_val2014_{i:012d}.png", "text": q, "label": a})
            for k, (i, q, a) in enumerate(rows)
        )
        + "\n"
    )
    return qfile, images


def test_load_pope_reads_questions_and_images(tmp_path):
    qfile, folder = _pope(tmp_path)
    qa = M.load_pope(qfile, folder, size=16)
    assert qa.questions[0] == QUESTIONS[0] and qa.answers == ["yes", "no", "no", "no", "yes", "yes"]
    assert qa.kinds == ["positive", "adversarial", "adversarial", "adversarial", "positive", "positive"]
    assert qa.image_index.tolist() == [0, 1, 2, 0, 1, 2]
    assert qa.images.shape == (6, 3, 16, 16) and float(qa.images.min()) >= 0 and float(qa.images.max()) <= 1
    assert torch.equal(qa.images[0], qa.images[3]) and not torch.equal(qa.images[0], qa.images[1])
    assert len(M.load_pope(qfile, folder, size=16, limit=2)) == 2


def test_load_pope_bad_input_names_the_argument(tmp_path):
    qfile, folder = _pope(tmp_path)
    with pytest.raises(InputError, match="questions_file"):
        M.load_pope(tmp_path / "missing.json", folder)
    with pytest.raises(InputError, match="image_folder"):
        M.load_pope(qfile, tmp_path / "nowhere")
    (folder / "COCO_val2014_000000000002.png").unlink()
    with pytest.raises(InputError, match="image_folder"):
        M.load_pope(qfile, folder)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"image": "x.png", "text": "Is there a cat ?", "label": "maybe"}) + "\n")
    with pytest.raises(InputError, match="questions_file"):
        M.load_pope(bad, folder)


def test_full_scale_closed_scores_and_decide(llava_dir, tmp_path):
    model = M.load_vlm("full", full=llava_dir)
    assert isinstance(model, LlavaVLM) and isinstance(model, M.ClosedVLM)
    qa = M.load_pope(*_pope(tmp_path), size=16)
    S = M.closed_scores(model, qa, ("yes", "no"), batch_size=4)  # two closed_scores batches, adapter batches of 8
    tok = model.tokenizer
    # the answer map is case-insensitive: "yes" collects both "Yes" and "yes"
    assert sorted(S["answer_groups"][0].tolist()) == sorted(tok.convert_tokens_to_ids(["Yes", "yes"]))
    for key in ("p", "p_none", "p_unk", "p_noise", "p_cf", "p_vcd", "p_rand"):
        assert S[key].shape == (6, 2)
        assert torch.allclose(S[key].sum(1), torch.ones(6, dtype=S[key].dtype), atol=1e-6), key
    pc = S["p_none"] + S["p_unk"]
    assert torch.allclose(S["p_cf"], pc / pc.sum(1, keepdim=True))
    # rows 0, 1, 2 ask the same question about three different images
    for mode in ("none", "unk", "noise"):
        assert torch.equal(S["l_" + mode][0], S["l_" + mode][1]) and torch.equal(S["l_" + mode][0], S["l_" + mode][2])
    assert M.image_free_spread(S, qa.questions, ("none", "unk", "noise")) == 0.0
    assert float((S["l"][0] - S["l"][1]).abs().max()) > 1e-3  # the image mode reads the image
    assert float((S["l_none"][0] - S["l_unk"][0]).abs().max()) > 1e-3  # <unk> in place of the image is another input
    P = M.decide(S)
    assert set(P) == set(M.ARMS) and all(v.shape == (6,) and set(v.tolist()) <= {0, 1} for v in P.values())
    # post-hoc calibration with its own counterfactual is uniform (the paper's criterion)
    q = M.affine_calibrate(S["p_cf"], S["p_cf"])
    assert float((q - 0.5).abs().max()) < 1e-6


def test_modes_match_a_manual_forward(llava_dir):
    """Known answers: each mode equals a plain forward of the HF model on the prompt the paper's
    code builds, and left padding in a batch changes nothing."""
    vlm = load_llava(llava_dir)
    m, proc, tok = vlm.model, vlm.processor, vlm.tokenizer
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    qs = [QUESTIONS[2], QUESTIONS[0]]  # different lengths: the first is left-padded in a batch
    prompts = vlm.encode(qs)
    with torch.no_grad():
        for j, q in enumerate(qs):
            text_none = LLAVA_V1_PROMPT.format(image="", question=q)
            want_none = m(input_ids=torch.as_tensor([tok(text_none)["input_ids"]])).logits[0, -1]
            ids = tok(LLAVA_V1_PROMPT.format(image="<image>\n", question=q))["input_ids"]
            unk = [tok.unk_token_id if i == vlm.image_token_id else i for i in ids]
            want_unk = m(input_ids=torch.as_tensor([unk])).logits[0, -1]
            enc = proc(
                images=[img[j]], text=[LLAVA_V1_PROMPT.format(image="<image>\n", question=q)], return_tensors="pt",
                do_rescale=False,
            )  # fmt: skip
            want_img = m(**enc).logits[0, -1]
            assert torch.allclose(vlm.next_logits(None, prompts, "none")[j], want_none, atol=1e-5)
            assert torch.allclose(vlm.next_logits(None, prompts, "unk")[j], want_unk, atol=1e-5)
            assert torch.allclose(vlm.next_logits(img, prompts, "image")[j], want_img, atol=1e-5)
    noise = vlm.next_logits(None, prompts, "noise")
    assert not torch.allclose(noise, vlm.next_logits(None, prompts, "none"), atol=1e-3)
    with pytest.raises(InputError, match="images"):
        vlm.next_logits(img[:1], prompts, "image")
    with pytest.raises(InputError, match="answers"):
        vlm.answer_token_ids(["maybe"])


def test_missing_or_mismatched_model_raises(llava_dir, tmp_path):
    with pytest.raises(InputError, match="full"):
        M.load_vlm("full", full=tmp_path / "no_such_folder")
    with pytest.raises(InputError, match="name_or_path"):
        load_llava(tmp_path / "no_such_folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="name_or_path"):
        load_llava(empty)
    # the model with a processor whose tokenizer has no <image> token
    no_image = tmp_path / "no_image"
    shutil.copytree(llava_dir, no_image)
    for f in no_image.glob("*token*"):
        f.unlink()
    _processor(word_tokenizer(_words(), specials=SPECIALS[:5])).save_pretrained(no_image)
    with pytest.raises(InputError, match=r"name_or_path.*image token"):
        load_llava(no_image)
    # a processor that writes 4 image tokens per image for a tower that makes 16 features
    wrong_patch = tmp_path / "wrong_patch"
    shutil.copytree(llava_dir, wrong_patch)
    _processor(word_tokenizer(_words(), specials=SPECIALS), patch_size=8).save_pretrained(wrong_patch)
    with pytest.raises(InputError, match=r"name_or_path.*image tokens per image"):
        load_llava(wrong_patch)
    with pytest.raises(InputError, match="scale"):
        M.load_vlm("huge")


def test_generate_plain_and_debias_decoding(llava_dir):
    """Known answers for open-ended decoding: greedy = argmax of the image logits; with VDD the first
    token is the argmax of the contrasted logits, and the contrast branch's cached second step equals
    a fresh forward of the image-free prompts followed by the first token."""
    vlm = load_llava(llava_dir)
    img = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    qs = [QUESTIONS[2], QUESTIONS[0]]
    prompts = vlm.encode(qs)
    l_img = vlm.next_logits(img, prompts, "image")
    l_cf = (vlm.next_logits(None, prompts, "none") + vlm.next_logits(None, prompts, "unk")) / 2
    plain = vlm.generate(img, qs, max_new=3, return_ids=True)
    assert [r[0] for r in plain] == l_img.argmax(1).tolist()
    seen = []

    def vdd(logits, cf):
        seen.append(cf.clone())
        return M.contrastive_logits(logits, cf, alpha=1.0, beta=0.0)

    out = vlm.generate(img, qs, contrast=vdd, max_new=2, return_ids=True)
    first = M.contrastive_logits(l_img, l_cf, alpha=1.0, beta=0.0).argmax(1)
    assert [r[0] for r in out] == first.tolist() and torch.allclose(seen[0], l_cf, atol=1e-5)
    # the contrast's output is what gets decoded: a contrast that returns −cf_logits picks argmin cf_logits
    anti = vlm.generate(img, qs, contrast=lambda l, c: -c, max_new=1, return_ids=True)
    assert [r[0] for r in anti] == l_cf.argmin(1).tolist() != l_img.argmax(1).tolist()
    tok = vlm.tokenizer
    with torch.no_grad():
        for j, q in enumerate(qs):
            none = tok(LLAVA_V1_PROMPT.format(image="", question=q))["input_ids"]
            unk = tok(LLAVA_V1_PROMPT.format(image="<image>\n", question=q))["input_ids"]
            unk = [tok.unk_token_id if i == vlm.image_token_id else i for i in unk]
            fresh = [vlm.model(input_ids=torch.as_tensor([[*ids, int(first[j])]])).logits[0, -1] for ids in (none, unk)]
            assert torch.allclose(seen[1][j], (fresh[0] + fresh[1]) / 2, atol=1e-5)
    # alpha = 0, beta = 0 is plain decoding; sampling is reproducible with a seed
    same = vlm.generate(img, qs, contrast=lambda l, c: M.contrastive_logits(l, c, 0.0, 0.0), max_new=3, return_ids=True)
    assert same == plain
    a = vlm.generate(img, qs, temperature=1.0, seed=3, max_new=4)
    assert a == vlm.generate(img, qs, temperature=1.0, seed=3, max_new=4) and all(isinstance(t, str) for t in a)
    vcd = vlm.generate(img, qs, contrast=vdd, contrast_inputs=M.noised_images(img, seed=0), max_new=2)
    assert len(vcd) == 2
    with pytest.raises(InputError, match="contrast_inputs"):
        vlm.generate(img, qs, contrast=vdd, contrast_inputs=["image"])


def test_read_image_resizes_and_centre_crops(tmp_path):
    from xattr_nb.worlds.folders import read_image

    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:, :10] = 255  # a white band on the left quarter: cropped away by the centre crop
    arr[:, 10:30] = (0, 128, 255)
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png", 10)  # 20 x 40 -> 10 x 20 -> centre 10 x 10 (columns 5..14 = source 10..29)
    assert x.shape == (3, 10, 10)
    assert torch.allclose(x[:, :, 1:-1], torch.tensor([0.0, 128 / 255, 1.0]).view(3, 1, 1).expand(3, 10, 8), atol=2e-2)


def test_pope_sets_fill_the_template_or_read_a_dict(tmp_path):
    for kind in ("adversarial", "random"):
        _pope(tmp_path, name=f"coco_pope_{kind}.json")
    sets = M.pope_sets(tmp_path / "coco_pope_{kind}.json", tmp_path / "val2014", size=16, limit=4)
    assert list(sets) == ["adversarial", "random"] and all(len(q) == 4 for q in sets.values())
    assert sets["adversarial"].kinds[1] == "adversarial" and sets["random"].kinds[1] == "random"
    one = M.pope_sets({"random": tmp_path / "coco_pope_random.json"}, tmp_path / "val2014", kinds=["random"], size=16)
    assert list(one) == ["random"] and one["random"].answers == [*sets["random"].answers, "yes", "yes"]
    with pytest.raises(InputError, match="questions"):
        M.pope_sets(tmp_path / "coco_pope_random.json", tmp_path / "val2014")  # no {kind}
    with pytest.raises(InputError, match="questions"):
        M.pope_sets({"random": tmp_path / "coco_pope_random.json"}, tmp_path / "val2014")  # no adversarial file
    with pytest.raises(InputError, match="kinds"):
        M.pope_sets(tmp_path / "coco_pope_{kind}.json", tmp_path / "val2014", kinds=["hard"])


def test_sampled_answers_map_the_first_token_with_the_models_answer_ids(llava_dir, tmp_path):
    """Known answer: greedy decoding's first token is the argmax of the image logits; sampled_answers
    returns the index of the answer word whose token ids (the adapter's, not convert_tokens_to_ids)
    hold it, and −1 for a token that is no answer."""
    vlm = load_llava(llava_dir)
    qa = M.load_pope(*_pope(tmp_path), size=16)
    first = vlm.next_logits(qa.images, vlm.encode(qa.questions), "image").argmax(1)
    words = list(dict.fromkeys(vlm.tokenizer.decode([int(i)]).strip() for i in first))
    got = M.sampled_answers(vlm, qa, words, temperature=0.0)
    assert got.tolist() == [words.index(vlm.tokenizer.decode([int(i)]).strip()) for i in first]
    others = [w for w in ("Yes", "No", "cat", "dog", "red") if w not in words]
    assert M.sampled_answers(vlm, qa, others[:2], temperature=0.0).tolist() == [-1] * len(qa)
    # top_k = 1 is greedy at any temperature
    assert torch.equal(M.sampled_answers(vlm, qa, words, temperature=1.0, top_k=1, seed=5), got)
    with pytest.raises(InputError, match="qa"):
        M.sampled_answers(vlm, qa.questions, words)


def test_sampled_answers_on_the_tiny_vlm_equal_the_notebooks_former_path():
    """scale='cpu' unchanged: the TinyVLM's first sampled token compared with convert_tokens_to_ids (the
    notebook's code before sampled_answers) gives the same hits."""
    from xattr_nb.models.vlm import encode_questions, load_tiny_vlm
    from xattr_nb.worlds import vqa

    model = load_tiny_vlm()
    qa = vqa.pope(vqa.images(24, seed=3, spurious_color=0.0, hard=0.3), "adversarial", seed=3)
    ids, mask = encode_questions(model.tokenizer, qa.questions)
    out = model.generate(qa.images, ids, attention_mask=mask, temperature=1.0, max_new=1, seed=4, return_ids=True)
    want = torch.as_tensor([model.tokenizer.convert_tokens_to_ids(a) for a in qa.answers])
    truth = torch.as_tensor([0 if a == "yes" else 1 for a in qa.answers])
    pred = M.sampled_answers(model, qa, ("yes", "no"), temperature=1.0, seed=4)
    assert torch.equal(pred == truth, out[:, 0] == want)
    cap_ids, cap_mask = encode_questions(model.tokenizer, ["describe the image ."] * 4)
    caps = M.generate_answers(model, qa.images[:4], ["describe the image ."] * 4, temperature=0.0)
    assert caps == model.generate(qa.images[:4], cap_ids, attention_mask=cap_mask, temperature=0.0)


@pytest.mark.slow
def test_notebook_runs_at_full_scale_on_the_stand_in(llava_dir, tmp_path):
    """Notebook 22 top to bottom at scale='full' on the tiny LLaVA and POPE files written here (about 20 s)."""
    from xattr_nb.cli import run_notebook
    from xattr_nb.papers import PAPERS

    for kind in ("adversarial", "random"):
        _pope(tmp_path, name=f"coco_pope_{kind}.json")
    paper = next(p for p in PAPERS if p.number == 22)
    params = {"scale": "full", "full_model": str(llava_dir), "pope_questions": str(tmp_path / "coco_pope_{kind}.json"),
              "pope_images": str(tmp_path / "val2014")}  # fmt: skip
    res = run_notebook(paper, tmp_path, params, timeout=600)
    assert res.status == "ok", res.error
    assert "debias.sweep_spread" in res.records and "debias.pope_adversarial.accuracy.posthoc" in res.records
    status = {c["name"]: c["status"] for c in res.claims}
    assert status["prior_colour_none"] == status["colour_split_claims"] == status["vdd_prior_halluc_ratio"]
    assert status["posthoc_pope_adv_gain"] == status["control_vs_random_cf_pope"] != status["prior_colour_none"]
