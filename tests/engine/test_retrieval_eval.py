"""Training with the retrieval head as a third task, its evaluation by the SPEC §2.4 protocol (with
the caption-matching baseline) in metrics.json and the table, and `index -c CONFIG --split test`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from engine_helpers import TINY_MODEL, read_jsonl, write_config

from changeagent.cli import main
from changeagent.inference.index_store import IndexStore

RETR = {"enabled": True, "dim": 16, "text_dim": 16, "text_layers": 1, "heads": 2}
KEYS = {"r1", "r5", "r10", "mrr10", "change_r1", "change_r5", "change_r10", "change_mrr10", "n_queries"}


@pytest.mark.parametrize("weighting", ["uncertainty"])
def test_train_eval_index_with_retrieval(tmp_path, synth_roots, capsys, weighting):
    cfg = write_config(tmp_path / "run.yaml", synth_roots, model={**TINY_MODEL, "retrieval": RETR},
                       loss={"weighting": {"name": weighting}}, train={"steps": 3})
    assert main(["train", "-c", str(cfg)]) == 0
    out = tmp_path / "run"
    logs = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "train"]
    assert "loss/retrieval" in logs[-1] and "weight/retrieval" in logs[-1]
    val = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "val"][-1]
    assert "r1" in val["levir_mci"]["retrieval"] and "r1" in val["levir_mci"]["retrieval_baseline"]

    ev = tmp_path / "eval"
    assert main(["eval", "-c", str(cfg), "--checkpoint", str(out / "best"), "--split", "test", "--out", str(ev)]) == 0
    m = json.loads((ev / "metrics.json").read_text())["levir_mci"]
    assert KEYS <= set(m["retrieval"]) and KEYS <= set(m["retrieval_baseline"])
    assert m["retrieval"]["n_queries"] == 5 * 5 and m["retrieval"]["n_pairs"] == 5
    table = capsys.readouterr().out
    assert "R@1" in table and "MRR@10" in table and "bm25 captions" in table

    idx = tmp_path / "idx"
    assert main(["index", "-k", str(out / "best"), "-c", str(cfg), "--split", "test", "-o", str(idx),
                 "--no-progress", "--max-len", "6"]) == 0
    store = IndexStore.open(idx)
    items = store.items()
    assert len(items) == 5 and all(i["name"].startswith("levir_mci/") for i in items)
    assert all(len(i["references"]) == 5 and i["changeflag"] in (0, 1) for i in items)

    # eval's numbers are the protocol's on the embeddings of the same model computed another way:
    # the pair rows `index` stored (predict's path) against the model's own caption embeddings
    import torch

    from changeagent.metrics.retrieval import retrieval_report
    from changeagent.models import load_model
    from changeagent.models.retrieval import encode_texts

    model = load_model(out / "best").eval()
    refs = [i["references"] for i in items]
    with torch.no_grad():
        text = model.head("retrieval").text(encode_texts(model.vocab, [r for rs in refs for r in rs])).numpy()
    again = retrieval_report(refs, [i["changeflag"] for i in items], None, np.asarray(store.embeddings()),
                             text)["retrieval"]
    for key in ("r1", "r5", "r10", "mrr10", "change_r1", "change_mrr10"):
        assert m["retrieval"][key] == pytest.approx(again[key], abs=1e-5), key


def test_model_without_head_still_reports_the_baseline(tmp_path, synth_roots):
    cfg = write_config(tmp_path / "run.yaml", synth_roots, train={"steps": 1},
                       loss={"weighting": {"name": "uncertainty"}})
    assert main(["train", "-c", str(cfg)]) == 0
    logs = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "train"]
    assert "weight/mask" in logs[-1] and "weight/retrieval" not in logs[-1]  # two tasks, as before the head
    m = json.loads((tmp_path / "run" / "best" / "metrics.json").read_text())["levir_mci"]
    assert "retrieval" not in m and KEYS <= set(m["retrieval_baseline"])


def test_retrieval_captions_undo_the_canonical_no_change_trick():
    import torch

    from changeagent.data.constants import CANONICAL_NO_CHANGE, NO_CHANGE_SENTENCES
    from changeagent.data.vocab import Vocabulary, tokenize
    from changeagent.tasks.retrieval import retrieval_captions
    from changeagent.tasks.spec import StepKey

    vocab = Vocabulary.build([tokenize(s) for s in (*NO_CHANGE_SENTENCES, "a road is built")], min_count=0)
    canon = vocab.encode(CANONICAL_NO_CHANGE, max_len=12)
    caps = torch.tensor([canon, vocab.encode("a road is built", max_len=12)] * 20)
    assert retrieval_captions(caps[1::2], vocab, StepKey(0, 0, 0, 0)) is None  # no canonical rows: unchanged
    out = retrieval_captions(caps, vocab, StepKey(0, 0, 0, 0))
    assert torch.equal(out[1::2], caps[1::2])
    seen = {vocab.decode(r) for r in out[0::2].tolist()}
    assert seen <= set(NO_CHANGE_SENTENCES) and len(seen) >= 3
    assert torch.equal(out, retrieval_captions(caps, vocab, StepKey(0, 0, 0, 0)))  # reproducible
