"""Search throughput of `changeagent search` over a large index (docs/retrieval.md, "Throughput").

    python tools/bench_retrieval.py --checkpoint runs/demo/best --rows 100000 --queries 200 --json out.json

Builds an index of `--rows` random unit vectors (the model's dimension; stored like a real index,
with the model's text encoder) in a temporary folder, then times queries per second with exact
search (faiss.knn over the memory map) and with an HNSW index, one query at a time (encode + search)
and as one batch. Indexing speed (pairs/s) is what `changeagent index` prints and writes to --json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

QUERIES = ["a new building is built", "a road is built along the buildings", "many houses appear at the top",
           "the scene is the same as before", "some trees are removed", "two buildings are demolished"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="save_pretrained folder of a model with a retrieval head")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the numbers here")
    args = ap.parse_args()

    import faiss
    import torch

    from changeagent.inference.index import model_header, save_text_encoder
    from changeagent.inference.index_store import IndexStore
    from changeagent.inference.predictor import Predictor
    from changeagent.inference.search import Searcher, build_ann, throughput

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    pred = Predictor.from_pretrained(args.checkpoint)
    queries = [QUERIES[i % len(QUERIES)] for i in range(args.queries)]
    out: dict = {"rows": args.rows, "queries": args.queries, "top_k": args.top_k, "threads": args.threads}
    with tempfile.TemporaryDirectory() as tmp:
        store = IndexStore.create_or_resume(Path(tmp) / "idx", model_header(pred, "pairs", {"bench": args.rows}))
        save_text_encoder(pred, store.path)
        rng = np.random.default_rng(0)
        for s in range(0, args.rows, 50_000):
            n = min(50_000, args.rows - s)
            emb = rng.standard_normal((n, store.dim)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            store.append(emb, [{"name": f"item{s + i}", "caption": ""} for i in range(n)])
        store.finish()
        out["exact"] = throughput(Searcher.from_index(store.path, exact=True), queries, args.top_k)
        t0 = time.perf_counter()
        build_ann(store, "hnsw")
        out["hnsw_build_s"] = round(time.perf_counter() - t0, 2)
        out["hnsw"] = throughput(Searcher.from_index(store.path), queries, args.top_k)
        s_exact, s_ann = Searcher.from_index(store.path, exact=True), Searcher.from_index(store.path)
        hits = [len({h["name"] for h in a["results"]} & {h["name"] for h in b["results"]}) / args.top_k
                for a, b in zip(s_exact.search_many(queries[:50], args.top_k), s_ann.search_many(queries[:50], args.top_k))]
        out["hnsw_recall_at_k_vs_exact"] = round(float(np.mean(hits)), 4)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
