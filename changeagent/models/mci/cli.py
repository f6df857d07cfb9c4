"""`changeagent convert change-agent CKPT.pth --vocab VOCAB.json -o DIR`: the published MCI as a model folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_convert_change_agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path,
                        help="Change-Agent checkpoint (e.g. MCI_model.pth: encoder_dict, encoder_trans_dict, "
                             "decoder_dict); read with torch.load(weights_only=True), nothing in it is executed")
    parser.add_argument("--vocab", type=Path, required=True,
                        help="the vocab.json the checkpoint was trained with (the 468-word LEVIR-MCI vocabulary)")
    parser.add_argument("-o", "--out", type=Path, required=True,
                        help="model folder to write (config.json, model.safetensors, vocab.json); replaced "
                             "atomically if it exists")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the summary as JSON here")


def run_convert_change_agent(args: argparse.Namespace) -> int:
    from changeagent.models.mci.convert import convert_change_agent

    summary = convert_change_agent(args.checkpoint, args.vocab, args.out)
    p = summary["params"]
    print(f"converted {args.checkpoint} -> {summary['out']}: mci, {p['total']:,} parameters, vocabulary "
          f"{summary['vocab_size']}; {summary['mapped']} tensors mapped, {summary['ignored']} unused reference "
          f"tensors dropped")
    if args.json:
        from changeagent.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(summary, indent=2) + "\n")
    return 0
