"""Where the real capture files are: FASTCAPA_CORPUS, else the shared corpus
beside the repository (../shared/corpus/tcpdump). The corpus lives outside
the repository, so a clone elsewhere may not have it: the tests that need it
are then skipped with the reason, and the run's summary says so."""

from __future__ import annotations

import os
from pathlib import Path

from fastcapa_support import ROOT

_DEFAULT = ROOT.parent.parent / "shared" / "corpus" / "tcpdump"
CORPUS = Path(os.environ.get("FASTCAPA_CORPUS") or _DEFAULT)


def missing_reason() -> str | None:
    """Why the corpus cannot be used, or None when it can."""
    if not CORPUS.is_dir():
        return f"no capture corpus at {CORPUS} (set FASTCAPA_CORPUS to a folder of pcap files)"
    if not any(CORPUS.iterdir()):
        return f"the capture corpus at {CORPUS} is empty"
    return None


def files() -> list[Path]:
    """Every file of the corpus, sorted; empty when it is missing."""
    if missing_reason():
        return []
    return sorted(p for p in CORPUS.iterdir() if p.is_file())


def file(name: str) -> Path:
    """One file of the corpus by name."""
    return CORPUS / name


def needed():
    """A pytest mark: skip the test, saying why, when the corpus is missing."""
    import pytest

    reason = missing_reason()
    return pytest.mark.skipif(reason is not None, reason=reason or "")
