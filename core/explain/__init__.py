"""What a trained model does and looks at: test metrics, the seeded prediction grid, attributions (guided
backprop, Grad-CAM), filters and their figures; :mod:`core.reports` renders the evaluation page.
"""

from core.explain.attributions import GUIDED_MODES
from core.explain.checkpoint_evaluation import FIGURES, EvalConfig, evaluate_checkpoint, log_evaluation
from core.explain.evaluation import compute_metrics, confusion_matrix, predict, select_per_class
from core.explain.heldout import evaluate_best_on_test

__all__ = ["FIGURES", "GUIDED_MODES", "EvalConfig", "compute_metrics", "confusion_matrix", "evaluate_best_on_test",
           "evaluate_checkpoint", "log_evaluation", "predict", "select_per_class"]
