"""LLaVA-1.5 for paper 22 at ``scale="full"``: next-token logits of closed questions, with and
without the image (the paper's image-free counterfactuals).

:func:`load_llava` loads transformers' ``LlavaForConditionalGeneration`` and its ``AutoProcessor``
(default :data:`LLAVA_MODEL`, or a local folder written by ``save_pretrained``; safetensors only)
and wraps them in :class:`LlavaVLM`, which speaks the small protocol that
:func:`xattr_nb.methods.lvlm_debias.closed_scores` reads (``answer_token_ids``, ``encode``,
``next_logits``), the same one its TinyVLM wrapper speaks.

The prompt is LLaVA-1.5's ``llava_v1`` conversation (system line, ``USER: <image>\\n{question}
Please answer this question with one word. ASSISTANT:``), the template and suffix the paper's code
uses for POPE (``experiments/eval/calibrate/llava_calibrate.py`` of LLaVA-Align). It is written out
in :data:`LLAVA_V1_PROMPT` because llava-hf's chat template has no system line. Input modes
(:data:`MODES`, spec §1.2):

- ``"image"``: the prompt with the image token expanded by the processor, ``pixel_values`` from the
  processor's image processor;
- ``"none"``: the prompt without ``<image>\\n`` (the question alone), as in the paper's code;
- ``"unk"``: the prompt with its one image token replaced by the tokenizer's ``<unk>`` id and no
  pixels (the paper's code does exactly this: ``input_ids[input_ids == IMAGE_TOKEN_INDEX] = unk``);
- ``"noise"``: a fixed Gaussian-noise image (mean 0.5, sd 0.25 in pixel space, clipped to [0, 1],
  seed ``noise_seed``, the same for every row) through the processor: the TinyVLM's noise mode. The
  paper's code noises the image itself (``add_diffusion_noise(image, 999)``, which keeps
  ``sqrt(ᾱ_999) ≈ 0.29`` of the image), so it is not image-free; this one is.

Rows are left-padded to one length per mode for the whole question set (fixed at :meth:`LlavaVLM.encode`)
with ``position_ids`` counted over attended tokens, and only the last position's logits are computed
(``logits_to_keep=1``). The image-free modes depend on the question text only, so each distinct text
is run once per :class:`LlavaPrompts` and its logits reused: rows with the same question get
identical image-free logits by construction, whatever the batch.

:meth:`LlavaVLM.generate` decodes open-ended answers with Hugging Face ``generate`` and an optional
``contrast(logits, cf_logits)`` (Visual Debias Decoding against the image-free modes, or VCD against
other images) whose branch runs with its own KV cache (:class:`_LlavaContrast`), as
:meth:`xattr_nb.models.vlm.TinyVLM.generate` does for the TinyVLM.

Written by hand (no library offers it): the prompt assembly per mode, the left padding with
positions, the contrast branch's cache, the answer-word → token-id map (every vocabulary entry whose decoded text, lower-cased
and stripped, equals the answer: the spec's case- and space-insensitive mapping) and the load-time
checks that processor and model fit each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from xattr_nb.checks import InputError, check_choice, check_float, check_int, check_tensor, check_texts
from xattr_nb.models.vlm import apply_contrast, contrast_branches, sampling_config
from xattr_nb.runtime import pick_device

__all__ = ["LLAVA_MODEL", "LLAVA_V1_PROMPT", "MODES", "LlavaPrompts", "LlavaVLM", "load_llava"]

#: The paper-scale model (spec §1.7; the paper used liuhaotian/llava-v1.5-7b, whose HF port this is).
LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
#: LLaVA-1.5's ``llava_v1`` conversation with the paper code's POPE suffix; ``{image}`` is
#: ``"<image>\n"`` (or the processor's image token) or empty.
LLAVA_V1_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: {image}{question} Please answer this "
    "question with one word. ASSISTANT:"
)
MODES: tuple[str, ...] = ("image", "none", "unk", "noise")


class LlavaPrompts:
    """Questions encoded for :meth:`LlavaVLM.next_logits`: the texts, the padded length of each
    mode over the whole set, and the cache of image-free logits by (mode, text). Slicing keeps the
    lengths and shares the cache."""

    def __init__(self, questions: list[str], lengths: dict[str, int], cache: dict | None = None):
        self.questions, self.lengths = questions, lengths
        self.cache: dict[tuple[str, str], torch.Tensor] = {} if cache is None else cache

    def __len__(self) -> int:
        return len(self.questions)

    def __getitem__(self, rows: slice) -> LlavaPrompts:
        if not isinstance(rows, slice):
            raise InputError(f"LlavaPrompts take a slice of rows; got {type(rows).__name__}")
        return LlavaPrompts(self.questions[rows], self.lengths, self.cache)


class LlavaVLM:
    """A loaded LLaVA (``model``, ``processor``) with the closed-question protocol of paper 22.

    ``batch_size``: rows per forward pass (the 7B model with 576 image tokens needs a few GB per
    dozen rows in fp16). ``noise_seed``: the one noise image of mode ``"noise"``.
    """

    def __init__(self, model: Any, processor: Any, *, batch_size: int = 8, noise_seed: int = 0):
        self.model, self.processor = model, processor
        self.tokenizer = processor.tokenizer
        self.batch_size = check_int(batch_size, "batch_size", low=1)
        self.noise_seed = check_int(noise_seed, "noise_seed", low=0)
        self.image_token = processor.image_token
        self.image_token_id = int(processor.image_token_id)
        self.n_image_tokens = _processor_image_tokens(processor)
        self._vocab_text: list[str] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # ------------------------------------------------------------------ text
    def prompt(self, question: str, mode: str) -> str:
        """The ``llava_v1`` prompt of ``question``; with ``<image>\\n`` unless ``mode == "none"``."""
        mode = check_choice(mode, MODES, "mode")
        return LLAVA_V1_PROMPT.format(image="" if mode == "none" else self.image_token + "\n", question=question)

    def _text_ids(self, question: str, mode: str) -> list[int]:
        ids = self.tokenizer(self.prompt(question, mode))["input_ids"]
        if mode != "none" and ids.count(self.image_token_id) != 1:
            raise InputError(f"the prompt of {question!r} must hold exactly one image token {self.image_token!r}")
        if mode == "unk":  # the paper's code: the image placeholder becomes <unk>
            ids = [self.tokenizer.unk_token_id if i == self.image_token_id else i for i in ids]
        if mode in ("image", "noise"):  # the processor's expansion of the image token
            k = ids.index(self.image_token_id)
            ids = ids[:k] + [self.image_token_id] * self.n_image_tokens + ids[k + 1 :]
        return ids

    def encode(self, questions: Sequence[str]) -> LlavaPrompts:
        """The questions as :class:`LlavaPrompts` (the padded length of each mode fixed over all of them)."""
        qs = check_texts(questions, "questions")
        lengths = {m: max(len(self._text_ids(q, m)) for q in dict.fromkeys(qs)) for m in MODES}
        return LlavaPrompts(qs, lengths)

    def answer_token_ids(self, answers: Sequence[str]) -> list[list[int]]:
        """For each answer word, every token id whose decoded text, lower-cased and stripped, equals
        it (``"Yes"``, ``"▁yes"``, ``"YES"`` → ``yes``), special tokens excluded."""
        if isinstance(answers, str) or not isinstance(answers, Sequence) or not answers:
            raise InputError("`answers` must be a non-empty list of answer words")
        if self._vocab_text is None:
            n = len(self.tokenizer)
            self._vocab_text = [t.strip().lower() for t in self.tokenizer.batch_decode([[i] for i in range(n)])]
        special = set(self.tokenizer.all_special_ids)
        out = []
        for a in answers:
            want = str(a).strip().lower()
            ids = [i for i, t in enumerate(self._vocab_text) if t == want and i not in special]
            if not want or not ids:
                raise InputError(f"`answers`: {a!r} is no token of the LLaVA tokenizer (case and spaces ignored)")
            out.append(ids)
        return out

    # ------------------------------------------------------------------ forward
    def _pixels(self, images: torch.Tensor) -> torch.Tensor:
        ip = self.processor.image_processor
        px = ip(images=list(images.float().cpu()), return_tensors="pt", do_rescale=False)["pixel_values"]
        return px.to(self.device, self.model.dtype)

    def noise_images(self, n: int) -> torch.Tensor:
        """``[n, 3, S, S]``: one fixed Gaussian-noise image (mean 0.5, sd 0.25, clipped), repeated
        (``S`` the vision tower's input size)."""
        s = int(self.model.config.vision_config.image_size)
        g = torch.Generator().manual_seed(self.noise_seed)
        return (0.5 + 0.25 * torch.randn(1, 3, s, s, generator=g)).clamp(0, 1).expand(n, -1, -1, -1)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def _left_pad(self, rows: list[list[int]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(len(r) for r in rows) if length is None else length
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, length - len(r) :] = torch.as_tensor(r)
            mask[i, length - len(r) :] = 1
        return ids, mask

    @torch.no_grad()
    def _forward(self, rows: list[list[int]], length: int, pixels: torch.Tensor | None) -> torch.Tensor:
        ids, mask = self._left_pad(rows, length)
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        dev = self.device
        out = self.model(
            input_ids=ids.to(dev),
            attention_mask=mask.to(dev),
            position_ids=pos.to(dev),
            pixel_values=pixels,
            logits_to_keep=1,
            use_cache=False,
        )
        return out.logits[:, -1].float()

    def next_logits(self, images: torch.Tensor | None, prompts: LlavaPrompts, mode: str = "image") -> torch.Tensor:
        """Next-token logits ``[B, V]`` at the answer position of every prompt under ``mode``;
        ``images`` ``[B, 3, H, W]`` in [0, 1] are read in mode ``"image"`` only."""
        mode = check_choice(mode, MODES, "mode")
        if not isinstance(prompts, LlavaPrompts):
            raise InputError(f"`prompts` must come from LlavaVLM.encode(); got {type(prompts).__name__}")
        n, length, bs = len(prompts), prompts.lengths[mode], self.batch_size
        if mode == "image":
            x = self._check_images(images, n)
            out = []
            for s in range(0, n, bs):
                rows = [self._text_ids(q, mode) for q in prompts.questions[s : s + bs]]
                out.append(self._forward(rows, length, self._pixels(x[s : s + bs])))
            return torch.cat(out)
        todo = [q for q in dict.fromkeys(prompts.questions) if (mode, q) not in prompts.cache]
        for s in range(0, len(todo), bs):
            chunk = todo[s : s + bs]
            px = self._pixels(self.noise_images(len(chunk))) if mode == "noise" else None
            lg = self._forward([self._text_ids(q, mode) for q in chunk], length, px)
            prompts.cache.update({(mode, q): row for q, row in zip(chunk, lg, strict=True)})
        return torch.stack([prompts.cache[(mode, q)] for q in prompts.questions])

    def _check_images(self, images: Any, n: int, name: str = "images") -> torch.Tensor:
        x = check_tensor(images, name, ndim=4, layout="[B, 3, H, W] in [0, 1]")
        if x.shape[0] != n or x.shape[1] != 3:
            raise InputError(f"`{name}` must be [{n}, 3, H, W] (one per question); got {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def generate(
        self,
        images: torch.Tensor,
        questions: Sequence[str],
        *,
        contrast: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        contrast_inputs: str | Sequence[str] | torch.Tensor = ("none", "unk"),
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        max_new: int = 64,
        seed: int | None = None,
        return_ids: bool = False,
    ) -> list[str] | list[list[int]]:
        """Open-ended answers to ``questions`` about ``images`` with Hugging Face ``generate`` (KV cache),
        in rows of ``batch_size``.

        ``temperature = 0``: greedy; else sampling with the temperature, ``top_k`` (0 = all) and
        ``top_p`` warpers (``seed`` forks the RNG). ``contrast(logits, cf_logits) -> logits`` (e.g.
        :func:`xattr_nb.methods.lvlm_debias.contrastive_logits`) is applied to the raw next-token
        logits before the warpers, ``cf_logits`` being the mean over ``contrast_inputs``: image-free
        modes (VDD) or a tensor of images (VCD), each run with its own KV cache (:class:`_LlavaContrast`).
        Returns the answers as text, or the new token ids per row (up to EOS) with ``return_ids``.
        """
        from transformers import LogitsProcessorList

        qs = check_texts(questions, "questions")
        x = self._check_images(images, len(qs))
        temperature = check_float(temperature, "temperature", low=0.0)
        top_p = check_float(top_p, "top_p", low=0.0, high=1.0)
        if top_p == 0.0:
            raise InputError("`top_p` must be in (0, 1]")
        top_k, max_new = check_int(top_k, "top_k", low=0), check_int(max_new, "max_new", low=1)
        if contrast is not None and not callable(contrast):
            raise InputError(
                f"`contrast` must be a function (logits, cf_logits) -> logits; got {type(contrast).__name__}"
            )
        if isinstance(contrast_inputs, torch.Tensor):
            contrast_inputs = self._check_images(contrast_inputs, len(qs), "contrast_inputs")
        tok = self.tokenizer
        cfg = sampling_config(tok, max_new, temperature, top_k, top_p, pad_id=self.pad_id)
        out: list[list[int]] = []
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(check_int(seed, "seed", low=0))
            for s in range(0, len(qs), self.batch_size):
                sl = slice(s, s + self.batch_size)
                ids, mask = self._left_pad([self._text_ids(q, "image") for q in qs[sl]])
                procs = LogitsProcessorList()
                if contrast is not None:
                    cf_in = contrast_inputs[sl] if isinstance(contrast_inputs, torch.Tensor) else contrast_inputs
                    procs.append(_LlavaContrast(self, qs[sl], contrast, cf_in))
                gen = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    pixel_values=self._pixels(x[sl]),
                    generation_config=cfg,
                    logits_processor=procs,
                )
                for row in gen[:, ids.shape[1] :].tolist():
                    if tok.eos_token_id in row:
                        row = row[: row.index(tok.eos_token_id)]
                    out.append([i for i in row if i != self.pad_id])
        return out if return_ids else [tok.decode(r, skip_special_tokens=True).strip() for r in out]


class _LlavaContrast(LogitsProcessor):
    """The contrast branch of :meth:`LlavaVLM.generate`: at each step runs the contrast inputs (their own
    prompt: image-free modes, or the same prompt over other images; plus the tokens generated so far)
    with their own KV cache, and returns ``contrast(scores, cf_logits)``, ``cf_logits`` the mean over
    the contrast inputs."""

    def __init__(self, vlm: LlavaVLM, questions: list[str], contrast: Callable, inputs: Any):
        self.vlm, self.contrast = vlm, contrast
        self.branches = []
        for mode, imgs in contrast_branches(inputs):
            ids, mask = vlm._left_pad([vlm._text_ids(q, mode) for q in questions])
            if mode == "noise":
                imgs = vlm.noise_images(len(questions))
            px = vlm._pixels(imgs) if imgs is not None else None
            self.branches.append({"ids": ids, "mask": mask.to(vlm.device), "px": px, "cache": None})

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        model, dev = self.vlm.model, self.vlm.device
        outs = []
        for b in self.branches:
            if b["cache"] is None:  # first step: the whole prompt
                pos = (b["mask"].cumsum(1) - 1).clamp(min=0)
                o = model(input_ids=b["ids"].to(dev), attention_mask=b["mask"], position_ids=pos,
                          pixel_values=b["px"], use_cache=True, logits_to_keep=1)  # fmt: skip
            else:  # the token the main branch just chose
                b["mask"] = torch.cat([b["mask"], torch.ones_like(b["mask"][:, :1])], dim=1)
                pos = b["mask"].sum(1, keepdim=True) - 1
                o = model(input_ids=input_ids[:, -1:], attention_mask=b["mask"], position_ids=pos,
                          cache=b["cache"], use_cache=True)  # fmt: skip
            b["cache"] = o.cache
            outs.append(o.logits[:, -1].float())
        return apply_contrast(self.contrast, scores, outs)


# ---------------------------------------------------------------------------------------- loading


def _processor_image_tokens(processor: Any) -> int:
    """Image tokens the processor writes per image (as ``LlavaProcessor`` counts them)."""
    crop = processor.image_processor.crop_size
    h, w = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop.height, crop.width)
    n = (h // processor.patch_size) * (w // processor.patch_size) + int(processor.num_additional_image_tokens or 0)
    return n - (processor.vision_feature_select_strategy == "default")


def _model_image_tokens(config: Any) -> int:
    """Image features the model produces per image (CLIP-style tower: patches + CLS, CLS dropped by ``default``)."""
    v = config.vision_config
    return (v.image_size // v.patch_size) ** 2 + 1 - (config.vision_feature_select_strategy == "default")


def check_processor_matches(model: Any, processor: Any, where: str = "name_or_path") -> None:
    """Raise :class:`InputError` unless ``processor`` can feed ``model``: it has an image token that is
    the model's ``image_token_id`` and not ``<unk>``, its tokenizer fits the embedding, its crop size is
    the tower's input size, and it writes as many image tokens per image as the model makes features."""
    from xattr_nb.models.text import check_tokenizer_matches

    tok = getattr(processor, "tokenizer", None)
    if tok is None or not hasattr(processor, "image_processor") or not hasattr(processor, "image_token"):
        raise InputError(f"`{where}`: the processor is a {type(processor).__name__}, not a LLaVA processor")
    image_id = tok.convert_tokens_to_ids(processor.image_token)
    if image_id is None or image_id == tok.unk_token_id:
        raise InputError(
            f"`{where}`: the processor's tokenizer has no image token {processor.image_token!r} (it maps to "
            "<unk>); the processor does not match a LLaVA model: load both from the same folder"
        )
    cfg = model.config
    if image_id != cfg.image_token_id:
        raise InputError(
            f"`{where}`: the processor's image token {processor.image_token!r} has id {image_id} but the model "
            f"expects image_token_id {cfg.image_token_id}; the processor does not match the model"
        )
    if tok.unk_token_id is None:
        raise InputError(f"`{where}`: the tokenizer has no <unk> token, which the 'unk' mode needs")
    check_tokenizer_matches(model, tok)
    crop = processor.image_processor.crop_size
    h = crop["height"] if isinstance(crop, dict) else crop.height
    if h != cfg.vision_config.image_size:
        raise InputError(
            f"`{where}`: the processor crops images to {h} pixels but the vision tower takes "
            f"{cfg.vision_config.image_size}; the processor does not match the model"
        )
    if not isinstance(getattr(processor, "patch_size", None), int):
        raise InputError(
            f"`{where}`: the processor has no patch_size (an old processor_config.json); set patch_size, "
            "vision_feature_select_strategy and num_additional_image_tokens as in the model's config"
        )
    have, want = _processor_image_tokens(processor), _model_image_tokens(cfg)
    if have != want:
        raise InputError(
            f"`{where}`: the processor writes {have} image tokens per image but the model makes {want} image "
            "features (patch_size / num_additional_image_tokens / vision_feature_select_strategy differ); "
            "the processor does not match the model"
        )


def load_llava(
    name_or_path: str | os.PathLike = LLAVA_MODEL,
    *,
    device: str = "cpu",
    dtype: Any = None,
    batch_size: int = 8,
    attn_implementation: str = "sdpa",
    local_files_only: bool | None = None,
) -> LlavaVLM:
    """Load ``LlavaForConditionalGeneration`` + ``AutoProcessor`` from a Hugging Face name or a local
    folder (safetensors only; offline first, see :func:`xattr_nb.models.hub.from_pretrained_offline`)
    as a :class:`LlavaVLM` in eval mode on ``device``. ``dtype``: ``None`` keeps float32 (pass
    ``torch.float16`` on a GPU: the 7B model needs about 16 GB). Raises
    :class:`~xattr_nb.checks.InputError` naming ``name_or_path`` when the folder or model is missing or
    the processor does not match the model (:func:`check_processor_matches`)."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from xattr_nb.models.hub import from_pretrained_offline

    dev = pick_device(device)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = from_pretrained_offline(
            LlavaForConditionalGeneration.from_pretrained, name_or_path, "LLaVA model", local_files_only, **kwargs
        )
        processor = from_pretrained_offline(
            AutoProcessor.from_pretrained, name_or_path, "LLaVA processor", local_files_only
        )
    except InputError as exc:
        raise InputError(f"`name_or_path`: {exc}") from exc
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(
            f"`name_or_path`: could not load a LLaVA model from {os.fspath(name_or_path)!r}: {exc}"
        ) from exc
    if not isinstance(model, LlavaForConditionalGeneration):
        raise InputError(f"`name_or_path`: {name_or_path!r} holds a {type(model).__name__}, not a LLaVA model")
    check_processor_matches(model, processor)
    return LlavaVLM(model.to(dev).eval(), processor, batch_size=batch_size)
