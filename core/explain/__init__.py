"""What a trained model does and looks at: test metrics, the seeded prediction grid, attributions (guided
backprop, Grad-CAM), filters, their figures and pages. The page kit (:mod:`core.explain.pages`: one stylesheet,
tables that never scroll sideways, formatted counts, relative links, embedded figures, plotly.js inlined once)
also builds the sweep report and the Part B comparison page, as ``save_figure`` writes their PNGs.
"""

from core.explain.attributions import GUIDED_MODES
from core.explain.evaluation import compute_metrics, confusion_matrix, predict, select_per_class
from core.explain.figures import save_figure
from core.explain.heldout import evaluate_best_on_test
from core.explain.pages import (
    bullets,
    callout,
    cards,
    count_text,
    duration_text,
    esc,
    href,
    image,
    key_values,
    link,
    percent_text,
    plotly_figure,
    render_page,
    section,
    table,
    write_page,
)
from core.explain.run import FIGURES, EvalConfig, evaluate_checkpoint, log_evaluation

__all__ = [
    "FIGURES",
    "GUIDED_MODES",
    "EvalConfig",
    "evaluate_checkpoint",
    "log_evaluation",
    "compute_metrics",
    "confusion_matrix",
    "evaluate_best_on_test",
    "predict",
    "save_figure",
    "select_per_class",
    # the page kit
    "bullets",
    "callout",
    "cards",
    "count_text",
    "duration_text",
    "esc",
    "href",
    "image",
    "key_values",
    "link",
    "percent_text",
    "plotly_figure",
    "render_page",
    "section",
    "table",
    "write_page",
]
