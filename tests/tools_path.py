"""Makes the project's tools/ importable from the tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import gen_capture

__all__ = ["gen_capture"]
