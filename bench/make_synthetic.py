#!/usr/bin/python3
"""Writes the synthetic data sets that stress an HNSW graph.

  angular   clustered-angular: points that share one large common component,
            in ten overlapping clusters, L2-normalised (the shape of text
            embeddings, which share a big mean direction); measured with
            the L2 operator classes
  cosine    clustered-cosine: the same points before normalisation, each
            multiplied by its own random scale; measured with the cosine
            operator classes (its cosine neighbours are those of "angular")
  uniform   uniform-64: independent uniform values in [-1, 1)

The angular and cosine points, per row, with the constants below:

  c         one random unit vector (the common component)
  w         the row's weight on it, exp(WEIGHT_SIGMA * N(0, 1))
  centre_i  CLUSTERS random unit vectors times CENTRE_SCALE
  e         N(0, 1) per dimension, divided by sqrt(dims)
  x         COMMON_SCALE * w * c + centre_(random i) + NOISE_SCALE * e
  angular   x / |x|
  cosine    x * s, s = exp(uniform(log(1/SCALE_SPREAD), log(SCALE_SPREAD)))

The weight is what makes the set hard: with one weight for every row the
common component is a mere translation, which L2 neighbourhoods do not see;
with weights that vary, the normalised rows crowd towards c with a density
that changes along it, as the hubs of real text embeddings do, and a graph
whose new nodes keep only the neighbour heuristic's few choices loses whole
queries there.  The queries are held-out rows of the same draw (the last
--queries of rows + queries points), so they follow the data.

Random numbers come from numpy's legacy RandomState (Mersenne Twister), whose
streams numpy keeps stable across versions: one --seed gives the same data
anywhere.  The scales of "cosine" come from a second stream (seed + 1), so
its directions equal those of "angular" with the same seed.

Writes, into the output directory, like make_blobs.py:

  base.copy    "id<TAB>label<TAB>{x1,...,xd}" per base vector, ids from 1,
               label = cluster (0 for uniform)
  queries.txt  one "{x1,...,xd}" literal per query

Values are float32 (what real[] and vector hold), written as the shortest
text that reads back as the same float32; the ground truth is computed from
these files.

Usage: python3 bench/make_synthetic.py angular|cosine|uniform OUT_DIR
           [--rows N] [--queries Q] [--dims D] [--seed S] [--npy]
           [--common 4.0] [--weight-sigma 1.0] [--clusters 10] [--centre 1.0] [--noise 1.0]
(the last five change the constants of the clustered sets, for experiments;
--npy also writes base.npy and queries.npy for bench/core/graph_bench)
"""

import argparse
import os

import numpy

# The clustered sets (angular, cosine).
COMMON_SCALE = 4.0  # length of the common component (times the row's weight)
WEIGHT_SIGMA = 1.0  # spread of the log-normal weight of each row on the common component
CLUSTERS = 10  # cluster centres
CENTRE_SCALE = 1.0  # length of each centre
NOISE_SCALE = 1.0  # length (expected) of the noise vector
SCALE_SPREAD = 2.0  # cosine: each row's length is multiplied by 1/2 .. 2 (log-uniform)

# Defaults per kind: rows, queries, dimensions.
DEFAULTS = {
    "angular": (30000, 300, 32),
    "cosine": (30000, 300, 32),
    "uniform": (100000, 300, 64),
}


def literal(row):
    """Returns the PostgreSQL array literal of one float32 vector."""
    return "{" + ",".join(str(value) for value in row) + "}"


def write_atomically(path, lines):
    """Writes lines to path through a temporary file renamed into place."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as out:
        out.writelines(lines)
    os.replace(tmp, path)


def unit_rows(rng, count, dims):
    """Returns count random unit vectors (rows), directions uniform on the sphere."""
    v = rng.standard_normal((count, dims))
    return v / numpy.linalg.norm(v, axis=1, keepdims=True)


def clustered(kind, total, dims, seed, shape):
    """Returns (points, labels) of the angular or cosine set, total rows, float64."""
    rng = numpy.random.RandomState(seed)
    common = unit_rows(rng, 1, dims)[0] * shape.common
    centres = unit_rows(rng, shape.clusters, dims) * shape.centre
    labels = rng.randint(shape.clusters, size=total)
    weights = numpy.exp(shape.weight_sigma * rng.standard_normal((total, 1)))
    noise = rng.standard_normal((total, dims)) * (shape.noise / numpy.sqrt(dims))
    points = common * weights + centres[labels] + noise
    if kind == "angular":
        points /= numpy.linalg.norm(points, axis=1, keepdims=True)
    else:
        scales = numpy.random.RandomState(seed + 1).uniform(
            -numpy.log(SCALE_SPREAD), numpy.log(SCALE_SPREAD), size=total)
        points *= numpy.exp(scales)[:, None]
    return points, labels


def main():
    """Generates the data set named on the command line into the directory given."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=sorted(DEFAULTS))
    parser.add_argument("out_dir")
    parser.add_argument("--rows", type=int)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--dims", type=int)
    parser.add_argument("--seed", type=int, default=42)
    # The shape of the clustered sets, for experiments; the defaults are the benchmark's.
    parser.add_argument("--common", type=float, default=COMMON_SCALE)
    parser.add_argument("--clusters", type=int, default=CLUSTERS)
    parser.add_argument("--centre", type=float, default=CENTRE_SCALE)
    parser.add_argument("--noise", type=float, default=NOISE_SCALE)
    parser.add_argument("--weight-sigma", type=float, default=WEIGHT_SIGMA)
    parser.add_argument("--npy", action="store_true",
                        help="write base.npy and queries.npy (float32) for bench/core/graph_bench")
    args = parser.parse_args()
    rows, queries, dims = DEFAULTS[args.kind]
    rows = args.rows or rows
    queries = args.queries or queries
    dims = args.dims or dims
    total = rows + queries
    if args.kind == "uniform":
        rng = numpy.random.RandomState(args.seed)
        points = rng.uniform(-1.0, 1.0, size=(total, dims))
        labels = numpy.zeros(total, dtype=int)
    else:
        points, labels = clustered(args.kind, total, dims, args.seed, args)
    points = points.astype(numpy.float32)
    os.makedirs(args.out_dir, exist_ok=True)
    if args.npy:
        for name, part in (("base.npy", points[:rows]), ("queries.npy", points[rows:])):
            tmp = os.path.join(args.out_dir, name + ".tmp.npy")
            numpy.save(tmp, numpy.ascontiguousarray(part))
            os.replace(tmp, os.path.join(args.out_dir, name))
    write_atomically(
        os.path.join(args.out_dir, "base.copy"),
        (f"{i + 1}\t{int(labels[i])}\t{literal(points[i])}\n" for i in range(rows)),
    )
    write_atomically(os.path.join(args.out_dir, "queries.txt"),
                     (literal(row) + "\n" for row in points[rows:]))
    print(f"wrote {rows} base rows and {queries} queries of {dims} dimensions ({args.kind}, "
          f"seed {args.seed}) to {args.out_dir}")


if __name__ == "__main__":
    main()
