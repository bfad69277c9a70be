"""`fastcapa extcap`: the topics as one of Wireshark's capture interfaces,
through Wireshark's external-capture (extcap) protocol (docs/analysts.md).

Wireshark runs the program it finds in its extcap folder with one question
at a time: `--extcap-interfaces` (which interfaces there are), `--extcap-dlts`
(their link types), `--extcap-config` (the fields of the interface's dialog),
`--extcap-capture-filter` alone (is this capture filter valid?), and
`--capture --fifo PATH` with the dialog's values, to write a capture into the
fifo until it is done or Wireshark stops it (SIGTERM, or the fifo closed).

A capture is `fastcapa dump` run in this process: the topics merged in
capture-time order, as pcapng with one interface per topic. Wireshark shows
whatever the program writes on stderr as an error, also when it exits 0, so
the dump's closing line is held back, and only a failure's line is passed on.

`--install` writes a launcher for this Python into Wireshark's personal
extcap folder; `--uninstall` removes it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar

from fastcapa import __version__, dump, options
from fastcapa.errors import ConfigError, FastcapaError
from fastcapa.librdkafka import check_topic, kafka_settings
from fastcapa.options import EXIT_OK, EXIT_USAGE, fail

INTERFACE = "fastcapa"
DISPLAY = "fastcapa: Kafka topics"
HELP = "fastcapa extcap --help; docs/analysts.md in fastcapa's sources"
# The launcher's second line, by which --install and --uninstall know it.
LAUNCHER_MARK = "# fastcapa's extcap launcher for Wireshark (fastcapa extcap --install)"
_T = TypeVar("_T")
TOOL_TIMEOUT = 30.0  # seconds tshark may take to answer -G folders or --version


@dataclass(frozen=True)
class Field:
    """One field of the interface's dialog: an `arg` line of --extcap-config.
    Wireshark names its preference after `call` without the dashes
    (`--brokers` -> extcap.fastcapa.brokers), so each call is one word."""

    call: str
    display: str
    type: str
    group: str
    tooltip: str
    default: str | None = None
    required: bool = False
    extra: tuple[tuple[str, str], ...] = ()

    def line(self, number: int) -> str:
        parts = [("number", str(number)), ("call", self.call), ("display", self.display)]
        parts.append(("type", self.type))
        if self.default is not None:
            parts.append(("default", self.default))
        parts.append(("tooltip", self.tooltip))
        if self.required:
            parts.append(("required", "true"))
        parts.extend(self.extra)
        parts.append(("group", self.group))
        return "arg " + "".join(f"{{{key}={value}}}" for key, value in parts)


TIME_FORMS = "ISO 8601 (UTC unless it says otherwise), epoch µs, now, or back from now: -15m, -2h"
FIELDS = (
    Field(
        "--brokers",
        "Brokers",
        "string",
        "Kafka",
        "Kafka's bootstrap servers, host:port[,host:port...]; wins over bootstrap.servers"
        " in the settings file; empty: the settings file's, else localhost:9092",
        default="localhost:9092",
    ),
    Field(
        "--topics",
        "Topics",
        "string",
        "Kafka",
        "the topics to read, comma-separated; several are merged in capture-time order",
        required=True,
        extra=(("validation", r"^ *[A-Za-z0-9._-]+ *(, *[A-Za-z0-9._-]+ *)*,? *$"),),
    ),
    Field(
        "--config",
        "Settings file",
        "fileselect",
        "Kafka",
        "librdkafka settings (TLS, SASL, ...) in fastcapa's INI format, as fastcapa dump -c"
        " takes: [kafka-global] and [kafka-topic] sections of key = value",
        extra=(("mustexist", "true"),),
    ),
    Field(
        "--timeout",
        "Kafka timeout (s)",
        "double",
        "Kafka",
        "how long to wait for each of Kafka's answers, in seconds",
        default="10",
    ),
    Field(
        "--from",
        "From",
        "string",
        "Window",
        f"first capture time: {TIME_FORMS}; empty: the start of each topic",
    ),
    Field(
        "--to",
        "To",
        "string",
        "Window",
        f"last capture time, inclusive: {TIME_FORMS}; empty: no end",
    ),
    Field(
        "--live",
        "Live",
        "boolflag",
        "Window",
        "keep reading what the topics receive after the start, until stopped or past To",
        default="false",
    ),
    Field(
        "--linktype",
        "Link type",
        "integer",
        "Frames",
        "the link-layer header type of the topics' frames (1: Ethernet); the capture"
        " filter is compiled for it",
        default="1",
        extra=(("range", "0,65535"),),
    ),
    Field(
        "--noindex",
        "Do not use the index",
        "boolflag",
        "Frames",
        "scan the window even where a topic has an index (same frames, more reading)",
        default="false",
    ),
)


def interfaces_lines() -> list[str]:
    return [
        f"extcap {{version={__version__}}}{{help={HELP}}}",
        f"interface {{value={INTERFACE}}}{{display={DISPLAY}}}",
    ]


def dlts_lines() -> list[str]:
    # Nominal: the capture is pcapng, each topic's interface block carries
    # its own link type.
    return ["dlt {number=1}{name=EN10MB}{display=Ethernet}"]


def config_lines() -> list[str]:
    return [field.line(number) for number, field in enumerate(FIELDS)]


def parser() -> argparse.ArgumentParser:
    p = options.Parser(
        prog="fastcapa extcap",
        description="Kafka topics as a capture interface of Wireshark and tshark, through"
        " Wireshark's extcap protocol. Run --install once; Wireshark then lists the"
        f" interface '{INTERFACE}' and asks the rest itself.",
        formatter_class=options.HelpFormatter,
    )
    setup = p.add_argument_group("set-up")
    setup.add_argument(
        "--install",
        action="store_true",
        help="write a launcher for this Python's fastcapa into Wireshark's personal extcap folder",
    )
    setup.add_argument("--uninstall", action="store_true", help="remove that launcher")
    setup.add_argument(
        "--extcap-folder",
        metavar="DIR",
        help="the folder to install into or uninstall from (default: the one tshark names,"
        " or the one its version reads)",
    )
    protocol = p.add_argument_group("Wireshark's questions")
    protocol.add_argument("--extcap-interfaces", action="store_true", help="list interfaces")
    protocol.add_argument("--extcap-version", metavar="VERSION", help="Wireshark's version")
    protocol.add_argument("--extcap-interface", metavar="NAME", help="the interface asked about")
    protocol.add_argument("--extcap-dlts", action="store_true", help="list its link types")
    protocol.add_argument("--extcap-config", action="store_true", help="list its dialog's fields")
    protocol.add_argument(
        "--extcap-capture-filter",
        metavar="FILTER",
        help="alone: check the filter (its error on stdout, nothing if valid); with"
        " --capture: the capture filter",
    )
    protocol.add_argument("--capture", action="store_true", help="capture into --fifo")
    protocol.add_argument("--fifo", metavar="PATH", help="where Wireshark reads the capture")
    protocol.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    protocol.add_argument("--debug-file", help=argparse.SUPPRESS)
    dialog = p.add_argument_group("the dialog's fields (with --capture)")
    for field in FIELDS:
        name = field.call[2:]
        if field.type == "boolflag":
            dialog.add_argument(field.call, action="store_true", help=field.tooltip)
        else:
            dialog.add_argument(
                field.call,
                dest={"from": "start", "to": "end"}.get(name, name),
                metavar=name.upper(),
                help=field.tooltip,
            )
    return p


# Options that take a value: Wireshark passes `--from -15m` as two words,
# which argparse would read as two options; they are joined into one.
VALUE_OPTIONS = frozenset(
    ["--extcap-version", "--extcap-interface", "--extcap-capture-filter", "--fifo"]
    + ["--extcap-folder", "--debug-file"]
    + [f.call for f in FIELDS if f.type != "boolflag"]
)


def join_values(argv: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in VALUE_OPTIONS and i + 1 < len(argv):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def run(argv: list[str]) -> int:
    """`fastcapa extcap ...`: answers one of Wireshark's questions, or sets up."""
    argv = join_values(argv)
    try:
        args = parser().parse_args(argv)
    except SystemExit:
        # A capture Wireshark waits for must see its fifo opened, even to fail.
        fifo = next((a.partition("=")[2] for a in argv if a.startswith("--fifo=")), None)
        if "--capture" in argv and fifo:
            release_fifo(fifo)
        raise
    if args.install or args.uninstall:
        if args.install and args.uninstall:
            return fail(EXIT_USAGE, "--install or --uninstall, not both")
        try:
            folder = Path(args.extcap_folder) if args.extcap_folder else extcap_folder(os.environ)
            message = install(folder) if args.install else uninstall(folder)
        except (FastcapaError, OSError) as e:
            return fail(EXIT_USAGE, e)
        print(f"fastcapa: {message}")
        return EXIT_OK
    if args.extcap_interfaces:
        _print(interfaces_lines())
        return EXIT_OK
    if args.extcap_interface is None:
        return fail(
            EXIT_USAGE,
            "nothing asked: --install, --extcap-interfaces, or --extcap-interface"
            f" {INTERFACE} with a question (see fastcapa extcap --help)",
        )
    if args.extcap_interface != INTERFACE:
        status = fail(EXIT_USAGE, f"no interface {args.extcap_interface!r}, only {INTERFACE!r}")
        if args.capture and args.fifo:
            release_fifo(args.fifo)
        return status
    if args.extcap_dlts:
        _print(dlts_lines())
        return EXIT_OK
    if args.extcap_config:
        _print(config_lines())
        return EXIT_OK
    if args.capture:
        return capture(args)
    if args.extcap_capture_filter is not None:
        _print(filter_problem(args.extcap_capture_filter))
        return EXIT_OK
    return fail(EXIT_USAGE, "nothing asked: --extcap-dlts, --extcap-config, --capture or a filter")


def _print(lines: list[str]) -> None:
    for line in lines:
        print(line)
    sys.stdout.flush()


# -- the filter check


def filter_problem(expr: str) -> list[str]:
    """Why libpcap refuses `expr` for Ethernet, as one line; nothing if it
    compiles (Wireshark reads an empty answer as valid)."""
    from fastcapa import _fastcapa

    if not expr.strip():
        return []
    try:
        _fastcapa.Filter.compile_user(expr)
    except FastcapaError as e:
        return [" ".join(str(e).split())]
    return []


# -- the capture


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM, Wireshark's stop, as Ctrl-C: the dump writes what it holds."""
    raise KeyboardInterrupt


def capture(args: argparse.Namespace) -> int:
    """Writes the dialog's query into the fifo as pcapng. On a failure, one
    line on stderr (Wireshark shows it) and a nonzero status.

    The fifo stays open here until the failure's line is written: Wireshark
    takes the fifo's end as the capture's, and stops the extcap (SIGTERM)
    before it reads its stderr; the dump writes through a second opening of
    the fifo, which it closes (and would remove, on a failure) as it likes.
    """
    if not args.fifo:
        return fail(EXIT_USAGE, "--capture needs --fifo PATH")
    signal.signal(signal.SIGTERM, _interrupt)
    fifo: int | None = None
    try:
        try:
            # Blocks until Wireshark opens the fifo to read it.
            fifo = os.open(args.fifo, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as e:
            return fail(EXIT_USAGE, f"cannot open {args.fifo}: {e.strerror}")
        try:
            settings, query = capture_query(args, f"/dev/fd/{fifo}")
        except (FastcapaError, argparse.ArgumentTypeError) as e:
            return fail(EXIT_USAGE, e)
        held = io.StringIO()
        with contextlib.redirect_stderr(held):
            status = dump.run(settings, query)
        if status != EXIT_OK:
            sys.stderr.write(held.getvalue())
        return status
    except (KeyboardInterrupt, BrokenPipeError):
        # Stopped by Wireshark, or the fifo closed: nothing to say.
        return EXIT_OK
    finally:
        # What was to be said is said: the stop that closing the fifo
        # brings changes nothing now.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stderr.flush()
        if fifo is not None:
            os.close(fifo)


def capture_query(args: argparse.Namespace, output: str) -> tuple[dict[str, str], dump.Query]:
    """The dialog's values as librdkafka settings and a dump query into `output`."""
    from fastcapa.index import index_topic_of

    topics = topic_names(args.topics or "")
    linktype = _field("Link type", options.integer, args.linktype or "1")
    if not 0 <= linktype <= 0xFFFF:
        raise ConfigError(f"Link type must be a link-layer type number, got {linktype}")
    timeout = _field("Kafka timeout", options.positive_seconds, args.timeout or "10")
    start = _field("From", options.capture_time, args.start) if _given(args.start) else None
    end = _field("To", options.capture_time, args.end) if _given(args.end) else None
    if start is not None and end is not None and end < start:
        raise ConfigError("To is before From")
    brokers = args.brokers.strip() if _given(args.brokers) else None
    settings = kafka_settings(args.config or None, [], brokers)
    expr = args.extcap_capture_filter
    query = dump.Query(
        topics=topics,
        output=output,
        start=start,
        end=end,
        count=0,
        linktype=linktype,
        follow=args.live,
        timeout=timeout,
        filter=expr if expr and expr.strip() else None,
        index_topics=None if args.noindex else tuple(index_topic_of(t) for t in topics),
        format="pcapng",
    )
    return settings, query


def _given(value: str | None) -> bool:
    """Whether a field holds more than blanks (Wireshark leaves empty ones out)."""
    return bool(value and value.strip())


def topic_names(text: str) -> tuple[str, ...]:
    """`east, west` -> ("east", "west"): each a valid name, none twice."""
    topics = tuple(check_topic(t.strip()) for t in text.split(",") if t.strip())
    if not topics:
        raise ConfigError("no topic: name one or more in Topics (--topics), comma-separated")
    for topic in topics:
        if topics.count(topic) > 1:
            raise ConfigError(f"topic {topic} is named twice")
    return topics


def _field(name: str, parse: Callable[[str], _T], text: str) -> _T:
    """A field's value, or ConfigError naming the field."""
    try:
        return parse(text.strip())
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{name}: {e}") from None


def release_fifo(path: str) -> None:
    """Opens the fifo and closes it: Wireshark 4.0 waits until its capture
    pipe is opened, also for a capture that fails before it writes. (After
    the failure's line: the fifo's end brings Wireshark's SIGTERM.)"""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY))


# -- set-up


def launcher_text(python: str) -> str:
    """The launcher: this interpreter's fastcapa, whatever PATH Wireshark has."""
    return f'#!/bin/sh\n{LAUNCHER_MARK}\nexec {shlex.quote(python)} -m fastcapa extcap "$@"\n'


def is_launcher(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(4096)
    except OSError:
        return False
    return LAUNCHER_MARK.encode() in head


def install(folder: Path) -> str:
    """Writes the launcher into `folder` (made if need be); what was done."""
    target = folder / INTERFACE
    if (target.exists() or target.is_symlink()) and not is_launcher(target):
        raise ConfigError(f"{target} exists and is not fastcapa's launcher: remove it first")
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{INTERFACE}-", dir=folder)
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(launcher_text(sys.executable))
        os.chmod(temporary, 0o755)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    # What Wireshark will see: the launcher must answer its first question.
    check = subprocess.run(
        [str(target), "--extcap-interfaces"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        check=False,
    )
    if check.returncode != 0 or f"{{value={INTERFACE}}}" not in check.stdout:
        target.unlink()
        why = (check.stderr.strip().splitlines() or ["no answer"])[-1]
        raise ConfigError(f"{target} does not run fastcapa ({why}); removed it again")
    return (
        f"installed {target} (runs {sys.executable} -m fastcapa extcap); Wireshark lists"
        f" the interface '{INTERFACE}' once restarted or its interfaces refreshed"
    )


def uninstall(folder: Path) -> str:
    target = folder / INTERFACE
    if not (target.exists() or target.is_symlink()):
        return f"no launcher at {target}: nothing to remove"
    if not is_launcher(target):
        raise ConfigError(f"{target} is not fastcapa's launcher: left as it is")
    target.unlink()
    return f"removed {target}"


def extcap_folder(env: Mapping[str, str]) -> Path:
    """Wireshark's personal extcap folder, as the installed tshark reads it.

    Wireshark 4.2 and later name it in `tshark -G folders` (Personal Extcap
    path, ~/.local/lib/wireshark/extcap); 4.0 and 4.1 read the `extcap`
    folder of the personal configuration folder and name only the global one.
    """
    tshark = shutil.which("tshark", path=env.get("PATH"))
    if tshark is None:
        raise ConfigError(
            "tshark is not installed, so Wireshark's extcap folder is unknown: name it"
            " with --extcap-folder DIR (Wireshark 4.0 and 4.1: ~/.config/wireshark/extcap;"
            " 4.2 and later: ~/.local/lib/wireshark/extcap)"
        )
    folders = _folders(_tool_output([tshark, "-G", "folders"], env))
    if "Personal Extcap path" in folders:
        return Path(folders["Personal Extcap path"])
    version = _version(_tool_output([tshark, "--version"], env))
    if version is None:
        raise ConfigError(
            f"cannot tell {tshark}'s version: name the folder with --extcap-folder DIR"
        )
    if version < (4, 1):
        configuration = folders.get("Personal configuration")
        base = Path(configuration) if configuration else wireshark_config_dir(env)
        return base / "extcap"
    return _home(env) / ".local" / "lib" / "wireshark" / "extcap"


def _tool_output(command: list[str], env: Mapping[str, str]) -> str:
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            env=dict(env),
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(
            f"{' '.join(command)} failed ({e}): name the folder with --extcap-folder DIR"
        ) from None
    return done.stdout


def _folders(text: str) -> dict[str, str]:
    """`tshark -G folders`: `Name:<tab>path` lines (a name may come twice)."""
    folders: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, path = line.partition(":")
        if sep and path.strip():
            folders.setdefault(name.strip(), path.strip())
    return folders


def _version(text: str) -> tuple[int, int] | None:
    """`TShark (Wireshark) 4.0.17 (...)` -> (4, 0)."""
    found = re.search(r"\(Wireshark\) (\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else None


def _home(env: Mapping[str, str]) -> Path:
    """$HOME as Wireshark takes it: the variable, else the password file."""
    home = env.get("HOME")
    if home:
        return Path(home)
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        return Path("/tmp")


def wireshark_config_dir(env: Mapping[str, str]) -> Path:
    """Wireshark's personal configuration folder on Linux: $WIRESHARK_CONFIG_DIR;
    else $XDG_CONFIG_HOME/wireshark (~/.config/wireshark) if it is a folder;
    else ~/.wireshark if that is one; else the first."""
    if env.get("WIRESHARK_CONFIG_DIR"):
        return Path(env["WIRESHARK_CONFIG_DIR"])
    xdg_home = env.get("XDG_CONFIG_HOME", "")
    xdg = Path(xdg_home) if os.path.isabs(xdg_home) else _home(env) / ".config"
    if (xdg / "wireshark").is_dir():
        return xdg / "wireshark"
    if (_home(env) / ".wireshark").is_dir():
        return _home(env) / ".wireshark"
    return xdg / "wireshark"
