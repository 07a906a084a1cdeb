"""SOM update speed: smf.som (torch, vectorised) vs a faithful numpy re-implementation of the seed notebook's kmap.

Same 21x21 mesh, 128-d latents, 257x128 float64 whole-spectrogram features, the seed rule with its quirks; feature
computation (the GAN render) excluded, as in the reference figure. Prints per-iteration times, the ratio and whether
the results are identical (allclose).

    .venv/bin/python bench/som.py [--iterations 5] [--threads N]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kmap_reference import KMap
from smf.grid.grid import grid_latents
from smf.som.som import SomConfig, mesh_2d, mesh_spacing, neighbour_distances, som_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--size", type=int, default=21)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    R = C = args.size
    g = torch.Generator().manual_seed(0)
    corners = [torch.randn(128, generator=g, dtype=torch.float64) for _ in range(4)]
    mesh = grid_latents(*corners, d0=C, d1=R).double()
    rng = np.random.default_rng(0)
    feats = [rng.normal(size=(R, C, 257, 128)) for _ in range(args.iterations)]
    step = 1e-6

    ref = KMap(mesh.numpy(), step=step, clampedges=True)
    t0 = time.perf_counter()
    for v in feats:
        ref.update(v)
    t_ref = (time.perf_counter() - t0) / args.iterations

    config = SomConfig(rule="original", step=step, faithful_features=True)
    pos, m2 = mesh.clone(), mesh_2d(R, C, mesh)
    spacing = mesh_spacing(pos)
    tfeats = [torch.from_numpy(v) for v in feats]
    neighbour_distances(tfeats[0], faithful=True)  # warm-up (caches)
    t0 = time.perf_counter()
    for v in tfeats:
        dist = neighbour_distances(v, faithful=True)
        pos, m2, _, _ = som_step(pos, m2, dist, config, spacing)
    t_ours = (time.perf_counter() - t0) / args.iterations

    same = np.allclose(pos.numpy(), ref.weights) and np.allclose(m2.numpy(), ref.weights2D)
    print(
        f"mesh {R}x{C}, latent 128, features 257x128 float64, {args.iterations} updates, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"reference kmap (numpy loop-and-roll): {t_ref * 1000:8.1f} ms / update")
    print(f"smf.som (torch, vectorised):          {t_ours * 1000:8.1f} ms / update")
    print(f"speed-up: {t_ref / t_ours:.1f}x   identical result (allclose): {same}")


if __name__ == "__main__":
    main()
