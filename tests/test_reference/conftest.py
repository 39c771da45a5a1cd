"""The comparisons' settings on CUDA: fp32 is fp32 (TF32 off)."""
import pytest


@pytest.fixture(autouse=True)
def _fp32_without_tf32(no_tf32):
    """The fp32 comparisons hold to 1e-4; TF32 (cuDNN's default for fp32
    convs on Ampere and later) rounds conv inputs to 10 bits (about 1e-3
    relative). ``no_tf32`` (tests/conftest.py) restores it after each
    test."""
    yield
