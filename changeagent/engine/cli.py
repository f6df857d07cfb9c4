"""`changeagent train`, `changeagent eval` and `changeagent demo` (see docs/training.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

OVERRIDES_HELP = ("config overrides as dotted key=value, e.g. model=fast train.steps=2000 "
                  "data.levir_mci.root=/data/LEVIR-MCI run.out_dir=runs/x")


def _common(parser: argparse.ArgumentParser, config_required: bool) -> None:
    parser.add_argument("-c", "--config", required=config_required,
                        help="run config: a YAML file, or a shipped config by name from any folder "
                             "(levir_mci, joint, ...; configs/NAME.yaml works too)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    parser.add_argument("--json", metavar="OUT", help="also write a machine-readable result to this JSON file")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, config_required=True)
    parser.add_argument("--resume", metavar="PATH",
                        help="continue exactly from a last.pt (or a run folder); same as resume=PATH")


def run_train(args: argparse.Namespace) -> int:
    from changeagent.engine.schema import load_run_config
    from changeagent.engine.trainer import train
    from changeagent.fileio import write_json_atomic

    overrides = list(args.overrides) + ([f"resume={args.resume}"] if args.resume else [])
    cfg = load_run_config(args.config, overrides)
    summary = train(cfg)
    if args.json:
        write_json_atomic(Path(args.json), summary)
    print(best_line(summary, cfg.eval.select))
    return 0


def best_line(summary: dict, select: str) -> str:
    """The one line a run ends with: where its best model is and the score it was chosen on."""
    if summary.get("best_step", -1) < 0:
        return f"no best model: no validation ran (run folder {summary['out_dir']})"
    return (f"best model: {Path(summary['out_dir']) / 'best'} (val {select} {summary['best_score']:.4f} "
            f"at step {summary['best_step']}; stopped: {summary['stop_reason']})")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, config_required=True)
    parser.add_argument("--checkpoint", "-k", required=True, help="a best/ model folder, a run folder or a last.pt file")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--out", help="folder for metrics.json (and predictions/)")
    parser.add_argument("--save-predictions", action="store_true",
                        help="write predicted mask PNGs and captions.json per dataset under OUT/predictions/")


def run_eval(args: argparse.Namespace) -> int:
    from changeagent.engine.runs import evaluate_checkpoint
    from changeagent.engine.schema import load_run_config
    from changeagent.errors import ChangeAgentError
    from changeagent.fileio import write_json_atomic

    if args.save_predictions and not args.out:
        raise ChangeAgentError("--save-predictions needs --out")
    cfg = load_run_config(args.config, args.overrides, checkpoint=args.checkpoint, out=args.out)
    results = evaluate_checkpoint(cfg, Path(args.checkpoint), args.split, Path(args.out) if args.out else None,
                                  save_predictions=args.save_predictions)
    if args.json:
        write_json_atomic(Path(args.json), results)
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="run folder (data, checkpoints, metrics)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="overrides of configs/demo.yaml")
    parser.add_argument("--json", metavar="OUT", help="also write the demo report to this JSON file")


def run_demo(args: argparse.Namespace) -> int:
    from changeagent.engine.runs import run_demo as demo
    from changeagent.fileio import write_json_atomic

    report = demo(Path(args.out), list(args.overrides))
    if args.json:
        write_json_atomic(Path(args.json), report)
    return 0


def add_config_show_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser, config_required=False)
    parser.add_argument("--checkpoint", help="show the config `eval --checkpoint` runs: with the statistics this "
                                             "model folder / last.pt records per dataset")
    parser.add_argument("--out", help="with --checkpoint: eval's --out (where synthetic data goes when the "
                                      "training run's is not next to the checkpoint)")


def run_config_show(args: argparse.Namespace) -> int:
    """Print the resolved, validated run config as YAML: every key with the value that runs (defaults,
    train.init_from's model/vocabulary/statistics, and with --checkpoint what eval takes from it)."""
    from omegaconf import OmegaConf

    from changeagent.config import to_dict
    from changeagent.engine.schema import load_run_config
    from changeagent.fileio import write_json_atomic

    cfg = load_run_config(args.config, args.overrides, checkpoint=args.checkpoint, out=args.out)
    print(OmegaConf.to_yaml(cfg), end="")
    if args.json:
        write_json_atomic(Path(args.json), to_dict(cfg))
    return 0
