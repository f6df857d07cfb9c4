"""Search indexes built by `changeagent index` with a text query (FAISS).

    from changeagent.inference.search import Searcher
    s = Searcher.from_index("INDEX/")                   # or several: from_index(["a/", "b/"])
    res = s.search("new buildings along the road", k=10)
    res["results"][0]  # {"rank": 1, "name": ..., "score": cosine, "caption": ..., "index": ..., ...}

Exact search (default) is FAISS's exhaustive inner product (`faiss.knn`, the IndexFlatIP kernel) over
the memory-mapped rows, one chunk at a time, so archives larger than RAM work and results are exact.
An approximate index (`build_ann`: HNSW, or IVF-Flat for very large archives) is used when the
index has one, unless `exact=True`. Queries are tokenised like captions; words outside the model's
vocabulary are reported in `unknown_words` (and encoded as <UNK>, as captions are).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from changeagent.errors import ChangeAgentError
from changeagent.fileio import atomic_path
from changeagent.inference.index_store import ANN, TEXT_CONFIG, TEXT_ONNX, TEXT_WEIGHTS, VOCAB, IndexStore
from changeagent.models.decode_cfg import DECODE

CHUNK_ROWS = 1 << 18  # rows per exhaustive-search chunk: 256 MiB at D = 256
ANN_KINDS = ("hnsw", "ivf")


def _faiss() -> Any:
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ChangeAgentError(f"faiss is not installed (pip install faiss-cpu): {e}") from None
    return faiss


class QueryEncoder:
    """The index's stored caption encoder: text -> L2-normalised float32 [D].

    With the index's `text_encoder.onnx` it runs on onnxruntime and torch is never imported (start-up
    in well under a second instead of torch's import); an index without it uses the safetensors copy.
    """

    def __init__(self, folder: Path) -> None:
        from changeagent.data.vocab import Vocabulary

        try:
            cfg = json.loads((folder / TEXT_CONFIG).read_text())
            self.vocab = Vocabulary.load(folder / VOCAB)
            self.max_len = int(cfg.get("max_len", DECODE.max_len))
            self.dim = int(cfg["retrieval"]["dim"])
            self._session: Any = None
            self.encoder: Any = None
            if (folder / TEXT_ONNX).is_file():
                import onnxruntime

                opts = onnxruntime.SessionOptions()
                opts.log_severity_level = 3  # errors only
                self._session = onnxruntime.InferenceSession(str(folder / TEXT_ONNX), opts,
                                                             providers=["CPUExecutionProvider"])
            else:
                self.encoder = _torch_text_encoder(folder, cfg)
        except ChangeAgentError:
            raise
        except Exception as e:  # a damaged or foreign file: name it, no traceback
            raise ChangeAgentError(f"index {folder}: cannot load its text encoder: {e}") from None

    def tokens(self, text: str) -> tuple[list[str], list[str]]:
        """(tokens, words unknown to the vocabulary) of a query, tokenised like captions."""
        from changeagent.data.vocab import tokenize

        toks = tokenize(text) if isinstance(text, str) else []
        return toks, [t for t in toks if t not in self.vocab.word_to_id]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._session is not None:  # one query at a time: the ONNX graph takes [1, max_len]
            rows = [np.asarray([self.vocab.encode(t, self.max_len)], np.int64) for t in texts]
            out = [self._session.run(None, {"ids": r})[0] for r in rows]
            return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)
        import torch

        from changeagent.models.retrieval import encode_texts

        with torch.inference_mode():
            return self.encoder(encode_texts(self.vocab, list(texts), self.max_len)).float().numpy()


def _torch_text_encoder(folder: Path, cfg: dict[str, Any]) -> Any:
    """The caption encoder from `text_encoder.safetensors` (indexes written before the ONNX copy)."""
    from safetensors.torch import load_file

    from changeagent.models.retrieval import TextEncoder, retrieval_config

    encoder = TextEncoder(int(cfg["vocab_size"]), retrieval_config(cfg["retrieval"], f"{TEXT_CONFIG}: retrieval"))
    encoder.load_state_dict(load_file(str(folder / TEXT_WEIGHTS)))
    return encoder.eval()


def build_ann(store: IndexStore, kind: str, m: int = 32, nlist: int | None = None,
              ef_search: int = 128, nprobe: int | None = None) -> dict[str, Any]:
    """Write INDEX/ann.faiss: HNSW (m links, efSearch) or IVF-Flat (nlist lists, nprobe probed).

    Both use inner product on the L2-normalised rows (= cosine). IVF trains its coarse quantiser on
    up to 100k rows; rows are added chunk by chunk from the memory map.
    """
    faiss = _faiss()
    if kind not in ANN_KINDS:
        raise ChangeAgentError(f"--ann {kind!r}: choose from {['none', *ANN_KINDS]}")
    emb = store.embeddings()
    n, d = emb.shape
    if n == 0:
        raise ChangeAgentError(f"index {store.path} is empty: nothing to build an approximate index on")
    params: dict[str, Any]
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = ef_search
        params = {"type": "hnsw", "m": m, "ef_search": ef_search}
    else:
        nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(0)
        sample = np.ascontiguousarray(emb[np.sort(rng.choice(n, min(n, 100_000), replace=False))])
        index.train(sample)
        index.nprobe = nprobe or max(1, nlist // 16)
        params = {"type": "ivf", "nlist": nlist, "nprobe": int(index.nprobe)}
    for s in range(0, n, CHUNK_ROWS):
        index.add(np.ascontiguousarray(emb[s : s + CHUNK_ROWS]))
    with atomic_path(store.path / ANN) as tmp:
        faiss.write_index(index, str(tmp))
    params["rows"] = n
    store.set_ann(params)
    return params


class Searcher:
    """Text search over one or more indexes built with the same model."""

    def __init__(self, stores: Sequence[IndexStore], exact: bool = False) -> None:
        if not stores:
            raise ChangeAgentError("search: no index given")
        first = stores[0]
        for s in stores[1:]:
            if s.header["model"].get("sha256") != first.header["model"].get("sha256") or s.dim != first.dim:
                raise ChangeAgentError(
                    f"indexes {first.path} and {s.path} were built with different models "
                    f"({first.header['model'].get('checkpoint')} vs {s.header['model'].get('checkpoint')}); "
                    "their embeddings are not comparable")
        self.stores, self.exact = list(stores), exact
        self.encoder = QueryEncoder(first.path)
        if self.encoder.dim != first.dim:
            raise ChangeAgentError(f"index {first.path}: text encoder dim {self.encoder.dim} "
                                   f"!= embedding dim {first.dim}")
        self._ann: dict[int, Any] = {}
        self._items: dict[int, list[dict[str, Any]]] = {}

    @classmethod
    def from_index(cls, paths: str | Path | Sequence[str | Path], exact: bool = False) -> Searcher:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return cls([IndexStore.open(p) for p in paths], exact=exact)

    def __len__(self) -> int:
        return sum(s.rows() for s in self.stores)

    def _search_store(self, i: int, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """scores float32 [Q, k'] and row ids int64 [Q, k'] (k' <= k) in one index."""
        faiss = _faiss()
        store = self.stores[i]
        if not self.exact and store.header.get("ann") and (store.path / ANN).is_file():
            if i not in self._ann:
                self._ann[i] = faiss.read_index(str(store.path / ANN))
            d, ids = self._ann[i].search(q, min(k, store.rows()))
            return d, ids
        emb = store.embeddings()
        best_d: np.ndarray | None = None
        best_i: np.ndarray | None = None
        for s in range(0, emb.shape[0], CHUNK_ROWS):
            chunk = np.ascontiguousarray(emb[s : s + CHUNK_ROWS])
            d, ids = faiss.knn(q, chunk, min(k, chunk.shape[0]), metric=faiss.METRIC_INNER_PRODUCT)
            ids = ids + s
            if best_d is None or best_i is None:
                best_d, best_i = d, ids
            else:
                best_d, best_i = _merge(best_d, best_i, d, ids, k)
        assert best_d is not None and best_i is not None
        return best_d, best_i

    def items_of(self, i: int) -> list[dict[str, Any]]:
        if i not in self._items:
            self._items[i] = self.stores[i].items()
        return self._items[i]

    def search_many(self, texts: Sequence[str], k: int = 10) -> list[dict[str, Any]]:
        """One result dict per query (see `search`); queries are embedded and searched as a batch."""
        if not isinstance(k, int) or k < 1:
            raise ChangeAgentError(f"--top-k must be a positive integer, got {k!r}")
        toks = []
        for t in texts:
            words, unknown = self.encoder.tokens(t)
            if not words:
                raise ChangeAgentError(f"empty query {t!r}: give some words describing the change")
            if len(unknown) == len(words):
                raise ChangeAgentError(f"query {t!r}: none of its words is in the model's vocabulary "
                                       f"({len(self.encoder.vocab)} words, e.g. building, road)")
            toks.append(unknown)
        q = np.ascontiguousarray(self.encoder.encode(texts), dtype=np.float32)
        per_store = [self._search_store(i, q, k) for i in range(len(self.stores))]
        results = []
        for qi, text in enumerate(texts):
            cands = [(float(d[qi, j]), i, int(ids[qi, j])) for i, (d, ids) in enumerate(per_store)
                     for j in range(ids.shape[1]) if ids[qi, j] >= 0]
            cands.sort(key=lambda c: (-c[0], c[1], c[2]))
            hits = []
            for rank, (score, i, row) in enumerate(cands[:k], start=1):
                item = self.items_of(i)[row]
                hits.append({"rank": rank, "name": item["name"], "score": round(score, 6),
                             "caption": item.get("caption", ""), "index": str(self.stores[i].path),
                             "index_row": row, **{kk: v for kk, v in item.items() if kk not in ("name", "caption")}})
            results.append({"query": text, "unknown_words": toks[qi], "results": hits})
        return results

    def search(self, text: str, k: int = 10) -> dict[str, Any]:
        """{"query", "unknown_words", "results": [{"rank", "name", "score", "caption", "index", ...}]}."""
        return self.search_many([text], k)[0]

    def crs(self) -> list[str | None]:
        return [s.header.get("crs") for s in self.stores]


def _merge(d1: np.ndarray, i1: np.ndarray, d2: np.ndarray, i2: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.concatenate([d1, d2], axis=1)
    ids = np.concatenate([i1, i2], axis=1)
    order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(ids, order, 1)


def results_geojson(result: dict[str, Any], searcher: Searcher) -> dict[str, Any]:
    """A FeatureCollection of the results that have a footprint (scene windows, georeferenced pairs).

    One CRS among them: coordinates in it (with the GDAL/QGIS `crs` member); several: every
    footprint reprojected to EPSG:4326 (RFC 7946).
    """
    hits = [h for h in result["results"] if h.get("footprint")]
    if not hits:
        raise ChangeAgentError("--geojson: none of the results has a footprint (index a scene with "
                               "`changeagent index --scene A.tif B.tif`)")
    crss = {h.get("crs") or _store_crs(searcher, h["index"]) for h in hits}
    target = None if len(crss) == 1 else "EPSG:4326"
    feats = []
    for h in hits:
        ring = h["footprint"]
        geom: dict[str, Any] = {"type": "Polygon", "coordinates": [ring]}
        if target is not None:
            from rasterio.warp import transform_geom

            geom = dict(transform_geom(h.get("crs") or _store_crs(searcher, h["index"]), target, geom))
        props = {k: v for k, v in h.items() if k not in ("footprint",)}
        props["query"] = result["query"]
        feats.append({"type": "Feature", "geometry": geom, "properties": props})
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    crs = next(iter(crss)) if target is None else None
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    return fc


def _store_crs(searcher: Searcher, path: str) -> str | None:
    for s in searcher.stores:
        if str(s.path) == path:
            return s.header.get("crs")
    return None


def throughput(searcher: Searcher, queries: Sequence[str], k: int = 10) -> dict[str, float]:
    """Queries per second: one at a time (encode + search) and as one batch."""
    t0 = time.perf_counter()
    for q in queries:
        searcher.search(q, k)
    one = len(queries) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    searcher.search_many(list(queries), k)
    batch = len(queries) / (time.perf_counter() - t0)
    return {"queries_per_s_single": round(one, 1), "queries_per_s_batched": round(batch, 1)}
