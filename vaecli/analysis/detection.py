"""Scores as out-of-distribution detectors: AUROC, AUPRC and FPR at 95% TPR (scikit-learn's metrics).

The out-of-distribution images are the positive class, and a higher score means "more likely out".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from vaecli.errors import VaeError

TARGET_TPR = 0.95


@dataclass
class Detection:
    """How well one score separates the in-distribution set (negatives) from the other (positives)."""

    auroc: float  # area under the ROC curve: 1 separates perfectly, 0.5 is chance
    auprc: float  # average precision, out-of-distribution as the positive class
    fpr_at_95_tpr: float  # share of in-distribution images flagged when 95% of the others are
    mean_in: float
    mean_out: float


def _labelled(scores_in: Sequence[float], scores_out: Sequence[float], name: str) -> tuple[list[int], list[float]]:
    values = [*scores_in, *scores_out]
    bad = sum(1 for v in values if not math.isfinite(v))
    if bad:
        raise VaeError(f"score {name} is not finite for {bad} of {len(values)} images; it cannot rank them")
    if not scores_in or not scores_out:
        raise VaeError("both sets need at least one image to measure a detector")
    return [0] * len(scores_in) + [1] * len(scores_out), values


def detection_metrics(scores_in: Sequence[float], scores_out: Sequence[float], name: str = "") -> Detection:
    """AUROC, AUPRC and FPR at 95% TPR of the rule "flag an image when its score is high"."""
    labels, values = _labelled(scores_in, scores_out, name)
    fpr, tpr, _ = roc_curve(labels, values)
    # The first point of the curve that flags at least 95% of the out-of-distribution images.
    at_target = next(i for i, rate in enumerate(tpr) if rate >= TARGET_TPR)
    return Detection(
        auroc=float(roc_auc_score(labels, values)),
        auprc=float(average_precision_score(labels, values)),
        fpr_at_95_tpr=float(fpr[at_target]),
        mean_in=sum(scores_in) / len(scores_in),
        mean_out=sum(scores_out) / len(scores_out),
    )


def roc_points(scores_in: Sequence[float], scores_out: Sequence[float], name: str = "") -> tuple[list, list]:
    """The ROC curve as (false-positive rates, true-positive rates)."""
    labels, values = _labelled(scores_in, scores_out, name)
    fpr, tpr, _ = roc_curve(labels, values)
    return fpr.tolist(), tpr.tolist()
