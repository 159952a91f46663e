//! Roster: an embeddable process registry for multi-agent systems.
//!
//! A [`Registry`] maps a namespaced [`Key`] to a live process ([`Pid`]) and its
//! [`Metadata`]: capabilities, health, node and typed attributes. Keys hash to shards; each
//! shard has one writer thread and seqlock-published tables, so [`Registry::lookup`] takes
//! no lock, performs no read-modify-write and never waits for a writer. Entries of a dead
//! process vanish from lookups at once and are removed by their shards soon after.
//!
//! ```
//! use roster::{Health, Key, Metadata, Registry};
//!
//! let registry = Registry::builder().shards(4).build()?;
//! let agents = registry.namespace("agents")?;
//!
//! // A process is an owner guard; only its holder can register under its pid.
//! let searcher = registry.spawn();
//! let key = Key::new(agents, "searcher-1");
//! let meta = Metadata::new()
//!     .capability("search")
//!     .health(Health::Healthy)
//!     .attribute("region", "eu-west");
//! registry.register(&searcher, &key, &meta)?;
//!
//! let entry = registry.lookup(&key)?.expect("just registered");
//! assert_eq!(entry.pid(), searcher.pid());
//! assert_eq!(entry.attribute("region"), Some(roster::ValueRef::Str("eu-west")));
//!
//! // Dropping the guard kills the process: its entries disappear at once.
//! drop(searcher);
//! assert!(registry.lookup(&key)?.is_none());
//! # Ok::<(), roster::Error>(())
//! ```
//!
//! See `DESIGN.md` and `SPEC.md` in the repository for the architecture and the
//! guarantees (I1–I6, S1–S7, L1–L7) that the tests name.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod budget;
mod entry;
mod error;
mod key;
mod lag;
mod lease;
mod metadata;
mod monitor;
mod process;
mod query;
mod registry;
mod stats;
mod watch;
mod writes;

pub use budget::{Quota, Usage};
pub use entry::{Attributes, Entry, INLINE_WORDS};
pub use error::{Error, ErrorKind};
pub use key::{Key, Name, Namespace, Node, MAX_NAMESPACES, MAX_NAME_LEN};
pub use lag::CleanupLag;
pub use lease::{Clock, ManualClock, SystemClock};
pub use metadata::{Capability, Health, Limits, Metadata, Value, ValueRef};
pub use monitor::{Down, ExitReason, Monitor};
pub use process::{Authority, Pid, Process, MAX_PROCESSES};
pub use query::{Hit, OwnedKey, OwnedName, Query};
pub use registry::{
    Audit, Memory, Registry, RegistryBuilder, Spawn, DEFAULT_WRITE_DEADLINE, MAX_CAPACITY,
    MAX_NAMESPACE_LEN, MAX_QUEUE, NAME_CHARGE,
};
pub use stats::{OpKind, OpStats, ShardStats, Stats};
pub use watch::{Change, ChangeKind, Watch, WatchFilter, Watched};
pub use writes::BatchResults;

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// Public handles are `Send + Sync` (checked at compile time).
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Registry>();
    assert_send_sync::<Process>();
    assert_send_sync::<Authority>();
    assert_send_sync::<Monitor>();
    assert_send_sync::<Entry>();
    assert_send_sync::<Error>();
    assert_send_sync::<Pid>();
};
