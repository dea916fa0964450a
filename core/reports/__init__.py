"""What people read, from results that exist: the sweep's ``results.csv``, analysis, figures and ``report.html``;
the evaluation page; Part B's comparison table, curves and page; and the page kit they share (:mod:`.pages`).
Nothing here trains or runs anything: the sweep, Part B and the evaluation hand over their records.
"""

from core.reports.analysis import SweepAnalysis, analyse, epsilon_squared, fmt, label
from core.reports.comparison import COMPARISON_COLUMNS, ComparisonRow, write_comparison
from core.reports.evaluation_page import write_evaluation_page
from core.reports.pages import save_figure
from core.reports.results import TrialRecord, best_record, pareto_front, ranked, write_best, write_results_csv
from core.reports.sweep_plots import write_sweep_figures
from core.reports.sweep_report import trial_config, write_report, write_sweep_outputs

__all__ = ["COMPARISON_COLUMNS", "ComparisonRow", "SweepAnalysis", "TrialRecord", "analyse", "best_record",
           "epsilon_squared", "fmt", "label", "pareto_front", "ranked", "save_figure", "trial_config", "write_best",
           "write_comparison", "write_evaluation_page", "write_report", "write_results_csv", "write_sweep_figures",
           "write_sweep_outputs"]
