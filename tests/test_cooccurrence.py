"""The vectorized 4th-order co-occurrence equals sealwatch's loops, and the features with it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from advimage.detect import cooccurrence as fast
from advimage.detect.features import extract


@pytest.fixture
def sealwatch_cooc():
    from sealwatch.srm import cooccurrence as module

    fast.install()
    return module._sealwatch_cooccurrence4


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31 - 1), st.sampled_from(["hor", "ver", "diag", "mdiag", "square"]), st.integers(1, 3),
       st.booleans())
def test_equals_sealwatch_cooccurrence4(seed, direction, T, with_fractions):
    from sealwatch.srm import cooccurrence as module

    fast.install()
    original = module._sealwatch_cooccurrence4
    rng = np.random.default_rng(seed)
    D = rng.integers(-T - 2, T + 3, size=(rng.integers(5, 14), rng.integers(5, 14))).astype(np.float64)
    if with_fractions:  # values that are not integers are never counted
        D[rng.random(D.shape) < 0.2] += 0.5
    with np.errstate(invalid="ignore"):  # nothing in range: both give NaN (0/0)
        expected = original(D, direction, T)
        got = fast.cooccurrence4(D, direction, T)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_features_unchanged_by_the_fast_path():
    from skimage import data

    image = np.ascontiguousarray(data.astronaut()[150:182, 180:212])
    fast.install()
    with_fast = {kind: extract(image, kind) for kind in ("srm", "scrmq1")}
    fast.uninstall()
    try:
        import advimage.detect.cooccurrence as module

        original_install = module.install
        module.install = lambda: False  # keep sealwatch's loops for this extraction
        slow = {kind: extract(image, kind) for kind in ("srm", "scrmq1")}
    finally:
        module.install = original_install
        fast.install()
    for kind in with_fast:
        np.testing.assert_array_equal(with_fast[kind], slow[kind])


def test_install_is_idempotent(sealwatch_cooc):
    from sealwatch.srm import cooccurrence as module

    fast.install()
    assert module.all1st.__kwdefaults__["CoocN"] is fast.cooccurrence4
    assert module._sealwatch_cooccurrence4 is sealwatch_cooc
