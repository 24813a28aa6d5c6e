"""A tiny GPT-2 policy over characters: builder, tokenizer, sequence log-probabilities, sampling.

The pieces a preference-training notebook needs (CREAM, paper 25; the LVLM notebooks reuse the
builder), on Hugging Face classes so a paper-scale causal LM drops in unchanged:

- :func:`char_tokenizer`: a character-level ``PreTrainedTokenizerFast`` built with ``tokenizers``
  (a ``WordLevel`` model over single characters, ``<pad>`` 0 and ``<eos>`` 1, a ``Fuse`` decoder);
- :func:`tiny_gpt2`: a ``GPT2LMHeadModel`` (2 layers, width 64, 4 heads by default);
- :func:`encode_prompts` / :func:`encode_responses`: token tensors (responses end with EOS and are
  right-padded with the pad id);
- :func:`sequence_logprob`: ``log π(y | x) = Σ_t log π(y_t | x, y_<t)`` over the response's real
  tokens (EOS included), optionally divided by their count. Written by hand (a gather over one
  forward): HF has no per-sequence log-likelihood helper;
- :func:`sample`: ``N`` responses per prompt with temperature and nucleus sampling through HF
  ``generate`` (KV cache on), seeded without touching the global generator;
- :func:`decode_responses`: token ids → strings, cut at the first EOS.

Prompts of different token lengths (a full-scale BPE tokenizer) are left-padded with the pad id and
masked (:func:`prompt_mask`; positions count real tokens, as ``generate`` does), so a paper-scale
causal LM goes through the same functions; the sorting world's prompts all have one length.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from xattr_nb.checks import InputError, check_float, check_int, check_tensor
from xattr_nb.models.io import logits_of

__all__ = [
    "char_tokenizer",
    "decode_responses",
    "encode_prompts",
    "encode_responses",
    "greedy",
    "prompt_mask",
    "sample",
    "sequence_logprob",
    "tiny_gpt2",
]

PAD, EOS = "<pad>", "<eos>"


def char_tokenizer(alphabet: str) -> Any:
    """A character-level fast tokenizer: ``<pad>`` = 0, ``<eos>`` = 1, then one id per character."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if not isinstance(alphabet, str) or not alphabet or len(set(alphabet)) != len(alphabet):
        raise InputError(f"`alphabet` must be a non-empty string of distinct characters; got {alphabet!r}")
    if any(c.isspace() for c in alphabet):
        raise InputError("`alphabet` must not contain whitespace")
    vocab = {PAD: 0, EOS: 1, **{c: i + 2 for i, c in enumerate(alphabet)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)


def tiny_gpt2(
    vocab_size: int, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, n_positions: int = 32, seed: int = 0
) -> nn.Module:
    """A freshly initialised ``GPT2LMHeadModel`` (pad id 0, EOS id 1, as :func:`char_tokenizer`)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    check_int(vocab_size, "vocab_size", low=3)
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_layer=check_int(n_layer, "n_layer", low=1),
        n_embd=check_int(n_embd, "n_embd", low=8),
        n_head=check_int(n_head, "n_head", low=1),
        n_positions=check_int(n_positions, "n_positions", low=4),
        bos_token_id=1,
        eos_token_id=1,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_int(seed, "seed", low=0))
        return GPT2LMHeadModel(cfg).eval()


def encode_prompts(tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    """``[P, T]`` token ids of prompts (no special tokens), left-padded with the pad id when their
    lengths differ (a full-scale tokenizer); :func:`prompt_mask` recovers the real positions."""
    if not isinstance(prompts, (list, tuple)) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise InputError("`prompts` must be a non-empty list of strings")
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    t = max(len(i) for i in ids)
    if min(len(i) for i in ids) != t:
        if tokenizer.pad_token_id is None:
            raise InputError("`tokenizer` needs a pad token to left-pad prompts of different lengths")
        ids = [[tokenizer.pad_token_id] * (t - len(i)) + i for i in ids]
    return torch.tensor(ids, dtype=torch.long)


def prompt_mask(model: nn.Module, prompt_ids: torch.Tensor) -> torch.Tensor:
    """Real prompt positions: from the first token that is not the model's pad id (all when it has none)."""
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        return torch.ones_like(prompt_ids)
    return (torch.cumsum((prompt_ids != pad).long(), 1) > 0).long()


def encode_responses(tokenizer: Any, responses: list[str], max_len: int | None = None) -> torch.Tensor:
    """``[R, T]`` token ids of responses followed by EOS, right-padded with the pad id."""
    if not isinstance(responses, (list, tuple)) or not all(isinstance(r, str) for r in responses):
        raise InputError("`responses` must be a list of strings")
    ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    t = max(len(i) for i in ids) if max_len is None else check_int(max_len, "max_len", low=1)
    if max(len(i) for i in ids) > t:
        raise InputError(f"`max_len` ({t}) is shorter than a response")
    return torch.tensor([i + [tokenizer.pad_token_id] * (t - len(i)) for i in ids], dtype=torch.long)


def _response_mask(resp_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Real response tokens: everything up to and including the first EOS (all if none)."""
    is_eos = (resp_ids == eos_id).long()
    before = torch.cumsum(is_eos, 1) - is_eos  # EOS seen strictly before this position
    return before == 0


def sequence_logprob(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    resp_ids: torch.Tensor,
    *,
    length_norm: bool = False,
    eos_id: int | None = None,
) -> torch.Tensor:
    """``log π(y | x)`` per row, ``[B]``: the sum of the response tokens' log-probabilities.

    ``prompt_ids [B, Tp]`` (same length), ``resp_ids [B, Tr]``; the response counts up to and
    including its first EOS (``eos_id``, default the model config's), later positions are ignored.
    ``length_norm=True`` divides by that count (CREAM's previous-iteration reward at t = 1).
    Differentiable (call under ``torch.no_grad()`` to score).
    """
    p = check_tensor(prompt_ids, "prompt_ids", ndim=2, layout="[B, Tp]")
    r = check_tensor(resp_ids, "resp_ids", ndim=2, layout="[B, Tr]")
    if p.shape[0] != r.shape[0]:
        raise InputError(f"`resp_ids` must have one row per prompt ({p.shape[0]}); got {r.shape[0]}")
    if p.is_floating_point() or r.is_floating_point():
        raise InputError("`prompt_ids` and `resp_ids` must hold integer token ids")
    eos = int(model.config.eos_token_id if eos_id is None else eos_id)
    dev = next(model.parameters()).device
    p, r = p.to(dev), r.to(dev)
    ids = torch.cat([p, r], 1)
    att = torch.cat([prompt_mask(model, p), torch.ones_like(r)], 1)
    pos = (torch.cumsum(att, 1) - 1).clamp_min(0)  # left padding: positions count real tokens, as generate does
    logits = logits_of(model(input_ids=ids, attention_mask=att, position_ids=pos), ndim=3)
    logp = torch.log_softmax(logits[:, p.shape[1] - 1 : -1].float(), -1)
    tok = logp.gather(-1, r.unsqueeze(-1)).squeeze(-1)
    mask = _response_mask(r, eos)
    total = (tok * mask).sum(1)
    return total / mask.sum(1).clamp_min(1) if length_norm else total


def _gen_kwargs(model: nn.Module) -> dict[str, Any]:
    return {"pad_token_id": model.config.pad_token_id, "eos_token_id": model.config.eos_token_id}


def _pad_to(out: torch.Tensor, max_new: int, pad: int) -> torch.Tensor:
    if out.shape[1] < max_new:
        out = torch.cat([out, out.new_full((out.shape[0], max_new - out.shape[1]), pad)], 1)
    return out


@torch.no_grad()
def sample(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    n: int,
    *,
    temperature: float = 0.8,
    top_p: float = 0.95,
    max_new: int = 12,
    seed: int = 0,
) -> torch.Tensor:
    """``[P, n, max_new]`` sampled response ids (HF ``generate`` with the KV cache), pad after EOS.

    Seeded through a forked global generator, so the caller's random state is left as it was and
    the same ``seed`` gives the same samples.
    """
    p = check_tensor(prompt_ids, "prompt_ids", ndim=2, layout="[P, T]")
    check_int(n, "n", low=1)
    check_float(temperature, "temperature", low=1e-6)
    check_float(top_p, "top_p", low=1e-6, high=1.0)
    check_int(max_new, "max_new", low=1)
    dev = next(model.parameters()).device
    p = p.to(dev)
    was = model.training
    model.eval()
    with torch.random.fork_rng(devices=[] if dev.type == "cpu" else [dev]):
        torch.manual_seed(check_int(seed, "seed", low=0))
        out = model.generate(
            input_ids=p,
            attention_mask=prompt_mask(model, p),
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=0,
            max_new_tokens=max_new,
            num_return_sequences=n,
            **_gen_kwargs(model),
        )
    model.train(was)
    resp = _pad_to(out[:, p.shape[1] :], max_new, int(model.config.pad_token_id))
    return resp.reshape(p.shape[0], n, max_new)


@torch.no_grad()
def greedy(model: nn.Module, prompt_ids: torch.Tensor, *, max_new: int = 12) -> torch.Tensor:
    """``[P, max_new]`` greedy responses (HF ``generate``, KV cache), pad after EOS."""
    p = check_tensor(prompt_ids, "prompt_ids", ndim=2, layout="[P, T]")
    dev = next(model.parameters()).device
    p = p.to(dev)
    was = model.training
    model.eval()
    out = model.generate(
        input_ids=p,
        attention_mask=prompt_mask(model, p),
        do_sample=False,
        max_new_tokens=check_int(max_new, "max_new", low=1),
        **_gen_kwargs(model),
    )
    model.train(was)
    return _pad_to(out[:, p.shape[1] :], max_new, int(model.config.pad_token_id))


def decode_responses(tokenizer: Any, resp_ids: torch.Tensor) -> list[str]:
    """Strings of ``[R, T]`` response ids, each cut at its first EOS."""
    r = check_tensor(resp_ids, "resp_ids", ndim=2, layout="[R, T]")
    eos = tokenizer.eos_token_id
    out = []
    for row in r.tolist():
        if eos in row:
            row = row[: row.index(eos)]
        out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out
