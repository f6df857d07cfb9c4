"""`tools/bench.py --vs REF_DIR` against a tiny fake of the reference's entry points (no network, no real
reference): the plumbing (children, JSON, table), the ratios ours / reference and the error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[2]

# The names and signatures the tool calls, as Change-Agent's Multi_change/model/ defines them; the
# insides are toys. Like the reference, it calls .cuda() and reads pretrained/mit_b1.pth while building
# (absent here), and its untrained decoder would end every caption at once (<END>'s bias).
ENCODER = '''
import os
import torch
from torch import nn


class Encoder(nn.Module):
    def __init__(self, network):
        super().__init__()
        assert network == "segformer-mit_b1", network
        here = os.path.dirname(os.path.abspath(__file__))
        ckpt = torch.load(f"{here}/pretrained/mit_b1.pth")
        ckpt.pop("head.weight")
        ckpt.pop("head.bias")
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.down = nn.ModuleList(nn.Conv2d(8, 8, 2, stride=2) for _ in range(3))

    def forward(self, imageA, imageB):
        def pyramid(x):
            x = self.stem(x)
            out = [x]
            for d in self.down:
                x = d(x)
                out.append(x)
            return out + [x]
        return pyramid(imageA), pyramid(imageB)


class AttentiveEncoder(nn.Module):
    def __init__(self, train_stage, n_layers, feature_size, heads, dropout=0.):
        super().__init__()
        h, w, c = feature_size
        assert (h, w, c, n_layers, heads) == (16, 16, 512, 3, 8)
        self.h_embedding = nn.Embedding(h, 8)
        self.seg = nn.Conv2d(16, 3, 1)

    def forward(self, img1_list, img2_list):
        f1 = img1_list[-1]
        pos = self.h_embedding(torch.arange(f1.shape[-2]).cuda())
        f1 = f1 + pos.mean()
        seg = self.seg(torch.cat([img1_list[0], img2_list[0]], 1))
        return f1, img2_list[-1], nn.functional.interpolate(seg, scale_factor=4.0)
'''

DECODER = '''
import torch
from torch import nn


class DecoderTransformer(nn.Module):
    def __init__(self, encoder_dim, feature_dim, vocab_size, max_lengths, word_vocab, n_head, n_layers, dropout):
        super().__init__()
        assert (encoder_dim, feature_dim, max_lengths, n_head, n_layers) == (512, 512, 41, 8, 1)
        self.max_lengths, self.word_vocab = max_lengths, word_vocab
        self.Conv1 = nn.Conv2d(16, 16, 1)
        self.vocab_embedding = nn.Embedding(vocab_size, 16)
        self.wdc = nn.Linear(16, vocab_size)
        with torch.no_grad():
            self.wdc.bias[word_vocab["<END>"]] = 100.0

    def _memory(self, x1, x2):
        return self.Conv1(torch.cat([x1, x2], 1)).flatten(2).mean(-1)

    def forward(self, x1, x2, encoded_captions, caption_lengths):
        pred = self.wdc(self.vocab_embedding(encoded_captions) + self._memory(x1, x2)[:, None])
        caption_lengths, sort_ind = caption_lengths.sort(dim=0, descending=True)
        return pred[sort_ind], encoded_captions[sort_ind], (caption_lengths - 1).tolist(), sort_ind

    def sample(self, x1, x2, k=1):
        m = self._memory(x1, x2)
        seqs = torch.LongTensor([[self.word_vocab["<START>"]]]).cuda()
        for step in range(self.max_lengths):
            nxt = self.wdc(self.vocab_embedding(seqs[:, -1]) + m).argmax(-1)
            seqs = torch.cat([seqs, nxt[:, None]], 1)
            if nxt == self.word_vocab["<END>"]:
                break
        return seqs.squeeze(0).tolist()
'''


def fake_reference(root: Path, encoder: str = ENCODER) -> Path:
    """A checkout-shaped folder: root/Multi_change/model/{model_encoder_att,model_decoder}.py + vocab.json."""
    model = root / "Multi_change" / "model"
    model.mkdir(parents=True)
    (model / "model_encoder_att.py").write_text(encoder)
    (model / "model_decoder.py").write_text(DECODER)
    vocab = root / "Multi_change" / "data" / "LEVIR_MCI"
    vocab.mkdir(parents=True)
    words = ["<NULL>", "<UNK>", "<START>", "<END>", *(f"w{i}" for i in range(26))]
    (vocab / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    return root




def test_missing_folder_or_other_code_is_an_error(tmp_path, capsys):
    bench = load_tool("bench")
    assert bench.main(["--out", str(tmp_path / "o"), "--vs", str(tmp_path / "nope"), "--skip-app"]) == 2
    assert "error: --vs" in capsys.readouterr().err and not (tmp_path / "o").exists()  # nothing ran
    other = tmp_path / "other" / "Multi_change" / "model"
    other.mkdir(parents=True)
    (other / "model_decoder.py").write_text("")  # one file of two
    assert bench.main(["--out", str(tmp_path / "o"), "--vs", str(tmp_path / "other"), "--skip-app"]) == 2
    assert "not the Change-Agent code" in capsys.readouterr().err
    ref = fake_reference(tmp_path / "ref")
    assert bench.main(["--out", str(tmp_path / "o"), "--vs", str(ref), "--vs-checkpoint", str(tmp_path / "x.pth"),
                       "--skip-app"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_reference_without_its_classes_is_an_error(tmp_path):
    ref = fake_reference(tmp_path / "ref", encoder=ENCODER.replace("class AttentiveEncoder", "class Other"))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_vs_reference.py"), "--ref", str(ref),
                           "--part", "infer", "--size", "64", "--steps", "1", "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "no class AttentiveEncoder" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "r.json").exists()


def test_vs_times_the_reference_beside_ours(tmp_path):
    """Only the reference here (--models ''): its two children, the JSON row and the table rows."""
    ref = fake_reference(tmp_path / "ref")
    out = tmp_path / "bench"
    code = load_tool("bench").main(["--out", str(out), "--models", "", "--vs", str(ref), "--size", "64", "--batch", "2",
                          "--threads", "1", "--steps", "1", "--decode-len", "5", "--skip-inference", "--skip-app"])
    assert code == 0
    data = json.loads((out / "bench.json").read_text())
    row = data["reference"]
    assert data["settings"]["vs"] == str((ref / "Multi_change").resolve()) == row["source"]
    assert row["weights"] == "random" and row["train"]["batch"] == 2 and row["train"]["s_per_pair"] > 0
    # its <END> bias would stop the caption at once: the tool makes it decode exactly --decode-len tokens
    assert row["infer"]["1"]["tokens"] == 5 and row["infer"]["1"]["all_tasks_s_per_pair"] > 0
    assert row["params"]["total"] == sum(row["params"][k] for k in ("encoder", "encoder_trans", "decoder")) > 0
    child = json.loads((out / "reference_infer.json").read_text())
    assert child["vocab_size"] == 30  # the checkout's vocab.json
    assert set(child["stubbed"]) <= {"mmcv", "mmseg"}  # stubbed only where not installed
    table = (out / "table.md").read_text()
    assert "| reference | train b2 |" in table and "| reference | predict b1 |" in table


def test_ratios_are_ours_over_the_reference(tmp_path):
    bench = load_tool("bench")
    args = bench.argparse.Namespace(vs=tmp_path, skip_train=False)
    for name, res in {"reference_train": {"batch": 8, "train_s_per_pair": 2.0, "peak_rss_mb": 4000.0},
                      "reference_infer": {"infer_s_per_pair_b1": 0.5, "peak_rss_mb": 1000.0, "tokens": 9}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**res, "params": {"total": 10}, "reference": "R",
                                                           "weights": "random"}))
    ours = {"fast": {"train": {"batch": 8, "s_per_pair": 0.5, "peak_rss_mb": 1000.0},
                     "infer": {"1": {"all_tasks_s_per_pair": 0.1, "tasks_s_per_pair": None, "peak_rss_mb": 500.0},
                               "16": None}},
            "mci": {"train": None, "infer": {"1": None}}}
    row, ratios = bench.reference_row(args, tmp_path, ours)
    assert row["train"]["s_per_pair"] == 2.0 and row["infer"]["1"]["all_tasks_s_per_pair"] == 0.5
    assert ratios["fast"] == {"train_s_per_pair": 0.25, "train_peak_rss_mb": 0.25, "infer_b1_s_per_pair": 0.2,
                              "infer_b1_peak_rss_mb": 0.5}
    assert set(ratios["mci"].values()) == {None}  # a failed configuration of ours: no ratio, not a crash
    result = {"settings": {"size": 256, "threads": 2, "device": "cpu", "steps": 5, "decode_len": 9, "compile": False,
                           "channels_last": True},
              "models": {"fast": {**ours["fast"], "params": {"total": 1e6}, "tasks": ["mask"], "scene": None}},
              "reference": row, "ratios": ratios}
    table = bench.report(args, result)
    assert "| fast | 0.25x | 0.25x | 0.20x | 0.50x |" in table and "| reference | predict b1 | 0.0 | 500.0 |" in table
