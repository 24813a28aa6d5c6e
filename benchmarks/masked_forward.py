"""Forward passes per second: the batched masked-forward kernel against one-at-a-time forwards.

    .venv/bin/python benchmarks/masked_forward.py [--masks 1024] [--threads 1 2]

Same model (the shipped ``shapes_cnn``), same image, same keep-masks (random subsets of a 4x4
grid of regions). ``cpu/wall`` is process CPU time over wall time: about the number of busy cores.
Run it on an otherwise idle machine; other processes on the cores distort every figure.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from xattr_nb.kernels import compose_masked, grid_regions, masked_outputs, subset_keep
from xattr_nb.models import zoo
from xattr_nb.models.recipes import SHAPES_CNN_CLASSES
from xattr_nb.worlds.shapes import make_shapes


def best_of(fn: Callable[[], torch.Tensor], reps: int = 3) -> tuple[float, float]:
    fn()  # warm-up: allocator, thread pool
    runs = []
    for _ in range(reps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        runs.append((time.perf_counter() - w0, time.process_time() - c0))
    return min(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=1024)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    model = zoo.load("shapes_cnn").eval()
    x = make_shapes(1, classes=SHAPES_CNN_CLASSES, n_distractors=2, seed=1).images[0]
    g = torch.Generator().manual_seed(0)
    keep = subset_keep(grid_regions(32, 32, 4, 4), torch.rand(args.masks, 16, generator=g) < 0.5)

    def probs(images: torch.Tensor) -> torch.Tensor:
        return model(images).softmax(-1)

    @torch.no_grad()
    def one_at_a_time() -> torch.Tensor:
        return torch.cat([probs(compose_masked(x, keep[i : i + 1])) for i in range(len(keep))])

    reference = one_at_a_time()
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows: list[tuple[str, Callable[[], torch.Tensor]]] = [("one at a time", one_at_a_time)]
        rows += [
            (f"masked_outputs batch {b}", lambda b=b: masked_outputs(probs, x, keep, batch_size=b))
            for b in (32, 128, 512)
        ]
        for name, fn in rows:
            torch.testing.assert_close(fn(), reference, atol=1e-5, rtol=1e-4)
            wall, cpu = best_of(fn)
            n = len(keep)
            print(
                f"threads={threads} {name:<24} {n / wall:8.0f} passes/s  {n / cpu:8.0f} passes/CPU-s  cpu/wall={cpu / wall:.2f}"
            )


if __name__ == "__main__":
    main()
