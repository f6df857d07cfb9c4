"""Sizes of every check: `FULL` on a GPU (< 8 min on one H100), `DRY` for the CPU dry run (seconds)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MODELS = ("fast", "mci", "mamba")
PRECISIONS = ("fp32", "bf16", "fp16")  # train.amp values: none, bf16, fp16 (fp16 with the GradScaler)
AMP = {"fp32": "none", "bf16": "bf16", "fp16": "fp16"}

# dry run: the same model families, narrow enough for a CPU (every override is a real config key)
DRY_MODEL_OVERRIDES: dict[str, dict[str, Any]] = {
    "fast": {"encoder": "tu-mobilenetv3_small_050", "neck": {"dim": 32, "heads": 2},
             "mask_decoder": {"channels": 16}, "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2}},
    # both shapes of configs/model/mci.yaml: the modular rebuild (neck, decoders) and the faithful port
    # (type: mci; heads, *_layers, decoder_dim, pos_size); keys a config lacks are left out
    "mci": {"encoder": "mit_b0", "neck": {"dim": 32, "depth": 1, "heads": 2, "ffn_ratio": 2},
            "caption_neck": {"ffn_ratio": 2}, "mask_decoder": {"channels": 16},
            "memory": {"dim": 32}, "caption_decoder": {"heads": 2},
            "heads": 2, "mask_neck_layers": 1, "caption_neck_layers": 1, "decoder_dim": 32, "pos_size": 2},
    "mamba": {"encoder": "tu-mobilenetv3_small_050", "neck": {"dim": 32, "depth": 1},
              "mask_decoder": {"channels": 16}, "memory": {"dim": 32}, "caption_decoder": {"layers": 1, "heads": 2}},
}


@dataclass(frozen=True)
class Sizes:
    image: int = 256                   # training and throughput tile side (px)
    train_pairs: int = 48              # generated training pairs (the loader cycles over them)
    val_pairs: int = 8
    batch: int = 8                     # training batch of the training checks
    steps: int = 20                    # optimizer steps of each training check
    lr: float = 1e-3
    model_lr: dict[str, float] = field(default_factory=lambda: {"mci": 2e-4})  # 130M params: gentler
    resume_steps: int = 8              # resume check: uninterrupted length; killed after step save_every + 1
    resume_save_every: int = 3
    scan: tuple[int, int, int, int] = (4, 256, 128, 16)  # selective scan (Bt, D, L, N); L = 2 x 8 x 8 tokens
    equiv_batch: int = 2               # mamba model check: pairs
    bench_batch: int = 32              # training batch of the throughput timings
    bench_steps: int = 5               # timed steps (median) after `bench_warmup` untimed ones
    bench_warmup: int = 2
    infer_batches: tuple[int, ...] = (1, 16, 64)
    decode_len: int = 16               # caption tokens decoded per pair in the inference timings
    max_batch_cap: int = 4096          # largest-batch search stops here
    scene: int = 8192                  # scene-mode GeoTIFF side (px)
    scene_batch: int = 64              # Predictor batch (windows per call) in scene mode
    compile_models: tuple[str, ...] = ("fast",)
    models: tuple[str, ...] = MODELS
    precision_models: tuple[str, ...] = MODELS  # models trained in every precision (the rest: fp32 only)
    max_batch_models: tuple[str, ...] = MODELS
    model_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


FULL = Sizes()
DRY = Sizes(image=64, train_pairs=4, val_pairs=2, batch=2, steps=6, lr=3e-3, model_lr={}, resume_steps=4,
            resume_save_every=2, scan=(2, 8, 16, 4), equiv_batch=1, bench_batch=2, bench_steps=1, bench_warmup=1,
            infer_batches=(1, 2), decode_len=3, max_batch_cap=4, scene=384, scene_batch=4,
            precision_models=("fast",), max_batch_models=("fast",), model_overrides=DRY_MODEL_OVERRIDES)
