"""Suite-wide settings: never touch the network, deterministic CPU math, the reference-env switch."""

import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# a fresh image-code cache per test session: tests never read or fill the user's ~/.cache
os.environ["RUDOLPH_FT_CACHE"] = tempfile.mkdtemp(prefix="rudolph-ft-test-cache-")

import pytest  # noqa: E402

ASSETS = Path(__file__).parent / "assets"


def reference_python(version: str = "rc10") -> str:
    """Python of the reference env (`scripts/make-reference-env.sh`) from RUDOLPH_REF_PYTHON[_RC4]; the calling
    test is skipped, saying which variable to set, when it is not configured."""
    var = "RUDOLPH_REF_PYTHON" if version == "rc10" else "RUDOLPH_REF_PYTHON_RC4"
    path = os.environ.get(var)
    if not (path and shutil.which(path)):
        pytest.skip(f"set {var} to the python of the reference env (scripts/make-reference-env.sh)")
    return path


@pytest.fixture
def assets() -> Path:
    return ASSETS


@pytest.fixture(autouse=True)
def _seed():
    import torch

    torch.manual_seed(0)
    yield
