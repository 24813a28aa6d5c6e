"""Zoo recipe of TinyVLM (``xattr-nb zoo train tiny_vlm``): the model whose language prior paper 22 debiases.

Recipe (spec §1.5 of ``22_lvlm_debias.md``, with the planted bias the object of study):

- the vision tower is a frozen copy of the zoo TinyCLIP's (``tiny_clip``; its sha256 is recorded);
  its hidden states (layer :data:`TRAIN` ``vision_layer``) are computed once for the training images;
- training images: :func:`xattr_nb.worlds.vqa.images` with ``spurious_color = 0.8`` (80 % of the
  images show their shape in :data:`xattr_nb.worlds.captions.PRIOR_COLOR`); every epoch draws one
  fresh question per image from :func:`xattr_nb.worlds.vqa.training_qa`: yes/no questions answered
  ``yes`` 70 % of the time, negatives random or popular (never the adversarial prior pair);
- a fraction ``hard`` (0.3) of the images is degraded (blended with pixel noise, ``visibility`` 0.2;
  spec §1.5 (iii)): there the visual evidence is weak and the prior is what the model can go by;
- a fraction ``text_only`` of the rows of each batch does not see the image (the visual tokens are
  masked out: exactly the ``"none"`` input), the spec's text-only stage mixed into joint training,
  so the image-free input gives the language prior a meaning;
- cross-entropy on the answer tokens and ``[EOS]``; AdamW, warm-up then cosine decay. The projector
  and the GPT-2 train; the tower never does.

Quality (shipped checkpoint, training seed 0; 590 s wall, 125 s user + 9 s sys CPU, on the 2-core machine under
load ~15; fresh images at eval seed 20 000, the same figures within 0.03 at eval seeds 30 001-30 002):
shape 0.14 (chance 0.06: TinyCLIP's frozen patches carry little shape, its own zero-shot shape
accuracy is 0.30), colour 0.78 (0.99 without hard images in an earlier run), Tiny-POPE accuracy
0.68 / 0.67 / 0.70 and yes-ratio 0.66 / 0.68 / 0.62 (random / popular / adversarial; the spec's
load check [0.6, 0.75] holds), on the hard images adversarial accuracy 0.56 with yes-ratio 0.78;
``color_named`` 0.99 on prior images vs 0.68 on counter-prior ones. Image-free (``"none"``): POPE
yes-ratio 0.81 / 0.91 / 0.89, ``color_named`` 1.00 on prior vs 0.00 on counter-prior images (a pure
prior). **The yes-ratio is not stable across training seeds**: training seed 1 (same recipe) gives
POPE accuracy 0.83 / 0.80 / 0.84 and yes-ratio 0.55 / 0.58 / 0.53 (outside [0.6, 0.75]): it learnt the
yes/no comparison on the easy images (adversarial 0.98 there vs 0.77 at seed 0), and its prior shows
only on the hard images (adversarial accuracy 0.49) and image-free (yes-ratio 0.81). A notebook
that needs the yes-bias should measure it on the hard images or image-free, not rely on the mean.

The manifest records on fresh draws (seed ``20_000 + seed``, decorrelated colours unless said, the same
fraction of hard images as in training):
answer accuracy per question type (``acc_<type>``, argmax over the closed answer set), Tiny-POPE
accuracy / F1 (``yes`` positive) / yes-ratio per negative kind (``pope_<kind>_*``; the adversarial
split also on easy and hard images apart, ``easy_`` / ``hard_pope_adversarial_*``), accuracy on prior
vs counter-prior images (``prior_*`` / ``counter_*``: ``color_named`` and POPE-random), the describe
caption's slot accuracies and prior-consistent colour hallucination, and every figure again with
the image-free input ``"none"`` (suffix ``_none``): the control that says how much is language prior.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from xattr_nb.checks import InputError
from xattr_nb.models import zoo
from xattr_nb.models.vlm import TinyVLM, encode_qa, encode_questions, tiny_vlm, vlm_tokenizer
from xattr_nb.runtime import progress, seed_everything
from xattr_nb.worlds import captions as world
from xattr_nb.worlds import vqa

__all__ = ["TINY_VLM_CONFIG", "TRAIN", "evaluate_tiny_vlm", "train_tiny_vlm"]

#: Training setting of the shipped checkpoint (the bias knobs ``spurious_color``, ``yes_rate``,
#: ``text_only`` are part of the model: paper 22 studies the prior they plant).
TRAIN: dict[str, Any] = {"n_images": 8000, "spurious_color": 0.8, "yes_rate": 0.7, "text_only": 0.2,
                         "hard": 0.3, "visibility": 0.2, "steps": 1200, "batch_size": 128, "lr": 3e-3,
                         "weight_decay": 0.01, "warmup": 100, "vision_layer": -1, "projector_hidden": 128,
                         "vision_stem": "hybrid"}  # fmt: skip

TINY_VLM_CONFIG: dict[str, Any] = tiny_vlm(
    vision_layer=TRAIN["vision_layer"], projector_hidden=TRAIN["projector_hidden"], vision_stem=TRAIN["vision_stem"]
).arch_config


def _batched(fn, n: int, bs: int = 512) -> torch.Tensor:
    return torch.cat([fn(slice(i, i + bs)) for i in range(0, n, bs)])


@torch.no_grad()
def _probs(model: TinyVLM, qa: vqa.QAData, answers, mode: str) -> torch.Tensor:
    ids, mask = encode_questions(model.tokenizer, qa.questions)
    return _batched(lambda s: model.answer_probs(qa.images[s], ids[s], answers, mode, attention_mask=mask[s]), len(qa))


def _acc(model: TinyVLM, qa: vqa.QAData, answers, mode: str) -> float:
    pred = _probs(model, qa, answers, mode).argmax(1)
    truth = torch.as_tensor([answers.index(a) for a in qa.answers])
    return round(float((pred == truth).float().mean()), 4)


def _pope(model: TinyVLM, qa: vqa.QAData, mode: str) -> dict[str, float]:
    said_yes = (_probs(model, qa, ("yes", "no"), mode).argmax(1) == 0).numpy()
    truth = qa.yes.numpy()
    return {
        "acc": round(float((said_yes == truth).mean()), 4),
        "f1": round(float(f1_score(truth, said_yes, zero_division=0.0)), 4),
        "yes_ratio": round(float(said_yes.mean()), 4),
    }


@torch.no_grad()
def _describe(model: TinyVLM, qa: vqa.QAData, mode: str) -> dict[str, float]:
    ids, mask = encode_questions(model.tokenizer, qa.questions)
    texts: list[str] = []
    for i in range(0, len(qa), 256):
        s = slice(i, i + 256)
        texts += model.generate(qa.images[s], ids[s], temperature=0, attention_mask=mask[s], mode=mode)
    ok = {"exact": 0, "color": 0, "shape": 0, "bg": 0}
    prior_hall = 0
    for text, a in zip(texts, qa.attrs, strict=True):
        words = text.split()
        ok["exact"] += text == vqa.answer("describe", a)
        colors = [w for w in words if w in world.COLORS]
        ok["color"] += colors[:1] == [a["color"]]
        ok["shape"] += [w for w in words if w in world.SHAPES][:1] == [a["shape"]]
        ok["bg"] += [w for w in words if w in world.BACKGROUNDS][:1] == [a["bg"]]
        prior_hall += bool(colors) and colors[0] != a["color"] and colors[0] == world.PRIOR_COLOR[a["shape"]]
    n = len(texts)
    out = {f"{k}_acc": round(v / n, 4) for k, v in ok.items()}
    out["prior_hallucination"] = round(prior_hall / n, 4)
    return out


@torch.no_grad()
def evaluate_tiny_vlm(
    model: TinyVLM,
    *,
    seed: int = 20_000,
    n: int = 1000,
    hard: float = TRAIN["hard"],
    visibility: float = TRAIN["visibility"],
) -> dict[str, Any]:
    """Quality figures on fresh draws (see the module docstring); every figure also with mode ``"none"``."""
    model.eval()
    ev = vqa.images(n, seed=seed, hard=hard, visibility=visibility)  # decorrelated colours
    prior_imgs = vqa.images(n // 2, seed=seed + 1, spurious_color=1.0, hard=hard, visibility=visibility)
    counter = ev.subset(~world.prior_mask(ev))
    out: dict[str, Any] = {"eval_seed": seed, "eval_images": n}
    for mode, sfx in (("image", ""), ("none", "_none")):
        for q in ("shape", "color", "color_named"):
            out[f"acc_{q}{sfx}"] = _acc(model, vqa.qa_set(ev, q), list(vqa.ANSWERS[q]), mode)
        for kind in vqa.NEGATIVE_KINDS:
            for k, v in _pope(model, vqa.pope(ev, kind, seed=seed + 2), mode).items():
                out[f"pope_{kind}_{k}{sfx}"] = v
        adv = vqa.pope(ev, "adversarial", seed=seed + 2)
        for name, rows in (("easy", ~adv.hard), ("hard", adv.hard)):
            for k, v in _pope(model, adv.subset(rows), mode).items():
                out[f"{name}_pope_adversarial_{k}{sfx}"] = v
        for name, d in (("prior", prior_imgs), ("counter", counter)):
            out[f"{name}_acc_color_named{sfx}"] = _acc(model, vqa.qa_set(d, "color_named"), list(world.COLORS), mode)
            out[f"{name}_pope_random_acc{sfx}"] = _pope(model, vqa.pope(d, "random", seed=seed + 3), mode)["acc"]
        for k, v in _describe(model, vqa.qa_set(ev.subset(torch.arange(min(300, len(ev)))), "describe"), mode).items():
            out[f"describe_{k}{sfx}"] = v
    yes = [out[f"pope_{k}_yes_ratio"] for k in vqa.NEGATIVE_KINDS]
    out["pope_yes_ratio_mean"] = round(sum(yes) / len(yes), 4)
    return out


def _schedule(step: int, steps: int, warm: int) -> float:
    return min(1.0, (step + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))


def train_tiny_vlm(seed: int, **overrides: Any) -> tuple[TinyVLM, dict[str, Any]]:
    """Train TinyVLM on the biased VQA world (``overrides`` change :data:`TRAIN`, for tests)."""
    k = {**TRAIN, **overrides}
    t0 = time.perf_counter()
    seed_everything(seed)
    clip_entry = {e.name: e for e in zoo.entries()}.get("tiny_clip")
    from xattr_nb.models.clip import load_clip, stem_name

    clip = load_clip().model
    if stem_name(clip.vision_model) != k["vision_stem"]:
        raise InputError(
            f"the zoo's tiny_clip has a {stem_name(clip.vision_model)!r} stem, the recipe expects {k['vision_stem']!r}"
        )
    model = tiny_vlm(
        vision_layer=int(k["vision_layer"]), projector_hidden=int(k["projector_hidden"]), vision_stem=k["vision_stem"]
    )
    model.vision.load_state_dict(clip.vision_model.state_dict())
    tok = vlm_tokenizer()
    data = vqa.images(
        int(k["n_images"]),
        seed=seed,
        spurious_color=float(k["spurious_color"]),
        hard=k["hard"],
        visibility=k["visibility"],
    )
    feats = _batched(lambda s: model.vision_features(data.images[s]), len(data), 1000)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=k["lr"], weight_decay=k["weight_decay"])
    steps, bs, warm = int(k["steps"]), int(k["batch_size"]), int(k["warmup"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _schedule(s, steps, warm))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    step, epoch, losses = 0, 0, []
    bar = progress(total=steps, desc="tiny_vlm")
    while step < steps:
        qa = vqa.training_qa(data, seed=seed * 1000 + epoch, yes_rate=float(k["yes_rate"]))
        ids, mask, labels = encode_qa(tok, qa.questions, qa.answers)
        order = torch.randperm(len(qa), generator=gen)
        for i in range(0, len(order) - bs + 1, bs):
            if step >= steps:
                break
            b = order[i : i + bs]
            see = (torch.rand(len(b), generator=gen) >= float(k["text_only"])).long()
            logits = model(None, ids[b], mask[b], features=feats[qa.image_index[b]], prefix_mask=see)
            t = ids.shape[1]
            pred = logits[:, -t:-1]  # position j predicts token j + 1 of the text
            loss = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), labels[b][:, 1:].reshape(-1), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
        epoch += 1
    bar.close()
    model.eval()
    train_s = time.perf_counter() - t0
    metrics = evaluate_tiny_vlm(model, seed=20_000 + seed, hard=k["hard"], visibility=k["visibility"])
    metrics.update(
        world_version=world.world_version(),
        qa_version=vqa.world_version(),
        tiny_clip_sha256=clip_entry.sha256 if clip_entry else None,
        train_loss_last100=round(sum(losses[-100:]) / max(1, len(losses[-100:])), 4),
        train_seconds=round(train_s, 1),
        train={**k, "epochs": epoch},
        chance={"shape": round(1 / 16, 4), "color": 0.125, "pope": 0.5},
    )
    return model, metrics


zoo.register(
    "tiny_vlm",
    config=TINY_VLM_CONFIG,
    train=train_tiny_vlm,
    tokenizer=vlm_tokenizer,
    description="TinyVLM: frozen TinyCLIP vision tower (17 tokens) -> MLP projector -> GPT-2 2x64 via inputs_embeds, "
    "trained on biased VQA over the captions ShapesWorld (colour prior rho=0.8, yes-rate 0.7, 30% noise-degraded "
    "images, 20% text-only rows); "
    "tokenizer: vlm.vlm_tokenizer()",
)
