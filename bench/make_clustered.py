#!/usr/bin/python3
"""Writes a clustered set with a large common component, the shape of text embeddings.

Real text embeddings share a big mean direction: every vector is that common
component plus a topic (cluster) part plus noise, and after L2 normalisation
the whole set lies in a narrow cap of the sphere.  This script draws such a
set with numpy (Debian's python3-numpy) from a fixed seed:

  x = COMMON * w * c + SPREAD * t[k] + NOISE * e

with c a random unit vector shared by all rows, w a per-row weight drawn
log-normally (exp(WEIGHT_SIGMA * N(0, 1)): how much of the common direction
a row carries varies, so after normalisation rows crowd towards c with a
density that changes along it, as the hubs of real embeddings do), t[k] one
of CLUSTERS random unit vectors (k drawn uniformly per row) and e a random
unit-variance vector scaled by 1/sqrt(dims).  Without the weight (sigma 0)
the common component would be a mere translation, which L2 neighbourhoods
do not see.  Queries come from the same distribution and are held
out of the base.  Into the output directory it writes (float32 .npy, C order):

  base.npy, queries.npy          the rows L2-normalised (for L2 or cosine)
  base_raw.npy, queries_raw.npy  the same directions with random norms in
                                 [0.5, 2) (for the cosine operator class:
                                 its exact top 10 equals the L2 top 10 of
                                 the normalised set)

Usage: python3 bench/make_clustered.py OUT_DIR [--rows 30000] [--queries 1000]
       [--dims 32] [--clusters 10] [--common 4] [--weight-sigma 1]
       [--spread 1] [--noise 1] [--seed 13]
"""

import argparse
import os

import numpy


def save(path, array):
    """Writes one float32 array through a temporary file renamed into place."""
    tmp = path + ".tmp.npy"
    numpy.save(tmp, numpy.ascontiguousarray(array, dtype=numpy.float32))
    os.replace(tmp, path)


def draw(rng, rows, common, centers, args):
    """Draws 'rows' vectors of the mixture (not normalised)."""
    labels = rng.integers(0, len(centers), size=rows)
    weight = numpy.exp(args.weight_sigma * rng.standard_normal((rows, 1)))
    noise = rng.standard_normal((rows, args.dims)) / numpy.sqrt(args.dims)
    return args.common * weight * common + args.spread * centers[labels] + args.noise * noise


def main():
    """Generates the data set into the directory named on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--rows", type=int, default=30000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dims", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--common", type=float, default=4.0)
    parser.add_argument("--weight-sigma", type=float, default=1.0)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)

    rng = numpy.random.default_rng(args.seed)
    unit = lambda v: v / numpy.linalg.norm(v, axis=-1, keepdims=True)
    common = unit(rng.standard_normal(args.dims))
    centers = unit(rng.standard_normal((args.clusters, args.dims)))
    base = unit(draw(rng, args.rows, common, centers, args))
    queries = unit(draw(rng, args.queries, common, centers, args))
    save(os.path.join(args.out_dir, "base.npy"), base)
    save(os.path.join(args.out_dir, "queries.npy"), queries)
    scale = lambda n: rng.uniform(0.5, 2.0, size=(n, 1))
    save(os.path.join(args.out_dir, "base_raw.npy"), base * scale(args.rows))
    save(os.path.join(args.out_dir, "queries_raw.npy"), queries * scale(args.queries))


if __name__ == "__main__":
    main()
