"""Benchmark infrastructure (thesis ch. 6, RoBIC): metrics, result store, report.

- :mod:`.metrics`: operating curve (eq. 6.3), exponential fit and half-distortion (eq. 6.4-6.5);
- :mod:`.store`: SQLite result store of a run directory, resumable after a crash;
- :mod:`.report`: curve plots, Table 6.2 (Markdown/CSV) and a self-contained ``report.html``.
"""

from .metrics import (
    ExponentialFit,
    OperatingCurve,
    RobustnessSummary,
    curve_from_rows,
    effective_distortion,
    empirical_half_distortion,
    fit_conventions,
    fit_exponential,
    operating_curve,
    success_at,
    summarize,
    summarize_rows,
    unquantized_curve_from_rows,
    unquantized_curves,
)
from .report import GalleryItem, ModelRow, ReportFiles, example_item, table_rows, write_report
from .runner import BenchmarkResult, run_benchmark
from .store import ResultStore, settings_hash

__all__ = [
    "ExponentialFit", "OperatingCurve", "RobustnessSummary", "curve_from_rows", "effective_distortion",
    "empirical_half_distortion", "fit_conventions", "fit_exponential", "operating_curve", "success_at", "summarize",
    "summarize_rows", "unquantized_curve_from_rows", "unquantized_curves", "GalleryItem", "ModelRow", "ReportFiles",
    "example_item", "table_rows",
    "write_report", "ResultStore", "settings_hash", "BenchmarkResult", "run_benchmark",
]
