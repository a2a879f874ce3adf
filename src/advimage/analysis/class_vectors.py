"""Class vectors of the last fully-connected layer (thesis §5.2.3, Tables 5.2–5.4; App. B Table 9.3).

The logit of class k is ``<ω^k, f(x)> (+ b_k)`` with ω^k the k-th row of the last linear layer (eq. 5.2).

* :func:`norm_statistics` — Table 5.2: n_f and the mean, standard deviation, min and max of ‖ω^k‖ over
  the classes (the thesis does not say which standard deviation; the population one, ddof 0, is used;
  at C = 1000 it differs from ddof 1 by 0.05%). The thesis leaves the bias out of the logit; its
  statistics are given as extra columns.
* :func:`cosine_matrix` — Cω_{k,l} = cos(ω^k, ω^l) (eq. 5.3), for all classes or a block of rows ×
  columns (Table 5.3: the terriers; Table 5.4: terriers × classes 579–584).
* :func:`matrix_correlation` — Table 9.3 compares the Cω (C × C) of two classifiers by a "Cosine
  Correlation" it does not define further; three readings are computed, all over the same entries:
  ``cosine`` — cos(vec Cω_A, vec Cω_B) over the whole matrices (diagonal included), the literal
  reading; ``cosine-offdiag`` — the same over the entries above the diagonal (the diagonal is 1 for
  every model and only inflates agreement); ``pearson-offdiag`` — Pearson's correlation of those
  entries (centred, so the common positive mean of the cosines does not count as agreement).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

MEASURES = ("cosine", "cosine-offdiag", "pearson-offdiag")
TERRIERS = (182, 184, 185, 186, 187, 189)    # Table 5.3 (183 and 188, also terriers, are not in it)
UNRELATED = (579, 580, 581, 582, 583, 584)   # Table 5.4


def last_linear(model: nn.Module, num_classes: int | None = None) -> nn.Linear:
    """The classifier layer: timm's ``get_classifier()`` if the network has one, else the last
    ``nn.Linear`` (with ``num_classes`` outputs when given) among ``model``'s modules."""
    for m in (model, getattr(model, "net", None), getattr(model, "base", None)):
        get = getattr(m, "get_classifier", None)
        if callable(get) and isinstance(get(), nn.Linear):
            return get()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)
               and (num_classes is None or m.out_features == num_classes)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer"
                         + (f" with {num_classes} outputs" if num_classes else ""))
    return linears[-1]


def class_vectors(model: nn.Module) -> tuple[Tensor, Tensor | None]:
    """(Ω (C, n_f), bias (C,) or None) of the model's last linear layer, float64 on the CPU."""
    config = getattr(model, "config", None)
    fc = last_linear(model, getattr(config, "num_classes", None))
    w = fc.weight.detach().double().cpu()
    b = fc.bias.detach().double().cpu() if fc.bias is not None else None
    return w, b


@dataclass(frozen=True)
class NormStatistics:
    """Table 5.2 for one model, plus the bias (not in the thesis)."""

    model: str
    classes: int
    n_f: int
    mean: float
    std: float
    min: float
    max: float
    argmin: int
    argmax: int
    bias_mean: float | None = None
    bias_std: float | None = None
    bias_min: float | None = None
    bias_max: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def norm_statistics(weight: Tensor, bias: Tensor | None = None, model: str = "") -> NormStatistics:
    """Statistics of the row norms ‖ω^k‖ of ``weight`` (C, n_f); std with ddof 0."""
    if weight.ndim != 2:
        raise ValueError(f"expected a (C, n_f) weight matrix, got {tuple(weight.shape)}")
    n = weight.double().norm(dim=1)
    extra = {}
    if bias is not None:
        b = bias.double()
        extra = dict(bias_mean=float(b.mean()), bias_std=float(b.std(unbiased=False)), bias_min=float(b.min()),
                     bias_max=float(b.max()))
    return NormStatistics(model=model, classes=weight.shape[0], n_f=weight.shape[1], mean=float(n.mean()),
                          std=float(n.std(unbiased=False)), min=float(n.min()), max=float(n.max()),
                          argmin=int(n.argmin()), argmax=int(n.argmax()), **extra)


def cosine_matrix(weight: Tensor, rows: Sequence[int] | None = None, cols: Sequence[int] | None = None) -> Tensor:
    """Cω (eq. 5.3): cosines between the rows ``rows`` and ``cols`` of ``weight`` (default all),
    float64 (len(rows), len(cols)). A zero row has cosine 0 with everything (and 0 on its diagonal)."""
    if weight.ndim != 2:
        raise ValueError(f"expected a (C, n_f) weight matrix, got {tuple(weight.shape)}")
    w = weight.double()
    c = w.shape[0]
    for name, idx in (("rows", rows), ("cols", cols)):
        if idx is not None and any(not 0 <= int(i) < c for i in idx):
            raise ValueError(f"{name} must be class indices in [0, {c}), got {list(idx)}")
    u = w / w.norm(dim=1, keepdim=True).clamp_min(1e-300)
    a = u if rows is None else u[list(rows)]
    b = u if cols is None else u[list(cols)]
    return (a @ b.T).clamp(-1.0, 1.0)


def _offdiag(m: Tensor) -> Tensor:
    i, j = torch.triu_indices(m.shape[0], m.shape[1], offset=1)
    return m[i, j]


def matrix_correlation(ca: Tensor, cb: Tensor, measure: str = "cosine") -> float:
    """Agreement of two square Cω matrices (module docstring, :data:`MEASURES`)."""
    if measure not in MEASURES:
        raise ValueError(f"unknown measure {measure!r}; valid: {', '.join(MEASURES)}")
    if ca.shape != cb.shape or ca.ndim != 2 or ca.shape[0] != ca.shape[1]:
        raise ValueError(f"expected two square matrices of one shape, got {tuple(ca.shape)} and {tuple(cb.shape)}")
    if measure == "cosine":
        a, b = ca.double().flatten(), cb.double().flatten()
    else:
        a, b = _offdiag(ca.double()), _offdiag(cb.double())
        if measure == "pearson-offdiag":
            a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else math.nan


def correlation_table(matrices: dict[str, Tensor], measure: str = "cosine") -> dict[str, dict[str, float]]:
    """Table 9.3: ``out[a][b]`` for every pair of named Cω matrices (symmetric, 1 on the diagonal)."""
    names = list(matrices)
    out: dict[str, dict[str, float]] = {a: {} for a in names}
    for i, a in enumerate(names):
        for b in names[i:]:
            v = 1.0 if a == b else matrix_correlation(matrices[a], matrices[b], measure)
            out[a][b] = out[b][a] = v
    return out
