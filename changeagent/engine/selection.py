"""The selection score of a validation (`eval.select`) and the start-up check that the metrics it
needs can be computed (METEOR needs Java)."""

from __future__ import annotations

import math
import shutil
import sys
from typing import Any

from omegaconf import DictConfig

from changeagent.errors import ChangeAgentError

METEOR_KEYS = ("meteor", "s_m")


def check_meteor(cfg: DictConfig, selecting: bool = True) -> None:
    """At start-up, not after hours: METEOR runs Java. Without `java`, a selection that needs METEOR
    (or S*m) is an error; otherwise METEOR and S*m will be null, which is said once now."""
    if not cfg.eval.meteor or shutil.which("java") is not None:
        return
    needs = sorted({k.strip() for k in cfg.eval.select.split("+")} & set(METEOR_KEYS))
    if selecting and needs:
        raise ChangeAgentError(f"eval.select: {cfg.eval.select!r} needs {', '.join(needs)}, i.e. METEOR, which runs "
                               "Java, but 'java' was not found on PATH; install a JRE (e.g. apt-get install "
                               "default-jre-headless) or select without meteor/s_m (e.g. eval.select=miou+bleu4)")
    print("warning: eval.meteor is true but 'java' was not found on PATH: METEOR and S*m will be null "
          "(install a JRE, or set eval.meteor=false)", file=sys.stderr, flush=True)


def selection_score(results: dict[str, dict[str, Any]], select: str) -> float:
    """Sum of the '+'-separated metric keys, averaged over datasets (NaN counts as 0).

    With datasets of different targets (partial supervision) a dataset adds the keys it reports
    (LEVIR-CD has `miou` but no `s_m`, LEVIR-CC the reverse); a key no dataset reports is an error."""
    keys = [k.strip() for k in select.split("+") if k.strip()]
    for k in keys:
        if not any(k in m for m in results.values()):
            known = sorted({x for m in results.values() for x, v in m.items() if isinstance(v, float)})
            raise ChangeAgentError(f"eval.select uses {k!r}, which none of {list(results)} reports; known: {known}")
    per_dataset = []
    for name, metrics in results.items():
        total = 0.0
        for k in keys:
            if k not in metrics:
                continue
            v = metrics[k]
            if v is None:
                raise ChangeAgentError(f"eval.select uses {k!r}, which is missing for {name} "
                                       "(METEOR and S*m need eval.meteor=true and Java)")
            total += 0.0 if math.isnan(v) else float(v)
        per_dataset.append(total)
    return sum(per_dataset) / max(len(per_dataset), 1)
