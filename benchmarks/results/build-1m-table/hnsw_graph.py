"""Would hnswlib build the neighbour table's graph faster or better than NN-descent on the synth
1M catalogue? (issue 14: "pynndescent's NN-descent, or something measured better"). Builds an
HNSW index of the unit item vectors (inner product), queries every item for its 33 nearest (2
threads each), and measures recall@10 on 1,000 sampled items against the exact neighbours,
beside the stored table's own.

    flock /tmp/annrec-bench.lock nice -n 5 .venv/bin/python \
        benchmarks/results/build-1m-table/hnsw_graph.py FACTORS.npz STORAGE

FACTORS.npz, STORAGE: the factors file and storage `annrec bench build --items 1000000 --out
DIR` leaves in DIR (factors-synth-1000000x64.npz, storage). hnswlib comes with annrec[bench].
"""

import sys
import time
from pathlib import Path

import hnswlib
import numpy as np
import numpy.typing as npt


def main() -> None:
    factors = np.load(sys.argv[1])["item_factors"].astype(np.float32)
    storage = Path(sys.argv[2])
    units = np.ascontiguousarray(factors / np.linalg.norm(factors, axis=1, keepdims=True))
    n = len(units)
    sample = np.random.default_rng(0).choice(n, 1000, replace=False)
    sims = units[sample] @ units.T
    sims[np.arange(len(sample)), sample] = -np.inf
    truth = np.argpartition(-sims, 10, axis=1)[:, :10]

    def recall(rows: npt.NDArray[np.int64]) -> float:
        hits = [len(set(rows[i][:10].tolist()) & set(truth[i].tolist())) for i in range(len(rows))]
        return round(float(np.mean(hits)) / 10, 4)

    version = (storage / "LATEST").read_text().strip()
    table = np.load(storage / "versions" / version / "neighbours.rows.npy", mmap_mode="r")
    print(f"stored table (NN-descent) recall@10 {recall(np.asarray(table[sample]))}", flush=True)
    for m, construction, ef in [(16, 100, 64), (24, 150, 96)]:
        started = time.perf_counter()
        index = hnswlib.Index(space="ip", dim=units.shape[1])
        index.init_index(max_elements=n, M=m, ef_construction=construction, random_seed=1)
        index.set_num_threads(2)
        index.add_items(units, np.arange(n))
        built = time.perf_counter() - started
        index.set_ef(ef)
        started = time.perf_counter()
        labels, _ = index.knn_query(units, k=33, num_threads=2)
        queried = time.perf_counter() - started
        found = labels[sample]
        rows = np.array([[r for r in found[i] if r != sample[i]][:10] for i in range(len(sample))])
        print(
            f"hnswlib M={m} ef_construction={construction} ef={ef}: build {built:.1f} s, "
            f"every item's 33 nearest {queried:.1f} s, in all {built + queried:.1f} s, "
            f"recall@10 {recall(rows)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
