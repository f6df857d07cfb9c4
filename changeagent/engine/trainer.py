"""The training loop: stages x (micro-batches -> weighted multi-task loss -> optimizer step), with
validation, best-checkpoint selection, early stopping, exact resume and a wall-clock budget.

One process or one per device under torchrun/srun (DDP). Only rank 0 prints, logs and writes files;
every collective (metric sync, stop decisions, RNG gathering) is called by all ranks in the same order.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from changeagent.config import to_dict
from changeagent.engine.batches import to_device
from changeagent.engine.checkpoint import (
    check_run_folder,
    clear_run_folder,
    export_best,
    load_checkpoint,
    save_checkpoint,
    training_record,
)
from changeagent.engine.device import autocast_dtype, reset_notes, say_once, set_threads
from changeagent.engine.distributed import (
    DistInfo,
    all_gather_objects,
    all_reduce_mean_,
    any_true,
    broadcast_buffers_,
    cleanup,
    init_distributed,
)
from changeagent.engine.evaluator import EvalOptions, evaluate
from changeagent.engine.loaders import build_train_data, train_loader
from changeagent.engine.model_init import build_model, inherited
from changeagent.engine.optim import (
    build_ema,
    build_stage,
    check_shared_layer,
    ema_warmup_steps,
    set_train_mode,
)
from changeagent.engine.resume import (
    capture,
    check_resume_config,
    find_resume,
    restore_loop,
    restore_stage,
    vocab_of,
)
from changeagent.engine.roots import check_roots
from changeagent.engine.runlog import RunLog, flatten, format_table, table_notes
from changeagent.engine.schema import stages_of
from changeagent.engine.seeding import seed_everything
from changeagent.engine.selection import check_meteor, selection_score
from changeagent.engine.wandb_logger import WandbLogger
from changeagent.errors import ChangeAgentError
from changeagent.fileio import write_text_atomic
from changeagent.tasks.config import loss_config
from changeagent.tasks.losses import compute_losses
from changeagent.tasks.registry import get_task
from changeagent.tasks.spec import StepKey, TaskContext


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run a validated config (see `schema.load_run_config`); returns a summary dict (every rank)."""
    check_roots(cfg)  # before any process group, folder or model exists
    check_run_folder(Path(cfg.run.out_dir), cfg.resume, cfg.run.overwrite)
    check_meteor(cfg)
    info = init_distributed(cfg.run.device)
    trainer = None
    try:
        trainer = Trainer(cfg, info)
        return trainer.fit()
    finally:
        if trainer is not None:
            trainer.wandb.finish()
        cleanup(info)


def steps_in_budget(done: int, total: int, seconds_per_step: float, left_s: float) -> int:
    """A stage's expected length under `train.max_minutes`: the steps done plus those the time left
    allows at the measured rate (validations included), never more than the stage's own length."""
    if seconds_per_step <= 0:
        return total
    return max(done, min(total, done + int(max(left_s, 0.0) / seconds_per_step)))


class Trainer:
    model: Any  # ChangeCaptioner

    def __init__(self, cfg: DictConfig, info: DistInfo) -> None:
        self.t0 = time.monotonic()
        reset_notes()
        # train.init_from: its model config, vocabulary and statistics are in `cfg` already (engine.resolve)
        init = Path(cfg.train.init_from) if cfg.train.init_from else None
        self.cfg, self.info, self.c = cfg, info, to_dict(cfg)
        self.out = Path(cfg.run.out_dir)
        set_threads(cfg.run.threads)
        seed_everything(cfg.run.seed + info.rank, cfg.run.deterministic)
        ckpt = find_resume(cfg, self.out)
        self.ckpt = load_checkpoint(ckpt) if ckpt else None
        if self.ckpt is not None:
            check_resume_config(self.ckpt["config"], self.c, ckpt)
        if info.is_main:
            if cfg.run.overwrite:
                removed = clear_run_folder(self.out)
                if removed:
                    self._say(f"note: run.overwrite=true: deleted the earlier run's {', '.join(removed)} in {self.out}")
            self.out.mkdir(parents=True, exist_ok=True)
            # the validated config is what runs: recorded as such (`config show` prints the same)
            write_text_atomic(self.out / "config.yaml", OmegaConf.to_yaml(cfg))
        self.data = build_train_data(cfg, info, vocab=vocab_of(self.ckpt))
        self.model = build_model(cfg, self.data.vocab, info.device, self.ckpt, self.data.specs,
                                          init=init if self.ckpt is None else None)
        check_shared_layer(self.model, stages_of(cfg), cfg.loss.weighting.name)
        # what best/ and last.pt record it was trained on: this run's datasets plus those it keeps
        # from train.init_from (with the statistics recorded for them, in cfg by engine.resolve)
        kept = inherited(cfg, self.data.specs)
        self.trained: dict[str, Any] = {**kept, **{n: s.summary() for n, s in self.data.specs.items()}}
        self.kept_norm = {n: {"mean": list(cfg.data[n].mean), "std": list(cfg.data[n].std)} for n in kept}
        self.loss_cfg = loss_config(self.c["loss"])  # typed once: compute_losses reads it every step
        self.task_ctx = TaskContext(vocab=self.data.vocab, max_len=cfg.data.max_len, train=True)
        self.ema = build_ema(self.model, cfg.train.ema)
        # state saved in last.pt (engine.resume owns what it holds)
        self.step = self.stage = self.stage_step = self.epoch = self.batch_in_epoch = 0
        self.best_score, self.best_step, self.bad_evals, self.skipped = -math.inf, -1, 0, 0
        self.log = RunLog(self.out, info.is_main)
        wandb_id = restore_loop(self, self.ckpt) if self.ckpt is not None else None
        self.log.truncate_after(self.step)  # a fresh run starts a fresh log; a resumed one drops the future
        self.wandb = WandbLogger(self.c, self.out, info.is_main, run_id=wandb_id)
        self.stop_reason: str | None = None
        self._iter: Any = None
        self._last_val_step = self._last_save_step = -1
        self._val_seconds = self._val_total = 0.0

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        stages = stages_of(self.cfg)
        last_metrics: dict[str, Any] = {}
        while self.stage < len(stages) and self.stop_reason is None:
            st = stages[self.stage]
            total = self._setup_stage(st)
            self._say(f"stage {self.stage + 1}/{len(stages)} '{st['name']}': {total} steps, tasks {st['tasks']}, "
                      f"frozen {st['freeze'] or 'nothing'}")
            bar = tqdm(total=total, initial=self.stage_step, desc=st["name"], disable=not self.info.is_main,
                       dynamic_ncols=True)
            acc: dict[str, float] = {}
            t_log, n_log = time.monotonic(), 0
            t_stage, first_step = time.monotonic(), self.stage_step
            while self.stage_step < total and self.stop_reason is None:
                epoch_before = self._epoch_progress()
                values = self._train_step(st)
                self.step += 1
                self.stage_step += 1
                bar.update(1)
                for k, v in values.items():
                    acc[k] = acc.get(k, 0.0) + v
                n_log += 1
                if self.step % self.cfg.train.log_every == 0 or self.stage_step == total:
                    dt = time.monotonic() - t_log
                    rec = {k: v / n_log for k, v in acc.items() if k.startswith("loss")}
                    rec.update({k: v for k, v in values.items() if not k.startswith("loss")})
                    rec["pairs_per_s"] = n_log * self.pairs_per_step / max(dt, 1e-9)
                    self._log_train(rec, bar)
                    acc, t_log, n_log = {}, time.monotonic(), 0
                    if self.cfg.train.max_minutes is not None:  # the bar ends where the budget will
                        per_step = (time.monotonic() - t_stage) / max(self.stage_step - first_step, 1)
                        left = self.cfg.train.max_minutes * 60 - (time.monotonic() - self.t0) - self._val_seconds * 1.2
                        bar.total = steps_in_budget(self.stage_step, total, per_step, left)
                        bar.refresh()
                self._check_stop()
                t_pause = time.monotonic()
                if (self._eval_due(epoch_before) and self._eval_in_share()) or self.stop_reason is not None:
                    last_metrics = self._validate() or last_metrics
                if self.stage_step % self.cfg.train.save_every == 0 or self.stop_reason is not None:
                    self._save()
                t_log += time.monotonic() - t_pause  # throughput counts training time only
            bar.close()
            if self.stop_reason is None or self.stop_reason == "early_stop":
                if self._last_val_step != self.step:
                    last_metrics = self._validate() or last_metrics
                self.stage, self.stage_step = self.stage + 1, 0
                self.bad_evals = 0
                if self.stop_reason == "early_stop":
                    self.stop_reason = None
                self._save()
        if self.info.is_main and self.cfg.wandb.log_artifact and (self.out / "best").is_dir():
            self.wandb.log_artifact(self.out / "best", {"score": self.best_score, "step": self.best_step})
        return {"out_dir": str(self.out.absolute()), "step": self.step, "best_score": self.best_score,
                "best_step": self.best_step, "stop_reason": self.stop_reason or "done", "metrics": last_metrics,
                "skipped_batches": self.skipped, "minutes": (time.monotonic() - self.t0) / 60}

    def _train_step(self, st: dict[str, Any]) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        set_train_mode(self.model, st["freeze"])
        self.opt.zero_grad(set_to_none=True)
        accum, tasks = cfg.train.grad_accum, st["tasks"]
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        bad: list[Any] = []
        for micro in range(accum):
            batch = to_device(self._next_batch(), info.device)
            key = StepKey(cfg.run.seed, self.step, micro, info.rank)
            inputs: dict[str, Any] = {}
            for task in tasks:  # the model inputs of the stage's heads (e.g. the captions trained on)
                inputs.update(get_task(task).train_inputs(batch, key, self.task_ctx))
            inputs = to_device(inputs, info.device)
            last = micro == accum - 1
            sync = self.ddp.no_sync() if (self.ddp is not None and not last) else nullcontext()
            with sync:
                with self._autocast():
                    out = self.net(batch["image"], dataset=batch["dataset"], tasks=tasks, **inputs)
                    losses = compute_losses(out, batch, inputs, self.loss_cfg, tasks)
                    task_losses = {t: losses[t] for t in tasks if t in losses}
                    if hasattr(self.weighting, "grad_scale"):  # GradNorm: norms of unscaled fp16 gradients
                        self.weighting.grad_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
                    total, weights = self.weighting(task_losses, shared_params=self.shared_params)
                finite = all(bool(torch.isfinite(v.detach()).all()) for v in (total, *task_losses.values()))
                # backward even on a bad loss so DDP's reducer stays in step; the grads are dropped
                self.scaler.scale(total / accum).backward()
            if any_true(not finite, info):
                bad = all_gather_objects(None if finite else (info.rank, list(batch["name"]),
                                         {k: float(v.detach()) for k, v in losses.items()}), info)
                break
            for k, v in losses.items():
                sums[f"loss/{k}"] = sums.get(f"loss/{k}", 0.0) + float(v.detach()) / accum
            sums["loss/total"] = sums.get("loss/total", 0.0) + float(total.detach()) / accum
        if bad:
            return self._nonfinite(bad)
        params = [p for g in self.opt.param_groups for p in g["params"]]
        all_reduce_mean_([p.grad for p in self.weighting.parameters() if p.grad is not None], info)
        grad_norm = None
        if cfg.train.clip_grad:
            self.scaler.unscale_(self.opt)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.train.clip_grad))
        self.scaler.step(self.opt)
        self.scaler.update()
        tr = cfg.train
        if tr.budget_schedule and tr.max_minutes:  # anneal by the budget's end even on a slow machine
            self.sched.time_progress = max(self.sched.time_progress, self._time_progress())
        self.sched.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        out = {**sums, "lr": self.opt.param_groups[0]["lr"], **{f"weight/{k}": float(v) for k, v in weights.items()}}
        if grad_norm is not None:
            out["grad_norm"] = grad_norm
        return out

    def _nonfinite(self, bad: list[Any]) -> dict[str, float]:
        self.opt.zero_grad(set_to_none=True)
        where = "; ".join(f"rank {r}: pairs {names}, losses {vals}" for r, names, vals in (b for b in bad if b))
        msg = f"non-finite loss at step {self.step + 1} (stage '{self.stage_name}'): {where}"
        if not self.cfg.train.skip_nonfinite:
            raise ChangeAgentError(msg + " - lower the lr, check the data, or set train.skip_nonfinite=true")
        self.skipped += 1
        self._say(f"skipped batch: {msg}")
        self.log.write({"kind": "skip", "step": self.step + 1, "message": msg})
        return {}

    # -- stages ------------------------------------------------------------------------------------
    def _setup_stage(self, st: dict[str, Any]) -> int:
        info = self.info
        self.stage_name, self._opt_stage = st["name"], self.stage
        self._t_warm: float | None = None  # when this stage's lr warm-up ended (budget schedule)
        total = self._stage_len = self._stage_total(st)
        parts = build_stage(self.model, st, self.c, info, total)
        self.weighting, self.opt, self.sched, self.scaler = parts.weighting, parts.opt, parts.sched, parts.scaler
        self.net, self.ddp, self.shared_params = parts.net, parts.ddp, parts.shared_params
        if self.ckpt is not None:  # first stage after a resume
            ck, self.ckpt = self.ckpt, None
            restore_stage(self, ck)
            self._say(f"resumed from step {self.step} (stage '{st['name']}', epoch {self.epoch})")
        return total

    def _time_progress(self) -> float:
        """Share of the time budget after this stage's warm-up that is used (0 during the warm-up);
        the end keeps the margin `_check_stop` reserves for the last validation."""
        if self.stage_step + 1 < int(self.cfg.sched.warmup_steps):
            return 0.0
        now = time.monotonic()
        if self._t_warm is None:
            self._t_warm = now
        end = self.t0 + self.cfg.train.max_minutes * 60 - self._val_seconds * 1.2
        return min(max((now - self._t_warm) / max(end - self._t_warm, 1e-6), 0.0), 1.0)

    def _stage_total(self, st: dict[str, Any]) -> int:
        if st["steps"] is not None:
            return int(st["steps"])
        per_epoch = max(self.data.batches_per_epoch // self.cfg.train.grad_accum, 1)
        return max(math.ceil(float(st["epochs"]) * per_epoch), 1)

    @property
    def pairs_per_step(self) -> int:
        return self.cfg.data.batch_size * self.cfg.train.grad_accum * self.info.world_size

    def _autocast(self) -> Any:
        dtype = autocast_dtype(self.cfg.train.amp, self.info.device, self.info.is_main)
        return nullcontext() if dtype is None else torch.autocast(self.info.device.type, dtype=dtype)

    # -- data ---------------------------------------------------------------------------------------
    def _next_batch(self) -> dict[str, Any]:
        while True:
            if self._iter is None:
                self._iter = iter(train_loader(self.data, self.cfg, self.epoch, self.batch_in_epoch))
            try:
                batch = next(self._iter)
                self.batch_in_epoch += 1
                return batch
            except StopIteration:
                self._iter = None
                self.epoch += 1
                self.batch_in_epoch = 0
                self.weighting.end_period()

    def _epoch_progress(self) -> float:
        return self.epoch + self.batch_in_epoch / max(self.data.batches_per_epoch, 1)

    # -- validation, stopping, checkpoints ------------------------------------------------------------
    def _eval_due(self, epoch_before: float) -> bool:
        ev = self.cfg.eval
        if ev.every_steps and self.step % ev.every_steps == 0:
            return True
        if ev.every_epochs:
            return math.floor(self._epoch_progress() / ev.every_epochs) > math.floor(epoch_before / ev.every_epochs)
        return False

    def _eval_in_share(self) -> bool:
        """False while validations so far took more than `eval.time_share` of the wall time: a slow
        device (a CPU run of a GPU recipe) then validates less often instead of mostly validating."""
        share = self.cfg.eval.time_share
        if share is None or self._val_total <= share * (time.monotonic() - self.t0):
            return True
        self._say_once(f"note: validating less often than eval.every_* to keep validation under "
                       f"eval.time_share={share} of the wall time")
        return False

    def _check_stop(self) -> None:
        tr = self.cfg.train
        reason = None
        if tr.stop_at_step is not None and self.step >= tr.stop_at_step:
            reason = "stop_at_step"
        elif tr.max_minutes is not None:
            # stop early enough to validate and save inside the budget
            left = tr.max_minutes * 60 - (time.monotonic() - self.t0)
            if left <= self._val_seconds * 1.2:
                reason = "time_budget"
        if any_true(reason is not None, self.info):
            self.stop_reason = reason or "time_budget"

    def _validate(self) -> dict[str, Any]:
        t = time.monotonic()
        ev = self.cfg.eval
        opts = EvalOptions.from_config(self.cfg, vis_pairs=ev.vis_pairs if self.wandb.active else 0)
        weights = self._eval_weights()
        model = self.ema.module if (weights == "ema" and self.ema is not None) else self.model
        broadcast_buffers_(model, self.info)  # evaluate (and save) rank 0's BatchNorm statistics
        results, vis = evaluate(model, self.data.val_loaders, self.data.vocab, self.info, opts)
        score = selection_score(results, ev.select)
        self._last_val_step = self.step
        improved = score > self.best_score
        if improved:
            self.best_score, self.best_step, self.bad_evals = score, self.step, 0
        else:
            self.bad_evals += 1
            if ev.patience is not None and self.bad_evals >= ev.patience and self.stop_reason is None:
                self.stop_reason = "early_stop"
        if self.info.is_main:
            rec = {"kind": "val", "step": self.step, "stage": self.stage_name, "epoch": self._epoch_progress(),
                   "weights": weights, "score": score, "best_score": self.best_score, **results}
            self.log.write(rec)
            tqdm.write(format_table(results, f"validation at step {self.step}, {weights} weights (score "
                                             f"{score:.4f}{', best' if improved else ''})",
                                    notes=table_notes(opts, results)))
            self.wandb.log({**flatten({"val": results}), "val/score": score}, self.step)
            self.wandb.log_predictions(vis, self.step)
            if improved:
                export_best(model, self.out, {**self.kept_norm, **opts.norm},
                            {"step": self.step, "score": score, "select": ev.select, **results,
                             "eval": opts.record()},
                            self.trained, training=self.training_record(score))
                self.wandb.log_summary({"best/score": score, "best/step": self.step})
        self._val_seconds = time.monotonic() - t
        self._val_total += self._val_seconds
        return results

    def training_record(self, score: float | None) -> dict[str, Any]:
        """What best/ and last.pt record the model was trained on (engine.checkpoint.training_record)."""
        return training_record(self.cfg, self.data.roots, self.step, score, self.cfg.eval.select, self.out)

    def _eval_weights(self) -> str:
        """"ema" once the EMA has warmed up (`optim.EMA.warmed_up`), else "model": until then the
        average is still a short-window copy of recent weights and best/ keeps the raw model."""
        if self.ema is None:
            return "model"
        if self.ema.warmed_up:
            return "ema"
        self._say_once(f"note: validating the raw weights until the EMA (train.ema={self.ema.decay}) has warmed "
                       f"up at step {ema_warmup_steps(self.ema.decay)}")
        return "model"

    def _say_once(self, msg: str) -> None:
        say_once(msg, self.info.is_main)

    def _save(self) -> None:
        if self._last_save_step == self.step and self.stage_step != 0:
            return
        state = capture(self)  # every rank: the RNG streams are gathered
        self._last_save_step = self.step
        if state is not None:
            save_checkpoint(state, self.out / "last.pt")

    def _log_train(self, rec: dict[str, Any], bar: tqdm) -> None:
        if not self.info.is_main:
            return
        rec = {"kind": "train", "step": self.step, "stage": self.stage_name, "epoch": self._epoch_progress(), **rec}
        self.log.write(rec)
        self.wandb.log({f"train/{k}": v for k, v in rec.items() if isinstance(v, (int, float))}, self.step)
        tasks = {f"loss/{t}" for t in self.model.tasks}  # each task's loss, not its parts
        bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in rec.items() if k in tasks},
                        lr=f"{rec.get('lr', 0):.2e}")

    def _say(self, msg: str) -> None:
        if self.info.is_main:
            tqdm.write(msg)
