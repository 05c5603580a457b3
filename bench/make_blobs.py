#!/usr/bin/python3
"""Writes random-xs-20-euclidean as ann-benchmarks defines it.

ann-benchmarks (ann_benchmarks/datasets.py, random_float) draws
make_blobs(n_samples=10000, n_features=20, centers=100, random_state=1) and
holds out 10% with train_test_split(X, test_size=0.1, random_state=1):
9,000 base vectors and 1,000 queries.  This script does the same with
Debian's python3-sklearn and writes, into the output directory,

  base.copy    "id<TAB>label<TAB>{x1,...,x20}" per base vector, ids from 1 in
               the order train_test_split returns them, label = blob number
  queries.txt  one "{x1,...,x20}" literal per query

Values are rounded to float32 (what a real[] column stores) and written as
the shortest text that reads back as the same float32; the ground truth is
computed from these files, so it matches what the server holds.

Usage: python3 bench/make_blobs.py OUT_DIR
"""

import os
import sys

import numpy
from sklearn.datasets import make_blobs
from sklearn.model_selection import train_test_split

from make_synthetic import literal, write_atomically


def main():
    """Generates the data set into the directory named on the command line."""
    if len(sys.argv) != 2:
        sys.exit("usage: make_blobs.py OUT_DIR")
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    points, labels = make_blobs(n_samples=10000, n_features=20, centers=100, random_state=1)
    # Splitting labels along with points does not change the split: the
    # shuffle depends only on the number of samples and the seed.
    train, test, train_labels, _ = train_test_split(
        points, labels, test_size=0.1, random_state=1
    )
    train = train.astype(numpy.float32)
    test = test.astype(numpy.float32)
    write_atomically(
        os.path.join(out_dir, "base.copy"),
        (
            f"{i + 1}\t{int(label)}\t{literal(row)}\n"
            for i, (row, label) in enumerate(zip(train, train_labels))
        ),
    )
    write_atomically(os.path.join(out_dir, "queries.txt"), (literal(row) + "\n" for row in test))
    print(f"wrote {len(train)} base rows and {len(test)} queries of {train.shape[1]} dimensions "
          f"to {out_dir}")


if __name__ == "__main__":
    main()
