"""The single command-line entry point: `changeagent <command> ...`.

Each sub-command lives in its concern's `cli.py` as `add_<name>_arguments(parser)` and
`run_<name>(args) -> int`; this file only wires them up, importing a module when it is used.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from changeagent import __version__
from changeagent.errors import ChangeAgentError
from changeagent.paths import check_output_file, check_output_folder

# command path -> (module, function stem, one-line help)
COMMANDS: dict[tuple[str, ...], tuple[str, str, str]] = {
    ("data", "synth"): ("changeagent.data.synth.cli", "synth", "generate the synthetic benchmark in a real layout"),
    ("data", "check"): ("changeagent.data.cli", "check", "validate a dataset folder"),
    ("data", "vocab"): ("changeagent.data.cli", "vocab", "build a caption vocabulary from caption JSON"),
    ("data", "qa"): ("changeagent.data.qa.cli", "qa", "derive change questions from label maps (CDVQA schema)"),
    ("data", "ground"): ("changeagent.data.grounding.cli", "ground",
                         "export referring expressions + target masks derived from a dataset's class maps"),
    ("config", "show"): ("changeagent.engine.cli", "config_show", "print the resolved, validated run config"),
    ("train",): ("changeagent.engine.cli", "train", "train a model (one process or under torchrun)"),
    ("eval",): ("changeagent.engine.cli", "eval", "evaluate a checkpoint: masks and captions together"),
    ("demo",): ("changeagent.engine.cli", "demo", "synthesise data, train jointly, evaluate (make demo)"),
    ("score-captions",): ("changeagent.metrics.cli", "score_captions", "score captions with the COCO protocol"),
    ("score",): ("changeagent.metrics.cli", "score", "score predicted masks against label images (P/R/F1/IoU, MIoU)"),
    ("model-info",): ("changeagent.models.cli", "model_info", "parameter counts of a model config"),
    ("bench",): ("changeagent.models.cli", "bench", "time training and inference of a model config"),
    ("export",): ("changeagent.models.cli", "export", "export a model folder for deployment (ONNX graphs + manifest)"),
    ("convert", "change-agent"): ("changeagent.models.mci.cli", "convert_change_agent",
                                  "convert a Change-Agent MCI checkpoint into a model folder"),
    ("predict",): ("changeagent.inference.cli", "predict", "mask + caption for pairs, folders or scenes"),
    ("index",): ("changeagent.inference.cli", "index", "embed pairs, scene windows or a split into a search index"),
    ("search",): ("changeagent.inference.cli", "search", "find pairs / scene windows matching a change description"),
    ("ask",): ("changeagent.inference.ask_cli", "ask", "ask about a change: learned answer + measured answer with evidence"),
    ("ground",): ("changeagent.inference.ground_cli", "ground",
                  "mask of the change a sentence describes (pair or GeoTIFF scene): PNG/GeoTIFF, overlay, JSON"),
    ("serve",): ("changeagent.app.cli", "serve", "web app: upload or choose two images, see mask, caption, counts, search"),
    ("mcp",): ("changeagent.app.cli", "mcp", "Model Context Protocol tool server for LLM agents (stdio or HTTP)"),
}


# argparse destinations that name an output folder / an output file in every command that has them;
# checked before the command runs, so a file where a folder is meant is one `error:` line, not a
# traceback after the work is done
OUTPUT_FOLDERS = ("out",)
OUTPUT_FILES = ("json", "json_out", "geojson", "output")


def check_outputs(args: argparse.Namespace) -> None:
    """Output folders must not be files, output files must not be folders (changeagent.paths)."""
    for dest in OUTPUT_FOLDERS:
        if getattr(args, dest, None):
            check_output_folder(getattr(args, dest), f"--{dest}")
    for dest in OUTPUT_FILES:
        if getattr(args, dest, None):
            check_output_file(getattr(args, dest), f"--{dest.replace('_out', '').replace('_', '-')}")


def _available(module: str) -> bool:
    """True when the command's module exists (lets the tree grow one concern at a time)."""
    # a file check, not find_spec: that would import the parent packages (torch, torchmetrics...)
    rel = Path(*module.split(".")[1:]).with_suffix(".py")
    return (Path(__file__).resolve().parent / rel).is_file()


def _command_of(argv: Sequence[str]) -> tuple[str, ...] | None:
    """The command path named by argv (e.g. ("data", "check")), so only its module is imported."""
    words = [a for a in argv if not a.startswith("-")]
    for n in (2, 1):
        if tuple(words[:n]) in COMMANDS:
            return tuple(words[:n])
    return None


def build_parser(only: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    """The full command tree; with `only`, just that command's module is imported (fast start)."""
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
        p = subs[path[:-1]].add_parser(
            path[-1], help=help_text, description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        if only is not None and path != only:
            continue
        mod = importlib.import_module(module)
        getattr(mod, f"add_{stem}_arguments")(p)
        p.set_defaults(_run=getattr(mod, f"run_{stem}"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=_command_of(argv) or ())
    args, extra = parser.parse_known_args(argv)
    # argparse gives a `nargs="*"` positional only one run of words, so `key=value` overrides written
    # both before and after options (`eval -c C model=fast --checkpoint K data.x.root=P`) would be
    # refused; they are config overrides wherever they stand, in the order given
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*(args.overrides or []), *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help()
        return 1
    try:
        check_outputs(args)
        return int(run(args) or 0)
    except ChangeAgentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the checks above cannot foresee (permissions, a full disk, ...)
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
