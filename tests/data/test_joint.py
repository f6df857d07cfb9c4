"""Joint data pipeline: concatenation with dataset ids, weighted DDP-aware sampling, mixed collate."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from changeagent.data.constants import IGNORE_INDEX, NULL
from changeagent.data.joint import JointDataset, MixedSampler, collate
from changeagent.data.levir_mci import LevirMCI
from changeagent.data.second_cc import SecondCC
from changeagent.data.synth import generate
from changeagent.data.vocab import build_vocab_from_files
from changeagent.errors import ChangeAgentError


class _Ids(Dataset):
    """n items that only carry their index; enough for sampler tests."""

    def __init__(self, n: int, dataset_id: str):
        self.n, self.dataset_id = n, dataset_id

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"i": i}


def _joint(sizes=(10, 30)) -> JointDataset:
    return JointDataset({"levir_mci": _Ids(sizes[0], "levir_mci"), "second_cc": _Ids(sizes[1], "second_cc")})


@pytest.fixture(scope="module")
def real_joint(tmp_path_factory):
    base = tmp_path_factory.mktemp("joint")
    generate("levir-mci", base / "levir", 6, 2, 2, size=32, seed=1)
    generate("second-cc", base / "second", 6, 2, 2, size=32, seed=1)
    vocab = build_vocab_from_files([base / "levir" / "LevirCCcaptions.json", base / "second" / "SECOND-CC-AUG.json"],
                                   splits=["train"], min_count=0)
    parts = {"levir_mci": LevirMCI(base / "levir", "train", vocab=vocab, max_len=20),
             "second_cc": SecondCC(base / "second", "train", vocab=vocab, max_len=30)}
    return JointDataset(parts)


def test_joint_dataset_keeps_dataset_ids(real_joint):
    assert real_joint.names == ["levir_mci", "second_cc"] and real_joint.lengths == [6, 6]
    assert real_joint.locate(0) == (0, 0) and real_joint.locate(6) == (1, 0) and real_joint.locate(-1) == (1, 5)
    assert [real_joint[i]["dataset"] for i in (0, 5, 6, 11)] == ["levir_mci"] * 2 + ["second_cc"] * 2
    with pytest.raises(IndexError):
        real_joint.locate(12)
    seq = JointDataset([_Ids(2, "levir_mci"), _Ids(3, "levir_mci")])
    assert seq.names == ["levir_mci", "levir_mci:1"] and seq[4]["dataset"] == "levir_mci"


def test_sampler_weights_and_epoch_length():
    s = MixedSampler(_joint(), weights={"levir_mci": 1, "second_cc": 3}, num_samples=400, seed=0)
    idx = list(s)
    assert len(idx) == len(s) == 400
    parts = Counter(int(i >= 10) for i in idx)
    assert parts == {0: 100, 1: 300}  # exact shares, not just in expectation
    # within a part, no item repeats before all were drawn
    levir = [i for i in idx if i < 10]
    assert all(sorted(levir[k : k + 10]) == list(range(10)) for k in range(0, 100, 10))
    only = MixedSampler(_joint(), weights={"second_cc": 1.0}, num_samples=50)
    assert all(i >= 10 for i in only)
    default = MixedSampler(_joint())
    assert len(default) == 40 and sorted(default) == list(range(40))  # proportional weights: every item once


def test_sampler_deterministic_per_epoch():
    a = MixedSampler(_joint(), num_samples=64, seed=3)
    b = MixedSampler(_joint(), num_samples=64, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first
    assert list(MixedSampler(_joint(), num_samples=64, seed=4)) != first


@pytest.mark.parametrize("replicas", [2, 3])
def test_sampler_ddp_shards_disjoint_equal(replicas):
    shards = [MixedSampler(_joint(), weights=[1, 1], num_samples=100, seed=5, num_replicas=replicas, rank=r)
              for r in range(replicas)]
    for s in shards:
        s.set_epoch(2)
    lists = [list(s) for s in shards]
    assert len({len(x) for x in lists}) == 1 and len(lists[0]) == -(-100 // replicas)
    whole = shards[0].epoch_indices().tolist()
    merged = [None] * len(whole)
    for r, x in enumerate(lists):
        merged[r::replicas] = x
    assert merged == whole  # rank r holds positions r, r+R, ...: disjoint, and together the epoch


def test_sampler_rejects_bad_config():
    for kwargs, msg in [(dict(weights={"nope": 1}), "unknown dataset"), (dict(weights=[1]), "2 datasets"),
                        (dict(weights=[-1, 1]), ">= 0"), (dict(weights=[0, 0]), "select no"),
                        (dict(num_samples=0), "positive"), (dict(num_replicas=2, rank=2), "rank")]:
        with pytest.raises(ChangeAgentError, match=msg):
            MixedSampler(_joint(), **kwargs)
    with pytest.raises(ChangeAgentError, match="no items"):
        MixedSampler(_joint((0, 5)), weights=[1, 1])


def test_collate_mixed_batch(real_joint):
    batch = collate([real_joint[0], real_joint[6], real_joint[1]])
    assert batch["image"].shape == (3, 2, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["change"].shape == (3, 32, 32) and batch["mask"].shape == (3, 32, 32)
    assert batch["sem"].shape == (3, 2, 32, 32)
    assert batch["dataset"] == ["levir_mci", "second_cc", "levir_mci"]
    assert (batch["sem"][0] == IGNORE_INDEX).all() and (batch["sem"][2] == IGNORE_INDEX).all()
    assert (batch["mask"][1] == IGNORE_INDEX).all() and (batch["mask"][0] != IGNORE_INDEX).all()
    assert (batch["sem"][1] != IGNORE_INDEX).all()
    # LEVIR items encode to 20 ids, SECOND to 30: the batch pads to the longest with <NULL>
    assert batch["caption_ids"].shape == (3, 5, 30)
    assert (batch["caption_ids"][0, :, 20:] == NULL).all()
    assert (batch["caption_ids"][0, :, :20] == real_joint[0]["caption_ids"]).all()
    assert batch["changeflag"].dtype == torch.int64 and batch["changeflag"].shape == (3,)
    assert len(batch["captions"]) == 3 and len(batch["captions"][1]) == 5
    assert batch["name"][1] == real_joint[6]["name"]


def test_collate_errors(real_joint):
    with pytest.raises(ChangeAgentError, match="empty"):
        collate([])
    small = dict(real_joint[0])
    small["image"] = small["image"][..., :16, :16]
    with pytest.raises(ChangeAgentError, match="different image shapes"):
        collate([real_joint[0], small])
    bad = dict(real_joint[0])
    bad["caption_ids"] = bad["caption_ids"][:3]
    with pytest.raises(ChangeAgentError, match="caption_ids"):
        collate([real_joint[0], bad])


def test_collate_gives_items_without_captions_null_rows(real_joint):
    """Partial supervision: a mask-only item next to captioned ones gets all-<NULL> caption rows."""
    no_caps = dict(real_joint[0])
    del no_caps["caption_ids"], no_caps["captions"]
    batch = collate([real_joint[1], no_caps])
    assert batch["caption_ids"].shape[:2] == (2, 5)
    assert (batch["caption_ids"][1] == NULL).all() and (batch["caption_ids"][0] != NULL).any()
    assert batch["captions"][1] == []


def test_loaders_with_mixed_and_distributed_samplers(real_joint):
    sampler = MixedSampler(real_joint, weights={"levir_mci": 1, "second_cc": 1}, num_samples=8, seed=0)
    seen = Counter()
    for batch in DataLoader(real_joint, batch_size=4, sampler=sampler, collate_fn=collate):
        assert batch["image"].shape[0] == 4
        seen.update(batch["dataset"])
    assert seen == {"levir_mci": 4, "second_cc": 4}
    names = []
    for rank in range(2):
        ds = DistributedSampler(real_joint, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for batch in DataLoader(real_joint, batch_size=3, sampler=ds, collate_fn=collate):
            names += [f"{d}/{n}" for d, n in zip(batch["dataset"], batch["name"])]
    assert len(names) == 12 and len(set(names)) == 12  # every pair once across the two ranks
    assert np.all([n.split("/")[0] in ("levir_mci", "second_cc") for n in names])
