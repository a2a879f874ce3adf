"""advimage: adversarial examples as real images.

Pixels are floats or uint8 in [0, 255] everywhere outside the model. The usual path::

    model = advimage.load_model("efficientnet_lite0")
    res = advimage.attack(model, x, y, attack="bp", steps=100)
    q = advimage.quantize_spatial(model, x, res.x_adv, y, df=1)   # q.pixels: uint8 images that still fool it

and from files to verified files: ``advimage.attack_files(model, advimage.discover(["photos/"]), "out/")``.
A regressor (``advimage.load_regressor("brisque")``, quality = 100 − BRISQUE) is attacked the same way
with ``Settings(target_score=s_a)``: the file's score must fall below s_a (:class:`ScoreBelow`).
``advimage.quantize`` is the package of quantizers (registry: ``advimage.quantize.names()``).
"""

from . import quantize
from .api import attack
from .attacks import AttackResult
from .attacks import names as attack_names
from .criteria import Criterion, Misclassification, ScoreBelow, TargetedMisclassification
from .data import ImageItem, discover
from .distortion import distortion, psnr
from .engine import Row, Settings, attack_files, run_batch
from .images import ImageReadError, load_for_model, read_image, write_png
from .models import ModelConfig, PixelClassifier, load_model
from .models import names as model_names
from .models.regressors import load_regressor
from .quantize import QuantizedImages, quantize_jpeg, quantize_spatial, round_pixels

__version__ = "0.2.0"

__all__ = [
    "AttackResult", "Criterion", "ImageItem", "ImageReadError", "Misclassification", "ModelConfig",
    "PixelClassifier", "QuantizedImages", "Row", "ScoreBelow", "Settings", "TargetedMisclassification", "attack",
    "attack_files", "attack_names", "discover", "distortion", "load_for_model", "load_model", "load_regressor",
    "model_names", "psnr", "quantize",
    "quantize_jpeg", "quantize_spatial", "read_image", "round_pixels", "run_batch", "write_png", "__version__",
]
