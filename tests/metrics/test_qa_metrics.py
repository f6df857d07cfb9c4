"""QA metrics: per-type accuracy, AA, OA, n; summed states (DDP-exact); the majority baseline by the same code."""

import json
import math

import pytest
import torch
from shared_data import DATA

from changeagent.errors import ChangeAgentError
from changeagent.metrics.qa import QAMetrics, majority_answers, qa_scores, score_majority


def test_per_type_aa_oa():
    m = QAMetrics()
    m.update(["change_or_not"] * 4 + ["change_ratio"], ["yes", "no", "yes", "yes", "0"], ["yes", "no", "no", "no", "0"])
    m.update(["change_ratio"], ["0_to_10"], ["10_to_20"])
    s = m.compute()
    assert s["per_type"] == {"change_or_not": 0.5, "change_ratio": 0.5}
    assert s["n"] == 6 and s["n_per_type"] == {"change_or_not": 4, "change_ratio": 2}
    assert s["aa"] == 0.5 and s["oa"] == pytest.approx(3 / 6)
    m.update(["largest_change"], ["trees"], ["trees"])
    s = m.compute()
    assert s["aa"] == pytest.approx((0.5 + 0.5 + 1) / 3) and s["oa"] == pytest.approx(4 / 7)  # AA != OA
    assert set(s) == {"aa", "oa", "per_type", "n", "n_per_type"}


def test_ids_and_tensors():
    m = QAMetrics()
    m.update(["change_or_not", "change_or_not"], torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert m.compute()["oa"] == 0.5
    with pytest.raises(ChangeAgentError, match="argmax"):
        m.update(["change_or_not"], torch.zeros(1, 19), torch.tensor([0]))
    with pytest.raises(ChangeAgentError, match="unknown question type"):
        m.update(["colour"], ["yes"], ["yes"])
    with pytest.raises(ChangeAgentError, match="2 types, 1 predictions"):
        m.update(["change_or_not"] * 2, ["yes"], ["yes", "no"])


def test_empty_is_nan():
    with pytest.warns(UserWarning, match="before the ``update``"):  # torchmetrics' notice; the result is defined
        s = QAMetrics().compute()
    assert math.isnan(s["aa"]) and math.isnan(s["oa"]) and s["n"] == 0 and s["per_type"] == {}


def test_summed_states_are_exact_across_processes():
    """Two ranks' states summed (what DDP's all-reduce does) equal one process over all items."""
    items = [("change_or_not", "yes", "yes"), ("change_or_not", "no", "yes"), ("change_ratio", "0", "0"),
             ("change_count", "2", "3"), ("change_count", "3", "3"), ("change_or_not", "no", "no")]
    whole = QAMetrics()
    whole.update(*map(list, zip(*items)))
    parts = [QAMetrics(), QAMetrics()]
    for i, it in enumerate(items):
        parts[i % 2].update(*([x] for x in it))
    summed = qa_scores(parts[0].correct + parts[1].correct, parts[0].total + parts[1].total, whole.types)
    assert summed == whole.compute()
    assert parts[0].correct.dtype == torch.int64


def test_majority_baseline():
    types = ["change_or_not"] * 3 + ["change_ratio"] * 2
    answers = ["no", "yes", "no", "0_to_10", "0"]
    maj = majority_answers(types, answers)
    assert maj == {"change_or_not": "no", "change_ratio": "0_to_10"}  # tie: the first seen
    s = score_majority(maj, ["change_or_not", "change_or_not", "change_ratio", "change_to_what"],
                       ["no", "yes", "0", "trees"])
    assert s["per_type"] == {"change_or_not": 0.5, "change_ratio": 0.0, "change_to_what": 0.0}


@pytest.mark.skipif(not (DATA / "cdvqa_val" / "Val_answers.json").is_file(), reason="CDVQA Val absent")
def test_majority_on_real_val():
    """Fit and scored on Val itself: the per-type majority share of the real answers."""
    qs = json.loads((DATA / "cdvqa_val" / "Val_questions.json").read_text())["questions"]
    ans = {a["question_id"]: a["answer"] for a in json.loads((DATA / "cdvqa_val" / "Val_answers.json").read_text())["answers"]}
    types = [q["type"] for q in qs]
    answers = [ans[q["id"]] for q in qs]
    maj = majority_answers(types, answers)
    assert maj["change_or_not"] == "yes" and maj["increase_or_not"] == "no" and maj["largest_change"] == "NVG_surface"
    s = score_majority(maj, types, answers)
    assert s["per_type"]["change_or_not"] == pytest.approx(3160 / 5751)
    assert s["per_type"]["change_ratio_types"] == pytest.approx(1177 / 2409)
    assert s["n"] == 16441 and 0.4 < s["aa"] < 0.6
