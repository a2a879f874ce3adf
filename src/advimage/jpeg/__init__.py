"""JPEG in the DCT domain: the differentiable transform ``J`` and a lossless coefficient writer."""

from .io import (
    JpegCoefficients,
    compress,
    decode,
    encode_coefficients,
    read_coefficients,
    roundtrip,
    write_coefficients,
)
from .transform import apply_j, apply_j_inverse, decode_like_libjpeg, from_dct, quant_tables, to_dct

__all__ = [
    "apply_j", "apply_j_inverse", "decode_like_libjpeg", "from_dct", "quant_tables", "to_dct",
    "JpegCoefficients", "compress", "decode", "encode_coefficients", "read_coefficients", "roundtrip",
    "write_coefficients",
]
