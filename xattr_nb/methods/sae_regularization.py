"""SelfReg: regularise a linear classifier on LLM states away from SAE features judged unrelated to the task.

Wu, Yu, Zhai and Liu, "Self-Regularization with Sparse Autoencoders for Controllable LLM-based
Classification" (KDD 2025, arXiv:2502.14133; code:
github.com/JacksonWuxs/SelfReg-Achieving_Controllable_LLM_Classifier_with_SAE).

A linear head on LLM hidden states is accurate but opaque: nothing stops it from reading a
shortcut (here, the topic of a request instead of its harm). SelfReg makes the features visible
and penalises the shortcut ones:

1. :func:`token_states`: hidden states of every (non-special, non-template) token, and their mean
   per text, the classifier's input ``h(x)``;
2. a TopK SAE with a tied decoder is pre-trained on generic text and fine-tuned on the task with
   dead-latent revival (the shared :mod:`xattr_nb.models.sae`: :func:`pretrain_sae` wraps it);
3. each latent's top-activating tokens are judged task-related or not (:func:`lexicon_judge`, the
   stand-in for the paper's GPT-4o judge); the unrelated ones form the set U (:func:`unintended_mask`);
4. :func:`train_head` trains the linear head with the loss + ``lam * mean_{j in U} |enc_pre(w)_j|``
   (:func:`selfreg_penalty`); the official code also removes U's reconstruction from the input
   (:func:`surgery`).

Baselines (:data:`VARIANTS`): plain, L2, dropout, label smoothing, focal loss, the regulariser
alone, the surgery alone, the official SelfReg (both), and an oracle that projects out the known
topic direction (:func:`topic_direction`, :func:`project_out`). Metrics: :func:`evaluate_head`
(accuracy, F1, topic-swap reliance, mean |cos(w, d_j)| over U). :func:`run_variants` trains every
variant at several seeds; :func:`selfreg` chains steps 2–3 (SAE and judge) for one task, and
:func:`explain`, the entry point, chains steps 1–4 from texts to a trained :class:`SelfRegClassifier`.
Figures (through :mod:`xattr_nb.plots`): :func:`plot_sae_training`, :func:`plot_topic_projection`,
:func:`plot_lambda_sweep`.

Written from the spec's reading of the official code; nothing is copied from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch import nn

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor, check_texts
from xattr_nb.interventions.hooks import block_names
from xattr_nb.interventions.probes import diff_of_means, hidden_states
from xattr_nb.models.sae import TopKSAE, encode_direction, finetune_dead_revival, train_sae
from xattr_nb.runtime import progress

__all__ = [
    "PAPER_CONFIG",
    "PROMPT",
    "VARIANTS",
    "LinearHead",
    "SelfRegClassifier",
    "SelfRegParts",
    "TokenStates",
    "evaluate_head",
    "explain",
    "finetune_sae",
    "lambda_sweep",
    "lexicon_judge",
    "mean_alignment",
    "plot_lambda_sweep",
    "plot_sae_training",
    "plot_topic_projection",
    "pretrain_sae",
    "project_out",
    "random_mask",
    "random_u_control",
    "run_variants",
    "selfreg",
    "selfreg_penalty",
    "surgery",
    "token_states",
    "topic_direction",
    "train_head",
    "unintended_mask",
]

#: The task prompt's template: its tokens are left out of pooling and of SAE fine-tuning (official code).
PROMPT = "user request : "

#: The paper's settings (§3.2 of the spec), used by ``scale="full"``.
PAPER_CONFIG: dict[str, Any] = {
    "llm": "mistralai/Mistral-7B-Instruct-v0.2",
    "layer": 16,
    "pool": "last",
    "d_hidden": 65536,
    "k_schedule": (200, 20, 0.5),
    "sae_epochs": 5,
    "finetune_epochs": 5,
    "finetune_lr": 5e-5,
    "lam": {"toxic_chat": 31.0, "reward_bench": 3.0, "dxy": 1.0},
    "head_epochs": 50,
}

VARIANTS: tuple[str, ...] = (
    "plain",
    "l2",
    "dropout",
    "label_smoothing",
    "focal",
    "selfreg_reg",
    "selfreg_surgery",
    "selfreg",
    "oracle",
)


# ----------------------------------------------------------------------------------------------
# Step 1: token states and the pooled classifier input.


@dataclass
class TokenStates:
    """Hidden states of one set of texts at one layer.

    ``tokens`` ``[T, D]``: every kept token (not special, not template, not padding), texts in order;
    ``text_index`` ``[T]``: the text each token belongs to; ``words``: each kept token's string;
    ``pooled`` ``[N, D]``: one vector per text (mean of its kept tokens, or the last one)."""

    tokens: torch.Tensor
    text_index: torch.Tensor
    words: list[str]
    pooled: torch.Tensor


def token_states(
    texts: Sequence[str],
    tokenizer: Any,
    model: nn.Module,
    *,
    layer: int = -1,
    prefix: str = PROMPT,
    pool: str = "mean",
    batch_size: int = 128,
    show_progress: bool = True,
) -> TokenStates:
    """Run ``model`` once over ``prefix + text`` for every text and keep the residual stream after
    block ``layer`` (negative counts from the end) at every token that is neither special, padding
    nor part of ``prefix``.

    ``pool="mean"`` averages those tokens (a bidirectional encoder spreads the request over all of
    them); ``"last"`` takes the last one (what a causal LM's last token summarises, the paper's choice).
    """
    texts = check_texts(list(texts) if not isinstance(texts, str) else texts, "texts")
    check_choice(pool, ("mean", "last"), "pool")
    if not isinstance(prefix, str):
        raise InputError(f"`prefix` must be a str (may be empty); got {type(prefix).__name__}")
    batch_size = check_int(batch_size, "batch_size", low=1)
    n_layers = len(block_names(model))
    layer = check_int(layer, "layer", low=-n_layers, high=n_layers - 1) % n_layers
    toks, index, words, pooled = [], [], [], []
    quiet = {} if show_progress else {"disable": True}
    for start in progress(range(0, len(texts), batch_size), desc="token states", unit="batch", **quiet):
        chunk = [prefix + t for t in texts[start : start + batch_size]]
        enc = tokenizer(chunk, padding=True, return_tensors="pt", return_offsets_mapping=True,
                        return_special_tokens_mask=True)  # fmt: skip
        offsets = enc["offset_mapping"]
        template = offsets[..., 1] <= len(prefix)  # tokens wholly inside the prefix (BPE's " how" starts in it)
        exclude = enc["special_tokens_mask"].bool() | template
        keep = enc["attention_mask"].bool() & ~exclude
        h = hidden_states(model, enc["input_ids"], enc["attention_mask"], layers=[layer], pool=None,
                          exclude_mask=exclude, batch_size=batch_size)[layer]  # fmt: skip
        for i in range(h.shape[0]):
            pos = torch.nonzero(keep[i]).flatten()
            toks.append(h[i, pos])
            index.append(torch.full((len(pos),), start + i, dtype=torch.long))
            words.extend(tokenizer.convert_ids_to_tokens(enc["input_ids"][i, pos].tolist()))
            pooled.append(h[i, pos].mean(0) if pool == "mean" else h[i, pos[-1]])
    return TokenStates(torch.cat(toks), torch.cat(index), words, torch.stack(pooled))


# ----------------------------------------------------------------------------------------------
# Step 2: the SAE.


def pretrain_sae(
    acts: torch.Tensor,
    *,
    d_hidden: int = 256,
    k_schedule: tuple[int, int, float] = (32, 8, 0.5),
    epochs: int = 20,
    lr: float = 1e-3,
    batch_size: int = 512,
    seed: int = 0,
    show_progress: bool = True,
) -> tuple[TopKSAE, dict[str, list[float]]]:
    """A tied TopK SAE trained on ``acts`` ``[N, D]`` (nMSE, ``k`` annealed ``k0 -> k1`` over the first
    ``frac`` of the steps, Adam); the shared :func:`~xattr_nb.models.sae.train_sae` does the work."""
    acts = check_tensor(acts, "acts", ndim=2, dtype="float", layout="[N, D]")
    if not isinstance(k_schedule, (tuple, list)) or len(k_schedule) != 3:
        raise InputError(f"`k_schedule` must be (k0, k1, frac); got {k_schedule!r}")
    k0 = check_int(k_schedule[0], "k_schedule[0]", low=1)
    sae = TopKSAE(acts.shape[1], d_hidden, k0, tied=True, seed=seed)
    hist = train_sae(sae, acts, epochs=epochs, batch_size=batch_size, lr=lr, k_schedule=tuple(k_schedule), seed=seed,
                     show_progress=show_progress)  # fmt: skip
    return sae, hist


def finetune_sae(
    sae: TopKSAE, acts: torch.Tensor, *, epochs: int = 2, lr: float = 1e-4, seed: int = 0, show_progress: bool = True
) -> dict[str, Any]:
    """Task fine-tuning with dead-latent revival (:func:`~xattr_nb.models.sae.finetune_dead_revival`) on the
    task's token states (template tokens already left out by :func:`token_states`)."""
    return finetune_dead_revival(sae, acts, epochs=epochs, lr=lr, seed=seed, show_progress=show_progress)


# ----------------------------------------------------------------------------------------------
# Step 3: judging the latents.


def _clean(token: str) -> str:
    return token.removeprefix("##").removeprefix("Ġ").removeprefix("▁").strip().lower()


def lexicon_judge(
    top: pd.DataFrame,
    task_words: Iterable[str],
    unintended_words: Iterable[str],
    *,
    thr: float = 0.6,
    k: int = 20,
    min_rows: int = 5,
) -> dict[int, str]:
    """Judge each latent of a :func:`~xattr_nb.models.sae.top_activations` table by its top tokens.

    A latent is ``"task"`` when at least ``thr`` of its top-``k`` activating tokens are task words,
    ``"unintended"`` when at least ``thr`` are unintended words, else ``"cannot tell"`` (also when
    it has fewer than ``min_rows`` activations). Tokens are compared lower-cased, without WordPiece
    or BPE markers. This replaces the paper's GPT-4o interpretation + judgement with a lookup, so
    its verdicts are exact for the world's lexicons and blind to anything else.
    """
    if not isinstance(top, pd.DataFrame) or not {"latent", "rank", "label"} <= set(top.columns):
        raise InputError("`top` must be a DataFrame with columns latent, rank, label (from top_activations)")
    thr = check_float(thr, "thr", low=0.0, high=1.0)
    if thr <= 0.5:
        raise InputError(f"`thr` must be above 0.5 so a latent cannot be both task and unintended; got {thr}")
    k = check_int(k, "k", low=1)
    min_rows = check_int(min_rows, "min_rows", low=1)
    task = {_clean(w) for w in task_words}
    other = {_clean(w) for w in unintended_words}
    if not task or not other:
        raise InputError("`task_words` and `unintended_words` must each hold at least one word")
    if task & other:
        raise InputError(f"a word cannot be both task and unintended: {sorted(task & other)}")
    out: dict[int, str] = {}
    for latent, rows in top[top["rank"] < k].groupby("latent"):
        labels = [_clean(str(t)) for t in rows.sort_values("rank")["label"]]
        if len(labels) < min_rows:
            out[int(latent)] = "cannot tell"
            continue
        f_task = sum(t in task for t in labels) / len(labels)
        f_other = sum(t in other for t in labels) / len(labels)
        out[int(latent)] = "task" if f_task >= thr else "unintended" if f_other >= thr else "cannot tell"
    return out


def unintended_mask(judgments: Mapping[int, str], d_hidden: int) -> torch.Tensor:
    """Bool ``[d_hidden]``: the latents judged ``"unintended"`` (U). "cannot tell" is left out, as in
    the official ``choose_untask_mask``."""
    d_hidden = check_int(d_hidden, "d_hidden", low=1)
    mask = torch.zeros(d_hidden, dtype=torch.bool)
    for j, verdict in judgments.items():
        check_int(j, "judgments key", low=0, high=d_hidden - 1)
        check_choice(verdict, ("task", "unintended", "cannot tell"), f"judgments[{j}]")
        mask[j] = verdict == "unintended"
    return mask


def random_mask(
    judgments: Mapping[int, str],
    size: int,
    d_hidden: int,
    *,
    seed: int = 0,
    among: Sequence[str] = ("task", "unintended", "cannot tell"),
) -> torch.Tensor:
    """The judge's null: a bool ``[d_hidden]`` mask of ``size`` latents drawn uniformly (seeded) from the
    latents the judge read (the keys of ``judgments``: those that fire on the task) whose verdict is in
    ``among`` (default: any verdict, a judge that knows nothing; ``("unintended", "cannot tell")``: a judge
    that knows the task's words but not the shortcut's). SelfReg with this U in place of the judge's tells
    what the method gains without a judge that knows."""
    d_hidden = check_int(d_hidden, "d_hidden", low=1)
    if not isinstance(judgments, Mapping) or not judgments:
        raise InputError("`judgments` must be a non-empty dict latent -> verdict (from lexicon_judge)")
    if isinstance(among, str) or not among:
        raise InputError("`among` must be a non-empty list of verdicts ('task', 'unintended', 'cannot tell')")
    for i, v in enumerate(among):
        check_choice(v, ("task", "unintended", "cannot tell"), f"among[{i}]")
    for j in judgments:
        check_int(j, "judgments key", low=0, high=d_hidden - 1)
    pool = sorted(int(j) for j, v in judgments.items() if v in among)
    if not pool:
        raise InputError(f"no judged latent has a verdict in `among` = {list(among)}")
    size = check_int(size, "size", low=1, high=len(pool))
    pick = np.random.default_rng(seed).choice(pool, size=size, replace=False)
    mask = torch.zeros(d_hidden, dtype=torch.bool)
    mask[torch.as_tensor(pick)] = True
    return mask


# ----------------------------------------------------------------------------------------------
# Step 4: the penalty and the surgery.


def _check_mask(mask: Any, sae: TopKSAE) -> torch.Tensor:
    mask = check_tensor(mask, "mask", ndim=1, dtype="bool", layout="[d_hidden]")
    if mask.shape[0] != sae.d_hidden:
        raise InputError(f"`mask` must have one entry per SAE latent ({sae.d_hidden}); got {mask.shape[0]}")
    if not mask.any():
        raise InputError("`mask` selects no latent: the unintended set U is empty (check the SAE and the judge)")
    return mask


def selfreg_penalty(sae: TopKSAE, w: torch.Tensor, mask: torch.Tensor, *, centered: bool = False) -> torch.Tensor:
    """``mean_{j in U} |[(w - b_dec) W_enc + b_enc]_j|``: the SAE pre-activation of the weight vector(s)
    ``w`` on the unintended latents, bias terms included as in the official ``compute_constraint``
    (summed over rows for a multi-class ``w`` ``[C, D]``). Multiply by lambda outside.

    ``centered=True`` drops the bias constants, ``mean_{j in U} |<w, W_enc[:, j]>|``: the paper's stated
    "similarity between the weights and the unintended features", minimised at ``w`` orthogonal to U
    (the official form is minimised where ``<w, W_enc[:, j]> = <b_dec, W_enc[:, j]> - b_enc_j`` instead)."""
    mask = _check_mask(mask, sae)
    u = (w @ sae.W_enc) if centered else encode_direction(sae, w)
    return u[..., mask].abs().mean(-1).sum()


@torch.no_grad()
def surgery(sae: TopKSAE, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official input surgery: ``h - [(ReLU(u(h)) * 1_U) W_dec + b_dec]``, removing what the
    unintended latents reconstruct (ReLU of the pre-activation, no TopK; ``b_dec`` is subtracted
    too, a constant shift)."""
    mask = _check_mask(mask, sae)
    h = check_tensor(h, "h", ndim=2, dtype="float", layout="[N, D]")
    a = torch.relu(sae.encode_pre(h)) * mask.to(h.dtype)
    return h - sae.decode(a)


def topic_direction(h: torch.Tensor, topic: Any) -> torch.Tensor:
    """Unit difference of the mean states of topic-1 and topic-0 texts (the oracle's known direction)."""
    d = diff_of_means(h, topic)
    return d / d.norm().clamp_min(1e-12)


def project_out(h: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``h`` with its component along ``direction`` (``[D]``, or ``[K, D]`` orthonormalised here) removed."""
    h = check_tensor(h, "h", ndim=2, dtype="float", layout="[N, D]")
    d = check_tensor(direction, "direction", ndim=(1, 2), dtype="float")
    d = d.reshape(-1, h.shape[1]) if d.shape[-1] == h.shape[1] else None
    if d is None:
        raise InputError(f"`direction` must have {h.shape[1]} features (as `h`); got {tuple(direction.shape)}")
    q, _ = torch.linalg.qr(d.T.double())
    q = q.to(h.dtype)
    return h - (h @ q) @ q.T


# ----------------------------------------------------------------------------------------------
# The classifier: a linear head trained with the official recipe, shortened.


class LinearHead(nn.Module):
    """``r = w^T x + b`` (one logit, binary task), with optional input dropout (a baseline)."""

    def __init__(self, d_in: int, *, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(check_int(seed, "seed", low=0))
        self.linear = nn.Linear(check_int(d_in, "d_in", low=1), 1)
        self.dropout = nn.Dropout(check_float(dropout, "dropout", low=0.0, high=0.99))
        self.history: dict[str, list[float]] = {"train_loss": [], "val_loss": [], "lr": []}

    @property
    def w(self) -> torch.Tensor:
        return self.linear.weight[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(x))[:, 0]


def _task_loss(variant: str, smoothing: float, gamma: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    bce = nn.functional.binary_cross_entropy_with_logits
    if variant == "label_smoothing":
        return lambda r, y: bce(r, y * (1 - smoothing) + smoothing / 2)
    if variant == "focal":

        def focal(r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            p_t = torch.sigmoid(torch.where(y > 0.5, r, -r))
            return ((1 - p_t) ** gamma * bce(r, y, reduction="none")).mean()

        return focal
    return bce


def train_head(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    variant: str = "plain",
    sae: TopKSAE | None = None,
    mask: torch.Tensor | None = None,
    lam: float = 3.0,
    centered: bool = False,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    patience: int = 3,
    max_halvings: int = 2,
    val_frac: float = 0.2,
    l2: float = 1e-2,
    dropout: float = 0.2,
    smoothing: float = 0.1,
    gamma: float = 2.0,
    seed: int = 0,
) -> LinearHead:
    """Train a :class:`LinearHead` on inputs ``x`` ``[N, D]`` (already transformed for ``surgery`` or the
    oracle) and 0/1 labels ``y``, the official recipe shortened: AdamW (weight decay 0), BCE, batch 64,
    a ``val_frac`` validation split of ``x``; after ``patience`` epochs without a better validation
    loss the lr halves (at most ``max_halvings`` times, then training stops); the best epoch's weights
    are restored. ``variant`` picks the loss or penalty: ``l2`` adds ``l2 * ||w||^2``; ``dropout`` drops
    inputs; ``label_smoothing``/``focal`` change the loss; ``selfreg_reg`` and ``selfreg`` add
    ``lam * selfreg_penalty`` (they need ``sae`` and ``mask``; ``centered`` picks the penalty's form). Written by hand because
    :func:`xattr_nb.models.fit` has no validation-driven lr halving with restore.
    """
    check_choice(variant, VARIANTS, "variant")
    x = check_tensor(x, "x", ndim=2, dtype="float", layout="[N, D]")
    y = check_tensor(y, "y", ndim=1, layout="[N]")
    if len(y) != len(x):
        raise InputError(f"`y` has {len(y)} labels but `x` has {len(x)} rows")
    if not set(y.unique().tolist()) <= {0, 1}:
        raise InputError(f"`y` must hold 0/1 labels; got {sorted(y.unique().tolist())}")
    epochs = check_int(epochs, "epochs", low=1)
    lr = check_float(lr, "lr", low=1e-12)
    val_frac = check_float(val_frac, "val_frac", low=0.01, high=0.9)
    patience = check_int(patience, "patience", low=1)
    max_halvings = check_int(max_halvings, "max_halvings", low=0)
    batch_size = check_int(batch_size, "batch_size", low=1)
    lam = check_float(lam, "lam", low=0.0)
    penalised = variant in ("selfreg_reg", "selfreg")
    if penalised and (sae is None or mask is None):
        raise InputError(f"variant {variant!r} needs `sae` and `mask` (the unintended latents)")
    if penalised:
        mask = _check_mask(mask, sae)
        if sae.d_in != x.shape[1]:
            raise InputError(f"`sae` reads {sae.d_in} features but `x` has {x.shape[1]}")
    gen = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    perm = torch.randperm(len(x), generator=gen)
    n_val = max(1, round(val_frac * len(x)))
    vi, ti = perm[:n_val], perm[n_val:]
    yf = y.float()
    head = LinearHead(x.shape[1], dropout=dropout if variant == "dropout" else 0.0, seed=seed)
    loss_fn = _task_loss(variant, smoothing, gamma)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    frozen = [p.requires_grad for p in sae.parameters()] if penalised else []
    if penalised:
        sae.requires_grad_(False)

    def objective(r: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = loss_fn(r, target)
        if variant == "l2":
            loss = loss + l2 * head.w.pow(2).sum()
        if penalised:
            loss = loss + lam * selfreg_penalty(sae, head.w, mask, centered=centered)
        return loss

    best, best_state, bad, halvings = float("inf"), None, 0, 0
    try:
        for _ in range(epochs):
            head.train()
            total = 0.0
            for idx in ti[torch.randperm(len(ti), generator=gen)].split(batch_size):
                loss = objective(head(x[idx]), yf[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            head.eval()
            with torch.no_grad():
                val = float(objective(head(x[vi]), yf[vi]))
            head.history["train_loss"].append(total / len(ti))
            head.history["val_loss"].append(val)
            head.history["lr"].append(opt.param_groups[0]["lr"])
            if val < best - 1e-6:
                best, bad = val, 0
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
                continue
            bad += 1
            if bad >= patience:
                if halvings >= max_halvings:
                    break
                halvings, bad = halvings + 1, 0
                for g in opt.param_groups:
                    g["lr"] /= 2
    finally:
        for p, r in zip(sae.parameters() if penalised else [], frozen, strict=True):
            p.requires_grad_(r)
    if best_state is not None:
        head.load_state_dict(best_state)
    return head.eval()


# ----------------------------------------------------------------------------------------------
# Metrics.


@torch.no_grad()
def mean_alignment(w: torch.Tensor, sae: TopKSAE, mask: torch.Tensor) -> float:
    """``mean_{j in U} |cos(w, d_j)|``: how much the weight vector points along the unintended decoder
    directions (scale-free, so heads of different norms compare)."""
    mask = _check_mask(mask, sae)
    w = check_tensor(w, "w", ndim=1, dtype="float")
    d = sae.decoder[mask]
    cos = (d @ w) / (d.norm(dim=1) * w.norm()).clamp_min(1e-12)
    return float(cos.abs().mean())


@torch.no_grad()
def evaluate_head(
    head: LinearHead, x: torch.Tensor, y: torch.Tensor, *, x_twin: torch.Tensor | None = None
) -> dict[str, float]:
    """Accuracy and F1 (harmful = positive) on ``(x, y)``; with ``x_twin`` (the same texts, topic
    swapped) also ``reliance`` = accuracy on ``x`` minus accuracy on ``x_twin`` and ``flip`` = the
    fraction of predictions that change."""
    x = check_tensor(x, "x", ndim=2, dtype="float")
    y = check_tensor(y, "y", ndim=1)
    if len(y) != len(x):
        raise InputError(f"`y` has {len(y)} labels but `x` has {len(x)} rows")
    pred = (head(x) > 0).long()
    out = {
        "accuracy": float((pred == y).float().mean()),
        "f1": float(f1_score(y.numpy(), pred.numpy(), zero_division=0)),
    }
    if x_twin is not None:
        x_twin = check_tensor(x_twin, "x_twin", shape=tuple(x.shape), dtype="float")
        pred_t = (head(x_twin) > 0).long()
        out["reliance"] = out["accuracy"] - float((pred_t == y).float().mean())
        out["flip"] = float((pred_t != pred).float().mean())
    return out


# ----------------------------------------------------------------------------------------------
# Entry points.


@dataclass
class SelfRegParts:
    """What :func:`selfreg` builds: the SAE, the judge's verdicts, U, and the step histories."""

    sae: TopKSAE
    judgments: dict[int, str]
    mask: torch.Tensor
    top: pd.DataFrame
    history: dict[str, Any] = field(default_factory=dict)


def selfreg(
    generic: TokenStates,
    task: TokenStates,
    task_words: Iterable[str],
    unintended_words: Iterable[str],
    *,
    d_hidden: int = 256,
    k_schedule: tuple[int, int, float] = (32, 8, 0.5),
    sae_epochs: int = 20,
    finetune_epochs: int = 2,
    finetune_lr: float = 1e-4,
    top_k: int = 20,
    thr: float = 0.6,
    seed: int = 0,
    show_progress: bool = True,
) -> SelfRegParts:
    """Steps 2–3 in one call: pre-train the SAE on ``generic.tokens``, fine-tune it on ``task.tokens``,
    take each latent's top-``top_k`` task tokens and judge them; U = the unintended latents."""
    from xattr_nb.models.sae import top_activations

    sae, hist = pretrain_sae(generic.tokens, d_hidden=d_hidden, k_schedule=k_schedule, epochs=sae_epochs, seed=seed,
                             show_progress=show_progress)  # fmt: skip
    ft = finetune_sae(sae, task.tokens, epochs=finetune_epochs, lr=finetune_lr, seed=seed, show_progress=show_progress)
    top = top_activations(sae, task.tokens, task.words, k=top_k)
    judgments = lexicon_judge(top, task_words, unintended_words, thr=thr, k=top_k)
    mask = unintended_mask(judgments, sae.d_hidden)
    return SelfRegParts(sae, judgments, mask, top, {"pretrain": hist, "finetune": ft})


def run_variants(
    inputs: Mapping[str, Mapping[str, torch.Tensor]],
    y_train: torch.Tensor,
    evals: Mapping[str, tuple[str, torch.Tensor, str | None]],
    *,
    variants: Sequence[str] = VARIANTS,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    sae: TopKSAE | None = None,
    mask: torch.Tensor | None = None,
    show_progress: bool = True,
    **head_kwargs: Any,
) -> pd.DataFrame:
    """Train every variant at every seed and score it; one row per (variant, seed, eval split).

    ``inputs[kind][split]`` holds the pooled inputs of each split for each input kind (``"raw"``,
    ``"surgery"``, ``"oracle"``); variant ``selfreg``/``selfreg_surgery`` read ``"surgery"``, ``oracle``
    reads ``"oracle"``, the others ``"raw"``; the training split is ``"train"``. ``evals[name] =
    (split, labels, twin_split or None)``. ``head_kwargs`` go to :func:`train_head`. Columns: variant,
    seed, split, accuracy, f1, reliance, flip, alignment (mean |cos(w, d_j)| over U when ``sae``).
    """
    kind_of = {"selfreg": "surgery", "selfreg_surgery": "surgery", "oracle": "oracle"}
    rows = []
    jobs = [(v, s) for v in variants for s in seeds]
    quiet = {} if show_progress else {"disable": True}
    for v, s in progress(jobs, desc="heads", unit="head", **quiet):
        check_choice(v, VARIANTS, "variants[...]")
        kind = kind_of.get(v, "raw")
        if kind not in inputs:
            raise InputError(f"variant {v!r} needs inputs[{kind!r}]")
        x = inputs[kind]
        head = train_head(x["train"], y_train, variant=v, sae=sae, mask=mask, seed=int(s), **head_kwargs)
        align = mean_alignment(head.w.detach(), sae, mask) if sae is not None and mask is not None else np.nan
        for name, (split, y, twin) in evals.items():
            m = evaluate_head(head, x[split], y, x_twin=x[twin] if twin else None)
            rows.append({"variant": v, "seed": int(s), "split": name, **m, "alignment": align})
    return pd.DataFrame(rows)


def random_u_control(
    x: Mapping[str, torch.Tensor],
    y_train: torch.Tensor,
    evals: Mapping[str, tuple[str, torch.Tensor, str | None]],
    *,
    sae: TopKSAE,
    judgments: Mapping[int, str],
    size: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    variants: Sequence[str] = ("selfreg", "selfreg_reg"),
    among: Sequence[str] = ("task", "unintended", "cannot tell"),
    **head_kwargs: Any,
) -> pd.DataFrame:
    """The control for the judge: each SelfReg variant of ``variants`` trained with a **random** U of ``size``
    latents (:func:`random_mask` among the verdicts ``among``, a fresh draw per seed, seeded by it) instead of
    the judge's. ``x[split]`` are
    the raw pooled inputs; the surgery is redone for each random U. Rows as :func:`run_variants`, the
    variant named ``"<variant>_random_u"``, plus ``u_size``."""
    for i, v in enumerate(variants):
        check_choice(v, ("selfreg", "selfreg_reg", "selfreg_surgery"), f"variants[{i}]")
    frames = []
    for s in seeds:
        mask = random_mask(judgments, size, sae.d_hidden, seed=int(s), among=among)
        inputs = {"raw": dict(x), "surgery": {k: surgery(sae, v, mask) for k, v in x.items()}}
        df = run_variants(inputs, y_train, evals, variants=variants, seeds=[int(s)], sae=sae, mask=mask,
                          show_progress=False, **head_kwargs)  # fmt: skip
        frames.append(df.assign(variant=df["variant"] + "_random_u", u_size=int(mask.sum())))
    return pd.concat(frames, ignore_index=True)


@dataclass
class SelfRegClassifier:
    """What :func:`explain` trains: the linear head, the SAE parts it is regularised with, and how it reads
    text (``layer``, ``pool``, ``prefix`` of :func:`token_states`). ``variant`` ``"selfreg"`` and
    ``"selfreg_surgery"`` read the surgered states (:meth:`inputs`)."""

    head: LinearHead
    parts: SelfRegParts
    variant: str
    layer: int = -1
    pool: str = "mean"
    prefix: str = PROMPT

    def inputs(self, h: torch.Tensor) -> torch.Tensor:
        """The head's input for pooled states ``h`` ``[N, D]``: ``h`` after :func:`surgery` when the variant uses it."""
        return surgery(self.parts.sae, h, self.parts.mask) if self.variant in _SURGERY else h

    @torch.no_grad()
    def logits(self, model: nn.Module, tokenizer: Any, texts: Sequence[str], *, batch_size: int = 128) -> torch.Tensor:
        """The head's logit ``[N]`` (harmful > 0) for ``texts``, read by ``model`` as in training."""
        st = token_states(texts, tokenizer, model, layer=self.layer, prefix=self.prefix, pool=self.pool,
                          batch_size=batch_size, show_progress=False)  # fmt: skip
        return self.head(self.inputs(st.pooled))

    @property
    def alignment(self) -> float:
        """Mean ``|cos(w, d_j)|`` over the unintended latents U (:func:`mean_alignment`)."""
        return mean_alignment(self.head.w.detach(), self.parts.sae, self.parts.mask)


_SURGERY = ("selfreg", "selfreg_surgery")


def explain(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    labels: torch.Tensor,
    *,
    generic_texts: Sequence[str],
    task_words: Iterable[str],
    unintended_words: Iterable[str],
    variant: str = "selfreg",
    layer: int = -1,
    pool: str = "mean",
    prefix: str = PROMPT,
    lam: float = 3.0,
    centered: bool = False,
    d_hidden: int = 256,
    k_schedule: tuple[int, int, float] = (32, 8, 0.5),
    sae_epochs: int = 20,
    finetune_epochs: int = 2,
    finetune_lr: float = 1e-4,
    top_k: int = 20,
    thr: float = 0.6,
    seed: int = 0,
    show_progress: bool = True,
    **head_kwargs: Any,
) -> SelfRegClassifier:
    """SelfReg from texts to a trained classifier, steps 1–4 in one call: :func:`token_states` of
    ``generic_texts`` (no template) and of the task's ``texts`` (with ``prefix``) under ``model``; the SAE
    pre-trained and fine-tuned, its latents judged and U formed (:func:`selfreg`); a linear head trained on
    ``labels`` with the penalty (``variant`` ``"selfreg"``: penalty and surgery, the official code;
    ``"selfreg_reg"``: the penalty alone; ``"selfreg_surgery"``: the surgery alone). ``head_kwargs`` go to
    :func:`train_head`. Returns a :class:`SelfRegClassifier` (its ``alignment`` is what the penalty acts on)."""
    check_choice(variant, ("selfreg", "selfreg_reg", "selfreg_surgery"), "variant")
    labels = check_tensor(labels, "labels", ndim=1, layout="[N]")
    kw = {"layer": layer, "pool": pool, "show_progress": show_progress}
    generic = token_states(generic_texts, tokenizer, model, prefix="", **kw)
    task = token_states(texts, tokenizer, model, prefix=prefix, **kw)
    if len(labels) != task.pooled.shape[0]:
        raise InputError(f"`labels` has {len(labels)} entries but `texts` has {task.pooled.shape[0]}")
    parts = selfreg(generic, task, task_words, unintended_words, d_hidden=d_hidden, k_schedule=k_schedule,
                    sae_epochs=sae_epochs, finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, top_k=top_k,
                    thr=thr, seed=seed, show_progress=show_progress)  # fmt: skip
    if not parts.mask.any():
        raise InputError("the judge found no unintended latent (U is empty): train the SAE longer or lower `thr`")
    x = surgery(parts.sae, task.pooled, parts.mask) if variant in _SURGERY else task.pooled
    head = train_head(x, labels, variant=variant, sae=parts.sae, mask=parts.mask, lam=lam, centered=centered,
                      seed=seed, **head_kwargs)  # fmt: skip
    n_layers = len(block_names(model))
    return SelfRegClassifier(head, parts, variant, layer % n_layers, pool, prefix)


# ----------------------------------------------------------------------------------------------
# Figures (xattr_nb.plots: shown wherever they are called).


def plot_sae_training(pretrain: Mapping[str, Sequence[float]], finetune: Mapping[str, Sequence[float]]) -> Any:
    """nMSE per step of pre-training (generic text) then fine-tuning (task), log scale, and the TopK ``k``
    schedule of pre-training: ``pretrain`` from :func:`pretrain_sae` (``nmse``, ``k``), ``finetune`` from
    :func:`finetune_sae` (``nmse``)."""
    from xattr_nb import plots

    if not isinstance(pretrain, Mapping) or not {"nmse", "k"} <= set(pretrain):
        raise InputError("`pretrain` must be the history of pretrain_sae() (keys nmse, k)")
    if not isinstance(finetune, Mapping) or "nmse" not in finetune:
        raise InputError("`finetune` must be the result of finetune_sae() (key nmse)")
    n = len(pretrain["nmse"])
    with plots.style():
        fig = plots.figure(8.0, 2.4)
        ax, ak = fig.subplots(1, 2)
        ax.plot(range(n), pretrain["nmse"], label="pre-training (generic)")
        ax.plot(range(n, n + len(finetune["nmse"])), finetune["nmse"], label="fine-tuning (task)")
        ax.set(xlabel="step", ylabel="nMSE", yscale="log")
        ax.legend(fontsize=8)
        ak.plot(pretrain["k"], color="gray")
        ak.set(xlabel="pre-training step", ylabel="k (TopK)")
    return plots.show(fig)


@torch.no_grad()
def plot_topic_projection(
    states: Mapping[str, torch.Tensor], direction: torch.Tensor, topic: torch.Tensor, topic_names: Sequence[str]
) -> Any:
    """Histograms of the projection of pooled states on ``direction`` (``[D]``), one panel per entry of
    ``states`` (``{name: [N, D]}``, e.g. the input and the input after :func:`surgery`), split by the
    0/1 ``topic`` of each row (named by ``topic_names``)."""
    from xattr_nb import plots

    if not isinstance(states, Mapping) or not states:
        raise InputError("`states` must be a non-empty dict {name: [N, D] states}")
    direction = check_tensor(direction, "direction", ndim=1, dtype="float", layout="[D]")
    topic = check_tensor(topic, "topic", ndim=1, layout="[N]").long()
    if len(topic_names) != 2:
        raise InputError(f"`topic_names` must name the two topics; got {list(topic_names)}")
    with plots.style():
        fig = plots.figure(4.0 * len(states), 2.2)
        axes = fig.subplots(1, len(states), sharey=True, squeeze=False)[0]
        for ax, (name, h) in zip(axes, states.items(), strict=True):
            h = check_tensor(h, f"states[{name!r}]", ndim=2, dtype="float", layout="[N, D]")
            if len(h) != len(topic):
                raise InputError(f"`states[{name!r}]` has {len(h)} rows but `topic` has {len(topic)}")
            proj = (h @ direction).numpy()
            for t, c in ((0, "C0"), (1, "C1")):
                ax.hist(proj[(topic == t).numpy()], bins=20, alpha=0.6, color=c, label=str(topic_names[t]))
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("projection on the topic direction")
        axes[0].legend(fontsize=8)
    return plots.show(fig)


def lambda_sweep(
    x: Mapping[str, torch.Tensor],
    y_train: torch.Tensor,
    evals: Mapping[str, torch.Tensor],
    lams: Sequence[float],
    *,
    sae: TopKSAE,
    mask: torch.Tensor,
    seed: int = 0,
    **head_kwargs: Any,
) -> pd.DataFrame:
    """Accuracy of the regulariser alone (``selfreg_reg``) for each penalty weight in ``lams`` (``0`` is the
    plain head), one head per weight at ``seed``: rows ``lam``, one column per split of ``evals``
    (``{split: labels}``, inputs ``x[split]``; training on ``x["train"]``)."""
    rows = {}
    for lam in lams:
        lam = check_float(lam, "lams[...]", low=0.0)
        head = train_head(x["train"], y_train, variant="selfreg_reg" if lam else "plain", sae=sae, mask=mask,
                          lam=lam, seed=seed, **head_kwargs)  # fmt: skip
        rows[lam] = {s: evaluate_head(head, x[s], yy)["accuracy"] for s, yy in evals.items()}
    return pd.DataFrame(rows).T.rename_axis("lam")


def plot_lambda_sweep(sweep: pd.DataFrame, *, chosen: float | None = None) -> Any:
    """Accuracy per split against the penalty weight (from :func:`lambda_sweep`), log axis with ``0`` (the
    plain head) drawn one step left of the smallest positive weight; ``chosen`` marks the weight used."""
    from xattr_nb import plots

    if not isinstance(sweep, pd.DataFrame) or sweep.empty:
        raise InputError("`sweep` must be the DataFrame of lambda_sweep()")
    lams = [float(v) for v in sweep.index]
    positive = [v for v in lams if v > 0]
    zero_at = min(positive) / 3 if positive else 1.0
    xs = [v if v > 0 else zero_at for v in lams]
    with plots.style():
        fig = plots.figure(4.5, 2.6)
        ax = fig.add_subplot()
        for col in sweep.columns:
            ax.plot(xs, sweep[col].to_numpy(), marker="o", label=str(col))
        if chosen is not None:
            ax.axvline(chosen if chosen > 0 else zero_at, color="grey", lw=0.8, ls="--", label=f"λ = {chosen:g} (used)")
        ax.set_xscale("log")
        ax.set_xticks(xs, [f"{v:g}" for v in lams])
        ax.minorticks_off()
        ax.set(xlabel="λ", ylabel="accuracy")
        ax.legend(fontsize=8)
    return plots.show(fig)
