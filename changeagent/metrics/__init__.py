"""Metrics: LEVIR-MCI MIoU, SECOND semantic change (SeK, Fscd), COCO caption metrics, grounding. See docs/metrics.md."""

from __future__ import annotations

from changeagent.lazy import lazy_getattr

# name -> module; imported on first use so that `changeagent <cmd> --help` never loads torch
_LAZY = {
    **{n: "changeagent.metrics.captions" for n in ("METRIC_KEYS", "caption_report", "infer_changeflags",
                                                    "normalize_caption", "s_m", "score_captions")},
    **{n: "changeagent.metrics.semantic_change" for n in ("SemanticChangeMetrics", "semantic_change_scores",
                                                           "transition_labels")},
    **{n: "changeagent.metrics.grounding" for n in ("GroundingMetrics", "ReferringChangeMetrics",
                                                     "assemble_semantic_map", "binarize", "grounding_scores",
                                                     "sample_iou")},
    "MeteorScorer": "changeagent.metrics.meteor",
    "MeteorUnavailableWarning": "changeagent.metrics.meteor",
    "SegmentationMetrics": "changeagent.metrics.segmentation",
    "segmentation_scores": "changeagent.metrics.segmentation",
}

__all__ = [
    "GroundingMetrics",
    "METRIC_KEYS",
    "MeteorScorer",
    "MeteorUnavailableWarning",
    "ReferringChangeMetrics",
    "SegmentationMetrics",
    "SemanticChangeMetrics",
    "assemble_semantic_map",
    "binarize",
    "caption_report",
    "grounding_scores",
    "infer_changeflags",
    "normalize_caption",
    "s_m",
    "sample_iou",
    "score_captions",
    "segmentation_scores",
    "semantic_change_scores",
    "transition_labels",
]


__getattr__ = lazy_getattr(__name__, _LAZY, globals())
