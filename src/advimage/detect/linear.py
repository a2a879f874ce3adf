"""Linear detectors on rich-model features (thesis §8.4): ridge and the FLD ensemble.

* :class:`RidgeDetector`: the "linear regularized classifier" of Cogranne et al. (2015), i.e.
  regularized least squares: features standardized on the training set, then scikit-learn's
  ``RidgeClassifierCV`` (λ chosen by efficient leave-one-out over ``alphas``).
* :class:`FldEnsembleDetector`: the ensemble of Fisher linear discriminants on random subspaces
  (Kodovský, Fridrich & Holub, TIFS 2012), trained by sealwatch's ``FldEnsembleTrainer``
  (pairs of cover and stego features, automatic L and d_sub by default).

Both: ``fit(cover (N, D), stego (M, D)) -> self``, ``score(features (N, D)) -> (N,)`` float64,
higher = more likely adversarial, ``save(directory)`` / ``load(directory)`` as ``weights.npz``
(read with ``allow_pickle=False``) + ``detector.json``. Scores are computed here in NumPy from
the stored arrays, so a loaded detector gives bit-identical scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .meta import read_meta, write_meta

DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-3, 5, 17))


def _check_xy(cover: np.ndarray, stego: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cover, stego = np.asarray(cover), np.asarray(stego)
    if cover.ndim != 2 or stego.ndim != 2 or cover.shape[1] != stego.shape[1]:
        raise ValueError(f"expected cover (N, D) and stego (M, D) features, got {cover.shape} and {stego.shape}")
    if len(cover) < 2 or len(stego) < 2:
        raise ValueError(f"need at least 2 cover and 2 stego samples, got {len(cover)} and {len(stego)}")
    if not (np.isfinite(cover).all() and np.isfinite(stego).all()):
        raise ValueError("features contain NaN or infinity")
    return cover, stego


def _check_features(x: np.ndarray, dim: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected features (N, {dim}), got {x.shape}")
    return x


class RidgeDetector:
    """Standardized features -> ridge regression on labels ±1 (cover −1, adversarial +1).

    features: the feature kind the detector was trained on (``"srm"``, ``"scrmq1"``), kept in
    ``detector.json`` so that files can be scored; alphas: the λ grid of the leave-one-out search.
    """

    type = "ridge"

    def __init__(self, features: str | None = None, *, alphas: tuple[float, ...] = DEFAULT_ALPHAS) -> None:
        self.features = features
        self.alphas = tuple(float(a) for a in alphas)
        self.mean: np.ndarray | None = None   # (D,)
        self.scale: np.ndarray | None = None  # (D,), 1 where a feature is constant
        self.coef: np.ndarray | None = None   # (D,)
        self.intercept = 0.0
        self.alpha: float | None = None

    def fit(self, cover: np.ndarray, stego: np.ndarray) -> RidgeDetector:
        from sklearn.linear_model import RidgeClassifierCV
        from sklearn.preprocessing import StandardScaler

        cover, stego = _check_xy(cover, stego)
        x = np.concatenate([cover, stego]).astype(np.float64)
        y = np.concatenate([-np.ones(len(cover)), np.ones(len(stego))])
        scaler = StandardScaler().fit(x)
        clf = RidgeClassifierCV(alphas=self.alphas).fit(scaler.transform(x), y)
        self.mean, self.scale = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        self.coef = np.asarray(clf.coef_, dtype=np.float64).reshape(-1)
        self.intercept = float(np.asarray(clf.intercept_).reshape(-1)[0])
        self.alpha = float(clf.alpha_)
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) -> (N,) ridge outputs; > 0 is the classifier's "adversarial" side."""
        if self.coef is None:
            raise RuntimeError("RidgeDetector is not fitted")
        x = _check_features(features, len(self.coef))
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def save(self, directory: str | Path) -> Path:
        if self.coef is None:
            raise RuntimeError("RidgeDetector is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "weights.npz", mean=self.mean, scale=self.scale, coef=self.coef,
                 intercept=np.float64(self.intercept))
        write_meta(directory, self.type, self.features, {"alpha": self.alpha, "alphas": list(self.alphas)})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> RidgeDetector:
        meta = read_meta(directory, cls.type)
        det = cls(meta["features"], alphas=tuple(meta["params"]["alphas"]))
        with np.load(Path(directory) / "weights.npz", allow_pickle=False) as z:
            det.mean, det.scale, det.coef = z["mean"], z["scale"], z["coef"]
            det.intercept = float(z["intercept"])
        det.alpha = meta["params"]["alpha"]
        return det


class FldEnsembleDetector:
    """Kodovský's ensemble of FLD base learners (sealwatch's trainer).

    L, d_sub: number of base learners and subspace dimension (``"automatic"``: the trainer's OOB
    searches). seed: the trainer's random seed. Cover and stego features must be pairs (N == M).

    The learned ensemble is L base learners, each a subspace (d_sub feature indices), weights w
    (d_sub,) and threshold b; its projection is x[subspace] @ w − b (> 0: stego).
    ``score`` = mean over learners of sign(projection), in [−1, 1] (the ensemble's majority vote
    statistic, Kodovský et al. eq. 2), or with ``output="projection"`` the mean projection
    (finer-grained, for ROC curves with few learners).
    """

    type = "fld"

    def __init__(self, features: str | None = None, *, L: int | str = "automatic", d_sub: int | str = "automatic",
                 seed: int = 0, output: str = "votes") -> None:
        if output not in ("votes", "projection"):
            raise ValueError(f"output must be 'votes' or 'projection', got {output!r}")
        self.features = features
        self.L, self.d_sub, self.seed, self.output = L, d_sub, int(seed), output
        self.dim: int | None = None
        self.subspaces: np.ndarray | None = None  # (L, d_sub) int64 feature indices
        self.weights: np.ndarray | None = None    # (L, d_sub) float64
        self.biases: np.ndarray | None = None     # (L,) float64
        self.oob_error: float | None = None

    def fit(self, cover: np.ndarray, stego: np.ndarray) -> FldEnsembleDetector:
        from sealwatch.ensemble_classifier import FldEnsembleTrainer

        cover, stego = _check_xy(cover, stego)
        if len(cover) != len(stego):
            raise ValueError(f"the FLD ensemble trains on pairs: {len(cover)} covers but {len(stego)} stegos")
        trainer = FldEnsembleTrainer(np.ascontiguousarray(cover, dtype=np.float64),
                                     np.ascontiguousarray(stego, dtype=np.float64),
                                     seed=self.seed, L=self.L, d_sub=self.d_sub, verbose=0)
        ensemble, records = trainer.train()
        learners = ensemble.base_learners
        self.dim = cover.shape[1]
        self.subspaces = np.stack([np.asarray(bl.subspace, dtype=np.int64) for bl in learners])
        self.weights = np.stack([np.asarray(bl.learner.w, dtype=np.float64) for bl in learners])
        self.biases = np.array([float(bl.learner.b) for bl in learners], dtype=np.float64)
        self.oob_error = float(min(r["oob_error"] for r in records))
        return self

    def projections(self, features: np.ndarray) -> np.ndarray:
        """(N, D) -> (N, L): each base learner's projection x[subspace] @ w − b."""
        if self.weights is None:
            raise RuntimeError("FldEnsembleDetector is not fitted")
        x = _check_features(features, self.dim)
        return np.einsum("nld,ld->nl", x[:, self.subspaces], self.weights) - self.biases

    def score(self, features: np.ndarray) -> np.ndarray:
        """(N, D) -> (N,): mean vote in [−1, 1] (or mean projection)."""
        p = self.projections(features)
        return np.sign(p).mean(axis=1) if self.output == "votes" else p.mean(axis=1)

    def save(self, directory: str | Path) -> Path:
        if self.weights is None:
            raise RuntimeError("FldEnsembleDetector is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez(directory / "weights.npz", subspaces=self.subspaces, weights=self.weights, biases=self.biases)
        params: dict[str, Any] = {"L": int(len(self.biases)), "d_sub": int(self.subspaces.shape[1]),
                                  "L_setting": self.L, "d_sub_setting": self.d_sub, "seed": self.seed,
                                  "output": self.output, "dim": self.dim, "oob_error": self.oob_error}
        write_meta(directory, self.type, self.features, params)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> FldEnsembleDetector:
        meta = read_meta(directory, cls.type)
        p = meta["params"]
        det = cls(meta["features"], L=p["L_setting"], d_sub=p["d_sub_setting"], seed=p["seed"], output=p["output"])
        with np.load(Path(directory) / "weights.npz", allow_pickle=False) as z:
            det.subspaces, det.weights, det.biases = z["subspaces"], z["weights"], z["biases"]
        det.dim, det.oob_error = p["dim"], p["oob_error"]
        return det


__all__ = ["DEFAULT_ALPHAS", "FldEnsembleDetector", "RidgeDetector"]
