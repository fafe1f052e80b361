import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parent.parent


def random_keep(analysis, rng, p_keep=0.5):
    """A random legal unit keep-mask: every channel axis keeps at least one channel."""
    keep = rng.random(analysis.num_units) < p_keep
    for c in analysis.constraints:
        if not keep[c].any():
            keep[rng.choice(c)] = True
    return keep


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def demo_model():
    return REPO / "models" / "demo_cnn.onnx"
