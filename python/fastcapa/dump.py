"""`fastcapa dump`: the way back, Kafka to a capture file (pycapa's consumer),
as a query engine: one or more topics, a time window, a filter, a count.

The query runs in the native extension (src/dump/, docs/dump.md): each
partition read as its own stream, `--from` found by searching the keys, the
partitions of every topic merged into capture-time order, the filter
applied, the records written as a classic pcap or a pcapng file (one
interface per topic) that tcpdump and tshark read to its end. This
module holds the rest: the output, the progress line on a terminal, Ctrl-C,
and the closing line that says what was written, skipped or cut.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastcapa._fastcapa import MAX_SNAPLEN
from fastcapa.errors import ConfigError, FastcapaError
from fastcapa.options import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, fail
from fastcapa.signals import SignalLatch

if TYPE_CHECKING:
    from fastcapa import _fastcapa

# How long one native call works before Python looks at signals and progress.
STEP_SECONDS = 0.2


@dataclass(frozen=True)
class Query:
    """What `fastcapa dump` is asked for (parsed by the command line)."""

    topics: tuple[str, ...]  # one or more, merged into one capture-time order
    output: str  # a path, or "-" for standard output
    start: int | None  # first key (µs), inclusive
    end: int | None  # last key (µs), inclusive
    count: int  # 0: no limit
    linktype: int
    follow: bool
    timeout: float
    filter: str | None = None  # tcpdump syntax
    index_topics: tuple[str, ...] | None = None  # one per topic; None: scan (--no-index)
    explain: bool = False
    format: str = "pcap"  # or "pcapng"


def format_of(output: str) -> str:
    """The format an output's name asks for: pcapng for `*.pcapng`."""
    return "pcapng" if output.lower().endswith(".pcapng") else "pcap"


# The closing line's words for each kind of record left out or changed.
SKIPPED = {
    "no_key": "without a key",
    "bad_key": "with a key not 8 bytes long",
    "no_value": "with a null value",
    "bad_time": "with a time a pcap record cannot hold",
}


def closing_line(
    counts: list[tuple[str, dict[str, int]]], filtered: bool, window: bool, bound_s: float
) -> str:
    """`fastcapa dump: N frames from topic T` and, when there is anything to
    say, what was left out, cut, or came later than the reorder bound; with
    several topics, what each gave and what of each was left out."""
    if len(counts) == 1:
        topic, only = counts[0]
        parts = [f"fastcapa dump: {only['written']} frames from topic {topic}"]
        return "; ".join(parts + _details(only, filtered, window, bound_s))
    total = sum(c["written"] for _, c in counts)
    names = ", ".join(topic for topic, _ in counts)
    parts = [f"fastcapa dump: {total} frames from topics {names}"]
    for topic, c in counts:
        parts.append(
            ", ".join([f"{topic}: {c['written']} frames", *_details(c, filtered, window, bound_s)])
        )
    return "; ".join(parts)


def _details(counts: dict[str, int], filtered: bool, window: bool, bound_s: float) -> list[str]:
    """What the closing line says of one topic besides its frames."""
    parts = []
    if filtered:
        parts.append(f"{counts['filtered']} in the window did not match the filter")
    skipped = {kind: counts[kind] for kind in SKIPPED if counts[kind]}
    if skipped:
        kinds = ", ".join(f"{n} {SKIPPED[kind]}" for kind, n in skipped.items())
        total = sum(skipped.values())
        parts.append(f"skipped {total} record{'s' if total > 1 else ''} ({kinds})")
    if counts["cut"]:
        parts.append(f"{counts['cut']} cut to {MAX_SNAPLEN} bytes, the pcap limit")
    if counts["bad_orig_len"]:
        parts.append(
            f"{counts['bad_orig_len']} with a malformed orig_len header"
            " (written with their captured length as the wire length)"
        )
    if counts["late"]:
        parts.append(
            f"{counts['late']} read later than the {bound_s:g} s reorder bound allows"
            + (" (the window's edges may miss records)" if window else "")
        )
    if counts["out_of_order"]:
        parts.append(f"{counts['out_of_order']} written out of time order")
    return parts


def explain_lines(query: Query, plan: dict[str, Any]) -> list[str]:
    """`--explain`: what the dump will read, per topic and partition."""
    lines = []
    for i, topic in enumerate(plan["topics"]):
        index = None if query.index_topics is None else query.index_topics[i]
        if index is None:
            head = "no index asked for (--no-index): every partition is scanned"
        elif not topic["index"]:
            head = f"no index in {index}: every partition is scanned"
        else:
            head = f"index {index}; filter as planned: {plan['predicate']}"
        lines.append(f"fastcapa dump: plan for topic {topic['topic']}: {head}")
        for part in topic["partitions"]:
            where = f"  partition {part['partition']} (offsets {part['low']}-{part['high']}):"
            if part["slices"] is None:
                lines.append(f"{where} scanned, no slice of the index covers it")
                continue
            text = (
                f"{where} {part['slices']} slices, {part['in_window']} in the window,"
                f" {part['selected']} selected, {part['selected_records']} records may match,"
                f" {part['indexed_reads']} records to read"
            )
            if part["gaps"]:
                text += f"; {part['gaps']} records no slice covers (read whole)"
            if part["tail_from"] is not None:
                text += f"; offsets {part['tail_from']}-{part['high']} not indexed yet (scanned)"
            lines.append(text)
    return lines


def run(settings: dict[str, str], query: Query) -> int:
    """Writes the frames the query asks for; returns the exit status.

    SIGINT and SIGTERM are counted from here on, never raised: a dump that
    inherited SIGINT ignored (started in the background of a script) still
    stops on it, and no KeyboardInterrupt can land in the middle of writing
    what waits, closing the output or leaving Kafka. The first one ends the
    reading at the end of the step under way (STEP_SECONDS) and writes what
    waits in the merge; a second one before that skips it. The count stays
    until the process exits: a signal once the dump is done changes
    nothing (restored, Python's handler would make it exit 130)."""
    return _run(settings, query, SignalLatch())


def _run(settings: dict[str, str], query: Query, stops: SignalLatch) -> int:
    from fastcapa import _fastcapa

    to_stdout = query.output == "-"
    try:
        stream = sys.stdout.buffer if to_stdout else open(query.output, "wb")  # noqa: SIM115
    except OSError as e:
        return fail(EXIT_USAGE, ConfigError(f"cannot write {query.output}: {e.strerror}"))
    try:
        try:
            dump = _open_or_stop(
                lambda: _fastcapa.Dump(
                    list(query.topics),
                    list(settings.items()),
                    stream.fileno(),
                    start=query.start,
                    end=query.end,
                    count=query.count,
                    linktype=query.linktype,
                    follow=query.follow,
                    filter=query.filter,
                    timeout=query.timeout,
                    index_topics=None if query.index_topics is None else list(query.index_topics),
                    format=query.format,
                ),
                stops,
            )
        except _StoppedWhileOpening:
            # Nothing was read or written: no file is left behind, and the
            # native call still waiting on Kafka ends with the process.
            if not to_stdout:
                stream.close()
                with contextlib.suppress(OSError):
                    os.unlink(query.output)
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        except FastcapaError as e:
            if not to_stdout:
                stream.close()
                with contextlib.suppress(OSError):
                    os.unlink(query.output)
            return fail(EXIT_USAGE, e)
        if query.explain:
            for line in explain_lines(query, dump.plan()):
                print(line, file=sys.stderr)
        try:
            status = _drive(dump, query, stops)
            counts = dump.topic_counters()
        finally:
            dump.close()
    finally:
        if not to_stdout:
            stream.close()
    if status is None:  # the reader went away: nothing more to say
        return EXIT_OK
    if status == EXIT_OK:
        bound_s = _fastcapa.DUMP_REORDER_BOUND_US / 1e6
        window = query.start is not None or query.end is not None
        line = closing_line(counts, query.filter is not None, window, bound_s)
        print(line, file=sys.stderr)
    return status


class _StoppedWhileOpening(Exception):
    """A signal came while the dump was still connecting."""


def _open_or_stop(open_dump: Callable[[], _fastcapa.Dump], stops: SignalLatch) -> _fastcapa.Dump:
    """Opening waits up to --timeout for each of Kafka's answers in native
    calls a signal cannot cut short: it runs on a thread of its own while
    this one looks at the signals every step. _StoppedWhileOpening if one
    comes first."""
    outcome: list[_fastcapa.Dump | BaseException] = []

    def work() -> None:
        try:
            outcome.append(open_dump())
        except BaseException as e:  # handed to the caller below
            outcome.append(e)

    opener = threading.Thread(target=work, name="fastcapa-dump-open", daemon=True)
    opener.start()
    while opener.is_alive():
        opener.join(STEP_SECONDS)
        if stops.count and opener.is_alive():
            raise _StoppedWhileOpening
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _drive(dump: _fastcapa.Dump, query: Query, stops: SignalLatch) -> int | None:
    """Runs the dump to its end or to a signal; the exit status, or None when
    the reader of the output went away (a pipe closed early). Between two
    bounded native calls it looks at the signals and the progress line, and
    nothing else: the stop is the same whenever the signal comes."""
    progress = _Progress()
    try:
        done = False
        while not done and not stops.count:
            done = dump.run(STEP_SECONDS)
            if not done:
                progress.show(dump.counters()["read"])
        if not done and stops.count == 1:
            # Stopped by the operator: what waits in the merge is written too.
            dump.finish()
    except BrokenPipeError:
        return None
    except FastcapaError as e:
        return fail(EXIT_FAILED, e)
    except OSError as e:
        return fail(EXIT_FAILED, f"cannot write {query.output}: {e}")
    finally:
        progress.done()
    return EXIT_OK


class _Progress:
    """A progress line on stderr, only when stderr is a terminal. It is
    written only when the terminal takes it at once, in one write: a
    terminal nobody reads (or one stopped with Ctrl-S) holds up neither the
    dump nor its stop."""

    def __init__(self) -> None:
        self.fd = sys.stderr.fileno() if sys.stderr.isatty() else None
        self.last = time.monotonic()
        self.shown = False

    def show(self, frames: int) -> None:
        if self.fd is not None and time.monotonic() - self.last >= 1.0:
            self.last = time.monotonic()
            self.shown |= self._write(f"\rfastcapa dump: {frames} frames read")

    def done(self) -> None:
        if self.shown:
            self._write("\r\033[K")

    def _write(self, text: str) -> bool:
        assert self.fd is not None
        try:
            if not select.select([], [self.fd], [], 0)[1]:
                return False
            os.write(self.fd, text.encode())
        except OSError:
            return False
        return True
