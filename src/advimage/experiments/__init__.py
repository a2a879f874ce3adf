"""Experiments reproducing the thesis tables, one module per table; see :data:`EXPERIMENTS`."""

EXPERIMENTS = {
    "quant-table": "advimage.experiments.quantization_table",
    "jpeg-table": "advimage.experiments.jpeg_table",
    "jpeg-defense": "advimage.experiments.jpeg_defense",
    "app-a": "advimage.experiments.app_a",
    "app-b": "advimage.experiments.app_b",
    "squeezing": "advimage.experiments.squeezing",
    "stego-table": "advimage.experiments.stego_table",
}
