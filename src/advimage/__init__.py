"""advimage: adversarial examples as real images.

Pixels are floats or uint8 in [0, 255] everywhere outside the model. The usual path::

    model = advimage.load_model("efficientnet_lite0")
    res = advimage.attack(model, x, y, attack="bp", steps=100)
    q = advimage.quantize_spatial(model, x, res.x_adv, y, df=1)   # q.pixels: uint8 images that still fool it

and from files to verified files: ``advimage.attack_files(model, advimage.discover(["photos/"]), "out/")``.
``advimage.quantize`` is the package of quantizers (registry: ``advimage.quantize.names()``).
"""

from . import quantize
from .api import attack
from .attacks import AttackResult
from .attacks import names as attack_names
from .criteria import Criterion, Misclassification, TargetedMisclassification
from .data import ImageItem, discover
from .distortion import distortion, psnr
from .engine import Row, Settings, attack_files, run_batch
from .images import ImageReadError, load_for_model, read_image, write_png
from .models import ModelConfig, PixelClassifier, load_model
from .models import names as model_names
from .quantize import QuantizedImages, quantize_jpeg, quantize_spatial, round_pixels

__version__ = "0.2.0"

__all__ = [
    "AttackResult", "Criterion", "ImageItem", "ImageReadError", "Misclassification", "ModelConfig",
    "PixelClassifier", "QuantizedImages", "Row", "Settings", "TargetedMisclassification", "attack", "attack_files",
    "attack_names", "discover", "distortion", "load_for_model", "load_model", "model_names", "psnr", "quantize",
    "quantize_jpeg", "quantize_spatial", "read_image", "round_pixels", "run_batch", "write_png", "__version__",
]
