"""WHU-CD: binary change (building change, 0.3 m aerial; crop layout A/ B/ label/ list/{train,val,test}.txt).

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
from changeagent.data.spec import DatasetSpec


class WhuCD(BinaryChangeDataset):
    dataset_id = "whu_cd"


SPEC = DatasetSpec(
    id="whu_cd",
    title="WHU-CD",
    reader=WhuCD,
    targets=("change",),
    classes=BINARY_CLASSES,
    palette=BINARY_PALETTE,
    dates=0,
    metrics=("binary",),
    layout="building change, 0.3 m aerial; crop layout A/ B/ label/ list/{train,val,test}.txt",
    config=BinaryCDCfg,
    synth=synth_binary,
)
