"""DSIFN-CD: binary change (land-cover change, Google Earth; crop layout A/ B/ label/ list/{train,val,test}.txt).

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


class DsifnCD(BinaryChangeDataset):
    dataset_id = "dsifn_cd"


SPEC = DatasetSpec(
    id="dsifn_cd",
    title="DSIFN-CD",
    reader=DsifnCD,
    targets=("change",),
    classes=BINARY_CLASSES,
    palette=BINARY_PALETTE,
    dates=0,
    metrics=("binary",),
    layout="land-cover change, Google Earth; crop layout A/ B/ label/ list/{train,val,test}.txt",
    config=BinaryCDCfg,
    synth=synth_binary,
)
