"""BayesPrompt (Li et al., 2024): debiased domain abstraction injected into a few-shot prompt.

The paper's steps, on a frozen encoder (all-MiniLM-L6-v2 here, RoBERTa-large in the paper):

1. :func:`reduced_reps`: φ(s), the mean of the encoder's *static input* embeddings over a
   sentence's tokens (not contextual states), for the unlabelled target pool and the few-shot set.
2. ``xattr_nb.bayes.fit_gmm`` on the pool's φ (K = #relations, full covariance, ``reg_covar`` 0.1),
   then ``xattr_nb.bayes.svgd`` from the few-shot φ with the mixture's closed-form score
   (``gmm_score_fn``): the transported particles.
3. :func:`injection_draws`: before every batch, average ``m = min(#particles, #relations)``
   particles drawn without replacement; :func:`mask_features` writes that average into the rows of
   both virtual type tokens ``[sub]`` and ``[obj]`` of the KnowPrompt-style template
   ``[CLS] sentence [SEP] [sub] subject [MASK] [obj] object [SEP]`` (no gradient through it).
4. :func:`train_answer_head`: logits ``h_[MASK] · W_ansᵀ`` over virtual answer words initialised
   from the mean input embedding of each relation's label words (:func:`answer_init`), trained by
   cross-entropy; epoch 0 without injection (plain KnowPrompt), every later epoch with it.

Deviation from the paper, stated in the notebook: the backbone is frozen and only the answer
matrix is trained (the paper fine-tunes everything), so every arm trains the same ``R × d``
parameters and the encoder's outputs are cached per injection draw (:func:`mask_features`).
The arms compared by :func:`explain`: ``plain`` (KnowPrompt-lite: type tokens from the type words),
``manual`` (a hand-written template, no virtual tokens), ``probe`` (the same head on the
mean-pooled sentence embedding), ``bayes`` (SVGD particles injected), ``random`` (the control:
Gaussian vectors of the same norm as ``bayes``'s draws, injected the same way) and ``no_svgd``
(the few-shot φ injected without transport).

``scale="full"`` loads the paper's backbone (``roberta-large``) through
:func:`xattr_nb.models.hub.load_encoder` (HF ``AutoModel``; a folder or a name in the local cache).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from xattr_nb.bayes import fit_gmm, gmm_score_fn, svgd
from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.io import device_of
from xattr_nb.runtime import progress
from xattr_nb.worlds.relations import LABEL_WORDS, RELATION_TYPES, RELATIONS, TYPE_WORDS, RelationData, RelationWorld

__all__ = [
    "ARMS",
    "BayesPromptResult",
    "Prompts",
    "answer_init",
    "backbone",
    "build_prompts",
    "evaluate",
    "explain",
    "gmm_loglik",
    "injection_draws",
    "mask_features",
    "mean_pairwise_distance",
    "plot_transport",
    "random_like",
    "reduced_reps",
    "toy_check",
    "train_answer_head",
    "type_token_init",
]

ARMS: tuple[str, ...] = ("plain", "manual", "probe", "bayes", "random", "no_svgd")
INJECTED: tuple[str, ...] = ("bayes", "random", "no_svgd")


def backbone(scale: str = "cpu", *, full: str = "roberta-large", device: str = "cpu") -> tuple[Any, nn.Module]:
    """``(tokenizer, encoder)``: the offline all-MiniLM-L6-v2 (``scale="cpu"``) or ``full`` (a folder
    written by ``save_pretrained`` or a name in the local HF cache), both through
    :func:`xattr_nb.models.hub.load_encoder` (``AutoModel``). Frozen, eval mode."""
    from xattr_nb.models.hub import load_encoder

    check_choice(scale, ("cpu", "full"), "scale")
    tok, enc = load_encoder(None if scale == "cpu" else full, device=device)
    enc.requires_grad_(False)
    return tok, enc.eval()


def _content_ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def reduced_reps(texts: list[str], tokenizer: Any, encoder: nn.Module) -> torch.Tensor:
    """φ(s): the mean of the input-embedding rows of each text's tokens (special tokens excluded) ``[N, d]``."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or len(texts) == 0:
        raise InputError("`texts` must be a non-empty list of strings")
    table = encoder.get_input_embeddings().weight.detach()
    out = []
    for i, ids in enumerate(_content_ids(tokenizer, list(texts))):
        if not ids:
            raise InputError(f"`texts[{i}]` has no tokens")
        out.append(table[torch.tensor(ids, device=table.device)].mean(0))
    return torch.stack(out).float().cpu()


def _word_mean(tokenizer: Any, encoder: nn.Module, words: list[str]) -> torch.Tensor:
    table = encoder.get_input_embeddings().weight.detach()
    ids = [i for w in words for i in tokenizer(" " + w, add_special_tokens=False)["input_ids"]]
    return table[torch.tensor(ids, device=table.device)].mean(0).float().cpu()


def answer_init(tokenizer: Any, encoder: nn.Module) -> torch.Tensor:
    """``W_ans`` ``[R, d]``: each relation's row is the mean input embedding of its label words (KnowPrompt)."""
    return torch.stack([_word_mean(tokenizer, encoder, list(LABEL_WORDS[r])) for r in RELATIONS])


def type_token_init(tokenizer: Any, encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The virtual ``[sub]`` / ``[obj]`` rows: the mean embedding of the subject / object type words
    over the relations (KnowPrompt's prior over entity types)."""
    subs = [TYPE_WORDS[t[0]] for t in RELATION_TYPES.values() if t is not None]
    objs = [TYPE_WORDS[t[1]] for t in RELATION_TYPES.values() if t is not None]
    return _word_mean(tokenizer, encoder, subs), _word_mean(tokenizer, encoder, objs)


@dataclasses.dataclass
class Prompts:
    """Token ids of a prompt per example with the positions the method reads and writes."""

    input_ids: torch.Tensor  # [N, T] padded
    attention_mask: torch.Tensor  # [N, T]
    mask_pos: torch.Tensor  # [N]
    sub_pos: torch.Tensor  # [N], -1 where the template has no virtual tokens
    obj_pos: torch.Tensor  # [N]
    style: str

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def build_prompts(data: RelationData, tokenizer: Any, style: str = "knowprompt") -> Prompts:
    """KnowPrompt-lite ``[CLS] s [SEP] [sub] subject [MASK] [obj] object [SEP]`` or the manual template
    ``[CLS] s [SEP] the relation between subject and object is [MASK] . [SEP]``.

    The virtual tokens are placeholders (the tokenizer's unk id) whose embedding rows
    :func:`mask_features` overwrites.
    """
    check_choice(style, ("knowprompt", "manual"), "style")
    if not isinstance(data, RelationData) or len(data) == 0:
        raise InputError(f"`data` must be a non-empty RelationData; got {type(data).__name__}")
    cls, sep, msk = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.mask_token_id
    virt = tokenizer.unk_token_id
    if None in (cls, sep, msk, virt):
        raise InputError("`tokenizer` needs cls, sep, mask and unk tokens (a BERT/RoBERTa-style tokenizer)")
    sents = _content_ids(tokenizer, list(data.texts))
    subs = _content_ids(tokenizer, [" " + s for s in data.subjects])
    objs = _content_ids(tokenizer, [" " + o for o in data.objects])
    seqs, mpos, spos, opos = [], [], [], []
    for s, a, b in zip(sents, subs, objs, strict=True):
        head = [cls, *s, sep]
        if style == "knowprompt":
            spos.append(len(head))
            tail = [virt, *a, msk]
            mpos.append(len(head) + len(tail) - 1)
            opos.append(len(head) + len(tail))
            tail += [virt, *b, sep]
        else:
            words = _content_ids(tokenizer, [" the relation between", " and", " is"])
            tail = [*words[0], *a, *words[1], *b, *words[2], msk]
            mpos.append(len(head) + len(tail) - 1)
            tail += [*_content_ids(tokenizer, [" ."])[0], sep]
            spos.append(-1)
            opos.append(-1)
        seqs.append(head + tail)
    t = max(len(x) for x in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), t), pad, dtype=torch.long)
    att = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, : len(x)] = torch.tensor(x)
        att[i, : len(x)] = 1
    return Prompts(ids, att, torch.tensor(mpos), torch.tensor(spos), torch.tensor(opos), style)


@torch.inference_mode()
def mask_features(
    encoder: nn.Module,
    prompts: Prompts,
    *,
    sub: torch.Tensor | None = None,
    obj: torch.Tensor | None = None,
    batch_size: int = 64,
    show_progress: bool = False,
) -> torch.Tensor:
    """The encoder's last hidden state at ``[MASK]`` ``[N, d]``, with the rows of the virtual tokens set.

    ``sub`` / ``obj`` are one vector ``[d]`` (every example) or one per example ``[N, d]`` (BayesPrompt's
    per-batch draws); the knowprompt style needs both, the manual style takes neither.
    """
    batch_size = check_int(batch_size, "batch_size", low=1)
    virtual = bool((prompts.sub_pos >= 0).any())
    if virtual and (sub is None or obj is None):
        raise InputError("`sub` and `obj` are required for prompts with virtual tokens (style='knowprompt')")
    if not virtual and (sub is not None or obj is not None):
        raise InputError("`sub`/`obj` must be None for the manual template (it has no virtual tokens)")
    table = encoder.get_input_embeddings()
    d = table.weight.shape[1]
    n = len(prompts)
    rows = {}
    for name, v in (("sub", sub), ("obj", obj)):
        if v is None:
            continue
        v = check_tensor(v, name, ndim=(1, 2), dtype="float")
        if v.shape[-1] != d or (v.ndim == 2 and v.shape[0] != n):
            raise InputError(f"`{name}` must have shape [{d}] or [{n}, {d}]; got {tuple(v.shape)}")
        rows[name] = v.expand(n, d) if v.ndim == 1 else v
    dev = device_of(encoder)
    out = []
    starts = range(0, n, batch_size)
    bar = {} if show_progress else {"disable": True}
    for s in progress(starts, desc="encode", unit="batch", **bar):
        sl = slice(s, s + batch_size)
        ids = prompts.input_ids[sl].to(dev)
        emb = table(ids).clone()
        if virtual:
            ar = torch.arange(ids.shape[0], device=dev)
            emb[ar, prompts.sub_pos[sl].to(dev)] = rows["sub"][sl].to(dev, emb.dtype)
            emb[ar, prompts.obj_pos[sl].to(dev)] = rows["obj"][sl].to(dev, emb.dtype)
        hid = encoder(inputs_embeds=emb, attention_mask=prompts.attention_mask[sl].to(dev)).last_hidden_state
        out.append(hid[torch.arange(ids.shape[0], device=dev), prompts.mask_pos[sl].to(dev)].float().cpu())
    return torch.cat(out)


def injection_draws(parts: torch.Tensor, n_draws: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """``n_draws`` averages of ``m`` particles each, drawn without replacement ``[n_draws, d]``."""
    p = check_tensor(parts, "parts", ndim=2, dtype="float", layout="[n, d]")
    n_draws = check_int(n_draws, "n_draws", low=1)
    m = check_int(m, "m", low=1, high=p.shape[0])
    return torch.stack([p[torch.randperm(p.shape[0], generator=generator)[:m]].mean(0) for _ in range(n_draws)])


def random_like(draws: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The control: Gaussian directions rescaled to the norms of ``draws`` (same norm, no domain content)."""
    d = check_tensor(draws, "draws", ndim=2, dtype="float")
    g = torch.randn(d.shape, generator=generator, dtype=d.dtype)
    return g / g.norm(dim=1, keepdim=True) * d.norm(dim=1, keepdim=True)


def train_answer_head(
    feats: torch.Tensor,
    labels: torch.Tensor,
    w0: torch.Tensor,
    *,
    plain: torch.Tensor | None = None,
    epochs: int = 15,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    seed: int = 0,
) -> torch.Tensor:
    """Train ``W_ans`` by cross-entropy on cached ``[MASK]`` features; returns the trained ``[R, d]``.

    ``feats`` is ``[N, d]`` (one view per example) or ``[D, N, d]`` (D injection draws: each batch reads
    the features of one draw picked at random, as BayesPrompt injects one average per batch). With
    ``plain`` (``[N, d]``), epoch 0 reads it instead (the paper's epoch 0 is plain KnowPrompt).
    AdamW, ``epochs`` passes over the shuffled examples in batches of ``batch_size``.
    """
    f = check_tensor(feats, "feats", ndim=(2, 3), dtype="float")
    f = f[None] if f.ndim == 2 else f
    y = check_tensor(labels, "labels", shape=(f.shape[1],), dtype="int")
    w = check_tensor(w0, "w0", shape=(None, f.shape[2]), dtype="float").detach().clone().requires_grad_(True)
    if int(y.max()) >= w.shape[0] or int(y.min()) < 0:
        raise InputError(f"`labels` must lie in [0, {w.shape[0] - 1}] (rows of w0)")
    if plain is not None:
        plain = check_tensor(plain, "plain", shape=tuple(f.shape[1:]), dtype="float")
    epochs = check_int(epochs, "epochs", low=1)
    batch_size = check_int(batch_size, "batch_size", low=1)
    opt = torch.optim.AdamW([w], lr=check_float(lr, "lr", low=0.0), weight_decay=weight_decay)
    g = torch.Generator().manual_seed(check_int(seed, "seed", low=0))
    n = f.shape[1]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=g)
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            if epoch == 0 and plain is not None:
                x = plain[idx]
            else:
                x = f[int(torch.randint(f.shape[0], (1,), generator=g)), idx]
            loss = nn.functional.cross_entropy(x @ w.T, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return w.detach()


def evaluate(w: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and micro-F1 over the relations other than ``no_relation`` (the paper's metric)."""
    from sklearn.metrics import f1_score

    pred = (feats @ w.T).argmax(1).numpy()
    y = labels.numpy()
    pos = [i for i, r in enumerate(RELATIONS) if r != "no_relation"]
    return {
        "accuracy": float((pred == y).mean()),
        "micro_f1": float(f1_score(y, pred, labels=pos, average="micro", zero_division=0)),
    }


@dataclasses.dataclass
class BayesPromptResult:
    """What :func:`explain` measured for one K-shot draw: a row per arm, and the pieces behind them."""

    table: dict[str, dict[str, float]]  # arm -> accuracy, micro_f1, n_params
    heads: dict[str, torch.Tensor]
    particles_before: torch.Tensor
    particles_after: torch.Tensor
    draws: dict[str, torch.Tensor]  # injected arm -> the training draws [D, d]
    gmm: Any
    trace: list[torch.Tensor]  # SVGD snapshots every ``trace_every`` iterations (empty unless asked)


def _per_batch(draws: torch.Tensor, n: int, batch: int) -> torch.Tensor:
    """Draw ``b`` for every example of test batch ``b`` ``[n, d]`` (one injection per batch)."""
    idx = torch.arange(n) // batch
    return draws[idx % draws.shape[0]]


def explain(
    encoder: nn.Module,
    tokenizer: Any,
    world: RelationWorld,
    *,
    k: int = 4,
    run: int = 0,
    arms: tuple[str, ...] = ARMS,
    gmm: Any = None,
    pool_reps: torch.Tensor | None = None,
    cache: dict[str, torch.Tensor] | None = None,
    n_draws: int = 4,
    eval_batch: int = 16,
    svgd_iter: int = 1000,
    svgd_step: float = 0.01,
    reg_covar: float = 0.1,
    epochs: int = 15,
    batch_size: int = 8,
    lr: float = 1e-3,
    trace_every: int = 0,
) -> BayesPromptResult:
    """Train every arm on the same K-shot draw (``world.few_shot(k, run)``) and score it on ``world.test``.

    ``gmm`` / ``pool_reps``: a mixture already fitted to the unlabelled pool (else fitted here);
    ``cache``: a dict this call fills with the test features of the arms that do not depend on the
    draw (``plain``, ``manual``, ``probe``), so repeated runs on one world encode the test set once.
    Training and test injections use separate fixed generators seeded by ``run`` (test draws: one per
    batch of ``eval_batch`` examples). SVGD runs in float32 (the score in closed form, 1000 steps on
    ``[n, d]`` particles). Returns a :class:`BayesPromptResult`.
    """
    if not isinstance(world, RelationWorld):
        raise InputError(f"`world` must be a RelationWorld (xattr_nb.worlds.relations); got {type(world).__name__}")
    for a in arms:
        check_choice(a, ARMS, "arms")
    run = check_int(run, "run", low=0)
    n_draws = check_int(n_draws, "n_draws", low=1)
    eval_batch = check_int(eval_batch, "eval_batch", low=1)
    cache = {} if cache is None else cache
    few = world.few_shot(k, seed=run)
    y, yt = few.labels, world.test.labels
    r = len(RELATIONS)
    w0 = answer_init(tokenizer, encoder)
    sub0, obj0 = type_token_init(tokenizer, encoder)
    kp_train = build_prompts(few, tokenizer, "knowprompt")
    kp_test = build_prompts(world.test, tokenizer, "knowprompt")
    plain_train = mask_features(encoder, kp_train, sub=sub0, obj=obj0)
    if "plain" not in cache:
        cache["plain"] = mask_features(encoder, kp_test, sub=sub0, obj=obj0)
    table: dict[str, dict[str, float]] = {}
    heads: dict[str, torch.Tensor] = {}
    train_kw = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "seed": run}

    def score(arm: str, w: torch.Tensor, test_feats: torch.Tensor) -> None:
        heads[arm] = w
        table[arm] = {**evaluate(w, test_feats, yt), "n_params": float(w.numel())}

    if "plain" in arms:
        score("plain", train_answer_head(plain_train, y, w0, **train_kw), cache["plain"])
    if "manual" in arms:
        if "manual" not in cache:
            cache["manual"] = mask_features(encoder, build_prompts(world.test, tokenizer, "manual"))
        ftr = mask_features(encoder, build_prompts(few, tokenizer, "manual"))
        score("manual", train_answer_head(ftr, y, w0, **train_kw), cache["manual"])
    if "probe" in arms:
        from xattr_nb.models.hub import embed

        if "probe" not in cache:
            cache["probe"] = embed(list(world.test.texts), tokenizer, encoder, show_progress=False)
        ftr = embed(list(few.texts), tokenizer, encoder, show_progress=False)
        score("probe", train_answer_head(ftr, y, w0, **train_kw), cache["probe"])
    few_reps = reduced_reps(list(few.texts), tokenizer, encoder)
    after, trace = few_reps, []
    if pool_reps is None:
        pool_reps = reduced_reps(list(world.unlabeled.texts), tokenizer, encoder)
    if any(a in arms for a in ("bayes", "random")):
        if gmm is None:
            gmm = fit_gmm(pool_reps, r, reg_covar=reg_covar, seed=world.seed)
        out = svgd(few_reps, gmm_score_fn(gmm), n_iter=svgd_iter, step=svgd_step, trace_every=trace_every)
        after, trace = out if trace_every else (out, [])
    m = min(len(few_reps), r)
    g_train = torch.Generator().manual_seed(1000 + run)
    g_test = torch.Generator().manual_seed(2000 + run)
    n_test_draws = -(-len(world.test) // eval_batch)
    bayes_train = injection_draws(after, n_draws, m, g_train)
    bayes_test = injection_draws(after, n_test_draws, m, g_test)
    draws = {
        "bayes": (bayes_train, bayes_test),
        "random": (random_like(bayes_train, g_train), random_like(bayes_test, g_test)),
        "no_svgd": (injection_draws(few_reps, n_draws, m, g_train), injection_draws(few_reps, n_test_draws, m, g_test)),
    }
    for arm in INJECTED:
        if arm not in arms:
            continue
        tr, te = draws[arm]
        ftr = torch.stack([mask_features(encoder, kp_train, sub=v, obj=v) for v in tr])
        rows = _per_batch(te, len(world.test), eval_batch)
        fte = mask_features(encoder, kp_test, sub=rows, obj=rows)
        score(arm, train_answer_head(ftr, y, w0, plain=plain_train, **train_kw), fte)
    drawn = {a: draws[a][0] for a in INJECTED if a in arms}
    return BayesPromptResult(table, heads, few_reps, after, drawn, gmm, trace)


def gmm_loglik(gmm: Any, x: torch.Tensor) -> float:
    """Mean log-likelihood of the rows of ``x`` under the fitted mixture."""
    return float(np.mean(gmm.score_samples(check_tensor(x, "x", ndim=2, dtype="float").double().numpy())))


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance over distinct pairs of rows (the spec's anti-collapse check)."""
    x = check_tensor(x, "x", ndim=2, dtype="float")
    if x.shape[0] < 2:
        raise InputError("`x` needs at least two rows")
    d = torch.cdist(x.double(), x.double())
    n = x.shape[0]
    return float(d.sum() / (n * (n - 1)))


def toy_check(seed: int = 0, *, n_particles: int = 200, n_iter: int = 1000, step: float = 0.01) -> dict[str, Any]:
    """The spec's SVGD check on a 2-D, 3-component mixture: particles from a narrow Gaussian at the
    origin, transported by SVGD; returns the error of their mean against the mixture's mean and the
    largest error of a component's mass (mean responsibility) against its weight ``π_k``."""
    seed = check_int(seed, "seed", low=0)
    rng = np.random.default_rng([seed, 26])
    centers = np.array([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]])
    counts = (np.array([0.5, 0.3, 0.2]) * 900).astype(int)
    X = np.concatenate([rng.normal(c, 0.6, (n, 2)) for c, n in zip(centers, counts, strict=True)])
    gmm = fit_gmm(X, 3, reg_covar=1e-3, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x0 = 0.1 * torch.randn(n_particles, 2, generator=g, dtype=torch.float64)
    x = svgd(x0, gmm_score_fn(gmm), n_iter=n_iter, step=step)
    mass = gmm.predict_proba(x.numpy()).mean(0)
    target_mean = gmm.weights_ @ gmm.means_
    return {
        "mean_error": float(np.linalg.norm(x.numpy().mean(0) - target_mean)),
        "mass_error": float(np.abs(mass - gmm.weights_).max()),
        "mass": mass,
        "weights": gmm.weights_,
        "x0": x0,
        "x": x,
        "data": X,
    }


def plot_transport(toy: dict[str, Any], curves: dict[str, tuple[Any, Any]], *, title: str | None = None) -> Any:
    """Left: the toy mixture's data, the start and the SVGD particles; right: the mean mixture
    log-likelihood of the few-shot particles over SVGD iterations, one line per entry of ``curves``."""
    from xattr_nb import plots

    with plots.style():
        fig = plots.figure(8.0, 3.3)
        a, b = fig.subplots(1, 2)
        a.scatter(*toy["data"].T, s=3, c="0.8", label="mixture samples")
        a.scatter(*toy["x0"].numpy().T, s=6, c="tab:orange", label="start")
        a.scatter(*toy["x"].numpy().T, s=6, c="tab:blue", label="after SVGD")
        a.set_title("toy: 2-D, 3 components")
        a.legend(fontsize=7, loc="lower left")
        for name, (it, ll) in curves.items():
            b.plot(it, ll, label=name)
        b.set_xlabel("SVGD iteration")
        b.set_ylabel("mean GMM log-likelihood")
        b.set_title("few-shot particles under the target mixture")
        b.legend(fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9)
    return plots.show(fig)
