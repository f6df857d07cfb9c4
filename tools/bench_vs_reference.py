"""`tools/bench.py --vs REF_DIR`: the reference MCI code, timed beside ours under the same protocol.

REF_DIR is a local checkout of Change-Agent (github.com/Chen-Yang-Liu/Change-Agent; it is never
committed here) or its `Multi_change/` folder. Its model is imported from there as the reference's
own `test.py` builds it (`model.model_encoder_att.Encoder`, `AttentiveEncoder`,
`model.model_decoder.DecoderTransformer`) with its LEVIR-MCI defaults (`REFERENCE_DEFAULTS`, the
argparse defaults of its `train.py`), random weights or `--checkpoint` (its `MCI_model.pth`).

One child process per part, as for our models, so each JSON's peak RSS is that part's alone:

    python tools/bench_vs_reference.py --ref REF_DIR --part train --json OUT   # batch --batch step, s/pair
    python tools/bench_vs_reference.py --ref REF_DIR --part infer --json OUT   # batch 1, greedy caption

What the tool changes so that the reference runs here, and why:
- its code calls `.cuda()` on tensors it creates; off CUDA, `Tensor.cuda` moves to `--device` instead;
- its SegFormer constructor reads ImageNet weights from `model/pretrained/mit_b1.pth`: it is handed an
  empty state instead, so the weights stay random (timing does not depend on them; the file need not
  be there); `mmcv`/`mmseg`, which that file imports only to load such weights, are stubbed when absent;
- its greedy `sample` decodes `max_lengths` tokens unless `<END>` wins: `max_lengths` is set to
  `--decode-len` and `<END>`'s output bias to -1e4, so it decodes exactly as many tokens as ours.
Bad input (a missing folder, a folder that is not that code, code that does not import) is
`error: ...` and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: this checkout's changeagent
    sys.path.insert(0, str(ROOT))

from changeagent.errors import ChangeAgentError  # noqa: E402

# the reference train.py's argparse defaults for LEVIR-MCI (its test.py uses the same)
REFERENCE_DEFAULTS: dict[str, Any] = {"network": "segformer-mit_b1", "encoder_dim": 512, "feat_size": 16,
                                      "n_heads": 8, "n_layers": 3, "decoder_n_layers": 1, "feature_dim": 512,
                                      "max_length": 41, "dropout": 0.1, "train_stage": "s1"}
MODEL_FILES = ("model_encoder_att.py", "model_decoder.py")
CLASSES = (("model.model_encoder_att", "Encoder"), ("model.model_encoder_att", "AttentiveEncoder"),
           ("model.model_decoder", "DecoderTransformer"))


def find_reference(ref_dir: str | Path) -> Path:
    """The reference's `Multi_change/` folder in `ref_dir` (the checkout or that folder itself)."""
    p = Path(ref_dir).expanduser()
    if not p.is_dir():
        raise ChangeAgentError(f"--vs {p}: no such folder (give a local checkout of Chen-Yang-Liu/Change-Agent)")
    for cand in (p / "Multi_change", p):
        if all((cand / "model" / f).is_file() for f in MODEL_FILES):
            return cand.resolve()
    raise ChangeAgentError(f"--vs {p}: not the Change-Agent code (no Multi_change/model/{' or '.join(MODEL_FILES)})")


def _stub_missing(names: dict[str, dict[str, Any]]) -> list[str]:
    """Put empty modules for the packages in `names` that are not installed (with the given attributes)."""
    stubbed = []
    for name, attrs in names.items():
        top = name.split(".")[0]
        if top in sys.modules or importlib.util.find_spec(top) is not None:
            continue
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for k, v in attrs.items():
            setattr(sys.modules[name], k, v)
        stubbed.append(top)
    return stubbed


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("stubbed: the benchmark does not load pretrained weights")


def load_reference(folder: Path) -> tuple[dict[str, Any], list[str]]:
    """Import the reference's model classes from `folder` (Multi_change/) -> ({name: class}, stubbed packages)."""
    # segformer.py imports these to load ImageNet weights only (never called here)
    stubbed = _stub_missing({"mmseg.utils": {"get_root_logger": _unused}, "mmcv.runner": {"load_checkpoint": _unused}})
    sys.path.insert(0, str(folder))
    classes: dict[str, Any] = {}
    for module, name in CLASSES:
        try:
            mod = importlib.import_module(module)
        except Exception as e:  # its own requirements (einops, timm, ...) or a foreign file
            raise ChangeAgentError(f"--vs {folder}: cannot import the reference's {module} ({type(e).__name__}: {e}); "
                                   f"install its requirements ({folder / 'requirement.txt'})") from None
        if Path(mod.__file__ or "").resolve() != (folder / "model" / f"{module.split('.')[-1]}.py").resolve():
            raise ChangeAgentError(f"--vs {folder}: `{module}` was imported from {mod.__file__}, not from the reference")
        cls = getattr(mod, name, None)
        if not isinstance(cls, type):
            raise ChangeAgentError(f"--vs {folder}: not the Change-Agent code ({module} has no class {name})")
        classes[name] = cls
    return classes, stubbed


@contextlib.contextmanager
def _no_pretrained(folder: Path) -> Iterator[None]:
    """While the reference builds: `torch.load` of its `model/pretrained/*` gives an empty backbone state
    (+ the classifier keys its SegFormer wrapper pops), so the backbone keeps its random weights."""
    import torch

    real = torch.load
    pretrained = (folder / "model" / "pretrained").resolve()

    def load(f: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(f, (str, Path)) and Path(f).resolve().parent == pretrained:
            return {"head.weight": torch.zeros(0), "head.bias": torch.zeros(0)}
        return real(f, *args, **kwargs)

    torch.load = load  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.load = real


def reference_vocab(folder: Path) -> dict[str, int]:
    """Its LEVIR-MCI vocabulary (data/LEVIR_MCI/vocab.json; 468 words), else 468 ids with its specials."""
    path = folder / "data" / "LEVIR_MCI" / "vocab.json"
    if path.is_file():
        try:
            vocab = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ChangeAgentError(f"--vs {path}: not a vocabulary ({e})") from None
        if isinstance(vocab, dict) and all(k in vocab for k in ("<NULL>", "<START>", "<END>")):
            return {str(k): int(v) for k, v in vocab.items()}
        raise ChangeAgentError(f"--vs {path}: not a vocabulary (needs <NULL>, <START>, <END>)")
    from changeagent.data.constants import SPECIALS

    return {**{s: i for i, s in enumerate(SPECIALS)}, **{f"w{i}": i for i in range(len(SPECIALS), 468)}}


def build_reference(folder: Path, classes: dict[str, Any], vocab: dict[str, int], decode_len: int,
                    checkpoint: str | None) -> tuple[Any, Any, Any]:
    """(encoder, encoder_trans, decoder) as the reference's test.py builds them, with REFERENCE_DEFAULTS."""
    import torch

    d = REFERENCE_DEFAULTS
    if not 1 <= decode_len <= d["max_length"]:
        raise ChangeAgentError(f"--decode-len {decode_len}: the reference decodes 1..{d['max_length']} tokens")
    try:
        with _no_pretrained(folder):
            encoder = classes["Encoder"](d["network"])
        trans = classes["AttentiveEncoder"](train_stage=d["train_stage"], n_layers=d["n_layers"],
                                            feature_size=[d["feat_size"], d["feat_size"], d["encoder_dim"]],
                                            heads=d["n_heads"], dropout=d["dropout"])
        decoder = classes["DecoderTransformer"](encoder_dim=d["encoder_dim"], feature_dim=d["feature_dim"],
                                                vocab_size=len(vocab), max_lengths=d["max_length"], word_vocab=vocab,
                                                n_head=d["n_heads"], n_layers=d["decoder_n_layers"],
                                                dropout=d["dropout"])
    except TypeError as e:  # other constructor signatures: another version of the code
        raise ChangeAgentError(f"--vs {folder}: its model classes do not take the LEVIR-MCI arguments ({e})") from None
    if checkpoint:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
            encoder.load_state_dict(state["encoder_dict"])
            trans.load_state_dict(state["encoder_trans_dict"], strict=False)  # as its test.py loads it
            decoder.load_state_dict(state["decoder_dict"])
        except Exception as e:
            raise ChangeAgentError(f"--vs-checkpoint {checkpoint}: not a Change-Agent MCI checkpoint ({e})") from None
    if not isinstance(getattr(decoder, "wdc", None), torch.nn.Linear) or not hasattr(decoder, "max_lengths"):
        raise ChangeAgentError(f"--vs {folder}: its DecoderTransformer has no `wdc` / `max_lengths`")
    decoder.max_lengths = decode_len  # its greedy loop's length
    with torch.no_grad():
        decoder.wdc.bias[vocab["<END>"]] = -1e4  # never chosen: a fixed-length caption, as ours (min_len)
    return encoder, trans, decoder


def run_reference(ref: str | Path, part: str, *, size: int = 256, batch: int = 8, steps: int = 5, warmup: int = 2,
                  threads: int = 2, decode_len: int = 9, caption_len: int = 25, device: str = "cpu", seed: int = 0,
                  checkpoint: str | None = None) -> dict[str, Any]:
    """Time one part of the reference: "train" (a step at `batch`) or "infer" (batch 1: masks + greedy caption)."""
    folder = find_reference(ref)
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    from changeagent.devices import resolve_device
    from changeagent.models.bench import _peak_rss_mb, _timed

    if part not in ("train", "infer"):
        raise ChangeAgentError(f"--part {part!r}: train or infer")
    dev = resolve_device(device)
    if dev.type != "cuda":  # its code creates tensors with .cuda(): keep them on our device
        torch.Tensor.cuda = lambda self, *a, **k: self.to(dev)  # type: ignore[method-assign, assignment]
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    classes, stubbed = load_reference(folder)
    vocab = reference_vocab(folder)
    encoder, trans, decoder = (m.to(dev) for m in build_reference(folder, classes, vocab, decode_len, checkpoint))
    modules = (encoder, trans, decoder)
    result: dict[str, Any] = {
        "model": "reference", "reference": str(folder), "part": part, "size": size, "steps": steps,
        "warmup": warmup, "device": str(dev), "threads": threads, "decode_len": decode_len, "torch": torch.__version__,
        "stubbed": stubbed, "weights": checkpoint or "random", "vocab_size": len(vocab), "defaults": REFERENCE_DEFAULTS,
        "params": {"total": sum(p.numel() for m in modules for p in m.parameters()),
                   "encoder": sum(p.numel() for p in encoder.parameters()),
                   "encoder_trans": sum(p.numel() for p in trans.parameters()),
                   "decoder": sum(p.numel() for p in decoder.parameters())},
    }
    if part == "train":
        for m in modules:
            m.train()
        opt = torch.optim.Adam([p for m in modules for p in m.parameters()], lr=1e-4)  # its optimiser
        a = torch.randn(batch, 3, size, size, generator=gen).to(dev)
        b = torch.randn(batch, 3, size, size, generator=gen).to(dev)
        caps = torch.randint(4, len(vocab), (batch, caption_len), generator=gen)
        caps[:, 0], caps[:, -1] = vocab["<START>"], vocab["<END>"]
        caps = caps.to(dev)
        lengths = torch.full((batch,), caption_len, dtype=torch.long, device=dev)
        labels = torch.randint(0, 3, (batch, size, size), generator=gen).to(dev)
        ce = torch.nn.CrossEntropyLoss()

        def train_step() -> None:  # its train.py's sequence: both losses, one backward, one optimiser step
            f1, f2 = encoder(a, b)
            f1, f2, seg = trans(f1, f2)
            scores, caps_sorted, decode_lengths, _ = decoder(f1, f2, caps, lengths)
            scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
            targets = pack_padded_sequence(caps_sorted[:, 1:], decode_lengths, batch_first=True).data
            loss = ce(scores, targets) + ce(seg, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        s = _timed(train_step, steps, warmup, dev, "reference train")
        result.update(batch=batch, caption_len=caption_len, train_s_per_step=s, train_s_per_pair=s / batch)
    else:
        for m in modules:
            m.eval()
        a = torch.randn(1, 3, size, size, generator=gen).to(dev)
        b = torch.randn(1, 3, size, size, generator=gen).to(dev)
        tokens: list[int] = []

        def infer() -> None:  # its test.py's sequence at its batch size 1
            with torch.inference_mode():
                f1, f2 = encoder(a, b)
                f1, f2, seg = trans(f1, f2)
                seq = decoder.sample(f1, f2, k=1)
            tokens[:] = [int(t) for t in seq]

        s = _timed(infer, steps, max(1, warmup // 2), dev, "reference predict b1")
        if len(tokens) != decode_len + 1:  # <START> + decode_len words: else the timing is not comparable
            raise ChangeAgentError(f"--vs {folder}: the reference decoded {len(tokens) - 1} tokens, not {decode_len}")
        result.update(batch=1, infer_s_per_step_b1=s, infer_s_per_pair_b1=s, tokens=len(tokens) - 1)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def child_command(args: argparse.Namespace, part: str, out: Path) -> list[str]:
    """The argv of the child process that times `part` for tools/bench.py (its settings, --vs folder)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--ref", str(args.vs), "--part", part,
           "--size", str(args.size), "--batch", str(args.batch), "--steps", str(args.steps),
           "--threads", str(args.threads), "--decode-len", str(args.decode_len), "--device", args.device,
           "--json", str(out)]
    return cmd + (["--checkpoint", str(args.vs_checkpoint)] if getattr(args, "vs_checkpoint", None) else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", required=True, help="a checkout of Chen-Yang-Liu/Change-Agent (or its Multi_change/)")
    parser.add_argument("--part", choices=("train", "infer"), required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="training batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-len", type=int, default=9)
    parser.add_argument("--caption-len", type=int, default=25, help="teacher-forced caption length (training)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", default=None, help="its MCI_model.pth (default: random weights)")
    parser.add_argument("--json", required=True, help="result file")
    args = parser.parse_args(argv)
    try:
        if args.checkpoint and not Path(args.checkpoint).is_file():
            raise ChangeAgentError(f"--vs-checkpoint {args.checkpoint}: no such file")
        res = run_reference(args.ref, args.part, size=args.size, batch=args.batch, steps=args.steps,
                            warmup=args.warmup, threads=args.threads, decode_len=args.decode_len,
                            caption_len=args.caption_len, device=args.device, checkpoint=args.checkpoint)
    except ChangeAgentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
