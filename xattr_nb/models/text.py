"""Tiny language models and their tokenizers, as real Hugging Face objects.

- :func:`word_tokenizer`: a word-level ``PreTrainedTokenizerFast`` over a fixed word list, so
  synthetic tasks get one token per word and every HF/captum/inseq tool that takes a tokenizer works.
- :func:`tiny_gpt2`: a ``GPT2LMHeadModel`` small enough to train in seconds, with dropout off and
  eager attention (attention probabilities come back with ``output_attentions=True``). The same
  code paths then run on ``"gpt2"`` at full scale.
- :func:`check_tokenizer_matches`: refuse a tokenizer whose ids do not fit a model's embeddings.
- :class:`EncoderClassifier`: an HF encoder (e.g. MiniLM's ``BertModel``) + masked mean pooling +
  a linear head.

:mod:`xattr_nb.models.architectures` lists the builders here for :func:`~xattr_nb.models.architectures.build`
and the zoo: ``"tiny_gpt2"``, ``"hf"`` (any transformers model class from its config dict, see
:func:`hf_arch_config`) and ``"EncoderClassifier"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerFast

from xattr_nb.checks import InputError, check_choice, check_int, check_tensor
from xattr_nb.models.io import max_positions

SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]", "[MASK]")


def word_tokenizer(words: Sequence[str], *, specials: Sequence[str] = SPECIALS) -> PreTrainedTokenizerFast:
    """A word-level HF fast tokenizer: one id per word of ``words``, nothing else.

    Ids: the ``specials`` first (in order, so ``[PAD]`` is 0), then ``words`` in the given order.
    The first five specials play the roles pad, unk, bos, eos, mask; any further ones are added as
    additional special tokens (e.g. ``[SEP]``). Text is split by the ``tokenizers`` ``Whitespace``
    pre-tokenizer (runs of word characters, runs of punctuation), case-sensitively, so
    ``"Mary gave."`` becomes ``["Mary", "gave", "."]``; an unknown word becomes ``[UNK]``.
    ``decode`` joins tokens with spaces, so ``decode(encode(t)) == t`` for text written with one
    space between tokens. No special token is added automatically (prepend ``[BOS]`` yourself).
    The result saves with ``save_pretrained`` and loads back with ``AutoTokenizer.from_pretrained``.
    """
    if isinstance(words, str) or not isinstance(words, Sequence) or len(words) == 0:
        raise InputError("`words` must be a non-empty list of strings")
    if isinstance(specials, str) or not isinstance(specials, Sequence) or len(specials) < 5:
        raise InputError(f"`specials` must list at least 5 tokens (pad, unk, bos, eos, mask); got {specials!r}")
    pre = pre_tokenizers.Whitespace()
    for group, items in (("specials", specials), ("words", words)):
        for i, w in enumerate(items):
            if not isinstance(w, str) or not w.strip():
                raise InputError(f"`{group}[{i}]` must be a non-empty string; got {w!r}")
    for i, w in enumerate(words):
        pieces = [p for p, _ in pre.pre_tokenize_str(w)]
        if pieces != [w]:
            raise InputError(
                f"`words[{i}]` {w!r} would be split into {pieces} by the whitespace pre-tokenizer: "
                "a word must be one run of letters/digits/_ or one run of punctuation"
            )
    vocab_list = [*specials, *words]
    seen: set[str] = set()
    dupes = sorted({w for w in vocab_list if w in seen or seen.add(w)})  # type: ignore[func-returns-value]
    if dupes:
        raise InputError(f"`words`/`specials` must be unique; repeated: {dupes}")
    pad, unk, bos, eos, mask, *extra = specials
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab_list)}, unk_token=unk))
    backend.pre_tokenizer = pre
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=pad, unk_token=unk, bos_token=bos, eos_token=eos, mask_token=mask
    )
    if extra:
        tok.add_special_tokens({"additional_special_tokens": list(extra)})
    return tok


def tiny_gpt2(
    vocab_size: int,
    *,
    n_layer: int = 2,
    n_head: int = 4,
    d_model: int = 64,
    n_ctx: int = 64,
    d_mlp: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    seed: int = 0,
) -> GPT2LMHeadModel:
    """A small ``GPT2LMHeadModel`` (HF class and config), initialised deterministically from ``seed``.

    Dropout is 0 everywhere and attention is ``"eager"`` so ``output_attentions=True`` returns the
    probabilities and hooks see every step. ``d_mlp`` defaults to ``4 * d_model`` as in GPT-2.
    Pass the tokenizer's special ids (e.g. ``tok.bos_token_id``) to have them in the config.
    The global RNG is left untouched. Returned in eval mode.
    """
    vocab_size = check_int(vocab_size, "vocab_size", low=1)
    n_layer, n_head = check_int(n_layer, "n_layer", low=1), check_int(n_head, "n_head", low=1)
    d_model, n_ctx = check_int(d_model, "d_model", low=1), check_int(n_ctx, "n_ctx", low=1)
    if d_model % n_head:
        raise InputError(f"`d_model` ({d_model}) must be a multiple of `n_head` ({n_head})")
    if d_mlp is not None:
        d_mlp = check_int(d_mlp, "d_mlp", low=1)
    for name, value in (("bos_token_id", bos_token_id), ("eos_token_id", eos_token_id), ("pad_token_id", pad_token_id)):
        if value is not None:
            check_int(value, name, low=0, high=vocab_size - 1)
    seed = check_int(seed, "seed", low=0, high=2**32 - 1)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=n_ctx,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        n_inner=d_mlp,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        attn_implementation="eager",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    return model.eval()


def check_position_limit(model: nn.Module, prompt_len: int, max_new_tokens: int) -> None:
    """Refuse a generation that would run past the model's positions (``n_positions`` /
    ``max_position_embeddings``), naming ``max_new_tokens``: never truncate silently."""
    limit = max_positions(model)
    if limit is not None and prompt_len + max_new_tokens > int(limit):
        raise InputError(
            f"`max_new_tokens` ({max_new_tokens}) + prompt ({prompt_len}) exceeds the model's {limit} positions"
        )


def _model_config(model: nn.Module) -> Any:
    return getattr(model, "config", None)


def check_tokenizer_matches(model: nn.Module, tokenizer: Any) -> None:
    """Raise :class:`InputError` unless every id ``tokenizer`` can emit has a row in ``model``'s
    input embedding, and the model's config agrees with its own embedding size.

    A tokenizer *smaller* than the embedding is accepted (models often pad their vocabulary to a
    multiple of 64); one that is larger would index past the table, or, worse, a different
    tokenizer of similar size would silently feed the model the wrong words, which no size check
    can catch: load tokenizer and model from the same folder.
    """
    if not isinstance(model, nn.Module) or not hasattr(model, "get_input_embeddings"):
        raise InputError(f"`model` must be a torch module with get_input_embeddings(); got {type(model).__name__}")
    if not hasattr(tokenizer, "__len__") or not hasattr(tokenizer, "convert_tokens_to_ids"):
        raise InputError(f"`tokenizer` must be a Hugging Face tokenizer; got {type(tokenizer).__name__}")
    emb = model.get_input_embeddings()
    rows = int(emb.num_embeddings if hasattr(emb, "num_embeddings") else emb.weight.shape[0])
    n_tok = len(tokenizer)
    if n_tok > rows:
        raise InputError(
            f"tokenizer does not match the model: the tokenizer has {n_tok} tokens but the model's input "
            f"embedding has {rows} rows (ids >= {rows} would index past it); load both from the same folder"
        )
    config_vocab = getattr(_model_config(model), "vocab_size", None)
    if config_vocab is not None and int(config_vocab) != rows:
        raise InputError(
            f"model is inconsistent: config.vocab_size is {config_vocab} but its input embedding has {rows} rows "
            f"(the tokenizer has {n_tok} tokens); after resizing embeddings, update config.vocab_size"
        )


def hf_arch_config(model: PreTrainedModel) -> dict[str, Any]:
    """The ``{"arch": "hf", ...}`` config that rebuilds a transformers model (same class, same config)."""
    if not isinstance(model, PreTrainedModel):
        raise InputError(f"`model` must be a transformers PreTrainedModel; got {type(model).__name__}")
    return {
        "arch": "hf",
        "kwargs": {
            "model_class": type(model).__name__,
            "config": model.config.to_dict(),
            "attn_implementation": model.config._attn_implementation or "eager",
        },
    }


def build_hf(model_class: str, config: dict[str, Any], attn_implementation: str = "eager") -> PreTrainedModel:
    """Build a randomly initialised transformers model of class ``model_class`` from a config dict
    (as written by ``PretrainedConfig.to_dict()``, which holds ``model_type``)."""
    cls = getattr(transformers, model_class, None) if isinstance(model_class, str) else None
    if not (isinstance(cls, type) and issubclass(cls, PreTrainedModel)):
        raise InputError(f"`model_class` {model_class!r} is not a transformers model class")
    if not isinstance(config, dict) or "model_type" not in config:
        raise InputError("`config` must be a dict from PretrainedConfig.to_dict() (with 'model_type')")
    cfg = transformers.AutoConfig.for_model(**config)
    cfg._attn_implementation = attn_implementation
    return cls(cfg).eval()


class EncoderClassifier(nn.Module):
    """A sequence classifier over any HF encoder: pooled token states → linear head → logits.

    ``pooling="mean"`` averages the last hidden states over the tokens where ``attention_mask`` is
    1 (padding excluded; what sentence-transformers does for MiniLM); ``"cls"`` takes token 0.
    ``get_input_embeddings()`` returns the encoder's word embeddings, so captum's
    ``LayerIntegratedGradients(model, model.get_input_embeddings())`` attributes to tokens.
    Like a Hugging Face model, ``forward`` takes ``input_ids`` or ``inputs_embeds`` (``[B, T, D]``,
    the word embeddings, e.g. ``model.get_input_embeddings()(ids)``; the encoder adds positions),
    so embedding-space metrics (``soft_sufficiency``, ``soft_comprehensiveness``) work on it.
    ``freeze_encoder=True`` turns off the encoder's gradients (only the head trains: a linear probe).
    """

    def __init__(
        self, encoder: PreTrainedModel, n_classes: int, pooling: str = "mean", *, freeze_encoder: bool = False
    ):
        super().__init__()
        if not isinstance(encoder, PreTrainedModel) or not hasattr(encoder.config, "hidden_size"):
            raise InputError(
                f"`encoder` must be a transformers encoder model (e.g. BertModel); got {type(encoder).__name__}"
            )
        self.encoder = encoder
        self.n_classes = check_int(n_classes, "n_classes", low=2)
        self.pooling = check_choice(pooling, ("mean", "cls"), "pooling")
        if not isinstance(freeze_encoder, bool):
            raise InputError(f"`freeze_encoder` must be a bool; got {type(freeze_encoder).__name__}")
        self.freeze_encoder = freeze_encoder
        self.head = nn.Linear(encoder.config.hidden_size, self.n_classes)
        for p in self.encoder.parameters():
            p.requires_grad_(not freeze_encoder)

    @classmethod
    def from_config(
        cls, encoder: dict[str, Any], n_classes: int, pooling: str = "mean", *, freeze_encoder: bool = False
    ) -> EncoderClassifier:
        """Rebuild (random weights) from the encoder's config dict; what the zoo calls."""
        if not isinstance(encoder, dict) or "model_type" not in encoder:
            raise InputError("`encoder` must be a config dict from PretrainedConfig.to_dict() (with 'model_type')")
        enc = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(**encoder))
        return cls(enc, n_classes, pooling, freeze_encoder=freeze_encoder)

    @property
    def config(self) -> Any:
        """The encoder's HF config (so tokenizer checks and HF-aware tools find ``vocab_size``)."""
        return self.encoder.config

    @property
    def arch_config(self) -> dict[str, Any]:
        kwargs = {"encoder": self.encoder.config.to_dict(), "n_classes": self.n_classes, "pooling": self.pooling}
        return {"arch": "EncoderClassifier", "kwargs": {**kwargs, "freeze_encoder": self.freeze_encoder}}

    def train(self, mode: bool = True) -> EncoderClassifier:
        """Set training mode; a frozen encoder stays in eval mode (no dropout in a fixed feature extractor)."""
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def features(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The pooled embedding ``[B, hidden]`` the head reads; give exactly one of ``input_ids``
        ``[B, T]`` and ``inputs_embeds`` ``[B, T, D]``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError(
                "give exactly one of `input_ids` [B, T] (token ids) and `inputs_embeds` [B, T, D] (word embeddings); "
                f"got {'both' if input_ids is not None else 'neither'}"
            )
        if inputs_embeds is not None:
            dim = self.get_input_embeddings().embedding_dim
            inputs_embeds = check_tensor(
                inputs_embeds, "inputs_embeds", ndim=3, dtype="float", finite=False, layout="[B, T, D]"
            )
            if inputs_embeds.shape[-1] != dim:
                raise InputError(
                    f"`inputs_embeds` must be [B, T, {dim}] (the encoder's embedding size); got {tuple(inputs_embeds.shape)}"
                )
            ref = inputs_embeds[..., 0]
        else:
            input_ids = check_tensor(input_ids, "input_ids", ndim=2, dtype="int", layout="[B, T]")
            rows = self.get_input_embeddings().num_embeddings
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= rows:
                raise InputError(f"`input_ids` must lie in [0, {rows}) (the encoder's vocabulary); got [{lo}, {hi}]")
            ref = input_ids
        if attention_mask is None:
            attention_mask = torch.ones(ref.shape, dtype=torch.long, device=ref.device)
        else:
            attention_mask = check_tensor(attention_mask, "attention_mask", shape=tuple(ref.shape), layout="[B, T]")
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds
        ).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, n_classes]`` from ``input_ids`` ``[B, T]`` or ``inputs_embeds`` ``[B, T, D]`` (exactly one)."""
        return self.head(self.features(input_ids, attention_mask, inputs_embeds=inputs_embeds))
