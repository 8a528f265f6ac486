"""What the book's notebooks share: run profiles, devices and paths, results JSON, the papers'
numbers and their one table format, and the figures every chapter draws.

Chapters: all (every notebook's set-up and results cells).
"""

from reid_core.book.evidence import (
    CLAIMS_FOLDER,
    Claim,
    Interval,
    arms_markdown,
    claim_sentence,
    claims_markdown,
    load_claims,
    mean_interval,
    paired_difference,
    verdict,
    write_claims,
)
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
    pretrained_cache_dir,
    pretrained_for_profile,
    provenance_summary,
)
from reid_core.book.profiles import read_notebook_profiles, select_profile, setting_types
from reid_core.book.results import RESULT_FIELDS, load_results, render_results_page, write_result
from reid_core.book.runtime import REPOSITORY_ROOT, checkpoint_dir, resolve_device, resolve_path
from reid_core.book.tables import format_mean_std, paper_results_markdown

__all__ = [
    "CLAIMS_FOLDER",
    "Claim",
    "INJECTED_MARKER",
    "Interval",
    "PAPER_RESULTS",
    "PRETRAIN_RECIPES",
    "PRETRAIN_SEEDS",
    "PaperResult",
    "Parameter",
    "PretrainRecipe",
    "PretrainedBackbone",
    "REPOSITORY_ROOT",
    "RESULT_FIELDS",
    "TRAIN_FRACTION",
    "accepts",
    "arms_markdown",
    "check_injected_parameters",
    "check_parameters",
    "checkpoint_dir",
    "claim_sentence",
    "claims_markdown",
    "describe_types",
    "ensure_pretrained_backbone",
    "format_mean_std",
    "load_claims",
    "load_image",
    "load_pretrained_backbone",
    "load_results",
    "mean_interval",
    "notebook_parameters",
    "paired_difference",
    "paper_results_for",
    "paper_results_markdown",
    "parse_parameter_text",
    "parse_parameters",
    "plot_cmc",
    "plot_history",
    "plot_ranked_lists",
    "pretrained_cache_dir",
    "pretrained_for_profile",
    "provenance_summary",
    "ranked_gallery",
    "read_notebook_profiles",
    "render_results_page",
    "resolve_device",
    "resolve_path",
    "select_profile",
    "setting_types",
    "show_images",
    "verdict",
    "write_claims",
    "write_result",
]
