"""PromptSRC (paper 20): GPA weights and averager, the loss on hand cases, the prompt learner's wiring,
training, and the full-scale path on a tiny saved CLIPModel with PNG folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xattr_nb.checks import InputError
from xattr_nb.methods import promptsrc as P
from xattr_nb.models.clip import clip_tokenizer, encode_image, encode_text, tiny_clip, tokenize


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return tiny_clip(), clip_tokenizer()


@pytest.fixture(scope="module")
def task():
    return P.make_task(shots=2, n_test=16, seed=0, domain={"sizes": ("large",)})


# ----------------------------------------------------------------------------------------------- GPA


def test_gaussian_weights_analytic_sum_and_peak():
    w = P.gaussian_epoch_weights(3, 2.0, 1.0)
    a = math.exp(-0.5)
    np.testing.assert_allclose(w, np.array([a, 1.0, a]) / (1 + 2 * a), rtol=1e-12)
    w = P.gaussian_epoch_weights(20, 15.0, 1.0)
    assert abs(w.sum() - 1) < 1e-12 and int(w.argmax()) + 1 == 15
    assert w[13] == pytest.approx(w[15]) and w[14] / w[13] == pytest.approx(math.exp(0.5))
    # a wide Gaussian tends to a uniform average; a peak outside the range puts most weight at the end
    np.testing.assert_allclose(P.gaussian_epoch_weights(4, 2.5, 1e6), 0.25, atol=1e-9)
    assert P.gaussian_epoch_weights(5, 30.0, 1.0)[-1] > 0.99


def test_gpa_averager_constant_and_linear_trajectories():
    v = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    gpa = P.GPAAverager(5, 3.0, 1.0)
    for e in range(1, 6):
        gpa.update({"p": v}, e)
    assert torch.allclose(gpa.result()["p"], v, atol=1e-6)  # weights sum to 1
    gpa = P.GPAAverager(5, 3.0, 1.0)  # symmetric around epoch 3: the average of e*v is 3*v
    for e in range(1, 6):
        gpa.update({"p": e * v, "q": torch.tensor(float(e))}, e)
    out = gpa.result()
    assert torch.allclose(out["p"], 3 * v, atol=1e-5) and float(out["q"]) == pytest.approx(3.0)
    w = P.gaussian_epoch_weights(5, 4.0, 2.0)
    gpa = P.GPAAverager(5, 4.0, 2.0)
    for e in range(1, 6):
        gpa.update({"q": torch.tensor(float(e))}, e)
    assert float(gpa.result()["q"]) == pytest.approx(float((w * np.arange(1, 6)).sum()), rel=1e-6)


def test_gpa_averager_bad_input():
    gpa = P.GPAAverager(3, 2.0, 1.0)
    with pytest.raises(InputError, match="epoch"):
        gpa.update({"p": torch.zeros(2)}, 0)
    with pytest.raises(InputError, match="epoch"):
        gpa.update({"p": torch.zeros(2)}, 4)
    with pytest.raises(InputError, match="before any update"):
        gpa.result()
    gpa.update({"p": torch.zeros(2)}, 1)
    with pytest.raises(InputError, match="already"):
        gpa.update({"p": torch.zeros(2)}, 1)
    with pytest.raises(InputError, match="same names"):
        gpa.update({"r": torch.zeros(2)}, 2)
    with pytest.raises(InputError, match="std"):
        P.gaussian_epoch_weights(3, 1.0, 0.0)
    with pytest.raises(InputError, match="n_epochs"):
        P.gaussian_epoch_weights(0, 1.0, 1.0)


# ----------------------------------------------------------------------------------------------- HM, loss


def test_harmonic_mean_known_values():
    assert P.harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert P.harmonic_mean(0.8, 0.4) == pytest.approx(2 * 0.32 / 1.2)
    assert P.harmonic_mean(1.0, 0.0) == 0.0 and P.harmonic_mean(0.0, 0.0) == 0.0
    assert P.harmonic_mean(84.26, 76.10) == pytest.approx(79.97, abs=0.01)  # the paper's README row
    with pytest.raises(InputError, match="`a`"):
        P.harmonic_mean(-0.1, 0.5)


def test_loss_kl_zero_when_equal_and_normalised_by_batch_times_classes():
    z = torch.tensor([[1.0, -0.5, 2.0], [0.0, 0.3, 0.1]])
    f = torch.randn(2, 4)
    g = torch.randn(3, 4)
    y = torch.tensor([2, 1])
    loss, parts = P.promptsrc_loss(z, y, f, f, g, g, z, lam_img=10.0, lam_txt=25.0)
    assert parts["scl_kl"] == pytest.approx(0.0, abs=1e-7) and parts["scl_img"] == 0 and parts["scl_txt"] == 0
    assert float(loss) == pytest.approx(float(torch.nn.functional.cross_entropy(z, y)), abs=1e-6)
    # hand case: zero-shot p = (1/2, 1/2), prompted q = (3/4, 1/4): KL(p||q) = 0.5 ln(4/3) per sample, / C = 2
    zp = torch.tensor([[math.log(3.0), 0.0]] * 2)
    z0 = torch.zeros(2, 2)
    fp, f0 = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    gp, g0 = torch.tensor([[0.2, 0.0], [0.0, 0.0]]), torch.zeros(2, 2)
    loss, parts = P.promptsrc_loss(zp, torch.tensor([0, 0]), fp, f0, gp, g0, z0, lam_img=10.0, lam_txt=25.0)
    assert parts["scl_kl"] == pytest.approx(0.5 * math.log(4 / 3) / 2, rel=1e-5)
    assert parts["scl_img"] == pytest.approx(10.0 * 2 / 4) and parts["scl_txt"] == pytest.approx(25.0 * 0.2 / 4)
    ce = -math.log(0.75)
    assert float(loss) == pytest.approx(ce + 5.0 + 1.25 + 0.25 * math.log(4 / 3), rel=1e-5)
    # the direction is KL(zero-shot || prompted), not the reverse
    rev = 0.5 * math.log(0.5 / 0.75) * 0 + 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert parts["scl_kl"] != pytest.approx(rev / 2, rel=1e-3)
    # without SCL: CE only
    loss, parts = P.promptsrc_loss(zp, torch.tensor([0, 0]), fp, f0, gp, g0, z0, scl=False)
    assert set(parts) == {"ce"} and float(loss) == pytest.approx(ce, rel=1e-5)


def test_loss_bad_input():
    z = torch.zeros(2, 3)
    f = torch.zeros(2, 4)
    with pytest.raises(InputError, match="`y`"):
        P.promptsrc_loss(z, torch.tensor([0]), f, f, f, f, z)
    with pytest.raises(InputError, match="zs_logits"):
        P.promptsrc_loss(z, torch.tensor([0, 1]), f, f, f, f, torch.zeros(2, 4))
    with pytest.raises(InputError, match="img_zs"):
        P.promptsrc_loss(z, torch.tensor([0, 1]), f, torch.zeros(3, 4), f, f, z)


def test_arm_config_and_bad_arm():
    assert P.arm_config("coop") == {"text_depth": 1, "vis_depth": 0, "scl": False, "gpa": False, "diversity": False}
    assert P.arm_config("ivlp", 2)["vis_depth"] == 2 and not P.arm_config("ivlp")["scl"]
    assert P.arm_config("promptsrc") == {"text_depth": 3, "vis_depth": 3, "scl": True, "gpa": True, "diversity": True}
    assert P.arm_config("no_gpa")["gpa"] is False and P.arm_config("no_gpa")["scl"] is True
    assert P.arm_config("no_diversity")["diversity"] is False and P.arm_config("no_scl")["scl"] is False
    with pytest.raises(InputError, match="arm"):
        P.arm_config("maple")


def test_diverse_prompts_fill_slots():
    out = P.diverse_prompts(["a {shape}", "a {color} {shape}"], fills={"color": ["red", "blue"]}, n_fill=5, seed=0)
    assert out[0] == "a {shape}" and set(out[1:]) <= {"a red {shape}", "a blue {shape}"} and len(out) == len(set(out))
    with pytest.raises(InputError, match="fills"):
        P.diverse_prompts(["a {size} {shape}"], fills={"color": ["red"]})
    with pytest.raises(InputError, match="slot"):
        P.diverse_prompts(["a thing"], fills={})


# ----------------------------------------------------------------------------------------------- prompts


def test_prompts_change_outputs_only_where_expected(clip):
    model, tok = clip
    names = ["circle", "star", "heart"]
    ids, mask = tokenize(tok, names)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    coop = P.PromptLearner(model, tok, n_ctx=4, text_depth=1, vis_depth=0)
    with torch.no_grad():
        # CoOp's initial context is the words "a photo of a": the frozen CLIP's features of the template, exactly
        ref = encode_text(model, *tokenize(tok, [f"a photo of a {c}" for c in names]))
        assert torch.allclose(coop.encode_text(model, ids, mask), ref, atol=1e-5)
        # CoOp has no visual prompt: image features are the frozen ones
        assert torch.equal(coop.encode_image(model, x), encode_image(model, x))
        deep = P.PromptLearner(model, tok, n_ctx=4, text_depth=3, vis_depth=3, seed=1)
        t0, i0 = deep.encode_text(model, ids, mask), deep.encode_image(model, x)
        assert not torch.allclose(i0, encode_image(model, x), atol=1e-4)  # visual prompts move image features
        deep.vision["2"].data += torch.randn(
            4, 64, generator=torch.Generator().manual_seed(1)
        )  # a vision prompt leaves the text features alone...
        assert torch.equal(deep.encode_text(model, ids, mask), t0)
        assert (
            float((deep.encode_image(model, x) - i0).abs().max()) > 1e-5
        )  # (random, not constant: LayerNorm removes a constant shift)
        i1 = deep.encode_image(model, x)
        deep.text["1"].data += torch.randn(
            4, 64, generator=torch.Generator().manual_seed(2)
        )  # ...and a text prompt the image features
        assert torch.equal(deep.encode_image(model, x), i1)
        assert float((deep.encode_text(model, ids, mask) - t0).abs().max()) > 1e-5
    assert set(deep.prompt_state()) == {"text.0", "text.1", "text.2", "vision.0", "vision.1", "vision.2"}
    assert P.PromptLearner(model, tok, text_depth=9, vis_depth=9).text_depth == 3  # capped at the tower depth


def test_train_prompts_frozen_clip_gpa_and_determinism(clip, task):
    model, tok = clip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kw = dict(epochs=3, batch_size=8, lr=0.05, gpa_mean=2.0, gpa_std=1.0, seed=3)
    run = P.train_prompts(model, tok, task, arm="promptsrc", **kw)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # CLIP never moves
    assert list(run.history["epoch"]) == [1, 2, 3] and {"ce", "scl_img", "scl_txt", "scl_kl"} <= set(run.history)
    again = P.train_prompts(model, tok, task, arm="promptsrc", **kw)
    assert all(
        torch.equal(a, b)
        for a, b in zip(run.learner.prompt_state().values(), again.learner.prompt_state().values(), strict=True)
    )
    no_gpa = P.train_prompts(model, tok, task, arm="no_gpa", **kw)  # same batches: the last epoch equals PromptSRC's
    assert all(torch.equal(no_gpa.last_state[k], run.last_state[k]) for k in run.last_state)
    assert all(torch.equal(no_gpa.learner.prompt_state()[k], no_gpa.last_state[k]) for k in run.last_state)
    assert any(not torch.allclose(run.learner.prompt_state()[k], run.last_state[k]) for k in run.last_state)
    res = P.evaluate_base_novel(model, tok, task, learner=run.learner)
    assert set(res) == {"base", "novel", "hm"} and res["hm"] == pytest.approx(
        P.harmonic_mean(res["base"], res["novel"])
    )
    coop = P.train_prompts(model, tok, task, arm="coop", epochs=1, batch_size=8)
    assert set(coop.history.columns) == {"epoch", "lr", "loss", "ce"} and len(coop.learner.vision) == 0


def test_compare_pairs_arms_on_one_task(clip, task):
    model, tok = clip
    table, runs = P.compare(model, tok, task, arms=["coop", "ivlp"], epochs=1, batch_size=8)
    assert list(table.index) == ["zs", "zs_ens", "zs_div", "coop", "ivlp"] and set(runs) == {"coop", "ivlp"}
    assert ((table >= 0) & (table <= 1)).all().all()
    long, _ = P.compare_runs(model, tok, n_runs=2, arms=["coop"], task_kw={"shots": 1, "n_test": 8}, epochs=1)
    assert sorted(long["run"].unique()) == [0, 1] and len(long) == 2 * 4
    means = P.paired_means(long)
    assert "zs_best" in means.index and means.loc["zs_best", "hm"] >= means.loc["zs", "hm"] - 1e-12
    with pytest.raises(InputError, match="arms"):
        P.compare(model, tok, task, arms=["linear_probe"])
    with pytest.raises(InputError, match="table"):
        P.paired_means(table)


def test_accuracy_bad_input(clip, task):
    model, tok = clip
    with pytest.raises(InputError, match="labels"):
        P.accuracy(model, tok, task.base_x, task.base_y[:-1], task.base)
    with pytest.raises(InputError, match="texts"):
        P.accuracy(model, tok, task.base_x, task.base_y, ["not_a_word_here"])


# ----------------------------------------------------------------------------------------------- full scale


def _write_folders(root, classes, n, size=40):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for i, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for j in range(n):
                arr = np.clip(rng.normal(60 * i, 20, (size, size + 6, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{j}.png")


def test_full_scale_path_on_a_saved_stand_in(tmp_path, clip):
    model, tok = clip
    saved = tmp_path / "clip"
    legacy = tiny_clip()
    legacy.load_state_dict(model.state_dict())
    legacy.config.text_config.eos_token_id = 2  # the openai configs' legacy id (here [SOS]): load_full must fix it
    legacy.text_model.config.eos_token_id = 2
    legacy.save_pretrained(saved)
    tok.save_pretrained(saved)
    _write_folders(tmp_path / "data", ["circle", "heart", "star"], 3)
    m, t, task = P.load_full(tmp_path / "data", model=saved, shots=2, seed=0, templates=("a photo of a {shape}",))
    assert m.text_model.config.eos_token_id == t.eos_token_id == 3
    assert task.base == ("circle", "heart") and task.novel == ("star",)
    assert task.train_x.shape == (4, 3, 32, 32) and len(task.base_x) == 6 and len(task.novel_x) == 3
    ids, mask = tokenize(t, ["a photo of a star"])
    with torch.no_grad():
        assert torch.allclose(encode_text(m, ids, mask), encode_text(model, ids, mask), atol=1e-5)
    table, _ = P.compare(m, t, task, arms=["coop", "ivlp", "promptsrc"], epochs=2, batch_size=2, depth=2)
    assert list(table.index)[-3:] == ["coop", "ivlp", "promptsrc"] and table.loc["promptsrc", "novel"] == 1.0
    with pytest.raises(InputError, match="data_dir"):
        P.load_full(tmp_path / "nowhere", model=saved)


def test_hybrid_stem_foundation_stays_frozen_and_takes_visual_prompts(task):
    """The notebook's foundation (``tiny_clip``, a hybrid stem) has batch norm in its stem: training prompts must
    not move its running statistics or weights, and visual prompts must reach its image tower."""
    torch.manual_seed(0)
    m, tok = tiny_clip(stem="hybrid"), clip_tokenizer()
    m.train()  # a caller's stray train mode: train_prompts must still freeze the batch statistics
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert any("running_mean" in k for k in before)
    x = task.base_x[:4]
    run = P.train_prompts(m, tok, task, arm="ivlp", epochs=2, batch_size=4, depth=2, lr=0.05)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        plain = P.PromptLearner(m, tok, n_ctx=4, text_depth=1, vis_depth=0)
        assert torch.allclose(plain.encode_image(m, x), encode_image(m, x), atol=1e-6)
        assert not torch.allclose(run.learner.encode_image(m, x), encode_image(m, x), atol=1e-4)
