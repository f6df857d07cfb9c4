"""ChangeCaptioner: shared encoder on both dates -> fusion neck(s) -> token memory -> one head per task."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from changeagent.errors import ChangeAgentError
from changeagent.models.encoder import STRIDE
from changeagent.models.features import Features
from changeagent.models.memory import LEGACY_NAMES
from changeagent.models.necks import FusionNeck


class Necks(nn.Module):
    """The fusion neck(s): one shared by both heads, or a mask neck and a caption-only neck.

    forward(feats_a, feats_b) -> (fused maps of every level for the mask decoder,
                                  fused maps of the `caption_levels` deepest levels for captions)
    """

    def __init__(self, mask: FusionNeck, caption: FusionNeck | None, caption_levels: int) -> None:
        super().__init__()
        self.mask = mask
        self.caption = caption
        self.caption_levels = caption_levels

    def forward(self, feats_a: Sequence[Tensor], feats_b: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        fused = self.mask(feats_a, feats_b)
        if self.caption is None:
            return fused, fused[-self.caption_levels:]
        return fused, self.caption(feats_a, feats_b)


def dataset_ids(dataset: Sequence[str] | str | None, batch: int, device: torch.device,
                known: Sequence[str]) -> Tensor | None:
    """list[str] of dataset ids -> int64 [B] positions in `known` (the model's datasets); None stays None.

    An id the model was not built (trained) for is an error: its caption token would be untrained."""
    if dataset is None:
        return None
    if isinstance(dataset, str):
        dataset = [dataset] * batch
    if len(dataset) != batch:
        raise ChangeAgentError(f"model: got {len(dataset)} dataset names for a batch of {batch}")
    unknown = sorted({d for d in dataset if d not in known})
    if unknown:
        raise ChangeAgentError(f"model: dataset(s) {unknown} are not among the model's datasets {list(known)}")
    return torch.tensor([list(known).index(d) for d in dataset], dtype=torch.long, device=device)


def check_image(image: Any) -> None:
    """Raise ChangeAgentError unless image is float [B, 2, C, H, W] with H, W multiples of 32."""
    if not isinstance(image, Tensor) or image.ndim != 5 or image.shape[1] != 2:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ChangeAgentError(f"model: image must be a tensor [B, 2, C, H, W], got {shape}")
    if not image.is_floating_point():
        raise ChangeAgentError(f"model: image must be a float tensor, got {image.dtype}")
    h, w = image.shape[-2:]
    if h % STRIDE or w % STRIDE or h == 0 or w == 0:
        raise ChangeAgentError(f"model: image height and width must be positive multiples of {STRIDE}, got {h}x{w}")


class ChangeCaptioner(nn.Module):
    """Shared trunk (encoder, fusion necks, token memory) plus one head per task (docs/design.md, "Model").

    Build it with `create_model(cfg, vocab_size)`; `config` is the resolved model dict it came from.
    `heads` maps each task of `config["tasks"]` to its head module (models/heads.py), registered as the
    attribute `attrs[task]` (the state-dict prefix: `mask_decoder`, `caption_decoder`, `retrieval`, ...).
    `memory` is the token memory [B, M, d] (models/memory.py), None when no head reads it.
    """

    def __init__(self, encoder: nn.Module, neck: nn.Module, heads: Mapping[str, nn.Module], config: dict[str, Any],
                 vocab_size: int, *, memory: nn.Module | None = None, memory_before: str | None = None,
                 attrs: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.neck = neck
        self.head_attrs: dict[str, str] = {t: (attrs or {}).get(t, t) for t in heads}
        for task, head in heads.items():
            if task == memory_before:  # parameter order: the memory before the first head that reads it
                self.memory = memory
            setattr(self, self.head_attrs[task], head)
        if "memory" not in self._modules:
            self.memory = memory
        self.config = config
        self.vocab_size = vocab_size
        self.vocab: Any = None  # a changeagent.data.vocab.Vocabulary (models.hub.attach_vocab, the one place)
        self.register_load_state_dict_pre_hook(_rename_legacy)

    @property
    def datasets(self) -> list[str]:
        """The dataset ids this model was built for (its semantic heads and dataset tokens)."""
        return list(self.config.get("datasets") or [])

    @property
    def tasks(self) -> list[str]:
        """Its tasks, in `model.tasks` order (one head each)."""
        return list(self.head_attrs)

    def head(self, task: str) -> Any:
        """The head module of `task`; a task the model was built without is an error."""
        if task not in self.head_attrs:
            raise ChangeAgentError(f"model: this model has no {task!r} head (its tasks: {', '.join(self.tasks)}); "
                                   f"list {task} in model.tasks and train it")
        return getattr(self, self.head_attrs[task])

    def parts(self) -> dict[str, nn.Module]:
        """Named parts: the trunk's (encoder, neck, memory when built) and one per head (its attribute)."""
        out: dict[str, nn.Module] = {"encoder": self.encoder, "neck": self.neck}
        if self.memory is not None:
            out["memory"] = self.memory
        out.update({attr: getattr(self, attr) for attr in self.head_attrs.values()})
        return out

    def _providers(self, image: Tensor, dataset_index: Tensor | None) -> dict[str, Callable[[Features], Any]]:
        """One encoder pass: image [B, 2, C, H, W] -> the trunk's shared features (docs/design.md)."""
        b = image.shape[0]
        # both dates in one batch: one encoder call, shared (Siamese) weights
        x = torch.cat([image[:, 0], image[:, 1]], dim=0)
        if self.config.get("channels_last", True):
            x = x.contiguous(memory_format=torch.channels_last)
        with_fine = any(getattr(getattr(self, a), "uses_fine", False) for a in self.head_attrs.values())
        maps = self.encoder(x, fine=with_fine)
        fine = (maps[0][:b], maps[0][b:]) if with_fine else None
        maps = maps[1:] if with_fine else maps
        feats_a = [f[:b] for f in maps]
        feats_b = [f[b:] for f in maps]
        levels, caption_maps = self.neck(feats_a, feats_b)
        providers: dict[str, Callable[[Features], Any]] = {"levels": lambda f: levels, "fine": lambda f: fine}
        if self.memory is not None:
            memory = self.memory
            providers["memory"] = lambda f: memory(caption_maps, f.dataset)
        return providers

    def features(self, image: Tensor, dataset: Sequence[str] | str | None = None) -> Features:
        """The shared features of image [B, 2, C, H, W] (`Features`: computed when a head reads them)."""
        check_image(image)
        b, _, c, h, w = image.shape
        in_ch = self.config.get("in_channels", 3)
        if c != in_ch:
            raise ChangeAgentError(f"model: image has {c} channels, the model expects {in_ch}")
        index = dataset_ids(dataset, b, image.device, self.datasets)
        names = [dataset] * b if isinstance(dataset, str) else dataset
        return self.features_indexed(image, index, names)

    def features_indexed(self, image: Tensor, index: Tensor | None, names: Sequence[str] | None = None) -> Features:
        """`features` with the datasets given as int64 [B] positions in `model.datasets` (or None):
        no python-side lookups, so it traces (ONNX export, models/export.py); image is not checked."""
        b, _, _, h, w = image.shape
        feats = Features((h, w), b, index, names, self._providers(image, index))
        for attr in self.head_attrs.values():
            publish = getattr(getattr(self, attr), "publish", None)
            if callable(publish):
                publish(feats)
        return feats

    def _active(self, tasks: Sequence[str] | None) -> list[str]:
        if tasks is None:
            return self.tasks
        unknown = [t for t in tasks if t not in self.head_attrs]
        if unknown:
            raise ChangeAgentError(f"model: no head for task(s) {unknown}; its tasks: {', '.join(self.tasks)}")
        return [t for t in self.tasks if t in tasks]

    def _check_inputs(self, inputs: Mapping[str, Any]) -> None:
        known = {k for t in self.tasks for k in (*self.head(t).inputs, *getattr(self.head(t), "extra_inputs", ()))}
        unknown = sorted(k for k in inputs if k not in known)
        if unknown:
            raise ChangeAgentError(f"model: no head reads input(s) {unknown} (its heads read {sorted(known)})")

    def forward(self, image: Tensor, captions: Tensor | None = None, dataset: Sequence[str] | str | None = None,
                *, tasks: Sequence[str] | None = None, **inputs: Any) -> dict[str, Any]:
        """Teacher-forced pass of the heads of `tasks` (None: all) whose inputs are all given.

        image float [B, 2, C, H, W]; captions int64 [B, L] (`<START> ... <END> <NULL>...`; the same as
        the input `captions=`); dataset list[str] of length B; other inputs by name (e.g.
        `retrieval_captions`). Returns the heads' outputs in one dict: the mask head's "change"
        [B,1,H,W] and "masks" {dataset: logits}, the caption head's "caption" [B, L-1, V], the
        retrieval head's "pair_emb"/"text_emb" [B, D] and "logit_scale" (docs/design.md, "Model").
        """
        if captions is not None:
            inputs["captions"] = captions
        inputs = {k: v for k, v in inputs.items() if v is not None}
        self._check_inputs(inputs)
        feats = self.features(image, dataset)
        out: dict[str, Any] = {}
        for task in self._active(tasks):
            head = self.head(task)
            if all(k in inputs for k in head.inputs):
                out.update(head.outputs(feats, inputs))
        return out

    @torch.no_grad()
    def predict(self, image: Tensor, dataset: Sequence[str] | str | None = None, *,
                tasks: Sequence[str] | None = None, inputs: Mapping[str, Any] | None = None,
                **options: Any) -> dict[str, Any]:
        """Every head's predictions from one encoder pass, in eval mode (the previous mode is restored).

        `tasks`: the heads to run (None: all); `inputs`: named inputs some heads read at inference
        (e.g. "texts" for the retrieval head); `options`: decoding settings each head reads what it
        knows of (the caption head: method greedy|beam, beam_size, max_len, length_penalty, min_len).
        Returns "change" and "masks" as in `forward`, the caption head's "tokens" int64 [B, T] (without
        `<START>`, cut at `<END>`, padded with `<NULL>`), the retrieval head's "pair_emb" [B, D], ...
        """
        inputs = {k: v for k, v in dict(inputs or {}).items() if v is not None}
        self._check_inputs(inputs)
        was_training = self.training
        self.eval()
        try:
            feats = self.features(image, dataset)
            out: dict[str, Any] = {}
            for task in self._active(tasks):
                out.update(self.head(task).predictions(feats, inputs, options))
        finally:
            self.train(was_training)
        return out

    def param_counts(self) -> dict[str, int]:
        """Parameters per part (`parts()`: encoder, neck, memory, one per head) and the total."""
        def count(m: nn.Module) -> int:
            return sum(p.numel() for p in m.parameters())
        return {"total": count(self), **{name: count(m) for name, m in self.parts().items()}}


def compile_model(model: ChangeCaptioner, **kwargs: Any) -> ChangeCaptioner:
    """`torch.compile` each part in place (state-dict names unchanged); kwargs go to torch.compile."""
    for part in model.parts().values():
        part.compile(**kwargs)
    return model


def _rename_legacy(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Models saved before the token memory was its own module kept it in the caption decoder: rename
    those parameters (models/memory.py `LEGACY_NAMES`) so today's checkpoints keep loading."""
    if getattr(module, "memory", None) is None:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        rest = key[len(prefix):]
        for old, new in LEGACY_NAMES.items():
            if rest.startswith(old):
                state_dict[prefix + new + rest[len(old):]] = state_dict.pop(key)
                break
