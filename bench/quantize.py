"""Quantization benchmark: our per-position quantizer (faiss) against scikit-learn and bare faiss, same run.

Three 64-d datasets of n items (K = 256, 20 iterations, seed 0), because the ranking of seeding methods depends
on the data's structure:
  gaussian        one isotropic Gaussian (no cluster structure)
  blobs_4096      a mixture of 4,096 overlapping Gaussians (more structure than K: like real embeddings)
  separated_256   256 well-separated Gaussians (K = the true cluster count: like planted aspects)
Contenders, each timed on the same array in this process:
  sklearn         sklearn.cluster.KMeans(n_clusters=K, n_init=1, max_iter=20) (greedy k-means++), then predict
  faiss_bare      faiss.Kmeans(d, K, niter=20) + one nearest-centroid search (faiss defaults: random seeding)
  ours_afkmc2     ops.quantize.quantize, init=afkmc2 (the quantizer's default; what the anchor's 15x is about)
  ours_greedy     ops.quantize.quantize, init=greedy_kmeans++ (the code-table assets' default)
Inertia (sum of squared distances of every item to its centroid) is computed the same way for all.

Usage: python bench/quantize.py [--sizes 25000 200000] [--dim 64] [--k 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def dataset(kind: str, n: int, dim: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.normal(size=(n, dim)).astype(np.float32)
    blobs, spread = {"blobs_4096": (4096, 0.5), "separated_256": (256, 0.3)}[kind]
    centers = rng.normal(0, 1, (blobs, dim)).astype(np.float32)
    label = rng.integers(0, blobs, n)
    return (centers[label] + rng.normal(0, spread, (n, dim))).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 200_000])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--niter", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--datasets", nargs="+", default=["gaussian", "blobs_4096", "separated_256"])
    args = ap.parse_args()

    import faiss
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from ops.quantize import QuantizeConfig, nearest, quantize

    faiss.omp_set_num_threads(args.threads)

    def inertia(x, codes, centroids):
        return float(((x - centroids[codes]) ** 2).sum())

    print(f"{args.dim}-d, K={args.k}, niter={args.niter}, threads={args.threads}, faiss {faiss.__version__}")
    print("\n| data | items | contender | s | inertia | sklearn time / this | inertia / sklearn |")
    print("|---|---|---|---|---|---|---|")
    for kind, n in [(kind, n) for kind in args.datasets for n in args.sizes]:
        x = dataset(kind, n, args.dim)
        rows = {}
        with threadpool_limits(args.threads):
            t = time.perf_counter()
            km = KMeans(n_clusters=args.k, n_init=1, max_iter=args.niter, random_state=0).fit(x)
            codes = km.predict(x)
            rows["sklearn"] = (time.perf_counter() - t, inertia(x, codes, km.cluster_centers_))
        t = time.perf_counter()
        fk = faiss.Kmeans(args.dim, args.k, niter=args.niter, seed=0)
        fk.train(x)
        codes, _ = nearest(fk.centroids, x)
        rows["faiss_bare"] = (time.perf_counter() - t, inertia(x, codes, fk.centroids))
        for init in ("afkmc2", "greedy_kmeans++"):
            t = time.perf_counter()
            # d = dim: no PCA, so the comparison is K-Means against K-Means
            res = quantize(x, QuantizeConfig(d=args.dim, k=args.k, niter=args.niter, seed=0, init=init))
            centroids = res.quantizer.positions[0].centroids
            rows[f"ours_{init.split('_')[0]}"] = (time.perf_counter() - t, inertia(x, res.codes[:, 0], centroids))
        base_t, base_i = rows["sklearn"]
        for name, (sec, inert) in rows.items():
            print(f"| {kind} | {n:,} | {name} | {sec:.2f} | {inert:,.0f} | {base_t / sec:.1f}x | "
                  f"{inert / base_i:.4f} |")
        print(f"| {kind} | {n:,} | ours_afkmc2 / faiss_bare time | "
              f"{rows['ours_afkmc2'][0] / rows['faiss_bare'][0]:.2f} | | | |", flush=True)


if __name__ == "__main__":
    main()
