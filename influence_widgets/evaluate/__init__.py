"""Agreement between estimated and actual influence."""

from .metrics import bootstrap_ci, compare, frac_within_noise, topk_overlap

__all__ = ["bootstrap_ci", "compare", "frac_within_noise", "topk_overlap"]
