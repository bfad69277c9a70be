"""fastcapa: every frame seen on a network interface (or in a capture file)
into Kafka, one message per frame.

The control plane (this package) reads settings, builds the pipeline from the
native objects of `fastcapa._fastcapa`, runs it, reports its statistics and
stops it; the per-packet work runs in the Rust extension on native threads.
"""

from fastcapa._fastcapa import LIBRDKAFKA_VERSION
from fastcapa.errors import CaptureError, ConfigError, FastcapaError, KafkaError

__version__ = "0.1.0"

__all__ = [
    "LIBRDKAFKA_VERSION",
    "CaptureError",
    "ConfigError",
    "FastcapaError",
    "KafkaError",
    "__version__",
]
