"""From a run config and its dataset roots to the vocabulary, the readers, the mixed training
sampler and the loaders (training: this epoch's share minus batches done; evaluation: one per
dataset, sharded per rank). Everything dataset-specific comes from the registry spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from changeagent.config import to_dict
from changeagent.data.registry import get_spec
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.data.vocab import Vocabulary, build_vocab_from_files
from changeagent.engine.device import loader_workers
from changeagent.engine.distributed import DistInfo
from changeagent.engine.evaluator import ShardSampler
from changeagent.engine.roots import dataset_roots, dataset_specs
from changeagent.engine.seeding import EpochSeeded, worker_init
from changeagent.errors import ChangeAgentError


def build_vocab(cfg: DictConfig, roots: dict[str, Path]) -> Vocabulary:
    """One vocabulary over the captions of every dataset in use (`data.vocab_splits`, train by default)."""
    if cfg.data.vocab:
        return Vocabulary.load(cfg.data.vocab)
    specs = dataset_specs(cfg, roots)
    files = [roots[n] / str(cfg.data[n].captions_file or specs[n].captions_file) for n in roots
             if specs[n].has_captions]
    if not files:  # mask-only run (e.g. LEVIR-CD alone): the caption head stays untrained and unused
        from changeagent.data.constants import SPECIALS

        return Vocabulary({w: i for i, w in enumerate(SPECIALS)})
    for f in files:
        if not f.is_file():
            raise ChangeAgentError(f"caption file {f} does not exist")
    vocab = build_vocab_from_files(files, splits=list(cfg.data.vocab_splits), min_count=cfg.data.min_count)
    if len(vocab) <= 4:
        raise ChangeAgentError(f"the vocabulary built from {[str(f) for f in files]} has no words "
                               f"(min_count={cfg.data.min_count} too high for so few captions?)")
    return vocab


def make_dataset(name: str, root: Path, split: str, cfg: DictConfig, vocab: Vocabulary, train: bool) -> Dataset:
    """The reader of dataset `name` (its registry spec) on `split`, with its normalisation
    (`data.<id>.mean/std`: its spec's unless the run overrides them), the run's augmentation and
    the extra options of its config section."""
    from changeagent.data.transforms import build_transforms

    spec = get_spec(name)
    dcfg = to_dict(cfg.data[name])
    if split not in spec.splits:
        raise ChangeAgentError(f"{spec.title} has splits {list(spec.splits)}, not {split!r} "
                               f"(data.{name}.train_split / val_split, or eval --split)")
    options = {k: v for k, v in dcfg.items() if not hasattr(DatasetCfg, k)}  # the spec's own keys
    captions_file = dcfg.get("captions_file")
    return spec.reader(
        root, split=split, vocab=vocab, max_len=cfg.data.max_len, mean=list(dcfg["mean"]), std=list(dcfg["std"]),
        transforms=build_transforms(to_dict(cfg.data.augment), train=train),
        canonical_no_change=bool(cfg.data.canonical_no_change and train),
        **({"captions_file": captions_file} if captions_file else {}), **options,
    )


def check_tasks(cfg: DictConfig, specs: dict[str, DatasetSpec]) -> None:
    """Every stage's tasks must have a target in some dataset of the run (partial supervision is
    per item; a task no dataset supervises would train nothing)."""
    from changeagent.engine.schema import stages_of

    has = {"mask": [n for n, s in specs.items() if s.has_mask], "caption": [n for n, s in specs.items() if s.has_captions]}
    what = {"mask": "change masks", "caption": "captions"}
    for stage in stages_of(cfg):
        for task in stage["tasks"]:
            if not has.get(task, True):
                raise ChangeAgentError(f"stage {stage['name']!r} trains {task!r}, but none of data.datasets "
                                       f"{list(specs)} supplies {what[task]}; set its tasks to "
                                       f"{[t for t in has if has[t]]} (train.stages)")


@dataclass
class RunData:
    vocab: Vocabulary
    roots: dict[str, Path]
    train_set: EpochSeeded
    sampler: Any  # MixedSampler: set_epoch, num_replicas, rank
    batches_per_epoch: int
    batch_size: int
    num_workers: int
    seed: int
    val_loaders: dict[str, DataLoader]
    specs: dict[str, DatasetSpec]


def build_train_data(cfg: DictConfig, info: DistInfo, vocab: Vocabulary | None = None) -> RunData:
    from changeagent.data.joint import JointDataset, MixedSampler

    roots = dataset_roots(cfg, info)
    check_tasks(cfg, dataset_specs(cfg, roots))
    vocab = vocab or build_vocab(cfg, roots)
    parts = {n: make_dataset(n, roots[n], cfg.data[n].train_split, cfg, vocab, train=True) for n in roots}
    joint = JointDataset(parts)
    sampler = MixedSampler(joint, weights={n: cfg.data[n].weight for n in roots},
                           num_samples=cfg.data.samples_per_epoch, num_replicas=info.world_size,
                           rank=info.rank, seed=cfg.run.seed)
    batches = len(sampler) // cfg.data.batch_size
    if batches < 1:
        raise ChangeAgentError(f"{len(sampler)} training pairs per process is less than data.batch_size="
                               f"{cfg.data.batch_size}")
    val = eval_loaders(cfg, info, roots, vocab, split=None, max_pairs=cfg.eval.max_pairs)
    return RunData(vocab, roots, EpochSeeded(joint, parts, cfg.run.seed), sampler, batches, cfg.data.batch_size,
                   loader_workers(cfg.data.num_workers, info.is_main), cfg.run.seed, val,
                   dataset_specs(cfg, roots))


class _Skip(Sampler[int]):
    """The wrapped sampler's indices after the first `skip` (mid-epoch resume without loading them)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def train_loader(data: RunData, cfg: DictConfig, epoch: int, skip_batches: int = 0) -> DataLoader:
    """This epoch's loader over this rank's share of the mixed sampler, minus batches already done."""
    from changeagent.data.joint import collate

    data.sampler.set_epoch(epoch)
    data.train_set.epoch = epoch
    indices = list(iter(data.sampler))[skip_batches * data.batch_size:]
    gen = torch.Generator().manual_seed(data.seed * 100_003 + epoch)  # not the global RNG: keeps resume exact
    return DataLoader(data.train_set, batch_size=data.batch_size, sampler=_Skip(indices), drop_last=True,
                      collate_fn=collate, num_workers=data.num_workers, generator=gen,
                      worker_init_fn=worker_init, pin_memory=torch.cuda.is_available())


def eval_loaders(cfg: DictConfig, info: DistInfo, roots: dict[str, Path], vocab: Vocabulary,
                 split: str | None, max_pairs: int | None = None) -> dict[str, DataLoader]:
    """One loader per dataset; each rank reads a disjoint shard, nothing padded or duplicated."""
    from changeagent.data.joint import collate

    loaders = {}
    specs = dataset_specs(cfg, roots)
    for name in roots:
        ds: Any = make_dataset(name, roots[name], split or cfg.data[name].val_split, cfg, vocab, train=False)
        if max_pairs is not None:
            ds = Subset(ds, range(min(max_pairs, len(ds))))
        n = len(ds)
        loaders[name] = DataLoader(
            ds, batch_size=cfg.data.eval_batch_size, sampler=ShardSampler(n, info.rank, info.world_size),
            collate_fn=collate, num_workers=loader_workers(cfg.data.num_workers, info.is_main),
            generator=torch.Generator().manual_seed(0),
            pin_memory=torch.cuda.is_available(),
        )
        loaders[name].spec = specs[name]  # type: ignore[attr-defined]  # the evaluator's metrics and decoding
    return loaders
