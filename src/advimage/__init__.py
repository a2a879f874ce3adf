"""advimage: adversarial examples as real images.

Pixels are floats or uint8 in [0, 255] everywhere outside the model. The usual path::

    model = advimage.load_model("efficientnet_lite0")
    res = advimage.attack(model, x, y, attack="bp", steps=100)
    q = advimage.quantize(model, x, res.x_adv, y, df=1)   # q.x_q: uint8 images that still fool the model
"""

from .api import attack
from .attacks import AttackResult
from .attacks import names as attack_names
from .data import ImageItem, discover
from .distortion import distortion, psnr
from .images import ImageReadError, load_for_model, read_image, write_png
from .models import ModelConfig, PixelClassifier, load_model
from .models import names as model_names
from .pipeline import ImageOutcome, attack_files
from .quantize import QuantizeResult, quantize, round_pixels

__version__ = "0.1.0"

__all__ = [
    "AttackResult", "ImageItem", "ImageOutcome", "ImageReadError", "ModelConfig", "PixelClassifier",
    "QuantizeResult", "attack", "attack_files", "attack_names", "discover", "distortion", "load_for_model",
    "load_model", "model_names", "psnr", "quantize", "read_image", "round_pixels", "write_png", "__version__",
]
