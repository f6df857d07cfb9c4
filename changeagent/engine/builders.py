"""From a run config to the objects the loop needs: dataset roots (the synthetic benchmark when a
dataset asks for it), the vocabulary, datasets, samplers, loaders, the model, seeds and the selection score.

Everything dataset-specific comes from the dataset registry (`changeagent.data.registry`): the
reader, the caption file, the synthetic form, the classes of a custom folder."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from changeagent.config import to_dict
from changeagent.data.registry import bind_spec, get_spec
from changeagent.data.spec import DatasetCfg, DatasetSpec
from changeagent.data.vocab import Vocabulary, build_vocab_from_files
from changeagent.engine.device import loader_workers
from changeagent.engine.distributed import DistInfo, barrier
from changeagent.engine.evaluator import ShardSampler
from changeagent.errors import ChangeAgentError


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # warn_only: a few CUDA kernels (e.g. 2-D NLL loss backward) have no deterministic version
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def find_resume(cfg: DictConfig, out: Path) -> Path | None:
    """`resume=true` -> DIR/last.pt when it exists (a fresh start otherwise); a path must exist."""
    value = cfg.resume
    if value in (False, None, "", "false"):
        return None
    if value is True or value == "true":
        path = out / "last.pt"
        return path if path.is_file() else None
    path = Path(str(value))
    path = path / "last.pt" if path.is_dir() else path
    if not path.is_file():
        raise ChangeAgentError(f"resume checkpoint {path} does not exist")
    return path


# what a resumed run must share with its checkpoint: the model, what it trains on, the batch per step
RESUME_KEYS = ("model", "data.datasets", "data.batch_size", "train.grad_accum")


def _pick(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _leaves(d: Any, prefix: str) -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_leaves(v, f"{prefix}.{k}"))
        return out or {prefix: {}}
    return {prefix: d}


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], path: Path | None) -> None:
    """Refuse to resume with another model, dataset list or batch size (the keys that differ named)."""
    diffs = []
    for key in RESUME_KEYS:
        old, new = _leaves(_pick(saved, key), key), _leaves(_pick(current, key), key)
        if key == "model":  # compare the resolved model configs (defaults filled in on both sides)
            from changeagent.models.factory import resolve_config

            old, new = (_leaves(resolve_config(_pick(c, key)), key) for c in (saved, current))
        for k in sorted(set(old) | set(new)):
            if old.get(k, "<absent>") != new.get(k, "<absent>"):
                diffs.append(f"{k}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
    if diffs:
        raise ChangeAgentError(f"resume: {path} was trained with another config; differing keys: {'; '.join(diffs)}. "
                               "Restore them, or start a new run.out_dir")


def vocab_of(ckpt: dict[str, Any] | None) -> Vocabulary | None:
    return Vocabulary(dict(ckpt["vocab"])) if ckpt is not None else None


# -- dataset roots ---------------------------------------------------------------------------------


def check_roots(cfg: DictConfig) -> None:
    """Every dataset in use has a `root` folder or asks for the synthetic benchmark (`synthetic: true`):
    a missing root is an error naming the key, never a silent switch to generated data."""
    for name in cfg.data.datasets:
        dcfg = cfg.data[name]
        if dcfg.synthetic:
            if get_spec(name).synth is None:
                raise ChangeAgentError(f"data.{name}.synthetic: {name} has no synthetic form; give data.{name}.root")
            continue
        if not dcfg.root:
            raise ChangeAgentError(f"data.{name}.root: not set; give the {name} folder (data.{name}.root=PATH), "
                                   f"or data.{name}.synthetic=true for the generated synthetic benchmark")
        if not Path(dcfg.root).is_dir():
            raise ChangeAgentError(f"data.{name}.root: {dcfg.root} does not exist or is not a folder")


METEOR_KEYS = ("meteor", "s_m")


def check_meteor(cfg: DictConfig, selecting: bool = True) -> None:
    """At start-up, not after hours: METEOR runs Java. Without `java`, a selection that needs METEOR
    (or S*m) is an error; otherwise METEOR and S*m will be null, which is said once now."""
    if not cfg.eval.meteor or shutil.which("java") is not None:
        return
    needs = sorted({k.strip() for k in cfg.eval.select.split("+")} & set(METEOR_KEYS))
    if selecting and needs:
        raise ChangeAgentError(f"eval.select: {cfg.eval.select!r} needs {', '.join(needs)}, i.e. METEOR, which runs "
                               "Java, but 'java' was not found on PATH; install a JRE (e.g. apt-get install "
                               "default-jre-headless) or select without meteor/s_m (e.g. eval.select=miou+bleu4)")
    print("warning: eval.meteor is true but 'java' was not found on PATH: METEOR and S*m will be null "
          "(install a JRE, or set eval.meteor=false)", file=sys.stderr, flush=True)


def dataset_roots(cfg: DictConfig, info: DistInfo) -> dict[str, Path]:
    """Root per dataset in use; `synthetic: true` means the synthetic benchmark, generated by rank 0
    once into `data.synth.dir` (default `<out_dir>/synth`) and reused while its parameters match."""
    check_roots(cfg)
    roots: dict[str, Path] = {}
    synth = cfg.data.synth
    base = Path(synth.dir) if synth.dir else Path(cfg.run.out_dir) / "synth"
    for name in cfg.data.datasets:
        if not cfg.data[name].synthetic:
            roots[name] = Path(cfg.data[name].root)
            continue
        spec = get_spec(name)
        if spec.synth is None:
            raise ChangeAgentError(f"data.{name}.synthetic: {name} has no synthetic form; give data.{name}.root")
        params = {"format": name, "n_train": synth.n_train, "n_val": synth.n_val, "n_test": synth.n_test,
                  "size": synth.size, "seed": synth.seed,
                  "mask_variant": synth.mask_variant}
        roots[name] = base / name
        if info.is_main:
            ensure_synthetic(roots[name], params)
    barrier(info)
    return roots


def ensure_synthetic(root: Path, params: dict[str, Any]) -> None:
    """Generate the synthetic benchmark into `root` unless it is there with the same parameters."""
    from changeagent.data.synth import MARKER, mark_synthetic

    stamp = root / MARKER
    if stamp.is_file() and json.loads(stamp.read_text()) == params:
        return
    p = dict(params)
    spec = get_spec(p.pop("format"))
    assert spec.synth is not None
    print(f"generating synthetic {spec.title} data in {root} ...", flush=True)
    spec.synth(root, p.pop("n_train"), p.pop("n_val"), p.pop("n_test"), overwrite=True, progress=True, **p)
    mark_synthetic(root, params)


def dataset_specs(cfg: DictConfig, roots: dict[str, Path]) -> dict[str, DatasetSpec]:
    """The registry spec of every dataset in use, bound to its data (a custom folder's classes)."""
    return {n: bind_spec(n, roots[n]) for n in roots}


# -- vocabulary and datasets -----------------------------------------------------------------------


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
    """The reader of dataset `name` (its registry spec) on `split`, with the run's normalisation,
    augmentation and the extra options of its config section."""
    from changeagent.data.transforms import build_transforms

    spec = get_spec(name)
    dcfg = to_dict(cfg.data[name])
    if split not in spec.splits:
        raise ChangeAgentError(f"{spec.title} has splits {list(spec.splits)}, not {split!r} "
                               f"(data.{name}.train_split / val_split, or eval --split)")
    options = {k: v for k, v in dcfg.items() if not hasattr(DatasetCfg, k)}  # the spec's own keys
    captions_file = dcfg.get("captions_file")
    return spec.reader(
        root, split=split, vocab=vocab, max_len=cfg.data.max_len, mean=list(cfg.data.mean), std=list(cfg.data.std),
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


class EpochSeeded(Dataset):
    """Seeds each part's augmentation from (run seed, epoch, index) before reading item `index`, so
    augmented samples depend only on what is read, not on worker count, order or a resume."""

    def __init__(self, joint: Dataset, parts: dict[str, Dataset], seed: int) -> None:
        self.joint, self.seed, self.epoch = joint, seed, 0
        self.transforms = [t for t in (getattr(p, "transforms", None) for p in parts.values()) if t is not None]

    def __len__(self) -> int:
        return len(self.joint)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        if self.transforms:
            ss = np.random.SeedSequence([self.seed, self.epoch, int(index)])
            for t in self.transforms:
                _seed_transform(t, int(ss.generate_state(1, np.uint64)[0] % 2**63))
        return self.joint[index]


def _seed_transform(t: Any, seed: int) -> None:
    if hasattr(t, "reseed"):
        t.reseed(seed)
        return
    # data.transforms.PairedTransform without a public reseed(): set the same streams it sets itself
    t._rng = np.random.default_rng(seed)
    for k, comp in enumerate((t.geometric, t.colour, t.photometric)):
        if comp is not None:
            comp.set_random_seed(int(t._rng.integers(2**31)) + k)
    info = torch.utils.data.get_worker_info()
    t._key = (os.getpid(), None if info is None else info.seed)  # keep its own per-worker reseed away


class _Skip(Sampler[int]):
    """The wrapped sampler's indices after the first `skip` (mid-epoch resume without loading them)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # distinct per worker and per epoch (from the loader generator)
    random.seed(seed)
    np.random.seed(seed)


def train_loader(data: RunData, cfg: DictConfig, epoch: int, skip_batches: int = 0) -> DataLoader:
    """This epoch's loader over this rank's share of the mixed sampler, minus batches already done."""
    from changeagent.data.joint import collate

    data.sampler.set_epoch(epoch)
    data.train_set.epoch = epoch
    indices = list(iter(data.sampler))[skip_batches * data.batch_size:]
    gen = torch.Generator().manual_seed(data.seed * 100_003 + epoch)  # not the global RNG: keeps resume exact
    return DataLoader(data.train_set, batch_size=data.batch_size, sampler=_Skip(indices), drop_last=True,
                      collate_fn=collate, num_workers=data.num_workers, generator=gen,
                      worker_init_fn=_worker_init, pin_memory=torch.cuda.is_available())


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


# -- model and batches -------------------------------------------------------------------------------


def apply_init_from(cfg: DictConfig) -> Path | None:
    """`train.init_from` (a model folder: best/, or `convert` output): its config.json's model section
    replaces `model`, its vocab.json becomes `data.vocab` and its `data_norm` replaces data.mean/std, so
    fine-tuning sees the data exactly as the model was trained. Returns the folder (None when unset)."""
    from omegaconf import OmegaConf

    from changeagent.models.factory import model_config as typed_model_config
    from changeagent.models.hub import VOCAB, read_config

    if not cfg.train.init_from:
        return None
    path = Path(str(cfg.train.init_from))
    if not (path / "config.json").is_file() and (path / "best" / "config.json").is_file():
        path = path / "best"  # a training run folder: its exported best model
    config = read_config(path)
    if not (path / VOCAB).is_file():
        raise ChangeAgentError(f"train.init_from={path}: no {VOCAB}; the model's vocabulary is needed to fine-tune")
    # typed by the model registry, like a model section from a config file (the run config is structured)
    typed = typed_model_config({**config["model"], "encoder_weights": None}, f"{path}/config.json: model")
    cfg.model = OmegaConf.structured(typed)
    cfg.data.vocab = str(path / VOCAB)
    norm = config.get("data_norm")
    if norm:
        cfg.data.mean, cfg.data.std = list(norm["mean"]), list(norm["std"])
    return path


def model_config(cfg: DictConfig, specs: dict[str, DatasetSpec]) -> dict[str, Any]:
    """The model config of a run: `datasets` = the run's datasets (one semantic head and caption token
    each, nothing untrained), `num_classes` from data whose classes live in the folder (custom)."""
    mcfg = to_dict(cfg.model)
    given = mcfg.get("datasets")
    if given is not None and [n for n in specs if n not in given]:
        raise ChangeAgentError(f"model.datasets={list(given)} lacks the run's dataset(s) "
                               f"{[n for n in specs if n not in given]}; drop model.datasets to use data.datasets")
    mcfg["datasets"] = list(given) if given is not None else list(specs)
    counts = {n: s.num_classes for n, s in specs.items() if s.num_classes != get_spec(n).num_classes}
    if counts:
        mcfg["num_classes"] = {**(mcfg.get("num_classes") or {}), **counts}
    return mcfg


def build_model(cfg: DictConfig, vocab: Vocabulary, device: torch.device, ckpt: dict[str, Any] | None,
                specs: dict[str, DatasetSpec] | None = None, init: Path | None = None) -> torch.nn.Module:
    """The run's model on `device`: weights from `ckpt` (resume), else from `init` (a model folder)."""
    from changeagent.models import attach_vocab, create_model, load_model

    specs = specs if specs is not None else {n: get_spec(n) for n in cfg.data.datasets}
    if init is not None:
        model = load_model(init)
        if model.vocab is None or model.vocab.word_to_id != vocab.word_to_id:
            raise ChangeAgentError(f"train.init_from={init}: its vocab.json differs from data.vocab={cfg.data.vocab}")
        untrained = [n for n in specs if n not in model.datasets]
        if untrained:
            raise ChangeAgentError(f"train.init_from={init}: the model has no heads for {untrained} "
                                   f"(it has {model.datasets}); set data.datasets accordingly")
    else:
        model = create_model(model_config(cfg, specs), len(vocab))
    attach_vocab(model, vocab)
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            raise ChangeAgentError(f"the checkpoint's weights do not fit the configured model: "
                                   f"{str(e).splitlines()[0]}") from None
    model = model.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def choose_captions(caption_ids: torch.Tensor, seed: int, step: int, micro: int, rank: int) -> torch.Tensor:
    """int64 [B, 5, L] -> [B, L]: one of each item's captions, drawn from a generator keyed on
    (seed, step, micro-step, rank) so the choice is reproducible and independent of the global RNG."""
    key = hashlib.blake2b(f"{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
    b, n = caption_ids.shape[:2]
    pick = torch.randint(n, (b,), generator=gen)
    return caption_ids[torch.arange(b), pick]


def retrieval_captions(caps: torch.Tensor, vocab: Vocabulary, seed: int, step: int, micro: int,
                       rank: int) -> torch.Tensor | None:
    """int64 [B, L] -> the captions the retrieval head is trained on, or None when they are `caps`.

    The reference trick gives every no-change train pair five copies of CANONICAL_NO_CHANGE, so the
    caption encoder would never see the other four no-change sentences that are half of the
    no-change queries at test time: those rows get one of the five, drawn like `choose_captions`.
    """
    from changeagent.data.constants import CANONICAL_NO_CHANGE, NO_CHANGE_SENTENCES

    width = caps.shape[1]
    canon = torch.tensor(vocab.encode(CANONICAL_NO_CHANGE, max_len=width), dtype=caps.dtype)
    rows = (caps.cpu() == canon).all(1)
    if not bool(rows.any()):
        return None
    choices = torch.tensor([vocab.encode(s, max_len=width) for s in NO_CHANGE_SENTENCES], dtype=caps.dtype)
    key = hashlib.blake2b(f"retrieval/{seed}/{step}/{micro}/{rank}".encode(), digest_size=8).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(key, "little") & (2**63 - 1))
    pick = torch.randint(len(NO_CHANGE_SENTENCES), (caps.shape[0],), generator=gen)
    out = caps.cpu().clone()
    out[rows] = choices[pick[rows]]
    return out


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def selection_score(results: dict[str, dict[str, Any]], select: str) -> float:
    """Sum of the '+'-separated metric keys, averaged over datasets (NaN counts as 0).

    With datasets of different targets (partial supervision) a dataset adds the keys it reports
    (LEVIR-CD has `miou` but no `s_m`, LEVIR-CC the reverse); a key no dataset reports is an error."""
    keys = [k.strip() for k in select.split("+") if k.strip()]
    for k in keys:
        if not any(k in m for m in results.values()):
            known = sorted({x for m in results.values() for x, v in m.items() if isinstance(v, float)})
            raise ChangeAgentError(f"eval.select uses {k!r}, which none of {list(results)} reports; known: {known}")
    per_dataset = []
    for name, metrics in results.items():
        total = 0.0
        for k in keys:
            if k not in metrics:
                continue
            v = metrics[k]
            if v is None:
                raise ChangeAgentError(f"eval.select uses {k!r}, which is missing for {name} "
                                       "(METEOR and S*m need eval.meteor=true and Java)")
            total += 0.0 if math.isnan(v) else float(v)
        per_dataset.append(total)
    return sum(per_dataset) / max(len(per_dataset), 1)
