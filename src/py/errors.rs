//! The Python exception tree, and the one place where the stages' errors
//! become Python exceptions (every `From<...> for PyErr` is here). The CLI
//! turns each into one line and an exit status: `ConfigError` (and its
//! `FilterError`) and `CaptureError` at start are usage errors (2),
//! anything raised while running is a failure (1).

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    fastcapa,
    FastcapaError,
    PyException,
    "Base of fastcapa's errors."
);
create_exception!(
    fastcapa,
    ConfigError,
    FastcapaError,
    "A setting is invalid."
);
create_exception!(
    fastcapa,
    FilterError,
    ConfigError,
    "libpcap refuses a filter expression."
);
create_exception!(
    fastcapa,
    CaptureError,
    FastcapaError,
    "A capture source failed."
);
create_exception!(
    fastcapa,
    KafkaError,
    FastcapaError,
    "Kafka refused or cannot be reached."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FastcapaError", py.get_type::<FastcapaError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("FilterError", py.get_type::<FilterError>())?;
    m.add("CaptureError", py.get_type::<CaptureError>())?;
    m.add("KafkaError", py.get_type::<KafkaError>())?;
    Ok(())
}

impl From<crate::kafka::ClientError> for PyErr {
    fn from(error: crate::kafka::ClientError) -> PyErr {
        use crate::kafka::ClientError::*;
        match error {
            Setting { .. } => ConfigError::new_err(error.to_string()),
            Create { .. } | Unreachable { .. } | Refused { .. } => {
                KafkaError::new_err(error.to_string())
            }
        }
    }
}

impl From<crate::producer::ProducerError> for PyErr {
    fn from(error: crate::producer::ProducerError) -> PyErr {
        use crate::producer::ProducerError::*;
        match error {
            Client(e) => e.into(),
            Topic { .. } => KafkaError::new_err(error.to_string()),
        }
    }
}

impl From<crate::ring::RingError> for PyErr {
    fn from(error: crate::ring::RingError) -> PyErr {
        ConfigError::new_err(error.to_string())
    }
}

impl From<crate::privileges::PrivilegeError> for PyErr {
    fn from(error: crate::privileges::PrivilegeError) -> PyErr {
        ConfigError::new_err(error.to_string())
    }
}

impl From<crate::source::CaptureError> for PyErr {
    fn from(error: crate::source::CaptureError) -> PyErr {
        use crate::source::CaptureError::*;
        match error {
            InvalidFilter { .. } => FilterError::new_err(error.to_string()),
            NoSuchInterface(_) | InterfaceDown(_) | Open { .. } | Corrupt { .. } | Os { .. } => {
                CaptureError::new_err(error.to_string())
            }
        }
    }
}

impl From<crate::dump::DumpError> for PyErr {
    fn from(error: crate::dump::DumpError) -> PyErr {
        use crate::dump::DumpError::*;
        match error {
            Io(e) => e.into(),
            Client(e) => e.into(),
            Filter(e) => e.into(),
            NoTopic(_) => ConfigError::new_err(error.to_string()),
            Kafka(_) => KafkaError::new_err(error.to_string()),
        }
    }
}

impl From<crate::index::indexer::IndexError> for PyErr {
    fn from(error: crate::index::indexer::IndexError) -> PyErr {
        use crate::index::indexer::IndexError::*;
        match error {
            Client(e) => e.into(),
            NoTopic(_) => ConfigError::new_err(error.to_string()),
            Kafka(_) => KafkaError::new_err(error.to_string()),
        }
    }
}
