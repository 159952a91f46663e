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
//! # Consistency: what a reader sees, and when
//!
//! - **A write is visible when it returns.** Once [`Registry::register`],
//!   [`Registry::unregister`] or [`Registry::update_metadata`] returns `Ok`, every
//!   [`Registry::lookup`] on any thread sees it; a lookup never sees half of a write (a
//!   torn entry, or metadata from two versions).
//! - **A key has one holder.** Of concurrent registrations of one key exactly one succeeds;
//!   the others get [`ErrorKind::AlreadyRegistered`] naming the winner.
//! - **Dead means gone.** A lookup never returns an entry of a dead process: the liveness
//!   check is part of every lookup, so an entry disappears the moment its process dies,
//!   before any shard has removed it.
//! - **Queries** ([`Registry::query`]) return only live entries that match, each as it
//!   was when read, and reflect every write that returned before the query began
//!   (read-your-writes). A query is not a snapshot: an entry written while it runs may
//!   or may not be included.
//! - **Watches** ([`Registry::watch`]) deliver the changes of one shard in the order that
//!   shard applied them, numbered per shard; changes of different shards are not ordered
//!   against each other. A watcher that falls behind is told how many changes it lost
//!   ([`Watched::Lagged`]); it never blocks a writer.
//!
//! # Deadlines
//!
//! Every write has a deadline: [`DEFAULT_WRITE_DEADLINE`] (10 ms), or the registry's
//! ([`RegistryBuilder::write_deadline`]), or a handle's ([`Registry::with_deadline`]). A
//! write either completes by its deadline or returns [`ErrorKind::Timeout`], and a
//! `Timeout` means it was **not** applied and never will be: the shard's writer claims a
//! write before applying it, atomically against the caller giving up, so retrying is
//! safe. Batches share one deadline per shard. Lookups and queries have no deadline: they
//! never wait for a writer.
//!
//! # Cleanup
//!
//! A process dies when its [`Process`] guard is dropped (also by a panic unwinding through
//! it), when [`Process::exit`] is called, or when its lease expires
//! ([`Registry::spawn_leased`]). Its entries vanish from lookups and queries at once; the
//! shards remove them within the cleanup window ([`RegistryBuilder::cleanup_window`],
//! 100 ms by default, also during mass deaths: [`Registry::cleanup_lag`] measures it).
//! [`Registry::monitor`] tells who asked. A write by a process that is already dead fails
//! with [`ErrorKind::ProcessDead`].
//!
//! # Limits
//!
//! [`Limits`] bounds names, capabilities, attributes and the encoded metadata; every limit
//! is checked on the caller's thread before anything reaches a shard, and a breach names
//! the field and the limit ([`ErrorKind::InvalidMetadata`], [`ErrorKind::InvalidKey`]).
//! [`RegistryBuilder::memory_limit`] caps the bytes the shards hold for entries
//! ([`ErrorKind::RegistryFull`]) and [`Registry::set_quota`] caps a namespace's entries
//! or bytes ([`ErrorKind::QuotaExceeded`]); both hold exactly under concurrent writers,
//! with per-entry charges that [`Registry::memory`] and [`Registry::usage`] report.
//! [`Registry::validate`] checks a key and metadata without writing.
//!
//! See `DESIGN.md` and `SPEC.md` in the repository for the architecture and the numbered
//! guarantees (I1–I6, S1–S7, L1–L7, C1–C4) that the tests name.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod batch;
mod budget;
mod builder;
mod entry;
mod error;
mod interner;
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
pub use builder::{
    RegistryBuilder, DEFAULT_MAX_LOAD, DEFAULT_WRITE_DEADLINE, MAX_CAPACITY, MAX_QUEUE,
};
pub use entry::{Attributes, Entry, INLINE_WORDS};
pub use error::{Error, ErrorKind};
pub use key::{Key, Name, Namespace, Node, MAX_NAMESPACES, MAX_NAME_LEN};
pub use lag::CleanupLag;
pub use lease::{Clock, ManualClock, SystemClock};
pub use metadata::{Capability, Health, Limits, Metadata, Value, ValueRef};
pub use monitor::{Down, ExitReason, Monitor};
pub use process::{Authority, Pid, Process, Spawn, MAX_PROCESSES};
pub use query::{Hit, OwnedKey, OwnedName, Query};
pub use registry::{Audit, Memory, Registry, MAX_NAMESPACE_LEN, NAME_CHARGE};
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
