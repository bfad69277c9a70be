"""fastcapa's exceptions, raised by the native core and the control plane alike.

FastcapaError
├── ConfigError    a setting is invalid             (exit 2 at start)
│   └── FilterError   libpcap refuses a filter expression
├── CaptureError   a capture source failed          (exit 2 at start, 1 while running)
└── KafkaError     Kafka refused or is unreachable  (exit 2 at start, 1 while running)
"""

from fastcapa._fastcapa import CaptureError, ConfigError, FastcapaError, FilterError, KafkaError

__all__ = ["CaptureError", "ConfigError", "FastcapaError", "FilterError", "KafkaError"]
