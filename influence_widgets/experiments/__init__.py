"""The paper's studies as functions that return tidy tables (pandas DataFrames).

::

    from influence_widgets import experiments as ex
    table = ex.depth_study("tiny")   # a row per model x seed x test point x setting ("quick",
    ex.summarize(table, "depth")     # "paper": larger grids); mean Spearman by depth and weight decay

Each study is a grid over one shared evaluation (:func:`evaluate_case`: train -> pick test points
-> estimate -> pick training points -> retrain -> compare). Presets: ``tiny``, ``ci``, ``quick``,
``paper``; each runs its ``seeds`` and its disjoint ``check_seeds``. Claims (:mod:`.claims`) take
the trained model as the unit, are two-sided and judged on both seed sets.
"""

from . import claims
from .claims import Claim, check_claims, claims_frame, expect, results_table, study_claims
from .core import (
    COLUMNS,
    TIMING_COLUMNS,
    Case,
    EvalCase,
    ModelCase,
    Truth,
    evaluate_case,
    load_data,
    run_cases,
    train_case,
)
from .presets import PRESETS, preset_names
from .reference import REFERENCE_DEPTH, reference_notes, reference_table
from .studies import (
    STUDIES,
    Study,
    architecture_study,
    depth_study,
    get_study,
    ground_truth_study,
    group_study,
    noise_study,
    run_study,
    solver_study,
    test_point_study,
    validation_study,
    weight_decay_study,
    width_study,
)
from .summary import health_table, markdown_summary, stored_results, summarize, trust_notes
from .synthetic import synthetic_image_folder

__all__ = [
    "Claim", "check_claims", "claims", "claims_frame", "expect", "noise_study",
    "health_table", "reference_table", "results_table", "stored_results", "study_claims",
    "COLUMNS", "PRESETS", "REFERENCE_DEPTH", "STUDIES", "TIMING_COLUMNS", "Case", "EvalCase",
    "ModelCase", "Study", "Truth", "architecture_study", "depth_study", "ground_truth_study", "evaluate_case",
    "get_study", "group_study", "load_data", "markdown_summary", "preset_names", "reference_notes",
    "run_cases", "run_study", "solver_study", "summarize", "synthetic_image_folder", "trust_notes",
    "test_point_study", "train_case", "validation_study", "weight_decay_study", "width_study",
]
