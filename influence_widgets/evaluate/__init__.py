"""Agreement between estimated and actual influence, and the trust report that says how far to
believe it."""

from .._findings import Finding, TrustReport
from .metrics import bootstrap_ci, compare, frac_within_noise, topk_overlap
from .trust import comparison_findings, trust_report

__all__ = ["Finding", "TrustReport", "bootstrap_ci", "compare", "comparison_findings",
           "frac_within_noise", "topk_overlap", "trust_report"]
