"""Quantizers: float adversarial samples -> real images (uint8 pixels or JPEG coefficients)."""

from .spatial import QuantizeResult, admissible_bounds, lambda_c, quantize, quantize_at, round_pixels

QUANTIZERS = ("smart", "round", "none", "jpeg")

__all__ = ["QUANTIZERS", "QuantizeResult", "admissible_bounds", "lambda_c", "quantize", "quantize_at",
           "round_pixels"]
