"""Patching benchmarks: activation patching vs TransformerLens, AtP/RelP vs activation patching,
and the chunk size that :func:`~xattr_nb.kernels.rows_per_chunk` picks vs the best chunking.

    .venv/bin/python -m benchmarks.patching [--quick] [--sweep] [--layer-ig] [--repeats 3]
    python -m benchmarks --only patching        (the rows of the results table)

Work (the same model, prompts and metric on both sides):

- **tiny**: the shipped 4-layer IOI GPT-2 (``ioi_gpt2_4l``: 4 layers, 4 heads, d = 64, vocabulary 52),
  8 IOI prompt pairs of 15 tokens (IO and S swapped), every head (by position) and every MLP at every
  position: 300 components, the metric is IOI's normalised logit difference.
- **GPT-2 small, random**: ``GPT2LMHeadModel(GPT2Config())`` (12 layers, 12 heads, d = 768,
  vocabulary 50,257, seeded random init), 2 of the same prompt pairs (word ids < 52 are valid GPT-2
  ids: only the shapes matter), every head and MLP at the last position (156 components; every
  position would be 15 times that).

The peer is TransformerLens's current bridge API: ``TransformerBridge.boot_transformers`` wrapping a
copy of the same Hugging Face model (raw HF weights, no LayerNorm folding: the logits are HF's), then
``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` and ``get_act_patch_mlp_out`` (one
patched forward of the corrupted batch per component). Both sides must give the same patched
metric for every component (TransformerLens returns ``metric(patched)``; ours ``metric(patched) -
metric(corrupted)``, so the corrupted metric is added back) before anything is timed.

AtP and RelP rows time the estimator against activation patching of the same components and report
their rank agreement with it (an estimate of AP, so the agreement is reported, not required).

The chunking rows sweep the rows per patched forward (multiples of the prompts) and compare the
default, sized by :func:`~xattr_nb.kernels.rows_per_chunk` from the device's cache, with the best
chunking of the sweep (the bound) and with the old fixed default of 512 rows.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.harness import Row, bound, compare, failed, not_installable, to_numpy

SITES = ("head", "mlp_out")
GROUP = "patching"
TINY_WORK = "ioi_gpt2_4l, 8 IOI pairs x 15 tokens, 300 components (heads by position + MLPs, all positions)"
BIG_WORK = "GPT-2-small-sized random GPT2LMHeadModel, 2 IOI pairs x 15 tokens, 156 components (last position)"
OLD_ROWS = 512  # the fixed rows per chunk before the budget (issue 19)


# ---------------------------------------------------------------------------------------------- setup


def _models() -> dict[str, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    from xattr_nb.methods.relp import ioi_pairs
    from xattr_nb.models import zoo

    pairs = ioi_pairs(8, seed=0)[0]
    tiny = zoo.load("ioi_gpt2_4l").eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        big = GPT2LMHeadModel(GPT2Config(attn_implementation="eager")).eval()
    return {"pairs": pairs, "tiny": tiny, "big": big}


def _problem(model: Any, pairs: Any, n: int) -> dict[str, Any]:
    from xattr_nb.interventions.patching import normalized_logit_diff

    clean, corr = pairs.clean_ids[:n], pairs.corr_ids[:n]
    answer, wrong = pairs.answer[:n], pairs.wrong[:n]
    metric = normalized_logit_diff(model, clean, corr, answer, wrong)
    return {"model": model, "clean": clean, "corr": corr, "metric": metric}


def _ours(p: dict[str, Any], positions: list[int] | None, max_rows: int | None = None) -> Callable[[], Any]:
    from xattr_nb.interventions.patching import activation_patching

    def run() -> Any:
        return activation_patching(
            p["model"], p["clean"], p["corr"], p["metric"], sites=SITES, positions=positions, max_rows=max_rows
        )

    return run


def _ours_flat(
    p: dict[str, Any], positions: list[int] | None, max_rows: int | None = None, keep: dict | None = None
) -> Callable[[], Any]:
    """Our AP scores flattened as TransformerLens orders them; ``keep["result"]`` holds the last result."""
    run = _ours(p, positions, max_rows)

    def flat() -> torch.Tensor:
        r = run()
        if keep is not None:
            keep["result"] = r
        return torch.cat([r["head"].reshape(-1), r["mlp_out"].reshape(-1)])

    return flat


def _bridge(model: Any) -> Any:
    """TransformerLens's bridge over a copy of ``model`` (the bridge rewires the modules it wraps)."""
    from transformer_lens.model_bridge import TransformerBridge

    folder = tempfile.mkdtemp(prefix="xattr_tl_")
    model.config.save_pretrained(folder)  # the bridge reads the config by name; the weights come from hf_model
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return TransformerBridge.boot_transformers(folder, hf_model=copy.deepcopy(model), device="cpu")


def _tl_flat(bridge: Any, p: dict[str, Any], last_only: bool) -> Callable[[], torch.Tensor]:
    import pandas as pd
    from transformer_lens import patching as tlp

    metric, clean, corr = p["metric"], p["clean"], p["corr"]
    base = float(metric(bridge(corr)).detach())
    cfg = bridge.cfg
    t = corr.shape[1]
    kw_h: dict[str, Any] = {}
    kw_m: dict[str, Any] = {}
    if last_only:
        rows_h = [(layer, t - 1, h) for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
        kw_h["index_df"] = pd.DataFrame(rows_h, columns=["layer", "pos", "head_index"])
        kw_h["index_axis_names"] = None
        kw_m["index_df"] = pd.DataFrame([(layer, t - 1) for layer in range(cfg.n_layers)], columns=["layer", "pos"])
        kw_m["index_axis_names"] = None

    def run() -> torch.Tensor:
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            _, cache = bridge.run_with_cache(clean)
            heads = tlp.get_act_patch_attn_head_out_by_pos(bridge, corr, cache, metric, **kw_h)
            mlps = tlp.get_act_patch_mlp_out(bridge, corr, cache, metric, **kw_m)
        return torch.cat([heads.reshape(-1), mlps.reshape(-1)]) - base

    return run


def _agree_ap(atol: float) -> Callable[[Any, Any], tuple[bool, str]]:
    def agree(a: Any, b: Any) -> tuple[bool, str]:
        x, y = to_numpy(a), to_numpy(b)
        if x.shape != y.shape:
            return False, f"shapes differ: {x.shape} vs {y.shape}"
        d = float(abs(x - y).max())
        return bool(d <= atol), f"max abs diff {d:.1e} (patched metric, {x.size} components)"

    return agree


def _vs_ap(a: Any, b: Any) -> tuple[bool, str]:
    """An estimator against activation patching: rank agreement reported, not required."""
    from xattr_nb.interventions.patching import compare as agreement

    c = agreement(a, b, k=10)
    return True, f"vs AP: spearman {c['spearman']:.2f}, pearson {c['pearson']:.2f}, top-10 jaccard {c['jaccard']:.2f}"


# ---------------------------------------------------------------------------------------------- sweep


def sweep(
    p: dict[str, Any], positions: list[int] | None, sizes: list[int], repeats: int = 3
) -> tuple[dict[int, float], int]:
    """Median wall seconds of activation patching per rows-per-chunk (interleaved), and the row count
    the budget picks (``max_rows=None``)."""
    chosen = int(_ours(p, positions)().meta["rows_per_chunk"])
    times: dict[int, list[float]] = {s: [] for s in sizes}
    for s in sizes:  # warm-up
        _ours(p, positions, s)()
    for _ in range(repeats):
        for s in sizes:
            t0 = time.perf_counter()
            _ours(p, positions, s)()
            times[s].append(time.perf_counter() - t0)
    return {s: statistics.median(v) for s, v in times.items()}, chosen


def _median_wall(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    walls = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def _sizes(b: int, total: int) -> list[int]:
    out, s = [], b
    while s < total:
        out.append(s)
        s *= 2
    return [*out, total]


# ---------------------------------------------------------------------------------------------- rows


def _tl_missing() -> str | None:
    try:
        import transformer_lens  # noqa: F401
        from transformer_lens.model_bridge import TransformerBridge  # noqa: F401
    except Exception as e:  # not installed, or installed without the bridge
        return f"{type(e).__name__}: {e}"
    return None


def rows(quick: bool = False, repeats: int = 3) -> list[Row]:
    from xattr_nb.interventions.patching import attribution_patching

    torch.set_grad_enabled(True)
    m = _models()
    tiny = _problem(m["tiny"], m["pairs"], 8)
    big = _problem(m["big"], m["pairs"], 2)
    out: list[Row] = []
    kept: dict[str, dict] = {"tiny": {}, "GPT-2 small": {}}  # our last AP result per model, reused below
    missing = _tl_missing()
    peer = "TransformerLens TransformerBridge (get_act_patch_attn_head_out_by_pos + get_act_patch_mlp_out)"
    for label, p, positions, work, reps, atol in (
        ("tiny", tiny, None, TINY_WORK, repeats, 1e-5),
        ("GPT-2 small", big, [-1], BIG_WORK, 1, 1e-3),
    ):
        name = f"activation patching, {label}"
        if missing:
            out.append(not_installable(name, work, "TransformerLens", missing, group=GROUP))
            continue
        try:
            tl = _tl_flat(_bridge(p["model"]), p, last_only=positions is not None)
        except Exception as e:
            out.append(failed(name, work, peer, f"bridge raised {type(e).__name__}: {e}", group=GROUP))
            continue
        variants = [(name, None, "rows per chunk from the device budget (kernels.rows_per_chunk)")]
        if label == "tiny":
            old = "before issue 19's budget: kept to show the change"
            variants.append((f"{name}, old fixed {OLD_ROWS} rows per chunk", OLD_ROWS, old))
        for row_name, max_rows, note in variants:
            out.append(
                compare(
                    row_name,
                    work,
                    _ours_flat(p, positions, max_rows, kept[label] if max_rows is None else None),
                    tl,
                    peer_name=peer,
                    agree=_agree_ap(atol),
                    repeats=reps,
                    quick=quick,
                    note=note,
                    group=GROUP,
                )
            )
    # AtP and RelP against activation patching: on the tiny model both sides are timed here; on GPT-2
    # small one AP run costs a minute, so AP's time is the median of its row above (same work, same run)
    ap_big = next((r for r in out if r.name == "activation patching, GPT-2 small" and r.ours_s), None)
    for label, p, positions, work in (("tiny", tiny, None, TINY_WORK), ("GPT-2 small", big, [-1], BIG_WORK)):
        ap = _ours(p, positions)
        truth = (kept[label].get("result") or ap()) if label != "tiny" else None
        for est, kw in (("AtP", {}), ("RelP", {"mode": "relp"})):

            def run(p: dict[str, Any] = p, positions: list[int] | None = positions, kw: dict = kw) -> Any:
                return attribution_patching(
                    p["model"], p["clean"], p["corr"], p["metric"], sites=SITES, positions=positions, **kw
                )

            name = f"{est} vs activation patching, {label}"
            note = "2 forwards + 1 backward for all components; agreement = rank agreement with AP"
            if truth is None:
                out.append(
                    compare(
                        name,
                        work,
                        run,
                        ap,
                        peer_name="activation patching (ours, same components)",
                        agree=_vs_ap,
                        repeats=repeats,
                        quick=quick,
                        note=note,
                        group=GROUP,
                    )
                )
                continue
            _, how = _vs_ap(run(), truth)
            est_s = None if quick else _median_wall(run, repeats)
            ap_s = ap_big.ours_s if ap_big is not None else None
            ratio = est_s / ap_s if est_s is not None and ap_s else None
            out.append(
                Row(
                    name,
                    work,
                    est_s,
                    "activation patching (ours; its time from the row above)",
                    ap_s,
                    ratio,
                    True,
                    how,
                    note,
                    GROUP,
                    0 if est_s is None else repeats,
                )
            )
    # chunking: the budget's choice vs the best chunking of a sweep (the bound)
    if not quick:
        b = tiny["clean"].shape[0]
        times, chosen = sweep(tiny, None, _sizes(b, 300 * b), repeats=max(1, repeats))
        best = min(times, key=times.get)
        sweep_txt = ", ".join(f"{s}: {t:.2f}s" for s, t in times.items())
        out.append(
            bound(
                "activation patching chunking, tiny",
                f"{TINY_WORK}; sweep of rows per chunk: {sweep_txt}",
                _ours_flat(tiny, None),
                _ours_flat(tiny, None, best),
                bound_name=f"bound: best chunking of the sweep ({best} rows)",
                agree=_agree_ap(1e-6),
                repeats=repeats,
                quick=quick,
                note=f"budget picks {chosen} rows (one core's L2 over the widest activation per row)",
                group=GROUP,
            )
        )
    return out


def layer_ig_before_after(repeats: int = 1) -> None:
    """Layer IG before/after issue 19 in one run, interleaved: the old path (one right-padded batch,
    all ``B * steps`` rows at once) vs the default (texts grouped by length, chunks from the budget),
    on 48 MiniLM texts x 50 steps (and captum with ``internal_batch_size=50``) and on 40 IOI prompts
    of several lengths on ``ioi_gpt2_4l``. Prints medians and ratios."""
    from captum.attr import LayerIntegratedGradients

    from benchmarks.attribution import _minilm, texts
    from xattr_nb.attribution import attribute_text
    from xattr_nb.attribution.text import encode_texts
    from xattr_nb.models import zoo
    from xattr_nb.models.lm_recipes import ioi_pair_items, ioi_tokenizer

    tok, model = _minilm()
    n, steps = 48, 50
    ts = texts(n)
    enc = encode_texts(model, tok, ts)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    base = torch.where(mask.bool() & ~enc["special"], torch.full_like(ids, tok.pad_token_id), ids)
    lens = mask.sum(1)
    print(f"MiniLM: {n} texts of {int(lens.min())}-{int(lens.max())} tokens, {steps} steps")
    ioi_tok, tiny = ioi_tokenizer(), zoo.load("ioi_gpt2_4l")
    pool = sorted(set(ioi_pair_items(400, seed=0, held_out=False).texts))
    iois = [pool[i] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))[:40].tolist()]
    lens2 = encode_texts(tiny, ioi_tok, iois)["attention_mask"].sum(1)
    print(f"IOI: 40 prompts of {int(lens2.min())}-{int(lens2.max())} tokens on ioi_gpt2_4l, 50 steps")

    def fwd(i: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return model(input_ids=i, attention_mask=m).logits

    def lig(m: Any, tk: Any, xs: list[str], target: int, **kw: Any) -> Callable[[], torch.Tensor]:
        return lambda: attribute_text(m, tk, xs, target, n_steps=50, **kw).scores

    old = {"group_lengths": False}
    cases: dict[str, Callable[[], torch.Tensor]] = {
        "MiniLM old (padded, one batch)": lig(model, tok, ts, 1, **old, internal_batch_size=n * steps),
        "MiniLM new (grouped, budget)": lig(model, tok, ts, 1),
        "MiniLM budget, no grouping": lig(model, tok, ts, 1, **old),
        "MiniLM captum ibs=50": lambda: (
            LayerIntegratedGradients(fwd, model.get_input_embeddings())
            .attribute(
                ids, baselines=base, target=1, additional_forward_args=(mask,), n_steps=steps, internal_batch_size=50
            )
            .sum(-1)
            * mask
        ),
        "IOI old (padded, one batch)": lig(tiny, ioi_tok, iois, 5, **old, internal_batch_size=40 * 50),
        "IOI new (grouped, budget)": lig(tiny, ioi_tok, iois, 5),
        "IOI budget, no grouping": lig(tiny, ioi_tok, iois, 5, **old),
    }
    ref = {k: f() for k, f in cases.items()}
    for a, b in (
        ("MiniLM old (padded, one batch)", "MiniLM new (grouped, budget)"),
        ("MiniLM captum ibs=50", "MiniLM new (grouped, budget)"),
        ("IOI old (padded, one batch)", "IOI new (grouped, budget)"),
    ):
        print(f"agreement {a} vs {b}: max abs diff {float((ref[a] - ref[b]).abs().max()):.1e}")
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(max(1, repeats)):
        for k, f in cases.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<34} median {v:7.2f} s")
    m_old, m_new, m_cap = (
        med[f"MiniLM {k}"] for k in ("old (padded, one batch)", "new (grouped, budget)", "captum ibs=50")
    )
    print(f"MiniLM: old/captum {m_old / m_cap:.2f}, new/captum {m_new / m_cap:.2f}, old/new {m_old / m_new:.2f}")
    i_old, i_new, i_ng = (
        med[f"IOI {k}"] for k in ("old (padded, one batch)", "new (grouped, budget)", "budget, no grouping")
    )
    print(f"IOI: old/new {i_old / i_new:.2f}, no grouping/new {i_ng / i_new:.2f}")


def _print(rs: list[Row]) -> None:
    for r in rs:
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        ours = "-" if r.ours_s is None else f"{r.ours_s:.3f}"
        peer = "-" if r.peer_s is None else f"{r.peer_s:.3f}"
        print(f"{r.name:<62} ours {ours:>7} s  peer {peer:>7} s  ratio {ratio:>5}  [{r.status}] {r.agreement}")
        print(f"{'':<62} work: {r.work}")
        if r.note:
            print(f"{'':<62} note: {r.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="agreement only, no timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sweep", action="store_true", help="only the rows-per-chunk sweep (both models)")
    parser.add_argument("--layer-ig", action="store_true", help="only Layer IG before/after (about 4 min a repeat)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.layer_ig:
        layer_ig_before_after(args.repeats)
        return
    if args.sweep:
        m = _models()
        for label, p, positions, n_comp in (
            ("tiny", _problem(m["tiny"], m["pairs"], 8), None, 300),
            ("GPT-2 small", _problem(m["big"], m["pairs"], 2), [-1], 156),
        ):
            b = p["clean"].shape[0]
            sizes = _sizes(b, n_comp * b) if positions is None else [b, 4 * b, 16 * b, 64 * b]
            times, chosen = sweep(p, positions, sizes, repeats=args.repeats if positions is None else 1)
            best = min(times.values())
            print(f"{label}: budget picks {chosen} rows per chunk")
            for s, t in times.items():
                print(f"  {s:>5} rows: {t:7.3f} s  ({t / best:.2f}x the best)")
        return
    _print(rows(args.quick, args.repeats))


if __name__ == "__main__":
    main()
