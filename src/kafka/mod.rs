//! What every Kafka client of fastcapa shares: the transmit side's producer
//! (`crate::producer`), the dump's readers (`crate::dump::kafka`) and the
//! index builder, which both consumes and produces.
//!
//! - [`config`]: a client's settings (the operator's, ours on top, defaults
//!   underneath), making the client, and the errors an operator reads
//!   before the client has done anything: a refused setting, a client
//!   librdkafka could not make, a cluster that does not answer;
//! - [`context`]: the part of a client context that keeps librdkafka's last
//!   error as the reason of such a failure, and the first refusal;
//! - [`refusal`]: which of librdkafka's errors are refusals that trying
//!   again cannot mend (a certificate, a password), and the operator's words
//!   for each: which side's certificate failed, which setting to look at;
//! - [`reach`]: waiting for the cluster's first answer, ended at once by a
//!   refusal;
//! - [`codec`]: the record format on a capture topic, written by the
//!   producer and read by everything else: the key (capture time) and the
//!   `orig_len` header of a cut frame;
//! - [`message`]: a record as librdkafka lends it to a reader's callback.
//!
//! Each client keeps its own context and hot path; what is here is what
//! must read and behave the same in all of them.

pub mod codec;
pub mod config;
pub mod context;
pub mod message;
pub mod reach;
pub mod refusal;

pub use self::config::ClientError;
pub use self::context::LastError;
pub use self::refusal::Refusal;
