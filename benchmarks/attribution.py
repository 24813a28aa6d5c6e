"""Attribution: ``attribute`` / ``attribute_text`` vs captum called directly, vs inseq, vs the bound.

Work (the same on both sides of every row):

- **images**: the shipped ``shapes_cnn`` (TinyCNN, 4 classes) on 16 ShapesWorld images 3x32x32,
  each explained for its label. Saliency (|grad|, summed over channels), integrated gradients (zero
  baseline, 50 Gauss-Legendre steps: 800 rows), occlusion (4x4 windows, stride 4, zero baseline: 64
  perturbations of the batch), Grad-CAM (the last conv block, ReLU, bilinear upsampling). captum is
  called as its documentation shows (the model as ``forward_func``, default batching).
- **text**: Layer IG on the input embeddings of the offline all-MiniLM-L6-v2 with a seeded 2-class head
  (``AutoModelForSequenceClassification``), at 1 and 48 texts of 4-19 words, 50 steps, baseline [PAD]
  on every real non-special token. captum ``LayerIntegratedGradients`` with ``internal_batch_size=50``
  over the right-padded batch (what a captum user writes).
- **bounds**: one batched forward+backward over the same rows (the IG rows of all images, with
  their targets), which no implementation of the method can beat by more than its bookkeeping.

inseq rows (saliency, IG, ReAGent on the shipped IOI GPT-2, ``ioi_gpt2_4l``) are in
:func:`inseq_rows`; they run in a Python whose environment has inseq (see ``RESULTS.md``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Row, allclose, best_chunk, bound, compare, not_installable

N_IMAGES = 16
_CHECKS = (
    "ours = captum + attribute()'s checks, about 2 ms a call by cProfile at 16 images (input finiteness "
    "scan, target range, eval-mode walk, pass counting): a fixed cost, large only next to a ~15 ms job"
)
N_STEPS = 50
_STATE: dict[str, Any] = {}

_PROSE = (
    "the match ended in a draw after a late goal from the visiting side while the crowd sang on "
    "markets fell sharply as investors weighed the new rate decision and its effect on lending"
)
WORDS = tuple(_PROSE.split(" "))


def _images() -> tuple[Any, torch.Tensor, torch.Tensor]:
    if "cnn" not in _STATE:
        from xattr_nb.models import zoo
        from xattr_nb.models.recipes import SHAPES_CNN_CLASSES
        from xattr_nb.worlds.shapes import make_shapes

        data = make_shapes(N_IMAGES, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=1)
        _STATE["cnn"] = (zoo.load("shapes_cnn").eval(), data.images, data.labels)
    return _STATE["cnn"]


def texts(n: int) -> list[str]:
    """``n`` deterministic texts of 4 to 19 words (lengths cycle, so a batch has many lengths)."""
    out = []
    for i in range(n):
        k = 4 + (7 * i) % 16
        out.append(" ".join(WORDS[(3 * i + j) % len(WORDS)] for j in range(k)))
    return out


def _minilm() -> tuple[Any, Any]:
    if "minilm" not in _STATE:
        from transformers.utils import logging as hf_logging

        from xattr_nb.models.hub import load_classifier, minilm_path

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the fresh head's "newly initialized" report is expected
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                tok, model = load_classifier(minilm_path(), num_labels=2)
        finally:
            hf_logging.set_verbosity(level)
        _STATE["minilm"] = (tok, model.eval())
    return _STATE["minilm"]


# ---------------------------------------------------------------------------------------- images


def image_rows(quick: bool) -> list[Row]:
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, Occlusion, Saliency

    from xattr_nb.attribution import attribute
    from xattr_nb.attribution.methods import default_cam_layer

    model, x, y = _images()
    n = x.shape[0]
    reps = 7
    work = f"shapes_cnn, {n} images 3x32x32"
    rows = []

    def ours(method: str, **kw: Any):
        return lambda: attribute(model, x, y, method, **kw).scores

    def cap_saliency() -> torch.Tensor:
        return Saliency(model).attribute(x.clone().requires_grad_(True), target=y, abs=True).sum(1)

    rows.append(
        compare(
            "saliency",
            work,
            ours("saliency"),
            cap_saliency,
            peer_name="captum Saliency",
            agree=allclose(1e-6, 1e-5),
            repeats=reps,
            quick=quick,
            note=_CHECKS,
        )
    )

    def cap_ig() -> torch.Tensor:
        return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=y, n_steps=N_STEPS).sum(1)

    rows.append(
        compare(
            "integrated gradients",
            f"{work}, {N_STEPS} steps ({n * N_STEPS} rows)",
            ours("integrated_gradients", n_steps=N_STEPS),
            cap_ig,
            peer_name="captum IntegratedGradients",
            agree=allclose(1e-5, 1e-4),
            repeats=reps,
            quick=quick,
        )
    )

    def cap_occ() -> torch.Tensor:
        c = x.shape[1]
        return (
            Occlusion(model)
            .attribute(x, sliding_window_shapes=(c, 4, 4), strides=(c, 4, 4), baselines=0.0, target=y)
            .mean(1)
        )

    rows.append(
        compare(
            "occlusion",
            f"{work}, 4x4 windows stride 4 (64 perturbations x {n} images)",
            ours("occlusion", window=4),
            cap_occ,
            peer_name="captum Occlusion",
            agree=allclose(1e-5, 1e-4),
            repeats=reps,
            quick=quick,
        )
    )

    layer = default_cam_layer(model)

    def cap_cam() -> torch.Tensor:
        cam = LayerGradCam(model, layer).attribute(x, target=y, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]

    rows.append(
        compare(
            "Grad-CAM",
            f"{work}, last conv block",
            ours("grad_cam"),
            cap_cam,
            peer_name="captum LayerGradCam",
            agree=allclose(1e-6, 1e-5),
            repeats=reps,
            quick=quick,
            note=_CHECKS,
        )
    )

    # The bound of IG: forward+backward over the same 800 interpolated rows and their targets, in
    # the best chunking measured here (one batch of all rows is not the fastest on a CPU cache).
    alphas = torch.linspace(0, 1, N_STEPS)
    path = (alphas.view(-1, 1, 1, 1, 1) * x.unsqueeze(0)).reshape(-1, *x.shape[1:])
    tgt = y.repeat(N_STEPS)

    def ig_floor(c: int):
        def run() -> None:
            for s in range(0, path.shape[0], c):
                p = path[s : s + c].clone().requires_grad_(True)
                out = model(p).gather(1, tgt[s : s + c].view(-1, 1)).sum()
                torch.autograd.grad(out, p)

        return run

    # Occlusion's bound: no-grad forwards of every perturbed copy (64 x n rows), best chunking.
    m = torch.ones(64, 1, 32, 32)
    for k in range(64):
        i, j = divmod(k, 8)
        m[k, :, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4] = 0
    perturbed = (m.unsqueeze(1) * x.unsqueeze(0)).reshape(-1, *x.shape[1:])

    def occ_floor(c: int):
        @torch.no_grad()
        def run() -> None:
            for s in range(0, perturbed.shape[0], c):
                model(perturbed[s : s + c])

        return run

    occ_note = (
        "occlusion runs one perturbed copy of the batch (16 rows) per forward (captum's perturbations_per_eval=1, "
        "our default); pass internal_batch_size for more"
    )
    ig_note = "IG's chunks are sized from the device budget (internal_batch_size=None; see meta['internal_batch_size'])"
    for label, meth, kw, total, floor, what, why in (
        (
            "integrated gradients",
            "integrated_gradients",
            {"n_steps": N_STEPS},
            n * N_STEPS,
            ig_floor,
            "forward+backward",
            ig_note,
        ),
        ("occlusion", "occlusion", {"window": 4}, 64 * n, occ_floor, "no-grad forward", occ_note),
    ):
        sizes = [c for c in (n, 4 * n, 16 * n, total) if c <= total]
        c = 0 if quick else best_chunk(floor, sizes)
        rows.append(
            bound(
                f"{label} vs bound",
                f"{work}, {total} rows",
                ours(meth, **kw),
                floor(c or total),
                bound_name=f"bound: {what} of the same rows, best chunking ({c} rows of {sizes})",
                repeats=reps,
                quick=quick,
                note=why,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------ text


def layer_ig_rows(quick: bool) -> list[Row]:
    from captum.attr import LayerIntegratedGradients

    from xattr_nb.attribution import attribute_text
    from xattr_nb.attribution.text import encode_texts

    tok, model = _minilm()
    rows = []
    for n in (1,) if quick else (1, 48):
        ts = texts(n)
        enc = encode_texts(model, tok, ts)
        ids, mask, special = enc["input_ids"], enc["attention_mask"], enc["special"]
        base = torch.where(mask.bool() & ~special, torch.full_like(ids, tok.pad_token_id), ids)
        tgt = torch.ones(n, dtype=torch.long)
        steps = 8 if quick else N_STEPS

        def fwd(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            return model(input_ids=i, attention_mask=m).logits

        def peer(ids=ids, mask=mask, base=base, tgt=tgt, steps=steps) -> torch.Tensor:
            lig = LayerIntegratedGradients(fwd, model.get_input_embeddings())
            a = lig.attribute(
                ids,
                baselines=base,
                target=tgt,
                additional_forward_args=(mask,),
                n_steps=steps,
                internal_batch_size=50,
            )
            return a.sum(-1) * mask

        def ours(ts=ts, steps=steps) -> torch.Tensor:
            return attribute_text(model, tok, ts, 1, n_steps=steps).scores

        t = int(mask.sum(1).max())
        rows.append(
            compare(
                f"Layer IG, MiniLM, {n} text{'s' if n > 1 else ''}",
                f"all-MiniLM-L6-v2 + 2-class head, {n} texts of {int(mask.sum(1).min())}-{t} tokens, {steps} steps",
                ours,
                peer,
                peer_name="captum LayerIntegratedGradients (internal_batch_size=50)",
                agree=allclose(1e-4, 1e-3),
                repeats=3 if n > 1 else 5,
                quick=quick,
                note="Layer IG chunk sizing is the patching helper's (kernels.rows_per_chunk)" if n > 1 else "",
            )
        )
    return rows


# ----------------------------------------------------------------------------------------- inseq

INSEQ_REASON = (
    "inseq 0.5-0.7.1 pin typeguard<=2.13.3 (0.4 needs torch<2), transformer-lens 2.x-4.3 need typeguard>=4.2: "
    "no environment holds both; pass --inseq-python with a Python whose env has .[bench-inseq]"
)


def inseq_rows(quick: bool = False, python: str | None = None) -> list[Row]:
    """The inseq rows, here when inseq imports, else in ``python`` (a subprocess), else marked."""
    try:
        import inseq  # noqa: F401

        here = True
    except ImportError:
        here = False
    if not here:
        if not python:
            work = "ioi_gpt2_4l, IOI prompts"
            return [
                not_installable(f"{m} (vs inseq)", work, "inseq", INSEQ_REASON, group="inseq")
                for m in ("saliency", "integrated gradients", "ReAGent")
            ]
        return _rows_from(python, quick)
    from benchmarks import _inseq

    return _inseq.rows(quick)


def _rows_from(python: str, quick: bool) -> list[Row]:
    """:func:`inseq_rows` run by another Python (its environment has inseq), read back as JSON."""
    root = Path(__file__).resolve().parent.parent
    code = (
        "import json, benchmarks.attribution as a; "
        f"print('@@ROWS@@' + json.dumps([r.to_dict() for r in a.inseq_rows({bool(quick)})]))"
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(root)}
    done = subprocess.run([python, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=False)
    sys.stderr.write(done.stderr[-2000:])
    for line in done.stdout.splitlines():
        if line.startswith("@@ROWS@@"):
            return [Row(**r) for r in json.loads(line[len("@@ROWS@@") :])]
    raise RuntimeError(f"the inseq subprocess ({python}) gave no rows: {done.stderr[-300:]}")


def rows(quick: bool = False, inseq_python: str | None = None) -> list[Row]:
    return image_rows(quick) + layer_ig_rows(quick) + inseq_rows(quick, inseq_python)
