"""Run configuration: every key of a training/evaluation run with its default (docs/training.md).

`load_run_config(path, overrides)` merges these defaults <- the YAML file <- `key=value` overrides and
checks names and types against the dataclasses, so a typo (`train.lrr=...`) is an error, not ignored.
`model` and `loss` are free-form dicts owned by the models and losses modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from changeagent.config import load_config, load_model_config, to_dict
from changeagent.data.constants import LEVIR_MEAN, LEVIR_STD
from changeagent.data.registry import dataset_ids, get_spec
from changeagent.errors import ChangeAgentError


@dataclass
class RunCfg:
    out_dir: str = "runs/default"
    name: str | None = None  # wandb run name; defaults to the out_dir's name
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms(True), cudnn deterministic
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int | None = None  # torch CPU threads per process; null -> torch's default


@dataclass
class SynthCfg:
    dir: str | None = None  # where to generate; null -> <run.out_dir>/synth
    n_train: int = 64
    n_val: int = 16
    n_test: int = 16
    size: int = 64
    seed: int = 0
    mask_variant: str = "grey"  # LEVIR label encoding written: grey (0/128/255) | colour


@dataclass
class DataBaseCfg:
    datasets: list[str] = field(default_factory=lambda: ["levir_mci"])
    synth: SynthCfg = field(default_factory=SynthCfg)
    batch_size: int = 8  # per process and micro-step
    eval_batch_size: int = 16
    num_workers: int = 0
    max_len: int = 41  # caption length incl. <START>/<END>
    vocab: str | None = None  # existing vocab.json; null -> built from the training captions
    vocab_splits: list[str] = field(default_factory=lambda: ["train"])
    min_count: int = 5  # a word enters the vocabulary when its count > min_count
    canonical_no_change: bool = True  # reference trick: no-change train pairs get one sentence x5
    mean: list[float] = field(default_factory=lambda: list(LEVIR_MEAN))
    std: list[float] = field(default_factory=lambda: list(LEVIR_STD))
    augment: dict[str, Any] = field(default_factory=dict)  # passed to data.transforms.build_transforms
    samples_per_epoch: int | None = None  # joint sampler epoch length; null -> sum of dataset sizes


# one section `data.<id>` per registered dataset, typed by its spec's config dataclass: adding a dataset
# to the registry adds its config section
DataCfg = make_dataclass(
    "DataCfg",
    [(name, get_spec(name).config, field(default_factory=get_spec(name).config)) for name in dataset_ids()],
    bases=(DataBaseCfg,),
)


@dataclass
class OptimCfg:
    name: str = "adamw"  # adamw | adam
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class SchedCfg:
    name: str = "cosine"  # cosine | step | constant
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0  # cosine floor, as a fraction of the stage's lr
    step_size: int = 1000  # step: multiply by gamma every step_size optimizer steps
    gamma: float = 0.1


@dataclass
class StageCfg:
    name: str = "joint"
    steps: int | None = None  # optimizer steps in this stage; or
    epochs: float | None = None  # passes over the training sampler (steps win when both are set)
    lr: float | None = None  # null -> optim.lr
    tasks: list[str] = field(default_factory=lambda: ["mask", "caption", "retrieval"])  # retrieval: with the head
    freeze: list[str] = field(default_factory=list)  # encoder | neck | mask_decoder | caption_decoder | retrieval


@dataclass
class TrainCfg:
    steps: int | None = 1000  # used when `stages` is empty: one joint stage of this length
    epochs: float | None = None
    stages: list[StageCfg] = field(default_factory=list)
    grad_accum: int = 1
    clip_grad: float | None = 1.0
    amp: str = "none"  # none | bf16 | fp16 (fp16 uses a GradScaler)
    ema: float | None = None  # EMA decay, e.g. 0.999; evaluation and best/ then use the EMA weights
    compile: bool = False
    channels_last: bool = True  # NHWC convolutions: ~1.5x faster on CPU (oneDNN) and on tensor-core GPUs
    max_minutes: float | None = None  # wall-clock budget: validate, save and stop when it runs out
    budget_schedule: bool = False  # with max_minutes: the lr schedule also advances with elapsed time
    stop_at_step: int | None = None  # stop (validate + save) at this step without changing schedules
    skip_nonfinite: bool = False  # skip a batch with NaN/inf loss instead of stopping with an error
    log_every: int = 10
    save_every: int = 200  # write last.pt every N steps (and at every validation and at the end)
    find_unused_parameters: bool = True  # DDP: heads unused by a batch's datasets get no gradient
    init_from: str | None = None  # model folder to fine-tune (best/, `convert` output): weights, model, vocab, norm


@dataclass
class EvalCfg:
    every_steps: int | None = None
    every_epochs: float | None = None  # when neither is set: only at the end of each stage
    meteor: bool = True  # METEOR starts a Java process; false for fast in-training validation
    id_level: bool = False  # score vocabulary-id strings like the reference code (SPEC §2.2)
    select: str = "miou+s_m"  # selection metric: '+'-separated metric keys, averaged over datasets
    patience: int | None = None  # validations without improvement before stopping early
    method: str = "greedy"  # greedy | beam
    beam_size: int = 3
    max_len: int = 41
    max_pairs: int | None = None  # validate on the first N pairs of each dataset (quick checks)
    time_share: float | None = None  # validate less often when validations exceed this share of wall time
    vis_pairs: int = 8  # fixed validation pairs shown in wandb


@dataclass
class WandbCfg:
    mode: str = "disabled"  # online | offline | disabled (online without an API key -> offline)
    project: str = "changeagent"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)
    log_artifact: bool = True  # upload best/ as a model artifact


@dataclass
class RunConfig:
    run: RunCfg = field(default_factory=RunCfg)
    data: DataCfg = field(default_factory=DataCfg)  # type: ignore[valid-type]
    model: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    optim: OptimCfg = field(default_factory=OptimCfg)
    sched: SchedCfg = field(default_factory=SchedCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    eval: EvalCfg = field(default_factory=EvalCfg)
    wandb: WandbCfg = field(default_factory=WandbCfg)
    resume: Any = False  # false | true (DIR/last.pt) | path to a checkpoint


CHOICES = {
    "optim.name": ("adamw", "adam"),
    "sched.name": ("cosine", "step", "constant"),
    "train.amp": ("none", "bf16", "fp16"),
    "eval.method": ("greedy", "beam"),
    "wandb.mode": ("online", "offline", "disabled"),
}
PARTS = ("encoder", "neck", "mask_decoder", "caption_decoder", "retrieval")
TASKS = ("mask", "caption", "retrieval")  # "retrieval" only counts for a model with a retrieval head


def load_run_config(path: str | Path | None, overrides: Sequence[str] = ()) -> DictConfig:
    """Defaults <- file <- overrides, validated; `model` defaults to configs/model/fast.yaml."""
    cfg = load_config(path, overrides, default_model="fast")
    return validate(cfg)


def validate(cfg: DictConfig | dict[str, Any]) -> DictConfig:
    """Check a merged config against the schema and the value choices; ChangeAgentError on a problem."""
    schema = OmegaConf.structured(RunConfig)
    try:
        merged = OmegaConf.merge(schema, cfg)
    except OmegaConfBaseException as e:
        where = getattr(e, "full_key", None)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ChangeAgentError(f"invalid run config{f' at {where}' if where else ''}: {first}") from None
    assert isinstance(merged, DictConfig)
    if not merged.model:
        merged.model = OmegaConf.create(load_model_config("fast"))
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(merged, key)
        if value not in allowed:
            raise ChangeAgentError(f"config {key}={value!r} is not one of {list(allowed)}")
    if not merged.data.datasets:
        raise ChangeAgentError(f"config data.datasets is empty; use some of {dataset_ids()}")
    for name in merged.data.datasets:
        if name not in dataset_ids():
            raise ChangeAgentError(f"config data.datasets has unknown dataset {name!r}; known: {dataset_ids()}")
    for stage in stages_of(merged):
        for part in stage["freeze"]:
            if part.split(".")[0] not in PARTS:
                raise ChangeAgentError(f"stage {stage['name']!r}: cannot freeze {part!r}; parts: {list(PARTS)}")
        bad = [t for t in stage["tasks"] if t not in TASKS]
        if bad or not stage["tasks"]:
            raise ChangeAgentError(f"stage {stage['name']!r}: tasks {list(stage['tasks'])} must be from {list(TASKS)}")
        if stage["steps"] is None and stage["epochs"] is None:
            raise ChangeAgentError(f"stage {stage['name']!r} needs `steps` or `epochs`")
    share = merged.eval.time_share
    if share is not None and not 0.0 < share <= 1.0:
        raise ChangeAgentError(f"config eval.time_share={share} must be in (0, 1]")
    for key in ("data.batch_size", "data.eval_batch_size", "train.grad_accum", "train.log_every", "train.save_every"):
        if OmegaConf.select(merged, key) < 1:
            raise ChangeAgentError(f"config {key} must be >= 1")
    return merged


def stages_of(cfg: DictConfig) -> list[dict[str, Any]]:
    """The stage list as plain dicts; one implicit joint stage from train.steps/epochs when empty."""
    train = cfg.train
    if train.stages:
        return [to_dict(s) for s in train.stages]
    return [dict(name="joint", steps=train.steps, epochs=train.epochs, lr=None, tasks=list(TASKS), freeze=[])]
