"""What holds run to run: bit-identical rows for the same seed and thread count; across thread
counts and batch sizes (another machine's rounding), files that still fool the model, by the margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import advimage
from advimage import codec
from advimage.criteria import NOISE_MARGIN
from advimage.data import ImageItem
from advimage.engine import Settings, run_batch


@pytest.fixture
def items(tmp_path):
    g = np.random.default_rng(11)
    out = []
    for i in range(6):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(g.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        out.append(ImageItem(path, None))
    return out


def _rows(model, items, threads: int, **kw):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run_batch(model, items, Settings(steps=40, seed=2, **kw))
    finally:
        torch.set_num_threads(before)


def _comparable(rows):
    return [({k: v for k, v in r.to_dict().items() if k != "seconds"}, r.data) for r in rows]


def test_same_seed_and_threads_give_bit_identical_rows_and_files(items, tiny_registered):
    model = advimage.models.get(tiny_registered)
    assert _comparable(_rows(model, items, 1)) == _comparable(_rows(model, items, 1))


def test_default_margin_files_fool_under_other_threads_and_batch_sizes(items, tiny_registered):
    """Files made with 2 threads (the default margin κ₀) are re-classified with 1 thread and in one
    batch through both real pipelines: each is still adversarial, and by at least κ₀ less the
    measured noise (logit changes of 1e-5 at most here)."""
    model = advimage.models.get(tiny_registered)
    rows = [r for r in _rows(model, items, 2) if r.status == "fooled"]
    assert rows and all(r.file_margin >= NOISE_MARGIN - 1e-5 for r in rows)
    from advimage.verify import eval_float, eval_pil

    config = model.config
    inputs = {"pil": torch.stack([eval_pil(codec.decode_pil(r.data), config) for r in rows]),
              "float": torch.stack([eval_float(codec.decode(r.data, r.suffix).float(), config) for r in rows])}
    labels = torch.tensor([r.label for r in rows])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for x in inputs.values():
                one = torch.cat([model(x[i:i + 1]) for i in range(len(x))])
                for logits in (one, model(x)):
                    assert (logits.argmax(1) != labels).all()
    finally:
        torch.set_num_threads(before)
