"""Wall time of activation patching over every head and MLP against attribution patching and RelP.

    .venv/bin/python benchmarks/patching.py [--prompts 8] [--threads 1] [--reps 2] [--device cpu]

Two models, measured in one run: the shipped tiny IOI GPT-2 (``ioi_gpt2_4l``: 4 layers, 4 heads,
d = 64) and a GPT-2-small-sized random-init ``GPT2LMHeadModel(GPT2Config())`` (12 layers, 12 heads,
d = 768, vocabulary 50,257). Both run a batch of IOI-length prompts (15 tokens) and their IO/S-swapped
counterparts. Components: every head and every MLP at every position (activation patching: one
patched forward each, batched over components), against AtP and RelP (2 forwards + 1 backward
for all of them at once). On the GPT-2-small-sized model activation patching runs at the last
position only (``--big-ap-positions last``, 156 components; all 2,340 take over an hour on one CPU
core) and the table adds its time extrapolated to every position. Activation patching runs once
(no warm-up); AtP/RelP take the best of ``--reps`` after a warm-up. ``cpu/wall`` is process CPU
time over wall time (about the busy cores). Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from xattr_nb.interventions.patching import (
    PatchingResult,
    activation_patching,
    attribution_patching,
    normalized_logit_diff,
)
from xattr_nb.methods.relp import ioi_pairs
from xattr_nb.models import zoo

SITES = ("head", "mlp_out")


def timed(fn: Callable[[], PatchingResult], reps: int) -> tuple[float, float, PatchingResult]:
    out = fn() if reps > 1 else None  # warm-up: allocator, thread pool
    runs = []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    wall, cpu = min(runs)
    return wall, cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-rows", type=int, default=128, help="rows per batched patched forward")
    parser.add_argument("--big-ap-positions", choices=("last", "all"), default="last")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pairs = ioi_pairs(args.prompts, seed=0)[0]
    tiny = zoo.load("ioi_gpt2_4l").to(args.device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        small = GPT2LMHeadModel(GPT2Config(attn_implementation="eager")).eval().to(args.device)
    print(f"{args.prompts} prompt pairs of {pairs.clean_ids.shape[1]} tokens, {args.threads} thread(s), {args.device}")
    print(f"{'model':<24} {'method':<22} {'components':>10} {'fwd':>6} {'bwd':>4} {'wall s':>8} {'cpu/wall':>8}")
    clean, corr = pairs.clean_ids.to(args.device), pairs.corr_ids.to(args.device)
    for name, model in (("ioi_gpt2_4l (tiny)", tiny), ("GPT-2 small, random", small)):
        ap_pos = [-1] if model is small and args.big_ap_positions == "last" else None
        # the word-level ids (< 52) are valid GPT-2 ids too: the random model only needs the shapes
        metric = normalized_logit_diff(model, clean, corr, pairs.answer, pairs.wrong)
        rows = {
            "activation patching": lambda m=model, met=metric, pos=ap_pos: activation_patching(
                m, clean, corr, met, sites=SITES, positions=pos, max_rows=args.max_rows
            ),
            "attribution patching": lambda m=model, met=metric: attribution_patching(m, clean, corr, met, sites=SITES),
            "RelP": lambda m=model, met=metric: attribution_patching(m, clean, corr, met, sites=SITES, mode="relp"),
            "RelP + AH": lambda m=model, met=metric: attribution_patching(
                m, clean, corr, met, sites=SITES, mode="relp", ah=True
            ),
        }
        for method, fn in rows.items():
            wall, cpu, out = timed(fn, 1 if method == "activation patching" else args.reps)
            n = sum(v.numel() for v in out.scores.values())
            ratio = cpu / wall if wall > 0 else float("nan")
            print(
                f"{name:<24} {method:<22} {n:>10} {out.cost.forward:>6} {out.cost.backward:>4} {wall:>8.3f} {ratio:>8.2f}"
            )
            if ap_pos is not None and method == "activation patching":
                every = n * clean.shape[1]
                print(
                    f"{name:<24} {'  (all positions, est.)':<22} {every:>10} {every + 2:>6} {0:>4} {wall * every / n:>8.1f}"
                )


if __name__ == "__main__":
    main()
