"""Joint training over several datasets: one concatenated dataset, a weighted mixed sampler, collate.

`JointDataset` concatenates datasets and leaves every item's own `dataset` id untouched (the id picks
the item's mask head and loss). `MixedSampler` draws a fixed number of items per epoch with the
configured dataset weights, deterministically from (seed, epoch), and splits them into disjoint,
equal-length shards for DDP ranks. `collate` builds the batch of docs/design.md. A plain
`torch.utils.data.DistributedSampler` works on `JointDataset` too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from changeagent.data.constants import IGNORE_INDEX, NULL
from changeagent.errors import ChangeAgentError


class JointDataset(ConcatDataset):
    """Datasets end to end. `names[i]` names part i (mapping key, or the part's `dataset_id`)."""

    def __init__(self, datasets: Mapping[str, Dataset] | Sequence[Dataset]):
        if isinstance(datasets, Mapping):
            names, parts = [str(k) for k in datasets], list(datasets.values())
        else:
            parts = list(datasets)
            names = []
            for i, d in enumerate(parts):
                base = str(getattr(d, "dataset_id", "") or f"part{i}")
                names.append(base if base not in names else f"{base}:{i}")
        if not parts:
            raise ChangeAgentError("JointDataset needs at least one dataset")
        super().__init__(parts)
        self.names: list[str] = names
        # ConcatDataset has already measured every part: cumulative_sizes[i] = len(parts[0..i])
        self.lengths: list[int] = [end - start for start, end in zip([0, *self.cumulative_sizes], self.cumulative_sizes)]
        self.offsets: list[int] = [0, *self.cumulative_sizes[:-1]]

    def locate(self, index: int) -> tuple[int, int]:
        """(part, index within that part) of global `index`."""
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for JointDataset of length {len(self)}")
        part = int(np.searchsorted(self.cumulative_sizes, index, side="right"))
        return part, index - self.offsets[part]

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, local = self.locate(index)
        sample = self.datasets[part][local]
        if "dataset" not in sample:
            ds_id = getattr(self.datasets[part], "dataset_id", None)
            if not ds_id:
                raise ChangeAgentError(f"item {local} of part {self.names[part]!r} has no 'dataset' id")
            sample["dataset"] = ds_id
        return sample


class MixedSampler(Sampler[int]):
    """Weighted mixing of the parts of a `JointDataset`, `num_samples` items per epoch over all ranks.

    Each part contributes its weight's share of the epoch (largest-remainder rounding); within a part
    items come from fresh permutations, so none repeats before the part is used up. The epoch's
    order depends only on (seed, epoch); rank r takes positions r, r + R, r + 2R, ... so shards are
    disjoint and all of length ceil(num_samples / R).

    weights: {part name: weight} (missing names get 0), a list aligned with `dataset.names`, or None
    for weights proportional to part sizes.
    """

    def __init__(
        self,
        dataset: JointDataset,
        weights: Mapping[str, float] | Sequence[float] | None = None,
        num_samples: int | None = None,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ):
        if not isinstance(dataset, JointDataset):
            raise ChangeAgentError(f"MixedSampler needs a JointDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.weights = self._resolve_weights(dataset, weights)
        self.num_samples = int(num_samples) if num_samples is not None else len(dataset)
        if self.num_samples <= 0:
            raise ChangeAgentError(f"MixedSampler num_samples must be positive, got {self.num_samples}")
        if num_replicas is None or rank is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (torch.distributed.get_world_size() if dist else 1)
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ChangeAgentError(f"MixedSampler rank {rank} is not in [0, num_replicas={num_replicas})")
        self.num_replicas, self.rank, self.seed = int(num_replicas), int(rank), int(seed)
        self.per_rank = math.ceil(self.num_samples / self.num_replicas)
        self.epoch = 0

    @staticmethod
    def _resolve_weights(dataset: JointDataset, weights) -> np.ndarray:
        n = len(dataset.names)
        if weights is None:
            w = np.asarray(dataset.lengths, dtype=np.float64)
        elif isinstance(weights, Mapping):
            unknown = sorted(set(weights) - set(dataset.names))
            if unknown:
                raise ChangeAgentError(f"sampler weights name unknown dataset(s) {unknown}; parts are {dataset.names}")
            w = np.asarray([float(weights.get(k, 0.0)) for k in dataset.names])
        else:
            w = np.asarray([float(x) for x in weights])
            if len(w) != n:
                raise ChangeAgentError(f"{len(w)} sampler weights for {n} datasets {dataset.names}")
        if not np.all(np.isfinite(w)) or (w < 0).any():
            raise ChangeAgentError(f"sampler weights must be finite and >= 0, got {w.tolist()}")
        empty = [dataset.names[i] for i in range(n) if w[i] > 0 and dataset.lengths[i] == 0]
        if empty:
            raise ChangeAgentError(f"dataset(s) {empty} have a positive sampler weight but no items")
        if w.sum() <= 0:
            raise ChangeAgentError(f"sampler weights {w.tolist()} select no dataset")
        return w / w.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def quotas(self, total: int) -> np.ndarray:
        """Items per part among `total`: weight shares rounded by largest remainder (sums to `total`)."""
        exact = self.weights * total
        counts = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: total - counts.sum()]] += 1
        return counts

    def epoch_indices(self) -> np.ndarray:
        """The whole epoch's global indices, before sharding: int64 [per_rank * num_replicas]."""
        total = self.per_rank * self.num_replicas
        rng = np.random.default_rng([self.seed, self.epoch])
        counts = self.quotas(total)
        labels = rng.permutation(np.repeat(np.arange(len(counts)), counts))
        out = np.empty(total, dtype=np.int64)
        for p, c in enumerate(counts):
            if c == 0:
                continue
            n = self.dataset.lengths[p]
            local = np.concatenate([rng.permutation(n) for _ in range(math.ceil(c / n))])[:c]
            out[labels == p] = local + self.dataset.offsets[p]
        return out

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


def _stack(samples: Sequence[dict[str, Any]], key: str, shape: tuple[int, ...], fill: int) -> torch.Tensor:
    """Stack `key` over items as int64, an all-`fill` tensor of `shape` for items without it."""
    out = []
    for s in samples:
        v = s.get(key)
        if v is None:
            out.append(torch.full(shape, fill, dtype=torch.int64))
            continue
        v = torch.as_tensor(v, dtype=torch.int64)
        if tuple(v.shape) != shape:
            raise ChangeAgentError(f"item {s.get('name', '?')}: '{key}' has shape {tuple(v.shape)}, expected {shape}")
        out.append(v)
    return torch.stack(out)


def pad_stack(values: Sequence[Any], fill: int, key: str) -> torch.Tensor:
    """Arrays of one key, equal in rank but not in shape -> one tensor [B, *max shape], each padded
    at the end of every dimension with `fill`; a missing value (None) is all `fill`."""
    arrays = [None if v is None else torch.as_tensor(v) for v in values]
    present = [a for a in arrays if a is not None]
    if not present:
        raise ChangeAgentError(f"collate: no item has '{key}'")
    if len({a.ndim for a in present}) != 1:
        raise ChangeAgentError(f"collate: '{key}' has arrays of different ranks {sorted({a.ndim for a in present})}")
    shape = [max(a.shape[d] for a in present) for d in range(present[0].ndim)]
    out = torch.full((len(arrays), *shape), fill, dtype=present[0].dtype)
    for i, a in enumerate(arrays):
        if a is not None:
            out[i][tuple(slice(0, n) for n in a.shape)] = a.to(out.dtype)
    return out


def collate(samples: Sequence[dict[str, Any]], pad: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Items of any dataset -> one batch (docs/design.md).

    image float32 [B, 2, C, H, W]; change/mask int64 [B, H, W]; sem int64 [B, 2, H, W] (IGNORE_INDEX
    where an item's dataset has no such target); caption_ids int64 [B, 5, L] padded with <NULL> to
    the longest (all <NULL> for an item without captions); captions list[list[str]] ([] without);
    dataset, name list[str]; changeflag int64 [B]. `pad`: further keys (a task's derived targets)
    stacked by `pad_stack` with their pad value; any other key becomes a list.
    """
    if not samples:
        raise ChangeAgentError("collate got an empty batch")
    shapes = {tuple(s["image"].shape) for s in samples}
    if len(shapes) != 1:
        detail = ", ".join(f"{s.get('name', '?')} {tuple(s['image'].shape)}" for s in samples)
        raise ChangeAgentError(f"batch items have different image shapes: {detail}")
    h, w = next(iter(shapes))[-2:]
    batch: dict[str, Any] = {
        "image": torch.stack([torch.as_tensor(s["image"]) for s in samples]),
        "change": _stack(samples, "change", (h, w), IGNORE_INDEX),
        "mask": _stack(samples, "mask", (h, w), IGNORE_INDEX),
        "sem": _stack(samples, "sem", (2, h, w), IGNORE_INDEX),
        "captions": [list(s.get("captions", [])) for s in samples],
        "dataset": [s["dataset"] for s in samples],
        "name": [s.get("name", "") for s in samples],
        "changeflag": torch.tensor([int(s.get("changeflag", -1)) for s in samples], dtype=torch.int64),
    }
    with_ids = [torch.as_tensor(s["caption_ids"], dtype=torch.int64) for s in samples if s.get("caption_ids") is not None]
    if with_ids:
        if len({t.shape[0] for t in with_ids}) != 1 or any(t.ndim != 2 for t in with_ids):
            raise ChangeAgentError(f"caption_ids shapes differ in count: {[tuple(t.shape) for t in with_ids]}")
        n, length = with_ids[0].shape[0], max(t.shape[1] for t in with_ids)
        # partial supervision: items without captions (mask-only datasets) get all-<NULL> rows,
        # which the caption loss ignores
        empty = torch.full((n, length), NULL, dtype=torch.int64)
        ids = [torch.as_tensor(s["caption_ids"], dtype=torch.int64) if s.get("caption_ids") is not None else empty
               for s in samples]
        batch["caption_ids"] = torch.stack(
            [torch.nn.functional.pad(t, (0, length - t.shape[1]), value=NULL) for t in ids]
        )
    for key, fill in (pad or {}).items():
        if any(key in s for s in samples):
            batch[key] = pad_stack([s.get(key) for s in samples], fill, key)
    for key in dict.fromkeys(k for s in samples for k in s):
        if key not in batch and key != "caption_ids":
            batch[key] = [s.get(key) for s in samples]
    return batch
