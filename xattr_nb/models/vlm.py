"""TinyVLM: a LLaVA-style vision-language model small enough for a CPU (paper 22, shared spec §9).

Frozen TinyCLIP patch tokens → a two-layer MLP projector → a tiny Hugging Face ``GPT2LMHeadModel``
(2 layers × 64) fed through ``inputs_embeds``. The sequence is ``[17 image tokens] [SOS] question``
and the model answers with the next tokens (one word for the closed questions, a short caption for
``describe the image .``), all from :mod:`xattr_nb.worlds.vqa`.

- :func:`vlm_tokenizer`: a word-level ``PreTrainedTokenizerFast`` over the VQA world's vocabulary
  (the captions world's specials, so ``[UNK]`` exists); :func:`encode_questions` left-pads
  ``[SOS] question`` so the last position of every row is its answer position.
- :class:`TinyVLM`: ``vision`` (a ``CLIPVisionModel`` holding a frozen copy of the zoo TinyCLIP's
  image tower; its hidden states at layer ``vision_layer``, CLS + 16 patches, are the visual
  tokens), ``projector`` and ``lm``. Four input modes (spec §1.2): ``"image"``; and the image-free
  ``"none"`` (no visual tokens: the question alone), ``"unk"`` (the 17 visual tokens replaced by the
  one ``[UNK]`` embedding) and ``"noise"`` (a fixed Gaussian-noise image, the same for every row,
  through the tower), none of which reads ``images``.
  :meth:`TinyVLM.logits` gives the next-token logits at the answer position, :meth:`TinyVLM.answer_probs`
  the probabilities of a closed answer set (renormalised over it), :meth:`TinyVLM.generate` decodes
  with Hugging Face ``generate`` (KV cache; temperature / top-k / top-p warpers) and an optional
  ``contrast(logits, cf_logits)`` applied at each step *before* the warpers, where ``cf_logits``
  come from the contrast inputs (image-free modes averaged, or other images) run with their own KV
  cache (:class:`ContrastProcessor`): visual contrastive decoding (VCD) and visual debias decoding
  (VDD) are two choices of ``contrast_inputs``.
- :func:`load_tiny_vlm`: the zoo checkpoint ``tiny_vlm`` (recipe in :mod:`xattr_nb.models.vlm_recipes`),
  refused unless its ``world_version`` and ``qa_version`` are those of this code's worlds.

Written by hand (no library has it): the prefix assembly and the contrast branch's cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
)

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor
from xattr_nb.models.clip import CLIP_MEAN, CLIP_STD, tiny_clip_config, use_stem
from xattr_nb.models.text import tiny_gpt2, word_tokenizer
from xattr_nb.worlds import captions as world
from xattr_nb.worlds import vqa

__all__ = [
    "MODES",
    "ContrastProcessor",
    "TinyVLM",
    "answer_token_ids",
    "apply_contrast",
    "check_world_version",
    "contrast_branches",
    "encode_qa",
    "encode_questions",
    "load_tiny_vlm",
    "sampling_config",
    "tiny_vlm",
    "vlm_tokenizer",
]

MODES: tuple[str, ...] = ("image", "none", "unk", "noise")
#: Longest question (``[SOS]`` included) and answer (``[EOS]`` included) in tokens.
MAX_QUESTION, MAX_ANSWER = 8, 8


def vlm_tokenizer() -> PreTrainedTokenizerBase:
    """Word-level tokenizer over :func:`xattr_nb.worlds.vqa.vocabulary` with the captions specials
    (``[PAD]`` 0, ``[UNK]`` 1, ``[SOS]`` 2, ``[EOS]`` 3, ...); nothing added automatically."""
    tok = word_tokenizer(vqa.vocabulary(), specials=world.SPECIALS)
    tok.padding_side = "left"
    return tok


def _ids(tok: Any, texts: Sequence[str], name: str) -> list[list[int]]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InputError(f"`{name}` must be a non-empty list of strings")
    out = []
    for t in texts:
        if not isinstance(t, str):
            raise InputError(f"`{name}` must hold strings; got {type(t).__name__}")
        ids = tok(t, add_special_tokens=False)["input_ids"]
        if tok.unk_token_id in ids:
            raise InputError(f"`{name}` hold words outside the VQA vocabulary, e.g. {t!r}")
        out.append(ids)
    return out


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), t), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, t - len(r) :] = torch.as_tensor(r)
            mask[i, t - len(r) :] = 1
    return ids, mask


def encode_questions(tok: Any, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, attention_mask)`` ``[B, T]`` of ``[SOS] question``, left-padded (answer position last)."""
    rows = [[tok.bos_token_id, *r] for r in _ids(tok, questions, "questions")]
    if max(len(r) for r in rows) > MAX_QUESTION:
        raise InputError(f"`questions` must be at most {MAX_QUESTION - 1} words")
    return _left_pad(rows, tok.pad_token_id)


def encode_qa(tok: Any, questions: Sequence[str], answers: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """``(ids, attention_mask, labels)`` of ``[SOS] question answer [EOS]``, left-padded; ``labels``
    are the ids on the answer and ``[EOS]`` and ``-100`` elsewhere (the training target)."""
    q = _ids(tok, questions, "questions")
    a = _ids(tok, answers, "answers")
    if len(q) != len(a):
        raise InputError(f"`questions` and `answers` must have the same length; got {len(q)} and {len(a)}")
    rows = [[tok.bos_token_id, *qi, *ai, tok.eos_token_id] for qi, ai in zip(q, a, strict=True)]
    ids, mask = _left_pad(rows, tok.pad_token_id)
    labels = torch.full_like(ids, -100)
    t = ids.shape[1]
    for i, ai in enumerate(a):
        labels[i, t - len(ai) - 1 :] = ids[i, t - len(ai) - 1 :]
    return ids, mask, labels


def answer_token_ids(tok: Any, answers: Sequence[str]) -> list[list[int]]:
    """For each answer word, every token id whose text lower-cased and stripped equals it (the
    spec's case- and space-insensitive mapping; with this word vocabulary one id per answer)."""
    if isinstance(answers, str) or not isinstance(answers, Sequence) or not answers:
        raise InputError("`answers` must be a non-empty list of answer words")
    vocab = tok.get_vocab()
    out = []
    for a in answers:
        ids = sorted(i for w, i in vocab.items() if w.strip().lower() == str(a).strip().lower())
        if not ids:
            raise InputError(f"`answers`: {a!r} is not a token of the vocabulary")
        out.append(ids)
    return out


class TinyVLM(nn.Module):
    """Frozen CLIP vision tower → MLP projector → GPT-2 (see the module docstring).

    ``vision`` and ``lm`` are config dicts (``CLIPVisionConfig.to_dict()``, ``GPT2Config.to_dict()``),
    so the zoo rebuilds the model from JSON (architecture ``"TinyVLM"``); ``vision_stem`` is the tower's
    patch embedding (:func:`xattr_nb.models.clip.use_stem`), that of the TinyCLIP it copies.
    """

    def __init__(
        self,
        vision: dict[str, Any],
        lm: dict[str, Any],
        *,
        projector_hidden: int = 128,
        vision_layer: int = -1,
        noise_seed: int = 0,
        vision_stem: str = "patch",
    ):
        super().__init__()
        if not isinstance(vision, dict) or not isinstance(lm, dict):
            raise InputError("`vision` and `lm` must be config dicts (CLIPVisionConfig / GPT2Config .to_dict())")
        vcfg = CLIPVisionConfig.from_dict(vision)
        vcfg._attn_implementation = "eager"
        lcfg = GPT2Config.from_dict(lm)
        lcfg._attn_implementation = "eager"
        self.vision = use_stem(CLIPVisionModel(vcfg), vision_stem).eval()
        self.vision_stem = vision_stem
        n_layers = vcfg.num_hidden_layers
        self.vision_layer = check_int(vision_layer, "vision_layer", low=-n_layers, high=n_layers)
        self.projector_hidden = check_int(projector_hidden, "projector_hidden", low=1)
        self.noise_seed = check_int(noise_seed, "noise_seed", low=0)
        self.projector = nn.Sequential(
            nn.Linear(vcfg.hidden_size, self.projector_hidden),
            nn.GELU(),
            nn.Linear(self.projector_hidden, lcfg.n_embd),
        )
        self.lm = GPT2LMHeadModel(lcfg).eval()
        for p in self.vision.parameters():
            p.requires_grad_(False)
        self._tok: Any = None

    # ------------------------------------------------------------------ config, modes
    @property
    def arch_config(self) -> dict[str, Any]:
        kwargs = {"vision": self.vision.config.to_dict(), "lm": self.lm.config.to_dict()}
        kwargs.update(
            projector_hidden=self.projector_hidden, vision_layer=self.vision_layer, noise_seed=self.noise_seed
        )
        if self.vision_stem != "patch":  # the default is left out, so configs saved before the option still match
            kwargs["vision_stem"] = self.vision_stem
        return {"arch": "TinyVLM", "kwargs": kwargs}

    @property
    def config(self) -> Any:
        """The language model's config (``vocab_size``, ``n_positions``, special ids)."""
        return self.lm.config

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """:func:`vlm_tokenizer` (built once per model)."""
        if self._tok is None:
            self._tok = vlm_tokenizer()
        return self._tok

    def get_input_embeddings(self) -> nn.Module:
        return self.lm.get_input_embeddings()

    def train(self, mode: bool = True) -> TinyVLM:
        """Training mode for the projector and the LM; the frozen tower stays in eval mode."""
        super().train(mode)
        self.vision.eval()
        return self

    @property
    def n_image_tokens(self) -> int:
        c = self.vision.config
        return (c.image_size // c.patch_size) ** 2 + 1

    def _device(self) -> torch.device:
        return self.lm.lm_head.weight.device

    # ------------------------------------------------------------------ visual tokens
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        size = self.vision.config.image_size
        x = images.to(self._device(), dtype=torch.float32)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        mean = torch.tensor(CLIP_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def vision_features(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 17, D_vision]``: the frozen tower's hidden states at ``vision_layer`` (CLS + patches)."""
        x = check_tensor(images, "images", ndim=4, layout="[B, 3, H, W] in [0, 1]")
        if x.shape[1] != 3:
            raise InputError(f"`images` must have 3 channels; got shape {tuple(x.shape)}")
        out = self.vision(pixel_values=self._pixels(x), output_hidden_states=True)
        return out.hidden_states[self.vision_layer]

    def noise_images(self, n: int) -> torch.Tensor:
        """``[n, 3, H, W]``: one fixed Gaussian-noise image (mean 0.5, sd 0.25, clipped), repeated."""
        s = self.vision.config.image_size
        g = torch.Generator().manual_seed(self.noise_seed)
        one = (0.5 + 0.25 * torch.randn(1, 3, s, s, generator=g)).clamp(0, 1)
        return one.expand(n, -1, -1, -1).to(self._device())

    def _prefix(
        self, images: torch.Tensor | None, mode: str, batch: int, features: torch.Tensor | None = None
    ) -> torch.Tensor | None:
        """The embeddings before ``[SOS]``: ``[B, P, D]`` (``None`` for mode ``"none"``)."""
        if mode == "none":
            return None
        if mode == "unk":
            unk = torch.full((batch, 1), self.tokenizer.unk_token_id, dtype=torch.long, device=self._device())
            return self.lm.get_input_embeddings()(unk)
        if mode == "noise":
            features = self.vision_features(self.noise_images(batch))
        elif features is None:
            if images is None:
                raise InputError('`images` must be given with mode="image" (an image-free mode does not read it)')
            features = self.vision_features(images)
        if features.shape[0] != batch:
            raise InputError(f"`images` must have one row per question ({batch}); got {features.shape[0]}")
        return self.projector(features.to(self._device()))

    def _inputs(
        self,
        images: torch.Tensor | None,
        ids: torch.Tensor,
        mask: torch.Tensor | None,
        mode: str,
        features: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs_embeds, attention_mask, position_ids)`` of prefix + question; positions count
        only attended tokens, so a left-padded row starts at position 0 whatever its padding."""
        mode = check_choice(mode, MODES, "mode")
        ids = check_tensor(ids, "question_ids", ndim=2, dtype="int", layout="[B, T]").to(self._device())
        mask = torch.ones_like(ids) if mask is None else mask.to(ids.device).long()
        if mask.shape != ids.shape:
            raise InputError(f"`attention_mask` must have the shape of `question_ids` {tuple(ids.shape)}")
        if bool((ids < 0).any()) or bool((ids >= self.lm.config.vocab_size).any()):
            raise InputError(f"`question_ids` must be token ids in [0, {self.lm.config.vocab_size})")
        emb = self.lm.get_input_embeddings()(ids)
        pre = self._prefix(images, mode, ids.shape[0], features)
        if pre is not None:
            pm = torch.ones(pre.shape[:2], dtype=torch.long, device=ids.device)
            if prefix_mask is not None:
                pm = pm * prefix_mask.to(ids.device).long()[:, None]
            emb = torch.cat([pre, emb], dim=1)
            mask = torch.cat([pm, mask], dim=1)
        if emb.shape[1] > self.lm.config.n_positions:
            raise InputError(
                f"prefix + `question_ids` ({emb.shape[1]}) exceed the {self.lm.config.n_positions} positions"
            )
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        return emb, mask, pos

    # ------------------------------------------------------------------ forward passes
    def forward(
        self,
        images: torch.Tensor | None,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        mode: str = "image",
        features: torch.Tensor | None = None,
        prefix_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, P + T, V]`` over prefix + ``input_ids`` (P = 17, 1 or 0 by ``mode``).

        ``features``: precomputed :meth:`vision_features` instead of ``images`` (training);
        ``prefix_mask`` ``[B]``: rows where it is 0 do not attend to the visual tokens (exactly
        mode ``"none"`` for those rows: text-only training in the same batch).
        """
        emb, mask, pos = self._inputs(images, input_ids, attention_mask, mode, features, prefix_mask)
        return self.lm(inputs_embeds=emb, attention_mask=mask, position_ids=pos).logits

    def logits(
        self,
        images: torch.Tensor | None,
        question_ids: torch.Tensor,
        mode: str = "image",
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits ``[B, V]`` at the answer position (the last one: questions are left-padded)."""
        return self.forward(images, question_ids, attention_mask, mode=mode)[:, -1]

    def answer_probs(
        self,
        images: torch.Tensor | None,
        question_ids: torch.Tensor,
        answers: Sequence[str],
        mode: str = "image",
        *,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``[B, K]``: p(answer_k | input) summed over the tokens of each answer word
        (:func:`answer_token_ids`), renormalised over the ``K`` answers."""
        groups = answer_token_ids(self.tokenizer, answers)
        p = self.logits(images, question_ids, mode, attention_mask=attention_mask).float().softmax(-1)
        out = torch.stack([p[:, g].sum(-1) for g in groups], dim=1)
        return out / out.sum(1, keepdim=True).clamp_min(1e-30)

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor | None,
        question_ids: torch.Tensor,
        contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new: int = MAX_ANSWER,
        *,
        attention_mask: torch.Tensor | None = None,
        mode: str = "image",
        contrast_inputs: str | Sequence[str] | torch.Tensor = ("none", "unk"),
        seed: int | None = None,
        return_ids: bool = False,
    ) -> list[str] | torch.Tensor:
        """Decode up to ``max_new`` tokens after each question with Hugging Face ``generate`` (KV cache).

        ``temperature = 0``: greedy; else sampling with the temperature, ``top_k`` (0 = all) and
        ``top_p`` warpers (``seed`` forks the RNG so a call is reproducible). ``contrast(logits,
        cf_logits) -> logits`` is applied to the raw next-token logits before the warpers, with
        ``cf_logits`` those of ``contrast_inputs``: image-free modes (their logits averaged, VDD) or
        a tensor of images (e.g. noised copies, VCD), each run with its own cache. Returns the
        answers as text (up to ``[EOS]``), or the new ids ``[B, <= max_new]`` with ``return_ids``.
        """
        temperature = check_float(temperature, "temperature", low=0.0)
        top_p = check_float(top_p, "top_p", low=0.0, high=1.0)
        if top_p == 0.0:
            raise InputError("`top_p` must be in (0, 1]")
        top_k = check_int(top_k, "top_k", low=0)
        max_new = check_int(max_new, "max_new", low=1)
        if contrast is not None and not callable(contrast):
            raise InputError(
                f"`contrast` must be a function (logits, cf_logits) -> logits; got {type(contrast).__name__}"
            )
        emb, mask, _ = self._inputs(images, question_ids, attention_mask, mode)
        if emb.shape[1] + max_new > self.lm.config.n_positions:
            raise InputError(
                f"`max_new` ({max_new}) + prompt ({emb.shape[1]}) exceeds the model's {self.lm.config.n_positions} positions"
            )
        tok = self.tokenizer
        procs = LogitsProcessorList()
        if contrast is not None:
            procs.append(ContrastProcessor(self, question_ids, attention_mask, contrast, contrast_inputs))
        cfg = sampling_config(tok, max_new, temperature, top_k, top_p, pad_id=tok.pad_token_id)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(check_int(seed, "seed", low=0))
            out = self.lm.generate(
                inputs_embeds=emb, attention_mask=mask, generation_config=cfg, logits_processor=procs
            )
        new = out[:, -max_new:] if out.shape[1] > max_new else out
        if return_ids:
            return new
        texts = []
        for row in new.tolist():
            if tok.eos_token_id in row:
                row = row[: row.index(tok.eos_token_id)]
            texts.append(tok.decode([i for i in row if i != tok.pad_token_id]))
        return texts


def sampling_config(
    tokenizer: Any, max_new: int, temperature: float, top_k: int, top_p: float, *, pad_id: int | None
) -> GenerationConfig:
    """The ``GenerationConfig`` of a VLM's ``generate``: greedy at ``temperature = 0``, else sampling with
    ``top_k`` (0: off) and ``top_p`` (1: off)."""
    sample = temperature > 0
    return GenerationConfig(
        max_new_tokens=max_new,
        do_sample=sample,
        temperature=temperature if sample else 1.0,
        top_k=top_k if sample and top_k > 0 else None,
        top_p=top_p if sample and top_p < 1.0 else None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
        bos_token_id=tokenizer.bos_token_id,
    )


def contrast_branches(inputs: str | Sequence[str] | torch.Tensor) -> list[tuple[str, torch.Tensor | None]]:
    """``(mode, images)`` per contrast branch of a VLM's contrast decoding: image-free modes by name
    (``"none"``, ``"unk"``, ``"noise"``) or one branch over other ``images`` (``("image", tensor)``)."""
    if isinstance(inputs, torch.Tensor):
        return [("image", inputs)]
    names = [inputs] if isinstance(inputs, str) else list(inputs)
    if not names:
        raise InputError("`contrast_inputs` must name at least one image-free mode or be a tensor of images")
    return [(check_choice(m, ("none", "unk", "noise"), "contrast_inputs"), None) for m in names]


def apply_contrast(
    contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    scores: torch.Tensor,
    branch_logits: list[torch.Tensor],
) -> torch.Tensor:
    """``contrast(scores, mean of the branches' next-token logits)``, checked to keep ``scores``' shape."""
    out = contrast(scores, torch.stack(branch_logits).mean(0).to(scores))
    if not isinstance(out, torch.Tensor) or out.shape != scores.shape:
        raise InputError(f"`contrast` must return logits of shape {tuple(scores.shape)}")
    return out


class ContrastProcessor(LogitsProcessor):
    """The contrast branch of :meth:`TinyVLM.generate`: at each step runs the contrast inputs (their
    own prefix, the same question and the tokens generated so far) with their own KV cache and
    returns ``contrast(scores, cf_logits)``; ``cf_logits`` is the mean over the contrast inputs."""

    def __init__(
        self,
        model: TinyVLM,
        question_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        inputs: str | Sequence[str] | torch.Tensor,
    ):
        self.model, self.contrast = model, contrast
        self.branches = []
        for mode, imgs in contrast_branches(inputs):
            emb, mask, pos = model._inputs(imgs, question_ids, attention_mask, mode)
            self.branches.append({"emb": emb, "mask": mask, "pos": pos[:, -1], "past": None})

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        lm = self.model.lm
        outs = []
        for b in self.branches:
            if b["past"] is None:  # first step: the whole prefix + question
                pos = (b["mask"].cumsum(1) - 1).clamp(min=0)
                o = lm(inputs_embeds=b["emb"], attention_mask=b["mask"], position_ids=pos, use_cache=True)
            else:  # one new token (the one the main branch just chose)
                new = input_ids[:, -1:]
                b["mask"] = torch.cat([b["mask"], torch.ones_like(new)], dim=1)
                b["pos"] = b["pos"] + 1
                o = lm(
                    input_ids=new,
                    attention_mask=b["mask"],
                    position_ids=b["pos"][:, None],
                    cache=b["past"],
                    use_cache=True,
                )
            b["past"] = o.cache
            outs.append(o.logits[:, -1].float())
        return apply_contrast(self.contrast, scores, outs)


def tiny_vlm(
    *, vocab_size: int | None = None, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_positions: int = 40, **kw
) -> TinyVLM:
    """A randomly initialised TinyVLM: TinyCLIP's vision config (:func:`xattr_nb.models.clip.tiny_clip_config`)
    and a GPT-2 of ``n_layer`` × ``n_embd`` (:func:`xattr_nb.models.text.tiny_gpt2`) over
    :func:`vlm_tokenizer`'s vocabulary."""
    tok = vlm_tokenizer()
    vision = tiny_clip_config().vision_config.to_dict()
    ids = {f"{k}_token_id": getattr(tok, f"{k}_token_id") for k in ("bos", "eos", "pad")}
    lm = tiny_gpt2(vocab_size or len(tok), n_layer=n_layer, d_model=n_embd, n_head=n_head, n_ctx=n_positions, **ids)
    return TinyVLM(vision, lm.config.to_dict(), **kw).eval()


def check_world_version(metrics: dict[str, Any], name: str) -> None:
    """Refuse a checkpoint trained on another version of the captions or the VQA world."""
    for key, want in (("world_version", world.world_version()), ("qa_version", vqa.world_version())):
        have = metrics.get(key)
        if have != want:
            raise InputError(
                f"zoo checkpoint {name!r} was trained on {key} {have!r}, but this code generates {key} "
                f"{want!r}; retrain it with `xattr-nb zoo train {name}`"
            )


def load_tiny_vlm(*, name: str = "tiny_vlm", root: str | os.PathLike | None = None, device: str = "cpu") -> TinyVLM:
    """The zoo TinyVLM ``name`` (its tokenizer is ``model.tokenizer``), refused when its
    ``world_version`` / ``qa_version`` differ from this code's worlds."""
    import xattr_nb.models.zoo as zoo

    entry = {e.name: e for e in zoo.entries(root)}.get(name)
    if entry is None:
        raise InputError(f"no zoo checkpoint named {name!r}; train it with `xattr-nb zoo train {name}`")
    check_world_version(entry.metrics, name)
    model = zoo.load(name, root=root, device=device)
    if not isinstance(model, TinyVLM):
        raise InputError(f"zoo checkpoint {name!r} is a {type(model).__name__}, not a TinyVLM")
    return model
