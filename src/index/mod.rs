//! `fastcapa index`: which records of a capture topic hold which terms, so
//! that a query reads only the records that can match.
//!
//! The index of a partition is a sequence of **slices**: consecutive offsets
//! of one partition, with their capture-time range and, for every term
//! (address, port, protocol, EtherType, VLAN) that occurs in them, exactly
//! which of their records hold it. Slices live as records of a side topic
//! (`<topic>.index`); Kafka is the only store.
//!
//! - `term.rs`: what a term is ([`Term`]).
//! - `extract.rs`: the terms of one frame, as tcpdump's filters see it.
//! - `slice.rs`: building a slice record by record, its binary form.
//! - `plan.rs`: a `--filter` as a predicate over terms; which records of a
//!   slice it may match (a superset: the BPF filter still runs on each).
//! - `indexer.rs`: the consumer-group member that builds and writes slices.

pub mod extract;
pub mod indexer;
pub mod plan;
pub mod slice;
pub mod term;

pub use self::slice::{Slice, SliceBuilder, SliceMeta};
pub use self::term::Term;
