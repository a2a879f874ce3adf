"""Thesis Appendix B: unsupervised feature-pairing robustification (teacher/student on features).

- :mod:`.distances`: MSE, MSLE, CC (eqs. 9.8-9.11), ``get(name)``, ``names()``;
- :mod:`.attack`: the online attack of eqs. 9.6-9.7 (:func:`pairing_attack`);
- :mod:`.train`: :class:`Settings`, :class:`Robustifier` (teacher, student, step), :func:`train`
  (checkpoints as safetensors + JSON every epoch, resumable);
- :mod:`.cli`: ``advimage robustify MODEL IMAGES --out DIR``.

The evaluation (teacher vs students: clean accuracy and white-box d½ over ε) is
``advimage experiment app-b`` (:mod:`advimage.experiments.app_b`).
"""

from .attack import PairingExamples, pairing_attack
from .distances import cc, mse, msle
from .distances import get as get_distance
from .distances import names as distance_names
from .train import (
    Robustifier,
    RobustifyError,
    Settings,
    TrainResult,
    find_head,
    load_checkpoint,
    load_images,
    save_checkpoint,
    train,
)

__all__ = ["PairingExamples", "RobustifyError", "Robustifier", "Settings", "TrainResult", "cc", "distance_names",
           "find_head", "get_distance", "load_checkpoint", "load_images", "msle", "mse", "pairing_attack",
           "save_checkpoint", "train"]
