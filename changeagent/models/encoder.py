"""Shared Siamese encoder: one smp encoder applied to both dates in a single batched pass."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors  # the factory functions torch.device(...) redirects

from changeagent.errors import ChangeAgentError

# timm (imported by smp) imports wandb, when it is installed, for a logging helper we never call: a
# third of a second of every command's start-up. It is hidden while smp/timm load; the engine imports
# wandb itself when a run logs to it (engine/wandb_logger.py).
_HIDE_WANDB = "wandb" not in sys.modules
if _HIDE_WANDB:
    sys.modules["wandb"] = None  # type: ignore[assignment]  # `import wandb` raises ImportError meanwhile
try:
    import segmentation_models_pytorch as smp  # noqa: E402
finally:
    if _HIDE_WANDB:
        del sys.modules["wandb"]


def download_error(name: str, weights: Any, e: BaseException) -> ChangeAgentError:
    """The error for pretrained encoder weights that could not be downloaded, with what to do instead."""
    reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
    return ChangeAgentError(
        f"model.encoder_weights={weights}: cannot download the pretrained weights of encoder {name!r} "
        f"({type(e).__name__}: {reason}); on a machine without internet set model.encoder_weights=null "
        "to train from scratch, or model.encoder_weights=PATH to a local weights file (with "
        "HF_HUB_OFFLINE=1 a weights cache copied from another machine is used)"
    )


class _BuildOn(TorchFunctionMode):
    """`with torch.device(device)` for building modules, except that `torch.linspace` stays on the
    CPU: smp's mit_* constructors read their drop-path rates from it with `.item()`, which a meta
    tensor cannot give. With it whole models are built on "meta" (shapes only, no random
    initialisation, which costs seconds for the MiT encoders) before their weights are loaded."""

    def __init__(self, device: str | torch.device) -> None:
        super().__init__()
        self.device = torch.device(device)

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        if func in _device_constructors() and func is not torch.linspace and kwargs.get("device") is None:
            kwargs["device"] = self.device
        return func(*args, **kwargs)


def build_on(device: str | torch.device | None) -> contextlib.AbstractContextManager:
    """The context to build a model in: on `device` (see `_BuildOn`), or as torch defaults for None."""
    return _BuildOn(device) if device is not None else contextlib.nullcontext()


# families we test; any other smp encoder name is accepted as well
TESTED_ENCODERS = (
    "resnet18", "resnet34", "resnet50",
    "mit_b0", "mit_b1", "mit_b2",
    "efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3",
)
# encoder outputs used by the necks: strides 4, 8, 16, 32 (smp index 0 is the input, 1 is stride 2,
# which mit_* leaves empty)
LEVELS = (2, 3, 4, 5)
STRIDE = 32


def _load_state(path: Path) -> dict[str, Tensor]:
    """Tensors of a local weights file; `.safetensors` or a torch file read with weights_only."""
    state: Any
    if not path.is_file():
        raise ChangeAgentError(f"encoder weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise ChangeAgentError(f"cannot read encoder weights {path}: {e}") from None
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ChangeAgentError(f"encoder weights {path} do not hold a flat name -> tensor mapping")
    return state


def _adapt_in_channels(w: Tensor, target: torch.Size) -> Tensor:
    """First-conv kernel for a different input channel count: cycle the RGB kernels, rescale."""
    n_in = target[1]
    idx = torch.arange(n_in) % w.shape[1]
    return w[:, idx] * (w.shape[1] / n_in)


def load_encoder_weights(encoder: nn.Module, path: Path) -> None:
    """Load a local weights file into an smp encoder (prefixes `encoder.`/`backbone.`/`module.` stripped)."""
    state = _load_state(path)
    own = encoder.state_dict()
    matched: dict[str, Tensor] = {}
    for key, value in state.items():
        name = key
        for prefix in ("module.", "encoder.", "backbone.", "model."):
            if name.startswith(prefix) and name not in own:
                name = name[len(prefix):]
        if name not in own:
            continue
        target = own[name].shape
        if value.shape != target:
            if value.ndim == 4 and value.shape[0] == target[0] and value.shape[2:] == target[2:]:
                value = _adapt_in_channels(value, target)
            else:
                raise ChangeAgentError(
                    f"encoder weights {path}: {key} has shape {tuple(value.shape)}, "
                    f"the encoder expects {tuple(target)}"
                )
        matched[name] = value
    if not matched:
        raise ChangeAgentError(f"encoder weights {path}: no tensor name matches the encoder's parameters")
    encoder.load_state_dict(matched, strict=False)


class Encoder(nn.Module):
    """smp encoder returning the stride 4/8/16/32 feature maps.

    Args:
        name: smp encoder name (`resnet18`, `mit_b1`, `efficientnet-b0`, ...).
        in_channels: image channels (multispectral: smp keeps the RGB kernels when weights are given).
        weights: None (random init, offline), an smp weights name such as `imagenet` (downloads),
            or a path to a local `.safetensors`/`.pth` file.
    """

    def __init__(self, name: str, in_channels: int = 3, weights: str | None = None) -> None:
        super().__init__()
        if name not in smp.encoders.encoders and not name.startswith("tu-"):
            raise ChangeAgentError(
                f"unknown encoder {name!r}; tested choices: {', '.join(TESTED_ENCODERS)} "
                f"(any segmentation-models-pytorch encoder name works)"
            )
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ChangeAgentError(f"encoder in_channels must be a positive integer, got {in_channels!r}")
        local = weights is not None and (Path(weights).suffix in (".pth", ".pt", ".bin", ".safetensors")
                                         or Path(weights).exists())
        remote: Any = None if local else weights
        if remote is not None and name.startswith("tu-"):
            remote = True  # timm encoders: the name's default pretrained tag (ImageNet), smp wants True
        try:
            self.body = smp.encoders.get_encoder(name, in_channels=in_channels, depth=5, weights=remote)
        except (KeyError, ValueError) as e:
            raise ChangeAgentError(f"cannot build encoder {name!r} with weights {weights!r}: {e}") from None
        except Exception as e:  # noqa: BLE001 - the download (huggingface_hub) failed: offline, proxy, ...
            if remote is None:
                raise
            raise download_error(name, weights, e) from None
        if name.startswith("efficientnet-"):
            # smp keeps the classifier's head conv, which its forward never calls: dead weights
            # would only cost memory and make DDP complain about unused parameters
            for dead in ("_conv_head", "_bn1"):
                if hasattr(self.body, dead):
                    delattr(self.body, dead)
        if local:
            load_encoder_weights(self.body, Path(str(weights)))
        self.name = name
        self.out_channels: list[int] = [self.body.out_channels[i] for i in LEVELS]
        self.fine_channels: int = self.body.out_channels[1]  # stride 2; 0 for mit_*

    def forward(self, x: Tensor, fine: bool = False) -> list[Tensor]:
        """x: float [N, C, H, W] (H, W multiples of 32) -> 4 maps [N, C_l, H/s, W/s], s = 4, 8, 16, 32;
        with `fine`, the stride-2 map [N, fine_channels, H/2, W/2] comes first (5 maps)."""
        feats = self.body(x)
        return [feats[i] for i in ((1, *LEVELS) if fine else LEVELS)]
