"""`changeagent model-info` and `changeagent bench`: size a model config before training it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from changeagent.errors import ChangeAgentError


def _model_config(overrides: list[str]) -> dict[str, Any]:
    from changeagent.config import load_config, to_dict

    if not any(o.startswith("model=") for o in overrides):
        raise ChangeAgentError("give a model config: model=NAME (a file in configs/model/) or model=path.yaml, "
                               "then optional overrides such as model.encoder=resnet34")
    cfg = to_dict(load_config(None, overrides))
    model = cfg.get("model")
    if not isinstance(model, dict):
        raise ChangeAgentError("give a model config: model=NAME (a file in configs/model/) or model=path.yaml, "
                               "then optional overrides such as model.encoder=resnet34")
    if model.get("name") is None:
        names = [o.split("=", 1)[1] for o in overrides if o.startswith("model=")]
        model["name"] = names[-1] if names else None
    return model


def write_json(path: str, data: dict[str, Any]) -> None:
    from changeagent.fileio import write_text_atomic

    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="model=NAME (configs/model/NAME.yaml) and dotted overrides, e.g. model.encoder=resnet34")
    parser.add_argument("--vocab-size", type=int, default=468, help="caption vocabulary size (reference: 468)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the result as JSON here")


def add_model_info_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--checkpoint", "-k", metavar="MODEL",
                        help="a saved model (a run's best/, a run folder or a last.pt) instead of model=NAME: "
                             "its size and what it was trained on")


def _saved_model(path: str) -> tuple[dict[str, Any], int, dict[str, Any], dict[str, Any] | None]:
    """(model config, vocabulary size, datasets, training record) of a saved model, weights unread."""
    from pathlib import Path

    from changeagent.models import hub

    p = Path(path)
    if not p.exists():
        raise ChangeAgentError(f"--checkpoint {p} does not exist")
    if p.is_dir() and not (p / hub.CONFIG).is_file() and (p / "best" / hub.CONFIG).is_file():
        p = p / "best"
    if p.is_dir() and (p / hub.CONFIG).is_file():
        config = hub.read_config(p)
        return config["model"], config["vocab_size"], dict(config.get("datasets") or {}), hub.training_record(p)
    loaded = hub.load(p)  # a last.pt (or a run folder with only last.pt)
    return loaded.model.config, loaded.model.vocab_size, loaded.datasets, hub.training_record(p)


def _training_lines(datasets: dict[str, Any], record: dict[str, Any] | None) -> list[str]:
    if record is None:
        names = ", ".join(datasets) or "not recorded"
        return [f"trained on: {names} (no training record: a model folder written before it existed)"]
    parts = [f"{n} ({'synthetic' if d.get('synthetic') else 'real'}"
             + (f", {d['root']}" if d.get("root") else "") + ")" for n, d in record["datasets"].items()]
    lines = [f"trained on: {'; '.join(parts)}"]
    if record.get("synthetic_only"):
        lines.append("  only synthetic data: its masks and captions on real imagery mean little")
    sel = record.get("selected_on")
    chosen = (f"; chosen on {sel['split']} {sel['select']} = {sel['score']:.4f}" if sel else "")
    steps = record.get("steps")
    lines.append(f"steps: {steps if steps is not None else 'not recorded'}{chosen}")
    for key in ("run", "source"):
        if record.get(key):
            lines.append(f"{key}: {record[key]}")
    return lines


def run_model_info(args: argparse.Namespace) -> int:
    from changeagent.models.factory import create_model

    record: dict[str, Any] | None = None
    datasets: dict[str, Any] = {}
    if args.checkpoint:
        if args.overrides:
            raise ChangeAgentError("give either --checkpoint MODEL or model=NAME [overrides], not both")
        cfg, vocab_size, datasets, record = _saved_model(args.checkpoint)
        cfg = {**cfg, "encoder_weights": None, "compile": False}
        cfg.setdefault("name", None)
    else:
        cfg, vocab_size = _model_config(args.overrides), args.vocab_size
    model = create_model(cfg, vocab_size, device="meta")  # shapes only: nothing allocated
    counts = model.param_counts()
    conf = model.config
    if conf.get("type") == "mci":
        neck = "MCI detection + caption necks (the reference)"
    else:
        neck = f"{conf['neck']['name']}{' (separate caption neck)' if conf['separate_necks'] else ''}"
    print(f"model {cfg.get('name') or args.checkpoint or '?'}: encoder {conf['encoder']}, neck {neck}, "
          f"vocabulary {vocab_size}, tasks {', '.join(model.tasks)}")
    print(f"{'part':<16}{'parameters':>14}{'share':>8}")
    for part in [*(k for k in counts if k != "total"), "total"]:  # the trunk's parts, then one per head
        n = counts[part]
        print(f"{part:<16}{n:>14,}{100 * n / counts['total']:>7.1f}%")
    if args.checkpoint:
        print("\n".join(_training_lines(datasets, record)))
    if args.json:
        result: dict[str, Any] = {"model": cfg.get("name"), "vocab_size": vocab_size, "tasks": model.tasks,
                                  "params": counts,
                                  "config": model.config}
        if args.checkpoint:
            result.update(checkpoint=args.checkpoint, datasets=list(datasets), training=record)
        write_json(args.json, result)
    return 0


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)
    parser.add_argument("--batch", type=int, default=8, help="training batch size")
    parser.add_argument("--size", type=int, default=256, help="image height and width (multiple of 32)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--caption-len", type=int, default=25, help="caption length L in training steps")
    parser.add_argument("--decode-len", type=int, default=12,
                        help="tokens generated per caption at inference (fixed, so models compare fairly)")
    parser.add_argument("--infer-batches", default="1,16", help="comma-separated inference batch sizes")
    parser.add_argument("--skip-train", action="store_true", help="time inference only")
    parser.add_argument("--no-per-task", action="store_true",
                        help="time inference with every head only (not also each task's head alone)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile every part first (model.channels_last=false switches channels-last off)")
    parser.add_argument("--seed", type=int, default=0)


def run_bench(args: argparse.Namespace) -> int:
    from changeagent.models.bench import run_benchmark

    if args.size <= 0 or args.size % 32:
        raise ChangeAgentError(f"--size must be a positive multiple of 32, got {args.size}")
    for name in ("batch", "steps", "threads", "caption_len", "decode_len"):
        if getattr(args, name) < 1 or (name == "caption_len" and args.caption_len < 2):
            raise ChangeAgentError(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    try:
        batches = [int(b) for b in args.infer_batches.split(",") if b.strip()]  # "": no inference
    except ValueError:
        raise ChangeAgentError(f"--infer-batches must be comma-separated integers, got {args.infer_batches!r}") from None
    cfg = _model_config(args.overrides)
    result = run_benchmark(cfg, vocab_size=args.vocab_size, batch=args.batch, size=args.size, steps=args.steps,
                           warmup=args.warmup, device=args.device, threads=args.threads,
                           caption_len=args.caption_len, decode_len=args.decode_len, infer_batches=batches,
                           seed=args.seed, train=not args.skip_train, per_task=not args.no_per_task,
                           compile=args.compile)
    print(f"model {cfg.get('name') or '?'}: {result['params']['total']:,} parameters, "
          f"{args.size}x{args.size}, {args.threads} threads, device {args.device}")
    if "train_s_per_pair" in result:
        print(f"  train   batch {args.batch:>3}: {result['train_s_per_pair'] * 1000:9.1f} ms/pair")
    for b in batches:
        print(f"  predict batch {b:>3}: {result[f'infer_s_per_pair_b{b}'] * 1000:9.1f} ms/pair "
              f"(every head; sequences of {args.decode_len} tokens)")
        for task, sec in (result.get(f"tasks_s_per_pair_b{b}") or {}).items():
            print(f"    {task:<12} alone: {sec * 1000:9.1f} ms/pair")
    print(f"  peak RSS: {result['peak_rss_mb']:.0f} MB")
    if args.json:
        write_json(args.json, result)
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = "changeagent export --checkpoint runs/x/best --format onnx -o deploy/x  (docs/export.md)"
    parser.add_argument("--checkpoint", "-k", required=True, help="model folder (a run's best/), a run folder or last.pt")
    parser.add_argument("--format", choices=("onnx",), default="onnx", help="export format")
    parser.add_argument("--out", "-o", required=True, help="export folder (replaced only once the export is complete)")
    parser.add_argument("--size", type=int, default=None,
                        help="H = W of the example pair the graphs are traced with (None: the model's image_size or 256)")
    parser.add_argument("--no-caption", action="store_true", help="do not export the caption decoder step")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (None: torch's choice)")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the manifest here")


def run_export(args: argparse.Namespace) -> int:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ChangeAgentError(f"export needs the `export` extra (pip install 'changeagent[export]'): {e}") from None
    import torch
    from tqdm import tqdm

    from changeagent.models.export import MANIFEST, export_onnx

    if args.threads is not None:
        if args.threads < 1:
            raise ChangeAgentError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    with tqdm(total=1, desc="export (trace, convert, check with onnxruntime)", leave=False) as bar:
        manifest = export_onnx(args.checkpoint, args.out, size=args.size, caption=not args.no_caption)
        bar.update()
    for name, g in manifest["graphs"].items():
        hw = "" if name != "pair" else (", dynamic H/W" if g["dynamic_hw"] else f", fixed {g['traced_size']}")
        print(f"{g['file']}: {', '.join(i['name'] for i in g['inputs'])} -> "
              f"{', '.join(o['name'] for o in g['outputs'])} (max |diff| vs PyTorch {g['max_abs_diff']:.1e}{hw})")
    for task, why in manifest["not_exported"].items():
        print(f"not exported: {task} ({why})")
    print(f"manifest: {args.out}/{MANIFEST}")
    if args.json:
        write_json(args.json, manifest)
    return 0
