"""Shared fixtures: the real Kafka broker and the CLI runner (fastcapa_support),
and a summary line when the capture corpus was not there."""

from __future__ import annotations

import signal

import pytest

from fastcapa_support import corpus
from fastcapa_support.fixtures import *  # noqa: F403
from fastcapa_support.runner import run_fastcapa


def pytest_configure(config):
    """The tests stop what they start with SIGINT, as an operator's Ctrl-C
    does. A pytest started in the background by a shell without job control
    (`make test &` in a script) has SIGINT ignored, and every process it
    starts would inherit that: SIGINT to one still starting would be lost."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def fastcapa():
    return run_fastcapa


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reason = corpus.missing_reason()
    if reason:
        terminalreporter.write_sep("!", f"corpus tests did not run: {reason}", yellow=True)
