"""`DecodeCfg`: how captions are generated, and its defaults: the one place they are defined.

`eval.*` (the run config's `EvalCfg` subclasses it), `EvalOptions`, `Predictor`, the `predict` /
`index` options, `model.predict` and `models.decoding` all take their defaults from `DECODE`.
Imports no torch (the CLI's --help shows these defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from changeagent.typed import opt


@dataclass
class DecodeCfg:
    method: str = opt("greedy", "caption decoding: greedy | beam", choices=("greedy", "beam"))
    beam_size: int = opt(3, "beam width (method=beam)", ge=1)
    length_penalty: float = opt(1.0, "beam search: score / length ** length_penalty", ge=0)
    max_len: int = opt(41, "longest generated caption in tokens", ge=2)


DECODE = DecodeCfg()
