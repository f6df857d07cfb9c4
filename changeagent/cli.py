"""The single command-line entry point: `changeagent <command> ...`.

Each sub-command lives in its concern's `cli.py` as `add_<name>_arguments(parser)` and
`run_<name>(args) -> int`; this file only wires them up, importing a module when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Sequence

from changeagent import __version__
from changeagent.errors import ChangeAgentError

# command path -> (module, function stem, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("data", "synth"): ("changeagent.data.synth.cli", "synth", "generate the synthetic benchmark in a real layout"),
    ("data", "check"): ("changeagent.data.cli", "check", "validate a dataset folder"),
    ("data", "vocab"): ("changeagent.data.cli", "vocab", "build a caption vocabulary from caption JSON"),
    ("train",): ("changeagent.engine.cli", "train", "train a model (one process or under torchrun)"),
    ("eval",): ("changeagent.engine.cli", "eval", "evaluate a checkpoint: masks and captions together"),
    ("demo",): ("changeagent.engine.cli", "demo", "synthesise data, train jointly, evaluate (make demo)"),
    ("score-captions",): ("changeagent.metrics.cli", "score_captions", "score captions with the COCO protocol"),
    ("model-info",): ("changeagent.models.cli", "model_info", "parameter counts of a model config"),
    ("bench",): ("changeagent.models.cli", "bench", "time training and inference of a model config"),
    ("predict",): ("changeagent.inference.cli", "predict", "mask + caption for pairs, folders or scenes"),
}


def _available(module: str) -> bool:
    """True when the command's module exists (lets the tree grow one concern at a time)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="changeagent", description="Remote-sensing change understanding: change masks and captions."
    )
    parser.add_argument("--version", action="version", version=f"changeagent {__version__}")
    subs: dict[tuple[str, ...], argparse._SubParsersAction] = {(): parser.add_subparsers(dest="command")}
    groups: dict[tuple[str, ...], argparse.ArgumentParser] = {}
    for path, (module, stem, help_text) in COMMANDS.items():
        if not _available(module):
            continue
        for i in range(1, len(path)):
            prefix = path[:i]
            if prefix not in groups:
                g = subs[prefix[:-1]].add_parser(prefix[-1], help=f"{prefix[-1]} commands")
                groups[prefix] = g
                subs[prefix] = g.add_subparsers(dest="_".join(prefix) + "_command")
        mod = importlib.import_module(module)
        adder = getattr(mod, f"add_{stem}_arguments", None)
        runner = getattr(mod, f"run_{stem}", None)
        if adder is None or runner is None:
            continue
        p = subs[path[:-1]].add_parser(
            path[-1], help=help_text, description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        adder(p)
        p.set_defaults(_run=runner)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 1
    try:
        return int(run(args) or 0)
    except ChangeAgentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
