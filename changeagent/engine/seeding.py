"""Every random stream of a training run: the global generators, and the augmentation of each
item seeded from (run seed, epoch, index) so samples do not depend on workers, order or a resume."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset


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
            for t in self.transforms:  # the seeding API of a transform: reseed(seed) (data.transforms)
                t.reseed(int(ss.generate_state(1, np.uint64)[0] % 2**63))
        return self.joint[index]


def worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32  # distinct per worker and per epoch (from the loader generator)
    random.seed(seed)
    np.random.seed(seed)
