"""BRISQUE (Mittal, Moorthy & Bovik, IEEE TIP 2012) in PyTorch: a differentiable no-reference
image-quality regressor, matching the ``brisque`` PyPI package (0.2.0) and its shipped model.

Pipeline (each step as the package does it, read from ``brisque/brisque.py``):

1. gray = scikit-image's ``rgb2gray`` of the 8-bit image: ``(0.2125 R + 0.7154 G + 0.0721 B) / 255``;
2. MSCN coefficients ``(I − μ) / (σ + 1/255)``, μ and σ² local moments under a 7×7 Gaussian
   (σ = 7/6, normalized), zero padding ('same' convolution), ``σ = sqrt(|μ² − G∗I²|)``;
3. for the MSCN map and its four pairwise products (horizontal, vertical, two diagonals), an
   asymmetric generalized Gaussian (AGGD) moment fit: shape α from the moment ratio, left and right
   variances σ_l², σ_r², and for the products the mean η = (σ_r − σ_l) Γ(2/α)/sqrt(Γ(1/α)Γ(3/α)).
   Features per scale: MSCN [α, (σ_l² + σ_r²)/2] (the package fits the MSCN map with the AGGD
   estimator too, not the paper's symmetric GGD), then [α, η, σ_l², σ_r²] for each product: 18;
4. the same at half size: OpenCV's ``resize(fx=fy=1/2, INTER_CUBIC)`` of the gray image (Keys
   cubic a = −0.75 at half-pixel centres, taps −0.09375, 0.59375, 0.59375, −0.09375, edge pixels
   replicated; output size ``round(W/2)`` with ties to even): 36 features;
5. scaling ``−1 + 2 (f − min)/(max − min)`` (``normalize.pickle``) and libsvm's ε-SVR with an RBF
   kernel (``svm.txt``): ``Σ_i coef_i exp(−γ ||sv_i − f||²) − ρ``. Lower is better (about 0–100).

The shape α solves φ(α) = R̂ with φ(α) = Γ(2/α)² / (Γ(1/α) Γ(3/α)). The original MATLAB code
picks α from a table (α = 0.2 : 0.001 : 10, nearest φ); the package solves the equation with
``scipy.optimize.root``. Here it is solved to machine precision by bisection in log α (no graph),
and the gradient comes from the implicit function theorem, dα/dR̂ = 1/φ'(α), attached by one
Newton step whose correction is zero at the root. The value equals the package's root (to its
solver's tolerance); unlike a table lookup it is smooth in the pixels. Differentiability
otherwise: σ = sqrt(|·| + 1e-12) (the offset keeps the gradient finite on flat regions; at most
1e-6 against the constant 1/255), the split into negative and non-negative values is piecewise
constant (gradients flow through the values, not the split).

Model files are read without executing code: ``normalize.pickle`` with an unpickler that refuses
every global (the file holds only a dict of float lists), ``svm.txt`` with a text parser.
"""

from __future__ import annotations

import importlib.util
import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)  # scikit-image rgb2gray (ITU-R BT.709)
N_FEATURES = 36
EPS = 1e-12


class ModelFileError(ValueError):
    """A BRISQUE model file that cannot be read, or that tries to execute code."""


# -- model files -------------------------------------------------------------------------------
class _NoGlobalsUnpickler(pickle.Unpickler):
    """Builds only what pickle's own opcodes build (dicts, lists, strings, numbers): any global
    (a class, a function such as ``os.system``) is refused before it is looked up."""

    def find_class(self, module: str, name: str):  # noqa: D401
        raise ModelFileError(f"refused to load {module}.{name}: the normalization file may only hold "
                             "plain lists of numbers")


def safe_load_normalization(data: bytes | str | Path) -> tuple[list[float], list[float]]:
    """(min_, max_) of the feature scaling from ``normalize.pickle`` (bytes or a path), read with an
    unpickler that cannot execute code; each a list of 36 floats."""
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    try:
        obj = _NoGlobalsUnpickler(io.BytesIO(raw)).load()
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001  (any malformed pickle)
        raise ModelFileError(f"unreadable normalization pickle: {exc}") from None
    if not isinstance(obj, dict) or not {"min_", "max_"} <= set(obj):
        raise ModelFileError("the normalization pickle must be a dict with 'min_' and 'max_'")
    out = []
    for key in ("min_", "max_"):
        values = obj[key]
        if not isinstance(values, (list, tuple)) or len(values) != N_FEATURES or \
                not all(isinstance(v, (int, float)) for v in values):
            raise ModelFileError(f"normalization {key!r} must be {N_FEATURES} numbers")
        out.append([float(v) for v in values])
    return out[0], out[1]


@dataclass(frozen=True)
class SVRModel:
    """A libsvm RBF ε-SVR: prediction ``Σ coef_i exp(−gamma ||sv_i − x||²) − rho``."""

    support_vectors: Tensor  # (S, D) float64, absent sparse entries are 0
    coef: Tensor             # (S,)
    gamma: float
    rho: float


def parse_libsvm_model(text: str, n_features: int = N_FEATURES) -> SVRModel:
    """Parse libsvm's text model (``svm_save_model``) of an RBF ε-SVR or ν-SVR."""
    lines = text.splitlines()
    header: dict[str, str] = {}
    i = 0
    while i < len(lines) and lines[i].strip() != "SV":
        key, _, value = lines[i].strip().partition(" ")
        header[key] = value
        i += 1
    if i == len(lines):
        raise ModelFileError("libsvm model without an 'SV' section")
    if header.get("svm_type") not in ("epsilon_svr", "nu_svr"):
        raise ModelFileError(f"expected a regression model (epsilon_svr), got svm_type {header.get('svm_type')!r}")
    if header.get("kernel_type") != "rbf":
        raise ModelFileError(f"expected kernel_type rbf, got {header.get('kernel_type')!r}")
    try:
        gamma, rho, total = float(header["gamma"]), float(header["rho"]), int(header["total_sv"])
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"libsvm header lacks a valid {exc}") from None
    rows = [ln.split() for ln in lines[i + 1:] if ln.strip()]
    if len(rows) != total:
        raise ModelFileError(f"libsvm model announces {total} support vectors, has {len(rows)}")
    sv = torch.zeros(total, n_features, dtype=torch.float64)
    coef = torch.empty(total, dtype=torch.float64)
    try:
        for r, parts in enumerate(rows):
            coef[r] = float(parts[0])
            for item in parts[1:]:
                idx, _, val = item.partition(":")
                j = int(idx) - 1
                if not 0 <= j < n_features:
                    raise ModelFileError(f"support vector {r}: feature index {idx} outside 1..{n_features}")
                sv[r, j] = float(val)
    except ValueError as exc:
        raise ModelFileError(f"malformed support vector line: {exc}") from None
    return SVRModel(sv, coef, gamma, rho)


def package_model_dir() -> Path:
    """The ``models`` folder of the installed ``brisque`` package, found without importing it
    (its import needs OpenCV, which BRISQUE-in-torch does not)."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the 'brisque' package is not installed (pip install brisque): its svm.txt and "
                             "normalize.pickle are the BRISQUE model")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


# -- the shape parameter α -----------------------------------------------------------------------
def _log_phi(alpha: Tensor) -> Tensor:
    return 2 * torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)


def solve_alpha(ratio: Tensor, lo: float = 0.02, hi: float = 50.0, iters: int = 64) -> Tensor:
    """α with φ(α) = ratio (φ increasing from 0 to 3/4), differentiable in ``ratio``.

    Bisection in log α on [lo, hi] without graph (values outside φ's range end at the bounds),
    then one Newton step ``α − (φ(α) − ratio)/φ'(α)`` with α and φ'(α) detached: its value is the
    root, its derivative 1/φ'(α) (implicit function theorem)."""
    r = ratio.detach().double()
    a = torch.full_like(r, math.log(lo))
    b = torch.full_like(r, math.log(hi))
    target = torch.log(r.clamp_min(1e-300))
    for _ in range(iters):
        m = (a + b) / 2
        below = _log_phi(m.exp()) < target
        a = torch.where(below, m, a)
        b = torch.where(below, b, m)
    alpha = ((a + b) / 2).exp()
    with torch.enable_grad():
        al = alpha.clone().requires_grad_(True)
        phi = _log_phi(al).exp()
        (dphi,) = torch.autograd.grad(phi.sum(), al)
    phi = phi.detach()
    return (alpha - (phi - ratio.double()) / dphi).to(ratio.dtype)


def aggd_fit(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The package's AGGD moment fit of each map z (N, h, w): (α, η, σ_l², σ_r²), each (N,)."""
    z = z.flatten(1)
    mean_abs = z.abs().mean(1)
    mean_sq = z.square().mean(1)
    neg = (z < 0).to(z.dtype)
    pos = 1 - neg
    sl2 = (z.square() * neg).sum(1) / neg.sum(1).clamp_min(1)
    sr2 = (z.square() * pos).sum(1) / pos.sum(1).clamp_min(1)
    sl, sr = sl2.sqrt(), sr2.sqrt()
    gam = sl / sr
    r_hat = mean_abs.square() / mean_sq
    big_r = r_hat * (gam ** 3 + 1) * (gam + 1) / (gam ** 2 + 1).square()
    alpha = solve_alpha(big_r)
    const = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    eta = (sr - sl) * const * torch.exp(torch.lgamma(2 / alpha) - torch.lgamma(1 / alpha))
    return alpha, eta, sl2, sr2


# -- the regressor -------------------------------------------------------------------------------
def gaussian_taps(n: int = 7, sigma: float = 7 / 6) -> Tensor:
    """1-D taps of the package's normalized n×n Gaussian, which is their outer product."""
    r = torch.arange(n, dtype=torch.float64) - n // 2
    k = torch.exp(-r ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def blur(x: Tensor, taps: Tensor) -> Tensor:
    """scipy's ``convolve2d(x, outer(taps, taps), 'same')`` (zero fill) on (..., H, W), as two
    1-D passes of shifted sums (the float64 2-D convolution of torch on CPU is 30x slower)."""
    r = taps.shape[0] // 2
    h, w = x.shape[-2:]
    xp = nn.functional.pad(x, (r, r, 0, 0))
    x = sum(taps[k] * xp[..., :, k:k + w] for k in range(taps.shape[0]))
    xp = nn.functional.pad(x, (0, 0, r, r))
    return sum(taps[k] * xp[..., k:k + h, :] for k in range(taps.shape[0]))


def half_size_indices(n: int) -> tuple[Tensor, Tensor]:
    """OpenCV's INTER_CUBIC at fx = 1/2 along one axis of length n: (m, 4) source indices and the
    4 weights. Output length ``round(n/2)`` (ties to even, like cvRound); output i samples at
    2i + 1/2, taps 2i−1 .. 2i+2, clamped to the edge."""
    m = max(1, round(n / 2))
    base = 2 * torch.arange(m)[:, None] + torch.arange(-1, 3)[None, :]
    w = torch.tensor([-0.09375, 0.59375, 0.59375, -0.09375], dtype=torch.float64)
    return base.clamp(0, n - 1), w


def cv2_half_cubic(x: Tensor) -> Tensor:
    """``cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)`` for (N, H, W) maps."""
    ih, w = half_size_indices(x.shape[-2])
    iw, _ = half_size_indices(x.shape[-1])
    w = w.to(x.device, x.dtype)
    x = (x[..., ih, :] * w[:, None]).sum(-2)           # (N, H', 4, W) -> (N, H', W)
    return (x[..., iw] * w).sum(-1)


class BRISQUE(nn.Module):
    """BRISQUE score of float RGB pixels (N, 3, H, W) in [0, 255] -> (N,), lower is better.

    Computed in float64 (returned in the input's dtype); images of a batch share one size;
    at least 8×8 pixels. ``features(x)`` gives the 36 raw features."""

    higher_is_better = False

    def __init__(self, svm_path: str | Path | None = None, normalize_path: str | Path | None = None) -> None:
        super().__init__()
        if svm_path is None or normalize_path is None:
            d = package_model_dir()
            svm_path = svm_path or d / "svm.txt"
            normalize_path = normalize_path or d / "normalize.pickle"
        svr = parse_libsvm_model(Path(svm_path).read_text())
        lo, hi = safe_load_normalization(normalize_path)
        self.register_buffer("taps", gaussian_taps())
        self.register_buffer("gray_weights", torch.tensor(GRAY_WEIGHTS, dtype=torch.float64))
        self.register_buffer("feat_min", torch.tensor(lo, dtype=torch.float64))
        self.register_buffer("feat_max", torch.tensor(hi, dtype=torch.float64))
        self.register_buffer("support_vectors", svr.support_vectors)
        self.register_buffer("coef", svr.coef)
        self.gamma, self.rho = svr.gamma, svr.rho
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.coef.device

    def gray(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected RGB pixels (N, 3, H, W), got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < 8:
            raise ValueError(f"BRISQUE needs images of at least 8x8 pixels, got {tuple(x.shape[-2:])}")
        return torch.einsum("nchw,c->nhw", x.double(), self.gray_weights) / 255

    def _mscn(self, img: Tensor) -> Tensor:
        mu, mom2 = blur(torch.stack([img, img.square()]), self.taps)
        sigma = (mom2 - mu.square()).abs().add(EPS).sqrt()
        return (img - mu) / (sigma + 1 / 255)

    def _scale_features(self, img: Tensor) -> Tensor:
        m = self._mscn(img)
        alpha, _, sl2, sr2 = aggd_fit(m)
        feats = [alpha, (sl2 + sr2) / 2]
        for p in (m[:, :, :-1] * m[:, :, 1:], m[:, :-1, :] * m[:, 1:, :],
                  m[:, :-1, :-1] * m[:, 1:, 1:], m[:, 1:, :-1] * m[:, :-1, 1:]):
            feats.extend(aggd_fit(p))
        return torch.stack(feats, 1)

    def features(self, x: Tensor) -> Tensor:
        """The 36 BRISQUE features (N, 36), float64, in the package's order."""
        g = self.gray(x)
        return torch.cat([self._scale_features(g), self._scale_features(cv2_half_cubic(g))], 1)

    def score_features(self, f: Tensor) -> Tensor:
        """Scaling and the SVR on features (N, 36) -> (N,)."""
        s = -1 + 2 * (f - self.feat_min) / (self.feat_max - self.feat_min)
        d2 = (s[:, None, :] - self.support_vectors[None]).square().sum(-1)
        return torch.exp(-self.gamma * d2) @ self.coef - self.rho

    def forward(self, x: Tensor) -> Tensor:
        return self.score_features(self.features(x)).to(x.dtype if x.is_floating_point() else torch.float32)
