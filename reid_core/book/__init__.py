"""What the book's notebooks share: run profiles, devices and paths, results JSON, the papers'
numbers and their one table format, and the figures every chapter draws.

Chapters: all (every notebook's set-up and results cells).
"""

from reid_core.book.evidence import Claim, Interval, claims_markdown, mean_interval, paired_difference, verdict
from reid_core.book.figures import load_image, plot_cmc, plot_history, plot_ranked_lists, ranked_gallery, show_images
from reid_core.book.paper_results import PAPER_RESULTS, PaperResult, paper_results_for
from reid_core.book.parameters import (
    INJECTED_MARKER,
    Parameter,
    accepts,
    check_injected_parameters,
    check_parameters,
    describe_types,
    notebook_parameters,
    parse_parameter_text,
    parse_parameters,
)
from reid_core.book.pretrained import (
    PRETRAIN_RECIPES,
    PRETRAIN_SEEDS,
    TRAIN_FRACTION,
    PretrainedBackbone,
    PretrainRecipe,
    ensure_pretrained_backbone,
    load_pretrained_backbone,
)
from reid_core.book.profiles import read_notebook_profiles, select_profile, setting_types
from reid_core.book.results import RESULT_FIELDS, load_results, render_results_page, write_result
from reid_core.book.runtime import REPOSITORY_ROOT, checkpoint_dir, resolve_device, resolve_path
from reid_core.book.tables import format_mean_std, paper_results_markdown

__all__ = [
    "PRETRAIN_RECIPES",
    "PRETRAIN_SEEDS",
    "TRAIN_FRACTION",
    "PretrainedBackbone",
    "PretrainRecipe",
    "ensure_pretrained_backbone",
    "load_pretrained_backbone",
    "Claim",
    "Interval",
    "claims_markdown",
    "mean_interval",
    "paired_difference",
    "verdict",
    "INJECTED_MARKER",
    "PAPER_RESULTS",
    "PaperResult",
    "Parameter",
    "REPOSITORY_ROOT",
    "RESULT_FIELDS",
    "accepts",
    "check_injected_parameters",
    "check_parameters",
    "checkpoint_dir",
    "describe_types",
    "format_mean_std",
    "load_image",
    "load_results",
    "notebook_parameters",
    "paper_results_for",
    "paper_results_markdown",
    "parse_parameter_text",
    "parse_parameters",
    "plot_cmc",
    "plot_history",
    "plot_ranked_lists",
    "read_notebook_profiles",
    "ranked_gallery",
    "render_results_page",
    "resolve_device",
    "resolve_path",
    "select_profile",
    "setting_types",
    "show_images",
    "write_result",
]
