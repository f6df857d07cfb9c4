"""`predict` asks each task for the model inputs it builds from what the user gives
(`TaskSpec.predict_inputs`) and puts each task's `window` fields into the record."""

from __future__ import annotations

import sys
import types

import numpy as np
import torch

from changeagent.data.vocab import Vocabulary
from changeagent.inference.predictor import Predictor
from changeagent.models import create_model
from changeagent.models.retrieval import encode_texts
from changeagent.tasks import registry
from changeagent.tasks.retrieval import RetrievalTask

TINY = {"encoder": "resnet18", "neck": {"name": "diff"}, "mask_decoder": {"channels": 8}, "memory": {"dim": 16},
        "caption_decoder": {"layers": 1, "heads": 2}, "tasks": ["mask", "caption", "retrieval"],
        "retrieval": {"dim": 8, "text_dim": 8, "text_layers": 1, "heads": 2}}


class AskingRetrieval(RetrievalTask):
    """The retrieval task, scoring the user's query against every window at predict time."""

    def predict_inputs(self, user, batch, ctx):
        return {"texts": encode_texts(ctx.vocab, [user["query"]])} if "query" in user else {}

    def window(self, pred, i, ctx):
        if "text_emb" not in pred:
            return {}
        return {"query_score": float(pred["pair_emb"][i] @ pred["text_emb"][0])}


def test_predict_passes_the_users_inputs_to_the_tasks(monkeypatch):
    module = types.ModuleType("asking_retrieval_example")
    module.SPEC = AskingRetrieval()
    monkeypatch.setitem(sys.modules, "asking_retrieval_example", module)
    monkeypatch.setitem(registry.REGISTRY, "retrieval", "asking_retrieval_example")
    torch.manual_seed(0)
    vocab = Vocabulary.build([["a", "road", "is", "built"]], min_count=0)
    model = create_model(TINY, len(vocab))
    a, b = (np.random.default_rng(i).integers(0, 255, (64, 64, 3), dtype=np.uint8) for i in range(2))
    common = dict(vocab=vocab, max_len=4, datasets={"levir_mci": {}}, mean=[0.5] * 3, std=[0.25] * 3)
    pred = Predictor(model, inputs={"query": "a road is built"}, **common).predict(a, b)
    rec = pred.record()
    assert -1.0 <= rec["query_score"] <= 1.0 and "caption" in rec and rec["head"] == "levir_mci"
    plain = Predictor(model, **common).predict(a, b).record()
    assert "query_score" not in plain and plain["caption"] == rec["caption"]
