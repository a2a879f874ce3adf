"""Experiments reproducing the thesis tables, one module per table; see :data:`EXPERIMENTS`."""

EXPERIMENTS = {
    "quant-table": "advimage.experiments.quantization_table",
    "jpeg-table": "advimage.experiments.jpeg_table",
    "jpeg-defense": "advimage.experiments.jpeg_defense",
    "squeezing": "advimage.experiments.squeezing",
}
