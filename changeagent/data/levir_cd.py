"""LEVIR-CD: binary change (building change, 0.5 m; official release {train,val,test}/{A,B,label}/*.png (1024 px) or the 256-px crop layout A/ B/ label/ list/{train,val,test}.txt).

Reading, label rules and synthetic form are shared with the other binary change folders
(`changeagent.data.binary_cd`); this file is the dataset's registry entry.
"""

from __future__ import annotations

from changeagent.data.binary_cd import (
    BINARY_CLASSES,
    BINARY_PALETTE,
    BinaryCDCfg,
    BinaryChangeDataset,
    synth_binary,
)
from changeagent.data.constants import LEVIR_MEAN, LEVIR_STD
from changeagent.data.spec import DatasetSpec


class LevirCD(BinaryChangeDataset):
    dataset_id = "levir_cd"


SPEC = DatasetSpec(
    id="levir_cd",
    title="LEVIR-CD",
    reader=LevirCD,
    targets=("change",),
    classes=BINARY_CLASSES,
    palette=BINARY_PALETTE,
    dates=0,
    mean=LEVIR_MEAN,  # the same Google Earth imagery as LEVIR-MCI
    std=LEVIR_STD,
    metrics=("binary",),
    layout="building change, 0.5 m; official release {train,val,test}/{A,B,label}/*.png (1024 px) or the 256-px crop layout A/ B/ label/ list/{train,val,test}.txt",
    config=BinaryCDCfg,
    synth=synth_binary,
)
