"""Run configuration: every key of a training/evaluation run with its default and meaning.

`load_run_config(path, overrides)` merges the YAML file <- `key=value` overrides and checks every key,
type and range against the dataclasses (each section next to the code that uses it: `model` in
models/ (one section per head of models/heads.py), `loss` from the task registry (one section per
task, tasks/config.py), `data.augment` in data/transforms.py), so a typo is an error with a
"did you mean", never ignored. The schema is assembled from the registries when a config is checked
(`run_config_class`), so a registered dataset, head or task brings its sections. The result is an OmegaConf structured config. docs/training.md's key
reference is generated from these classes (`python tools/gen_config_docs.py`).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from changeagent.config import load_config, load_model_config, to_dict
from changeagent.data.registry import REGISTRY as DATASET_REGISTRY
from changeagent.data.registry import dataset_ids, get_spec
from changeagent.data.transforms import AugmentCfg
from changeagent.models.decode_cfg import DecodeCfg
from changeagent.models.factory import ModelCfg, model_configs, model_tasks
from changeagent.models.heads import HEADS, get_head, head_names
from changeagent.models.model_cfg import ModelTypeCfg
from changeagent.tasks.config import loss_config_class
from changeagent.tasks.registry import REGISTRY as TASK_REGISTRY
from changeagent.tasks.registry import task_ids
from changeagent.typed import convert, fail, opt, suggest

TRUNK_PARTS = ("encoder", "neck", "memory")


def parts() -> list[str]:
    """What `train.stages[].freeze` may name: the trunk's parts and every head's attribute."""
    return [*TRUNK_PARTS, *(get_head(n).attr for n in head_names())]


@dataclass
class RunCfg:
    """`run`: where, which device, seeds."""

    out_dir: str = opt("runs/default", "run folder")
    name: str | None = opt(None, "wandb run name (null: the out_dir's name)")
    seed: int = opt(0, "seeds python/numpy/torch (+ rank), the sampler, the caption choice and augmentation")
    deterministic: bool = opt(False, "torch.use_deterministic_algorithms(True, warn_only=True), cuDNN deterministic")
    device: str = opt("auto", "auto (local GPU if any, else CPU), cpu, cuda, cuda:N")
    threads: int | None = opt(None, "torch CPU threads per process (null: torch's default)", ge=1)
    overwrite: bool = opt(False, "start afresh in a run.out_dir that already holds a run: deletes its last.pt, "
                          "best/ and metrics (without it such a folder is refused; resume=true continues it)")


@dataclass
class SynthCfg:
    """`data.synth`: the synthetic benchmark generated for datasets with `synthetic: true`."""

    dir: str | None = opt(None, "where to generate (null: <run.out_dir>/synth)")
    n_train: int = opt(64, "training pairs", ge=1)
    n_val: int = opt(16, "validation pairs", ge=1)
    n_test: int = opt(16, "test pairs", ge=1)
    size: int = opt(64, "image size in pixels (a multiple of 32)", ge=32)
    seed: int = opt(0, "generator seed")
    mask_variant: str = opt("grey", "LEVIR label encoding written: grey (0/128/255) | colour",
                            choices=("grey", "colour"))
    difficulty: str = opt("default", "default (the demo's benchmark) | hard (nuisances, layouts, label noise: "
                          "docs/synthetic.md)", choices=("default", "hard"))


@dataclass
class DataCommonCfg:
    """`data`: datasets in use, loaders, captions and normalisation."""

    datasets: list[str] = opt(help="datasets in use (several: joint training)", factory=lambda: ["levir_mci"],
                              choices=dataset_ids)
    synth: SynthCfg = opt(help="synthetic benchmark", factory=SynthCfg)
    batch_size: int = opt(8, "per process and micro-step (global = processes x batch_size x grad_accum)", ge=1)
    eval_batch_size: int = opt(16, "per process", ge=1)
    num_workers: int = opt(0, "DataLoader workers per process, capped to (cores per process - 1) with a note", ge=0)
    max_len: int = opt(41, "caption length incl. <START>/<END>", ge=3)
    vocab: str | None = opt(None, "an existing vocab.json (null: built from the training captions)")
    vocab_splits: list[str] = opt(help="splits counted for the vocabulary", factory=lambda: ["train"])
    min_count: int = opt(5, "a word enters the vocabulary when counted more than this", ge=0)
    canonical_no_change: bool = opt(True, "reference trick: no-change train pairs get one sentence x5")
    augment: AugmentCfg = opt(help="training augmentation (data/transforms.py)", factory=AugmentCfg)
    samples_per_epoch: int | None = opt(None, "joint sampler epoch length (null: the summed dataset sizes)", ge=1)

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Each dataset section's `mean`/`std` from its spec unless given, so the validated config
        (and `config show`) holds the statistics every reader uses."""
        for key in ("mean", "std"):
            if key in raw:
                fail(f"data.{key}", f"normalisation is per dataset: data.<id>.{key} (default: the dataset's own "
                     f"statistics, its spec's), e.g. data.{(raw.get('datasets') or ['levir_mci'])[0]}.{key}")
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in dataset_ids():
            section = raw.get(name, {})
            if name not in fields or not isinstance(section, dict):
                continue  # not a dataset section here, or a wrong value the schema names
            spec = get_spec(name)
            section = dict(section)
            for key, value in (("mean", spec.mean), ("std", spec.std)):
                if section.get(key) is None:
                    section[key] = list(value)
            raw[name] = section
        return raw

    def validate(self, key: str) -> None:
        if not self.datasets:
            fail(f"{key}.datasets", f"is empty; use some of {', '.join(dataset_ids())}")


def make_data_cfg(datasets: Sequence[str]) -> type:
    """The `data` dataclass: the common keys plus one `data.<id>` section per registered dataset, typed
    by its spec's config dataclass (adding a dataset to the registry adds its config section)."""
    per_dataset = [(name, get_spec(name).config, opt(help=f"the {name} dataset", factory=get_spec(name).config))
                   for name in datasets]
    cls = dataclasses.make_dataclass("DataCfg", per_dataset, bases=(DataCommonCfg,))
    cls.__doc__ = DataCommonCfg.__doc__
    return cls


DataCfg: Any = make_data_cfg(dataset_ids())


@dataclass
class OptimCfg:
    """`optim`: the optimizer."""

    name: str = opt("adamw", "adamw | adam; no weight decay on biases and norm weights", choices=("adamw", "adam"))
    lr: float = opt(1e-4, "base learning rate (a stage's lr overrides it)", gt=0)
    weight_decay: float = opt(0.01, "decoupled (adamw) or L2 (adam) weight decay", ge=0)
    betas: list[float] = opt(help="Adam betas [beta1, beta2]", factory=lambda: [0.9, 0.999], ge=0, lt=1, length=2)


@dataclass
class SchedCfg:
    """`sched`: the learning-rate schedule of every stage."""

    name: str = opt("cosine", "cosine (to min_lr_ratio x lr) | step (x gamma every step_size) | constant",
                    choices=("cosine", "step", "constant"))
    warmup_steps: int = opt(0, "linear warm-up at the start of every stage", ge=0)
    min_lr_ratio: float = opt(0.0, "cosine floor, as a fraction of the stage's lr", ge=0, le=1)
    step_size: int = opt(1000, "step: multiply by gamma every step_size optimizer steps", ge=1)
    gamma: float = opt(0.1, "step: the factor", gt=0)


@dataclass
class StageCfg:
    """One entry of `train.stages`."""

    name: str = opt("joint", "stage name (logs, checkpoints)")
    steps: int | None = opt(None, "optimizer steps in this stage (wins over epochs)", ge=1)
    epochs: float | None = opt(None, "passes over the training sampler", gt=0)
    lr: float | None = opt(None, "learning rate (null: optim.lr)", gt=0)
    tasks: list[str] | None = opt(None, "tasks trained (null: every task of the model, model.tasks)",
                                  choices=task_ids)
    freeze: list[str] = opt(help="frozen parts: encoder, neck, memory or a head (mask_decoder, caption_decoder, "
                            "...; dotted paths work)", factory=list)

    def validate(self, key: str) -> None:
        known = parts()
        for i, part in enumerate(self.freeze):
            if part.split(".")[0] not in known:
                fail(f"{key}.freeze[{i}]", f"cannot freeze {part!r}{suggest(part, known)}; parts: {', '.join(known)}")
        if self.tasks is not None and not self.tasks:
            fail(f"{key}.tasks", f"is empty; use some of {', '.join(task_ids())} (or null: the model's)")
        if self.steps is None and self.epochs is None:
            fail(key, f"stage {self.name!r} needs `steps` or `epochs`")


@dataclass
class TrainCfg:
    """`train`: stages, accumulation, precision, budget, logging."""

    steps: int | None = opt(1000, "length of the single joint stage when `stages` is empty", ge=1)
    epochs: float | None = opt(None, "or its length in epochs", gt=0)
    stages: list[StageCfg] = opt(help="stages, each with a fresh optimizer and schedule (see Staged training)",
                                 factory=list)
    grad_accum: int = opt(1, "micro-batches per optimizer step (DDP syncs on the last one only)", ge=1)
    clip_grad: float | None = opt(1.0, "max global gradient norm (null: off)", gt=0)
    amp: str = opt("none", "none | bf16 | fp16 (fp16 with a GradScaler); CUDA only: float32 elsewhere, said once",
                   choices=("none", "bf16", "fp16"))
    ema: float | None = opt(None, "EMA decay, e.g. 0.999, with the warm-up min(ema, (1+n)/(10+n)); validation and "
                            "best/ use the EMA weights once it has warmed up", gt=0, lt=1)
    max_minutes: float | None = opt(None, "wall-clock budget, counting earlier runs of a resumed job: "
                                    "validate, save and stop in time", gt=0)
    budget_schedule: bool = opt(False, "with max_minutes: after the warm-up the cosine progress is max(step share, "
                                "share of the budget used), so a slow machine still anneals")
    stop_at_step: int | None = opt(None, "stop (validate + save) at this step without changing schedules", ge=1)
    skip_nonfinite: bool = opt(False, "skip a batch with NaN/inf loss instead of stopping with an error")
    log_every: int = opt(10, "training log interval in steps", ge=1)
    save_every: int = opt(200, "last.pt interval in steps (also at validations and stage ends)", ge=1)
    find_unused_parameters: bool = opt(True, "DDP: heads unused by a batch's datasets get no gradient")
    init_from: str | None = opt(None, "model folder to fine-tune (a best/ or `convert` output): its weights, "
                                "model config, vocabulary and normalisation")

    @classmethod
    def prepare(cls, raw: dict[str, Any]) -> dict[str, Any]:
        for key in ("compile", "channels_last"):  # one key each, with the model (its recipe decides)
            if key in raw:
                fail(f"train.{key}", f"is model.{key} (one key: the model's config decides, e.g. mci's "
                     f"channels_last is false); set model.{key}={raw[key]}")
        return raw


@dataclass
class EvalCfg(DecodeCfg):
    """`eval`: validation schedule, caption decoding (`models.decode_cfg`) and scoring, selection."""

    every_steps: int | None = opt(None, "validation interval in steps", ge=1)
    every_epochs: float | None = opt(None, "validation interval in epochs (neither: at each stage end)", gt=0)
    meteor: bool = opt(True, "METEOR (one Java process per evaluation); false: METEOR and S*m are null")
    caption_level: str = opt("word", "caption metrics on words, or on vocabulary-id strings like the "
                             "reference code (docs/metrics.md)", choices=("word", "id"))
    select: str = opt("miou+s_m", "best-checkpoint score: '+'-separated metric keys, averaged over datasets")
    patience: int | None = opt(None, "validations without improvement before the stage ends early", ge=1)
    max_pairs: int | None = opt(None, "evaluate the first N pairs of each dataset (quick checks)", ge=1)
    vis_pairs: int = opt(8, "fixed validation pairs shown in wandb", ge=0)
    time_share: float | None = opt(None, "validate less often when validations exceed this share of wall time",
                                   gt=0, le=1)

    def validate(self, key: str) -> None:
        keys = [k.strip() for k in self.select.split("+")]
        if not all(keys):
            fail(f"{key}.select", f"{self.select!r} must be metric keys joined by '+', e.g. miou+s_m")
        needs = [k for k in keys if k in ("meteor", "s_m")]
        if needs and not self.meteor:
            fail(f"{key}.select", f"{self.select!r} needs {', '.join(needs)} (METEOR), but {key}.meteor is false")


@dataclass
class WandbCfg:
    """`wandb`: experiment tracking."""

    mode: str = opt("disabled", "online | offline | disabled (online without an API key -> offline)",
                    choices=("online", "offline", "disabled"))
    project: str = opt("changeagent", "project")
    entity: str | None = opt(None, "entity (team or user)")
    tags: list[str] = opt(help="run tags", factory=list)
    log_artifact: bool = opt(True, "upload best/ as a model artifact")


_RUN_CFG: dict[Any, type] = {}


def run_config_class() -> type:
    """The run config's dataclass for the registries as they are now (datasets, heads, tasks)."""
    state = (tuple(DATASET_REGISTRY.items()), tuple(HEADS.items()), tuple(TASK_REGISTRY.items()))
    if state not in _RUN_CFG:
        data_cls = DataCfg if tuple(dataset_ids()) == _DATA_IDS else make_data_cfg(dataset_ids())
        loss_cls = loss_config_class()
        fields = [
            ("run", RunCfg, opt(help="run", factory=RunCfg)),
            ("data", data_cls, opt(help="data", factory=data_cls)),
            ("model", ModelTypeCfg, opt(help="model", factory=ModelCfg, variants=model_configs, tag="type")),
            ("loss", loss_cls, opt(help="losses", factory=loss_cls)),
            ("optim", OptimCfg, opt(help="optimizer", factory=OptimCfg)),
            ("sched", SchedCfg, opt(help="schedule", factory=SchedCfg)),
            ("train", TrainCfg, opt(help="training", factory=TrainCfg)),
            ("eval", EvalCfg, opt(help="evaluation", factory=EvalCfg)),
            ("wandb", WandbCfg, opt(help="wandb", factory=WandbCfg)),
            ("resume", Any, opt(False, "false | true (run.out_dir/last.pt) | path to a checkpoint or run folder")),
        ]
        _RUN_CFG[state] = dataclasses.make_dataclass("RunConfig", fields)
    return _RUN_CFG[state]


_DATA_IDS = tuple(dataset_ids())
RunConfig: Any = run_config_class()


def load_run_config(path: str | Path | None, overrides: Sequence[str] = (), *,
                    checkpoint: str | Path | None = None, out: str | Path | None = None,
                    norm: dict[str, list[float]] | None = None) -> DictConfig:
    """File <- overrides, resolved (`engine.resolve`: train.init_from, the evaluated `checkpoint`, an
    explicit `norm` for every dataset) and validated; `model` defaults to configs/model/fast.yaml."""
    cfg = load_config(path, overrides, default_model="fast")
    return validate(cfg, checkpoint=checkpoint, out=out, norm=norm)


# the plain sections, for pointing a key given in the wrong one to where it lives (`train.lr` -> optim.lr)
SECTIONS: dict[str, type] = {"run": RunCfg, "data": DataCommonCfg, "optim": OptimCfg, "sched": SchedCfg,
                             "train": TrainCfg, "eval": EvalCfg, "wandb": WandbCfg}


def check_misplaced(raw: dict[str, Any]) -> None:
    """An unknown key that is a key of another section is an error naming that section's key."""
    for section, cls in SECTIONS.items():
        value = raw.get(section)
        if not isinstance(value, dict):
            continue
        own = {f.name for f in dataclasses.fields(cls)}
        for key in value:
            if key in own:
                continue
            homes = [f"{other}.{key}" for other, ocls in SECTIONS.items()
                     if other != section and key in {f.name for f in dataclasses.fields(ocls)}]
            if homes:
                fail(f"{section}.{key}", f"unknown key; {key} lives in another section: use {' or '.join(homes)}")


def validate(cfg: DictConfig | dict[str, Any], *, checkpoint: str | Path | None = None,
             out: str | Path | None = None, norm: dict[str, list[float]] | None = None) -> DictConfig:
    """Resolve the inputs from other folders (`engine.resolve.resolve_inputs`), then check the config
    against the schema; ChangeAgentError `<key>: <what is wrong>` on a problem."""
    from changeagent.engine.resolve import resolve_inputs

    raw = to_dict(cfg) if isinstance(cfg, DictConfig) else copy.deepcopy(dict(cfg))
    resolve_inputs(raw, default_datasets=DataCommonCfg().datasets, checkpoint=checkpoint, out=out, norm=norm)
    if not raw.get("model"):
        raw["model"] = load_model_config("fast")
    check_misplaced(raw)
    typed: Any = convert(run_config_class(), raw)
    check_run(typed)
    return OmegaConf.structured(typed)


def check_run(c: Any) -> None:
    """Checks across sections, before anything is built."""
    stages = c.train.stages or [StageCfg(name="joint", steps=c.train.steps, epochs=c.train.epochs)]
    if not c.train.stages and c.train.steps is None and c.train.epochs is None:
        fail("train.steps", "train.steps or train.epochs is needed when train.stages is empty")
    tasks = model_tasks(c.model)
    for i, st in enumerate(c.train.stages):
        for j, task in enumerate(st.tasks or []):
            if task not in tasks:
                fail(f"train.stages[{i}].tasks[{j}]", f"stage {st.name!r} trains {task!r}, but the model has no "
                     f"{task} head (model.tasks: {', '.join(tasks)})")
    check_gradnorm(c, stages, tasks)
    if c.run.overwrite and c.resume not in (False, None, "", "false"):
        fail("run.overwrite", f"is true and resume={c.resume!r} is set too: continue the run (resume) or start "
             "afresh (run.overwrite), not both")


def check_gradnorm(c: Any, stages: list[StageCfg], model_tasks: list[str]) -> None:
    """GradNorm balances the tasks' gradient norms on the encoder's last stage (the one layer every
    head depends on, whatever the neck layout): every stage must train two tasks and that layer."""
    if c.loss.weighting.name != "gradnorm":
        return
    for i, st in enumerate(stages):
        key = f"train.stages[{i}]" if c.train.stages else "train"
        trained = list(st.tasks) if st.tasks is not None else model_tasks
        if len(trained) < 2:
            fail(f"{key}.tasks" if c.train.stages else "loss.weighting.name",
                 f"gradnorm balances two or more tasks, but stage {st.name!r} trains only {trained}; "
                 "use another loss.weighting (e.g. normalized) for single-task stages")
        for j, part in enumerate(st.freeze):
            if part == "encoder":
                fail(f"{key}.freeze[{j}]", f"stage {st.name!r} freezes the encoder, whose last stage is the "
                     "shared layer loss.weighting gradnorm balances on")


def run_tasks(cfg: DictConfig) -> list[str]:
    """The model's tasks (`model.tasks`, or what an old config without it means)."""
    from changeagent.models.factory import resolve_config

    return list(resolve_config(to_dict(cfg.model))["tasks"])


def stages_of(cfg: DictConfig) -> list[dict[str, Any]]:
    """The stage list as plain dicts, each stage's `tasks` resolved (null: the model's tasks); one
    implicit joint stage from train.steps/epochs when empty."""
    train = cfg.train
    tasks = run_tasks(cfg)
    if train.stages:
        stages = [to_dict(s) for s in train.stages]
    else:
        stages = [dict(name="joint", steps=train.steps, epochs=train.epochs, lr=None, tasks=None, freeze=[])]
    for st in stages:
        st["tasks"] = list(st["tasks"]) if st["tasks"] is not None else list(tasks)
    return stages
