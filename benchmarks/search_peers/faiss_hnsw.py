"""faiss HNSW over the float vectors (inner product), grid over efSearch."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.search_datasets import Dataset
from benchmarks.search_peers import faiss_common
from benchmarks.search_peers.common import Options, Row, log, make_row
from benchmarks.search_peers.sweep import Sweep, sweep


def run_faiss_hnsw(ds: Dataset, exact: np.ndarray, opts: Options) -> tuple[list[Row], list[Sweep]]:
    """HNSW over the float vectors (inner product, M=`hnsw_m`); grid over efSearch."""
    faiss = faiss_common.load_faiss(opts.threads)
    d = ds.db.shape[1]
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, opts.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = opts.hnsw_ef_construction
    index.add(ds.db)
    build_s = time.perf_counter() - start
    log(f"faiss_hnsw: built M={opts.hnsw_m} in {build_s:.1f} s")
    build = {"build_s": build_s, "bytes_per_vector": faiss_common.bytes_per_vector(faiss, index)}
    build["build_label"] = f"M={opts.hnsw_m}, efConstruction {opts.hnsw_ef_construction}"

    def recall_of(ef: int) -> float:
        index.hnsw.efSearch = ef
        return faiss_common.recall(index, ds.queries, exact, opts.k)

    swept = sweep(
        "faiss_hnsw",
        {"M": opts.hnsw_m},
        "ef_search",
        opts.hnsw_ef,
        recall_of,
        stop_at=max(opts.targets),
        min_gain=opts.min_gain,
        patience=opts.patience,
    )
    rows: list[Row] = []
    for ef, recall in swept.measured:
        index.hnsw.efSearch = ef
        params = {"M": opts.hnsw_m, "ef_construction": opts.hnsw_ef_construction, "ef_search": ef}
        timing = faiss_common.timing(index, ds.queries, opts)
        rows.append(make_row("faiss_hnsw", params, recall, timing, **build))
    return rows, [swept]
