"""What a task head is built from and reads: `HeadContext` (shapes, settings), `HeadSpec` (one head
of the table in models/heads.py) and `Features` (the shared features of one encoder pass)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from changeagent.errors import ChangeAgentError


@dataclass(frozen=True)
class HeadContext:
    """What a head is built from: the shapes of the shared features and the model's settings.

    config: the resolved model config (plain dict); level_channels: channels of `feats["levels"]`
    (the mask neck's fused maps, finest first, strides 4..32); fine_channels: channels of each
    `feats["fine"]` map (the encoder's stride-2 maps of A and B; 0 when the encoder has none);
    memory_dim: width d of `feats["memory"]` [B, M, d] (None when the model builds no memory).
    """

    config: dict[str, Any]
    vocab_size: int
    datasets: list[str]
    level_channels: list[int]
    fine_channels: int
    memory_dim: int | None


@dataclass(frozen=True)
class HeadSpec:
    """One head: its config section, its attribute on the model and how it is built.

    section: key of its config under `model` (a `config` dataclass; may define `check(model_cfg, key)`
    for checks against the rest of the model config); attr: its attribute on the model (= state-dict
    prefix, `train.stages[].freeze` name, `param_counts` key); memory: whether it reads
    `feats["memory"]` (the model builds its token memory when some head does); default: part of the
    task list of configs written before `model.tasks` existed (their heads were always built); moved:
    keys its section had in older configs and the model section that holds them now (moved there on
    reading a config).
    """

    name: str
    section: str
    config: type
    attr: str
    build: Callable[[HeadContext, Any], Any]
    memory: bool = False
    default: bool = False
    moved: tuple[tuple[str, str], ...] = ()


class Features:
    """The shared features of one encoder pass, each computed the first time a head reads it.

    `feats[key]` for a key a provider is registered for: the trunk registers "levels" (list of
    [B, C_l, H/s, W/s], s = 4..32), "fine" ((A, B) [B, C, H/2, W/2] or None), "memory" ([B, M, d],
    models with a token memory) and any head may `provide` more. `size` is the input (H, W),
    `batch` B, `dataset` the int64 [B] positions of the items' datasets in `model.datasets` (None
    when not given) and `names` those ids.
    """

    def __init__(self, size: tuple[int, int], batch: int, dataset: Tensor | None, names: Sequence[str] | None,
                 providers: Mapping[str, Callable[[Features], Any]]) -> None:
        self.size, self.batch, self.dataset = size, batch, dataset
        self.names = list(names) if names is not None else None
        self._providers = dict(providers)
        self._values: dict[str, Any] = {}

    def provide(self, key: str, fn: Callable[[Features], Any]) -> None:
        """Register how `key` is computed (once per pass, on first use)."""
        self._providers.setdefault(key, fn)

    def memo(self, key: str, fn: Callable[[], Any]) -> Any:
        """`fn()` computed once per pass under `key` (a head's own intermediate results)."""
        if key not in self._values:
            self._values[key] = fn()
        return self._values[key]

    def __contains__(self, key: str) -> bool:
        return key in self._values or key in self._providers

    def __getitem__(self, key: str) -> Any:
        if key not in self._values:
            if key not in self._providers:
                raise ChangeAgentError(f"model: no shared feature {key!r} in this model (it has "
                                       f"{', '.join(sorted(self._providers))})")
            self._values[key] = self._providers[key](self)
        return self._values[key]
