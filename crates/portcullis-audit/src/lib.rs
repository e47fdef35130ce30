//! Audit sinks for Portcullis.
//!
//! - [`JsonlSink`]: a JSON Lines file, one event per line, each line chained to the one before
//!   it (`seq`, `prev_hash`, `hash` = SHA-256 over the previous hash and the line's canonical
//!   JSON). A batch is acknowledged only once it is on disk (fsync).
//! - [`verify`]: reads such a file and names the first line that was changed, removed, inserted
//!   or moved.
//! - [`PgAuditSink`]: PostgreSQL, batched and idempotent, through a role that may only insert and
//!   read; triggers refuse `UPDATE`, `DELETE` and `TRUNCATE`.
//!
//! - [`Auditor`]: the emitter every layer hands events to (an
//!   [`AuditSink`](portcullis_core::audit::AuditSink)): sensitive events written before the
//!   action proceeds, routine events queued, spooled to disk when the queue or the sink cannot
//!   take them, and every event that could not be recorded counted in an `audit.gap` event.
//!
//! The event schema and the [`AuditSink`](portcullis_core::audit::AuditSink) interface live in
//! `portcullis-core`.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod chain;
mod emitter;
mod jsonl;
pub mod layer;
mod postgres;

pub use chain::{GENESIS, Verified, VerifyError, VerifyErrorKind, verify, verify_reader};
pub use emitter::{
    AuditStats, Auditor, AuditorConfig, AuditorTask, EventWriter, JsonlWriter, StdoutWriter,
    WriteFuture,
};
pub use jsonl::JsonlSink;
#[doc(inline)]
pub use layer::{Audit, AuditLayer};
pub use postgres::{PgAuditSink, PgSinkError, WRITER_ROLE};
