"""Analyses of models themselves: class vectors of the last layer (thesis §5.2.3, App. B Table 9.3)."""

from .class_vectors import (
    MEASURES,
    NormStatistics,
    class_vectors,
    correlation_table,
    cosine_matrix,
    last_linear,
    matrix_correlation,
    norm_statistics,
)
from .report import analyze_class_vectors, parse_classes

__all__ = ["MEASURES", "NormStatistics", "analyze_class_vectors", "class_vectors", "correlation_table",
           "cosine_matrix", "last_linear", "matrix_correlation", "norm_statistics", "parse_classes"]
