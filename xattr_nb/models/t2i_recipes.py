"""Zoo recipe of TinyT2I (``xattr-nb zoo train tiny_t2i``): the text-to-image generator of papers 23–24.

Training (seed ``s``; everything seeded, CPU):

1. the biased captions corpus :func:`xattr_nb.worlds.captions.corpus` ``(n, seed=s,
   spurious_color=0.8)``: balanced shapes, each in its :data:`~xattr_nb.worlds.captions.PRIOR_COLOR`
   80 % of the time, every style, background, size and position; the held-out (shape, colour)
   pairs never appear;
2. the autoencoder (:class:`~xattr_nb.models.t2i.TinyAE`, 64-d latent) on those images, pixel MSE
   with a little latent noise (so the decoder tolerates the flow's imprecision); then the latents
   are standardised per dimension (``z_mean``, ``z_std`` buffers);
3. the velocity net by conditional flow matching (rectified flow, ``t ~ U(0, 1)``, target
   ``ε - x0``) on the frozen zoo TinyCLIP's unit text embeddings of the captions (redrawn from the
   12 templates: several captions per image), the condition replaced by the learnt null 10 % of the
   time (classifier-free guidance).

The manifest records (fresh seeds, prompts "an image showing a {color} {shape}", 40-step Euler, CFG 2
unless said), judged by the non-neural :func:`xattr_nb.metrics.generation.template_judge`:

- ``judge_*``: shape / colour / both accuracy on *frequent* combos (each shape in its prior colour),
  *rare* combos (seen, non-prior colours: each about 3 % of its shape's images) and *held-out*
  combos (never seen); ``judge_renders_*``: the judge on real renders of the same prompts (its own
  ceiling) and ``judge_recon_*`` on the autoencoder's reconstructions of them (the generator's ceiling);
- ``steps{1,4,40}_*``: the frequent-combo accuracies and the pixel FID proxy at 1, 4 and 40 steps;
- ``fid_*``: :func:`~xattr_nb.metrics.generation.fid_proxy` (raw pixels, 32 PCA dimensions) of
  samples for fresh corpus captions against renders of the same captions, beside the floor of two
  independent render sets (``fid_renders_vs_renders``) and the reconstructions (``fid_recon``);
- ``world_version`` (:func:`load_tiny_t2i` refuses another), ``clip_sha256`` (the TinyCLIP whose
  embeddings it was trained on), ``train_seconds``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from xattr_nb.models import zoo
from xattr_nb.models.t2i import TinyT2I, TinyT2INet, t2i_arch_config
from xattr_nb.runtime import progress, seed_everything
from xattr_nb.worlds import captions as world

__all__ = ["TINY_T2I_CONFIG", "TRAIN", "combo_prompts", "evaluate_tiny_t2i", "train_tiny_t2i"]

#: Training setting of the shipped checkpoint.
TRAIN: dict[str, Any] = {"n_corpus": 16000, "spurious_color": 0.8, "ae_steps": 4000, "ae_batch": 64, "ae_lr": 3e-3,
                         "latent_noise": 0.1, "fg_weight": 8.0, "flow_steps": 5000, "flow_batch": 256, "flow_lr": 1e-3,
                         "n_captions": 4, "p_uncond": 0.1, "n_eval": 192}  # fmt: skip
#: Pixels whose brightest channel reaches this are object pixels (every palette colour has a channel
#: >= 0.8 before its ±8 % jitter, no background does); the autoencoder's loss weighs them ``1 + fg_weight``.
FG_BRIGHT = 0.66
ARCH: dict[str, Any] = {"latent": 64, "cond_dim": 64, "ae_width": 32, "width": 192, "blocks": 4}
TINY_T2I_CONFIG: dict[str, Any] = t2i_arch_config(**ARCH)
PROMPT = "an image showing a {color} {shape}"
#: A second evaluation prompt that also fixes the size (large objects are the judge's easiest case).
PROMPT_LARGE = "a photo of a large {color} {shape}"


def _cosine(opt: torch.optim.Optimizer, steps: int, warm: int = 50) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )


def _step(opt: torch.optim.Optimizer, sched: Any, loss: torch.Tensor, log: list[float]) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    log.append(loss.item())


def combo_prompts() -> dict[str, list[tuple[str, str]]]:
    """The (shape, colour) combos of each evaluation group: ``frequent`` (each shape in its prior
    colour), ``rare`` (seen, not the prior), ``heldout`` (:data:`~xattr_nb.worlds.captions.HOLDOUT_PAIRS`)."""
    held = set(world.HOLDOUT_PAIRS)
    freq = [(s, world.PRIOR_COLOR[s]) for s in world.SHAPES]
    rare = [(s, c) for s in world.SHAPES for c in world.COLORS if (s, c) not in held and c != world.PRIOR_COLOR[s]]
    return {"frequent": freq, "rare": rare, "heldout": list(world.HOLDOUT_PAIRS)}


def _judge_acc(images: torch.Tensor, combos: list[tuple[str, str]]) -> dict[str, float]:
    from xattr_nb.metrics.generation import template_judge

    shapes, colors = template_judge(images)
    ok_s = [p == s for p, (s, _) in zip(shapes, combos, strict=True)]
    ok_c = [p == c for p, (_, c) in zip(colors, combos, strict=True)]
    n = len(combos)
    return {
        "shape": round(sum(ok_s) / n, 4),
        "color": round(sum(ok_c) / n, 4),
        "both": round(sum(a and b for a, b in zip(ok_s, ok_c, strict=True)) / n, 4),
    }


def _renders(combos: list[tuple[str, str]], seed: int, sizes: tuple[str, ...] = world.SIZES) -> torch.Tensor:
    """One render per combo, every style, background, size and position (fresh draw at ``seed``)."""
    from xattr_nb.worlds import shapes as sw

    out = torch.empty(len(combos), 3, 32, 32)
    by: dict[tuple[str, str], list[int]] = {}
    for i, c in enumerate(combos):
        by.setdefault(c, []).append(i)
    for j, ((s, c), idx) in enumerate(sorted(by.items())):
        d = sw.make_shapes(len(idx), classes=(s,), colors=(c,), sizes=sizes, styles=sw.STYLES, seed=seed * 1000 + j)
        out[idx] = d.images
    return out


@torch.no_grad()
def evaluate_tiny_t2i(gen: TinyT2I, *, seed: int = 20_000, n: int = 192) -> dict[str, Any]:
    """Quality figures of a TinyT2I on fresh prompts and noise (see the module docstring)."""
    from xattr_nb.metrics.generation import fid_proxy

    out: dict[str, Any] = {}
    groups = combo_prompts()
    g = torch.Generator().manual_seed(seed)
    for gi, (name, combos) in enumerate(groups.items()):
        pick = [combos[int(i)] for i in torch.randint(len(combos), (n,), generator=g)]
        for tag, prompt, sizes in (("", PROMPT, world.SIZES), ("large_", PROMPT_LARGE, ("large",))):
            cond = gen.cond([prompt.format(color=c, shape=s) for s, c in pick])
            imgs = gen.sample(cond, seed=seed + gi, steps=40, cfg=2.0)
            out.update({f"judge_{tag}{name}_{k}": v for k, v in _judge_acc(imgs, pick).items()})
            real = _renders(pick, seed + 10 + gi, sizes)
            out.update({f"judge_renders_{tag}{name}_{k}": v for k, v in _judge_acc(real, pick).items()})
            recon = gen.decode(gen.encode(real))
            out.update({f"judge_recon_{tag}{name}_{k}": v for k, v in _judge_acc(recon, pick).items()})
            if name == "frequent":
                for steps in (1, 4, 40):
                    x = imgs if steps == 40 else gen.sample(cond, seed=seed + gi, steps=steps, cfg=2.0)
                    out.update({f"steps{steps}_{tag}frequent_{k}": v for k, v in _judge_acc(x, pick).items()})
                    out[f"steps{steps}_{tag}fid_pixels_frequent"] = round(fid_proxy(x, real), 3)
    # FID proxy on the corpus distribution: fresh captions, their renders, a second render draw as the floor
    a = world.corpus(2 * n, seed=seed + 100, spurious_color=TRAIN["spurious_color"])
    b = world.corpus(2 * n, seed=seed + 101, spurious_color=TRAIN["spurious_color"])
    samples = gen.sample(gen.cond(a.captions), seed=seed + 102, steps=40, cfg=2.0)
    out["fid_pixels"] = round(fid_proxy(samples, a.images), 3)
    out["fid_renders_vs_renders"] = round(fid_proxy(b.images, a.images), 3)
    out["fid_recon"] = round(fid_proxy(gen.decode(gen.encode(a.images)), a.images), 3)
    out["recon_mse"] = round(float(F.mse_loss(gen.decode(gen.encode(a.images)), a.images)), 5)
    out["eval"] = {"prompt": PROMPT, "prompt_large": PROMPT_LARGE, "n_per_group": n, "steps": 40, "cfg": 2.0, "seed": seed,
                   "fid_features": "raw pixels, PCA 32", "fid_n": 2 * n}  # fmt: skip
    return out


def train_tiny_t2i(seed: int, **overrides: Any) -> tuple[TinyT2INet, dict[str, Any]]:
    """Train TinyT2I on the biased captions corpus (``overrides`` change :data:`TRAIN`, for tests)."""
    from xattr_nb.models.clip import encode_text, load_clip, tokenize

    k = {**TRAIN, **overrides}
    t0 = time.perf_counter()
    seed_everything(seed)
    data = world.corpus(int(k["n_corpus"]), seed=seed, spurious_color=float(k["spurious_color"]))
    images = data.images
    n = len(images)
    net = TinyT2INet(**ARCH)
    gen = torch.Generator().manual_seed(seed)

    # 1. autoencoder
    ae = net.ae
    ae.train()
    opt = torch.optim.Adam(ae.parameters(), lr=float(k["ae_lr"]))
    steps = int(k["ae_steps"])
    sched = _cosine(opt, steps)
    ae_losses = []
    for _ in progress(range(steps), desc="autoencoder", leave=False):
        b = images[torch.randint(n, (int(k["ae_batch"]),), generator=gen)]
        z = ae.encode(b)
        z = z + float(k["latent_noise"]) * z.detach().std() * torch.randn(z.shape, generator=gen)
        weight = 1.0 + float(k["fg_weight"]) * (b.amax(1, keepdim=True) >= FG_BRIGHT).float()
        _step(opt, sched, (weight * (ae.decode(z) - b) ** 2).mean(), ae_losses)
    ae.eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([ae.encode(images[i : i + 1024]) for i in range(0, n, 1024)])
        net.z_mean.copy_(lat.mean(0))
        net.z_std.copy_(lat.std(0).clamp_min(1e-3))
        x0_all = (lat - net.z_mean) / net.z_std

    # 2. text embeddings of several captions per image (frozen TinyCLIP)
    clip, tok = load_clip("cpu")
    embs = []
    with torch.no_grad():
        for r in range(int(k["n_captions"])):
            caps = data.captions if r == 0 else data.recaption(seed * 1000 + r)
            e = []
            for i in range(0, n, 1024):
                ids, mask = tokenize(tok, caps[i : i + 1024])
                e.append(encode_text(clip, ids, mask))
            embs.append(torch.cat(e))
    embs = torch.stack(embs)  # [R, N, 64]

    # 3. velocity net by conditional flow matching
    vel = net.vel
    vel.train()
    opt = torch.optim.Adam(vel.parameters(), lr=float(k["flow_lr"]))
    steps = int(k["flow_steps"])
    sched = _cosine(opt, steps)
    bs, p_unc = int(k["flow_batch"]), float(k["p_uncond"])
    flow_losses = []
    for _ in progress(range(steps), desc="flow", leave=False):
        i = torch.randint(n, (bs,), generator=gen)
        r = torch.randint(embs.shape[0], (bs,), generator=gen)
        c = embs[r, i]
        drop = torch.rand(bs, generator=gen) < p_unc
        c = torch.where(drop[:, None], vel.null[None].expand(bs, -1), c)
        x0 = x0_all[i]
        eps = torch.randn(x0.shape, generator=gen)
        t = torch.rand(bs, generator=gen)
        xt = (1 - t[:, None]) * x0 + t[:, None] * eps
        _step(opt, sched, F.mse_loss(vel(xt, t, c), eps - x0), flow_losses)
    vel.eval()
    for p in vel.parameters():
        p.requires_grad_(True)
    train_s = time.perf_counter() - t0

    metrics = evaluate_tiny_t2i(TinyT2I(net, clip, tok), seed=20_000 + seed, n=int(k["n_eval"]))
    clip_entry = {e.name: e for e in zoo.entries()}.get("tiny_clip")
    metrics.update(
        world_version=world.world_version(),
        clip_sha256=clip_entry.sha256 if clip_entry is not None else None,
        ae_loss_last100=round(sum(ae_losses[-100:]) / max(1, len(ae_losses[-100:])), 5),
        flow_loss_last200=round(sum(flow_losses[-200:]) / max(1, len(flow_losses[-200:])), 4),
        train_seconds=round(train_s, 1),
        train=dict(k),
        chance={"shape16": round(1 / 16, 4), "color8": 0.125},
    )
    return net, metrics


zoo.register(
    "tiny_t2i",
    config=TINY_T2I_CONFIG,
    train=train_tiny_t2i,
    description="TinyT2I: conv autoencoder (64-d latent) + rectified-flow MLP velocity net with FiLM on frozen "
    "TinyCLIP text embeddings, learnt null condition for CFG; trained on the captions ShapesWorld with the "
    "shape->colour prior at rho=0.8, held-out (shape, colour) pairs excluded",
)
