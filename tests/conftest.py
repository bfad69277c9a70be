"""Shared fixtures: the real Kafka broker and the CLI runner (fastcapa_support),
and a summary line when the capture corpus was not there."""

from __future__ import annotations

import pytest

from fastcapa_support import corpus
from fastcapa_support.fixtures import *  # noqa: F403
from fastcapa_support.runner import run_fastcapa


@pytest.fixture
def fastcapa():
    return run_fastcapa


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reason = corpus.missing_reason()
    if reason:
        terminalreporter.write_sep("!", f"corpus tests did not run: {reason}", yellow=True)
