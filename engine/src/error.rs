//! The one public error type. Every fallible call returns it; none panics on any input.

use std::fmt;
use std::time::Duration;

use crate::key::Namespace;
use crate::process::Pid;

/// An error from a registry call. [`Error::kind`] says what happened and carries what the
/// caller needs to act on it (the holder of a taken key, the limit that was exceeded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    /// Boxed, so an `Error` is one pointer and `Result<bool, Error>` (every lookup's
    /// answer) comes back in registers; errors are the rare path that may allocate.
    kind: Box<ErrorKind>,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The key is registered by a live process (S1: exactly one concurrent registration of
    /// a key wins; the others get this, naming the winner).
    AlreadyRegistered {
        /// The process holding the key.
        owner: Pid,
    },
    /// No live entry has this key.
    NotFound,
    /// The key is held by another live process; only its owner may change it.
    NotOwner {
        /// The process holding the key.
        owner: Pid,
    },
    /// The process handle belongs to another registry.
    ForeignProcess,
    /// The namespace belongs to another registry (namespaces come from
    /// [`Registry::namespace`](crate::Registry::namespace) and are valid only there).
    ForeignNamespace {
        /// The namespace's id in the registry that made it.
        namespace: u32,
    },
    /// The registry already has [`MAX_PROCESSES`](crate::MAX_PROCESSES) processes alive
    /// or dying; none was started.
    TooManyProcesses {
        /// The limit.
        limit: u64,
    },
    /// The process is dead: it can no longer register.
    ProcessDead {
        /// The dead process.
        pid: Pid,
    },
    /// The key is malformed.
    InvalidKey {
        /// What is wrong with it.
        reason: &'static str,
        /// The limit that applies.
        limit: usize,
        /// What was given.
        actual: usize,
    },
    /// The metadata breaks a limit; nothing was stored (SPEC I4).
    InvalidMetadata {
        /// The field at fault: `capabilities`, `capability name`, `attributes`,
        /// `attribute key`, `attribute value` or `metadata` (the encoded total).
        field: &'static str,
        /// The limit.
        limit: usize,
        /// What was given.
        actual: usize,
    },
    /// A namespace name is empty, too long, or the registry holds too many namespaces.
    InvalidNamespace {
        /// What is wrong.
        reason: &'static str,
    },
    /// The builder was given settings that cannot work.
    InvalidConfig {
        /// Which setting and why.
        reason: String,
    },
    /// The write's deadline passed before its shard's writer reached it: it was **not**
    /// applied, and never will be (SPEC L1). Retrying is safe.
    Timeout {
        /// The deadline the write had, measured from the call.
        deadline: Duration,
    },
    /// The writer thread of this shard died of a fault (SPEC S6). Writes to the keys of
    /// this shard fail; other shards keep serving. A write in flight when it died may or
    /// may not have been applied.
    ShardFailed {
        /// The failed shard's index.
        shard: usize,
    },
    /// The registry's memory limit would be exceeded (charged bytes, see
    /// [`Registry::memory`](crate::Registry::memory)); nothing was stored.
    RegistryFull {
        /// The limit, in bytes.
        limit: u64,
    },
    /// A namespace quota would be exceeded; nothing was stored.
    QuotaExceeded {
        /// The namespace ([`Registry::namespace_name`](crate::Registry::namespace_name)
        /// names it).
        namespace: Namespace,
        /// Which quota: `"entries"` or `"bytes"`.
        what: &'static str,
        /// Its value.
        limit: u64,
    },
    /// The registry was shut down (or its shard writer stopped); nothing was applied.
    ShuttingDown,
    /// The operating system refused to start a shard thread.
    ThreadStart {
        /// The OS error, as text.
        reason: String,
    },
}

impl Error {
    pub(crate) fn new(kind: ErrorKind) -> Error {
        Error {
            kind: Box::new(kind),
        }
    }

    /// What happened.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let err = registry.namespace("").unwrap_err();
    /// assert!(matches!(err.kind(), roster::ErrorKind::InvalidNamespace { .. }));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.kind, f)
    }
}

/// What went wrong, as a sentence that names the limit or the holder.
///
/// ```
/// use roster::{Key, Metadata, Registry};
///
/// let registry = Registry::builder().shards(1).build()?;
/// let ns = registry.namespace("agents")?;
/// let p = registry.spawn();
/// let err = registry.register(&p, &Key::new(ns, "a"), &Metadata::new().capability("")).unwrap_err();
/// assert_eq!(err.to_string(), "invalid metadata: capability name is empty");
/// # Ok::<(), roster::Error>(())
/// ```
impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::AlreadyRegistered { owner } => {
                write!(f, "key already registered by live process {owner}")
            }
            ErrorKind::NotFound => f.write_str("no live entry with this key"),
            ErrorKind::NotOwner { owner } => {
                write!(
                    f,
                    "key is held by process {owner}; only its owner may change it"
                )
            }
            ErrorKind::ForeignProcess => f.write_str("process belongs to another registry"),
            ErrorKind::ForeignNamespace { namespace } => write!(
                f,
                "namespace {namespace} belongs to another registry; use this registry's `namespace()`"
            ),
            ErrorKind::TooManyProcesses { limit } => {
                write!(f, "too many processes: at most {limit} may be alive at once")
            }
            ErrorKind::ProcessDead { pid } => write!(f, "process {pid} is dead"),
            ErrorKind::InvalidKey {
                reason,
                limit,
                actual,
            } if *actual == 0 => write!(f, "invalid key: {reason} (at least {limit} byte)"),
            ErrorKind::InvalidKey {
                reason,
                limit,
                actual,
            } => write!(f, "invalid key: {reason}: {actual} given, limit {limit}"),
            ErrorKind::InvalidMetadata { field, actual, .. } if *actual == 0 => {
                write!(f, "invalid metadata: {field} is empty")
            }
            ErrorKind::InvalidMetadata {
                field,
                limit,
                actual,
            } => {
                let unit = match *field {
                    "capabilities" | "attributes" => "",
                    _ => " bytes",
                };
                write!(
                    f,
                    "invalid metadata: {field} is {actual}{unit}, limit {limit}{unit}"
                )
            }
            ErrorKind::InvalidNamespace { reason } => write!(f, "invalid namespace: {reason}"),
            ErrorKind::InvalidConfig { reason } => write!(f, "invalid configuration: {reason}"),
            ErrorKind::Timeout { deadline } => {
                write!(
                    f,
                    "write not applied: deadline of {deadline:?} passed first"
                )
            }
            ErrorKind::ShardFailed { shard } => write!(f, "shard {shard}'s writer thread failed"),
            ErrorKind::RegistryFull { limit } => {
                write!(f, "registry full: memory limit of {limit} bytes reached")
            }
            ErrorKind::QuotaExceeded {
                namespace,
                what,
                limit,
            } => write!(
                f,
                "quota exceeded: namespace {} may hold at most {limit} {what}",
                namespace.id()
            ),
            ErrorKind::ShuttingDown => f.write_str("registry is shut down"),
            ErrorKind::ThreadStart { reason } => write!(f, "cannot start shard thread: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
