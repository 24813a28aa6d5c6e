"""inseq rows (imported only where inseq is installed; see :func:`benchmarks.attribution.inseq_rows`).

Work: the shipped IOI GPT-2 (``ioi_gpt2_4l``: 4 layers, 4 heads, d = 64, word-level vocabulary of
52) on 16 IOI prompts of 15 tokens; each explains the logit of its indirect object (the answer) at
the last position. Ours: :func:`xattr_nb.attribution.attribute_text` on the batch. inseq:
``inseq.load_model(model, method, tokenizer=...)`` and ``.attribute(prompts, prompt + answer,
attributed_fn="logit")``, the scores summed over the embedding dimension (as ours are).
inseq runs a decoder-only model one prompt at a time ("batched constrained decoding is not supported
for decoder-only models"), which is most of the gap.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.harness import Row, allclose, compare, failed, spearman

N_PROMPTS = 16


def _setup() -> dict[str, Any]:
    from xattr_nb.methods.relp import ioi_pairs
    from xattr_nb.models import zoo
    from xattr_nb.models.lm_recipes import ioi_tokenizer

    model, tok = zoo.load("ioi_gpt2_4l").eval(), ioi_tokenizer()
    p = ioi_pairs(N_PROMPTS, seed=0)[0]
    prompts = [tok.decode(r) for r in p.clean_ids]
    answers = [tok.convert_ids_to_tokens(int(a)) for a in p.answer]
    return {
        "model": model,
        "tok": tok,
        "prompts": prompts,
        "target": p.answer,
        "generated": [q + " " + a for q, a in zip(prompts, answers, strict=True)],
        "t": int(p.clean_ids.shape[1]),
    }


def rows(quick: bool = False) -> list[Row]:
    import inseq

    from xattr_nb.attribution import attribute_text

    s = _setup()
    model, tok, t = s["model"], s["tok"], s["t"]
    n_steps = 8 if quick else 50
    work = f"ioi_gpt2_4l, {N_PROMPTS} IOI prompts of {t} tokens, logit of the answer"
    loaded: dict[str, Any] = {}

    def theirs(method: str, **kw: Any):
        def run() -> torch.Tensor:
            if method not in loaded:  # loading is set-up, not timed work
                loaded[method] = inseq.load_model(model, method, tokenizer=tok)
            out = loaded[method].attribute(
                input_texts=s["prompts"],
                generated_texts=s["generated"],
                attributed_fn="logit",
                show_progress=False,
                skip_special_tokens=False,
                **kw,
            )
            return torch.stack([a.target_attributions[:t, 0, :].sum(-1) for a in out.sequence_attributions])

        return run

    theirs("saliency")()  # load outside the timing
    theirs("integrated_gradients", n_steps=2)()
    out = [
        compare(
            "saliency (vs inseq)",
            work,
            lambda: attribute_text(model, tok, s["prompts"], s["target"], "saliency").scores,
            theirs("saliency"),
            peer_name="inseq saliency",
            agree=allclose(1e-5, 1e-4),
            repeats=5,
            quick=quick,
            group="inseq",
            note="inseq runs decoder-only models one prompt at a time",
        ),
        compare(
            "integrated gradients (vs inseq)",
            f"{work}, {n_steps} steps",
            lambda: (
                attribute_text(model, tok, s["prompts"], s["target"], "integrated_gradients", n_steps=n_steps).scores
            ),
            theirs("integrated_gradients", n_steps=n_steps),
            peer_name="inseq integrated_gradients",
            agree=spearman(0.9),
            repeats=5,
            quick=quick,
            group="inseq",
            note="baselines differ: ours the [PAD] embedding on real tokens (Layer IG), inseq the zero embedding; "
            "so rank agreement, not equality",
        ),
    ]
    try:
        inseq.load_model(model, "reagent", tokenizer=tok)
        reason = "inseq's ReAGent loaded; no comparison written yet"
    except Exception as e:  # inseq builds a POS-tag sampler with nltk and its tagger data
        reason = (
            f"inseq ReAGent could not be set up offline ({type(e).__name__}: {str(e).strip()[:90]}): its token "
            "sampler tags the vocabulary with nltk's POS tagger, whose data nltk downloads from the web"
        )
    out.append(failed("ReAGent (vs inseq)", work, "inseq reagent", reason, group="inseq"))
    out[-1].agree = True  # not a disagreement: the peer cannot run here
    out[-1].agreement = "-"
    out[-1].note = f"peer not runnable: {reason}"
    return out
