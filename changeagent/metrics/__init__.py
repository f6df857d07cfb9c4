"""Metrics: LEVIR-MCI MIoU, SECOND semantic change (SeK, Fscd), COCO caption metrics. See docs/metrics.md."""

from changeagent.metrics.captions import (
    METRIC_KEYS,
    caption_report,
    infer_changeflags,
    normalize_caption,
    s_m,
    score_captions,
)
from changeagent.metrics.meteor import MeteorScorer, MeteorUnavailableWarning
from changeagent.metrics.segmentation import SegmentationMetrics, segmentation_scores
from changeagent.metrics.semantic_change import (
    SemanticChangeMetrics,
    semantic_change_scores,
    transition_labels,
)

__all__ = [
    "METRIC_KEYS",
    "MeteorScorer",
    "MeteorUnavailableWarning",
    "SegmentationMetrics",
    "SemanticChangeMetrics",
    "caption_report",
    "infer_changeflags",
    "normalize_caption",
    "s_m",
    "score_captions",
    "segmentation_scores",
    "semantic_change_scores",
    "transition_labels",
]
