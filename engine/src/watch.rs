//! The change feed: [`Registry::watch`] and [`Registry::await_key`].
//!
//! Shard writers report every change right after they publish it (so a watcher that
//! hears of a registration can already look it up). The hub hands each change to every
//! watcher whose filter matches, into that watcher's bounded queue; the writer never
//! waits for a watcher. A watcher that falls behind loses the changes that do not fit
//! and is told how many with [`Watched::Lagged`], in their place (after the changes it
//! did keep, before the next one it receives), so its memory stays bounded by its
//! capacity.
//!
//! Order and sequence numbers: changes of one shard reach a watcher in the order that
//! shard applied them, each numbered by the watcher per shard (1, 2, 3 ...). Numbers are
//! given to dropped changes too, so a gap in a shard's numbers happens exactly when the
//! watcher lagged. Changes of different shards are not ordered against each other.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use roster_shard::{Event, EventKind};

use crate::entry::Entry;
use crate::error::{Error, ErrorKind};
use crate::key::{namespace_of, Key, KeyWords, Namespace};
use crate::process::Pid;
use crate::query::{entry_terms, term, OwnedKey, CAPABILITY};
use crate::registry::Registry;

/// Which changes a [`Watch`] receives: all that match every condition set.
///
/// # Examples
///
/// ```
/// use roster::{Key, Metadata, Registry, WatchFilter, Watched, ChangeKind};
///
/// let registry = Registry::builder().shards(2).build()?;
/// let ns = registry.namespace("agents")?;
/// let watch = registry.watch(WatchFilter::namespace(ns).capability("plan"))?;
/// let p = registry.spawn();
/// registry.register(&p, &Key::new(ns, "searcher"), &Metadata::new().capability("search"))?;
/// registry.register(&p, &Key::new(ns, "planner"), &Metadata::new().capability("plan"))?;
/// let Some(Watched::Change(c)) = watch.try_recv() else { panic!("one change") };
/// assert_eq!((c.kind, c.pid), (ChangeKind::Registered, p.pid()));
/// assert!(watch.try_recv().is_none(), "the searcher is filtered out");
/// # Ok::<(), roster::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct WatchFilter {
    namespace: Option<Namespace>,
    capability: Option<String>,
    /// The key's namespace and its encoding (or why it has none).
    key: Option<(Namespace, Result<KeyWords, Error>)>,
    capacity: Option<usize>,
}

impl WatchFilter {
    /// Every change in every namespace.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::all())?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// assert!(matches!(watch.recv_timeout(Duration::from_secs(5)), Some(Watched::Change(_))));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn all() -> WatchFilter {
        WatchFilter::default()
    }

    /// Changes in namespace `ns`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::namespace(ns))?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(registry.namespace("other")?, 1), &Metadata::new())?;
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// let Some(Watched::Change(c)) = watch.recv_timeout(Duration::from_secs(5)) else { panic!() };
    /// assert_eq!(c.key.as_key(), Key::new(ns, 1));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn namespace(ns: Namespace) -> WatchFilter {
        WatchFilter {
            namespace: Some(ns),
            ..WatchFilter::default()
        }
    }

    /// Changes of one key (invalid keys are refused by [`Registry::watch`], with the
    /// reason).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::key(&Key::new(ns, "leader")))?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, "leader"), &Metadata::new())?;
    /// assert!(watch.recv_timeout(Duration::from_secs(5)).is_some());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn key(key: &Key<'_>) -> WatchFilter {
        let mut words = KeyWords::new();
        let encoded = key.encode(usize::MAX, &mut words).map(|()| words);
        WatchFilter {
            key: Some((key.namespace(), encoded)),
            ..WatchFilter::default()
        }
    }

    /// Also: only entries with capability `name` (before the change for removals, after
    /// it for registrations and updates).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::namespace(ns).capability("search"))?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// registry.register(&p, &Key::new(ns, 2), &Metadata::new().capability("search"))?;
    /// let Some(Watched::Change(c)) = watch.recv_timeout(Duration::from_secs(5)) else { panic!() };
    /// assert_eq!(c.key.as_key(), Key::new(ns, 2));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capability(mut self, name: impl Into<String>) -> WatchFilter {
        self.capability = Some(name.into());
        self
    }

    /// Changes the watcher may hold unread before it lags (default 1024, at least 1).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::all().capacity(2))?;
    /// let p = registry.spawn();
    /// for i in 0..5u64 {
    ///     registry.register(&p, &Key::new(ns, i), &Metadata::new())?;
    /// }
    /// // Two changes kept, then word of the three that did not fit.
    /// let mut lagged = 0;
    /// while let Some(w) = watch.recv_timeout(Duration::from_millis(200)) {
    ///     if let Watched::Lagged(missed) = w { lagged += missed; }
    /// }
    /// assert_eq!(lagged, 3);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn capacity(mut self, n: usize) -> WatchFilter {
        self.capacity = Some(n);
        self
    }
}

/// What a change did to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The key was registered.
    Registered,
    /// Its metadata was updated.
    Updated,
    /// Its owner unregistered it.
    Unregistered,
    /// It went because its owner died.
    Died,
}

/// One change, as a watcher receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The entry's key.
    pub key: OwnedKey,
    /// Its owner.
    pub pid: Pid,
    /// The shard that applied it.
    pub shard: usize,
    /// This watcher's number for it among the shard's changes: 1, 2, 3 ... with a gap
    /// only where the watcher lagged.
    pub seq: u64,
}

/// What [`Watch::recv`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watched {
    /// A change.
    Change(Change),
    /// The watcher fell behind and this many changes were dropped since the last thing
    /// it received.
    Lagged(u64),
}

struct Queue {
    /// Changes, and `Lagged` markers where changes were dropped: at most `capacity`
    /// items plus one marker at the tail.
    events: VecDeque<Watched>,
    /// Next sequence number per shard.
    next_seq: Vec<u64>,
    waker: Option<Waker>,
}

/// One watcher's state, shared by its [`Watch`] and the hub.
struct Watcher {
    namespace: Option<u32>,
    /// A capability id the entry must have.
    capability: Option<u32>,
    key: Option<KeyWords>,
    capacity: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Watcher {
    fn matches(&self, e: &Event<'_>) -> bool {
        let ns = namespace_of(e.key);
        if self.namespace.is_some_and(|n| n != ns) {
            return false;
        }
        if self.key.as_ref().is_some_and(|k| k.as_slice() != e.key) {
            return false;
        }
        self.capability.is_none_or(|cap| {
            let want = term(CAPABILITY, ns, cap as u64);
            entry_terms(ns, e.meta).contains(&want)
        })
    }

    /// Queues a change (or counts it lost); a waker to wake goes into `wake`.
    fn push(&self, shard: usize, wake: &mut Vec<Waker>, make: impl FnOnce(u64) -> Change) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let Some(seq) = q.next_seq.get_mut(shard) else {
            return;
        };
        *seq += 1;
        let seq = *seq;
        if q.events.len() >= self.capacity {
            match q.events.back_mut() {
                Some(Watched::Lagged(n)) => *n += 1,
                _ => q.events.push_back(Watched::Lagged(1)),
            }
            return;
        }
        q.events.push_back(Watched::Change(make(seq)));
        let waker = q.waker.take();
        drop(q);
        self.ready.notify_all();
        wake.extend(waker);
    }
}

/// The registry's watchers.
pub(crate) struct Hub {
    shards: usize,
    /// The registry's tag (keys decoded for changes carry it in their namespace).
    tag: u32,
    watchers: RwLock<Vec<Arc<Watcher>>>,
    /// `watchers.len()`, readable without the lock: writers skip all work while 0.
    count: AtomicUsize,
    closed: AtomicBool,
}

impl Hub {
    pub(crate) fn new(shards: usize, tag: u32) -> Hub {
        Hub {
            shards,
            tag,
            watchers: RwLock::new(Vec::new()),
            count: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether any watcher is subscribed. Called by a shard writer right after it
    /// publishes a change: the fence pairs with the one in [`Hub::add`] (store-buffer
    /// pattern), so either the writer sees the new watcher and reports the change to it,
    /// or the subscriber's next look at the registry sees the change. `await_key` relies
    /// on it.
    pub(crate) fn watching(&self) -> bool {
        fence(Ordering::SeqCst);
        self.count.load(Ordering::Relaxed) > 0
    }

    /// Hands a shard's change to every matching watcher.
    pub(crate) fn event(&self, shard: usize, e: Event<'_>) {
        // Runs on a shard writer's thread: nothing here may panic.
        let Some(key) = OwnedKey::decode(e.key, self.tag) else {
            return;
        };
        let mut wake = Vec::new();
        let watchers = self.watchers.read().unwrap_or_else(|e| e.into_inner());
        for w in watchers.iter().filter(|w| w.matches(&e)) {
            w.push(shard, &mut wake, |seq| Change {
                kind: match e.kind {
                    EventKind::Inserted => ChangeKind::Registered,
                    EventKind::Updated => ChangeKind::Updated,
                    EventKind::Removed => ChangeKind::Unregistered,
                    EventKind::Died => ChangeKind::Died,
                },
                key: key.clone(),
                pid: Pid(e.owner),
                shard,
                seq,
            });
        }
        drop(watchers);
        // Woken with no lock held: a waker that runs its task inline may subscribe or
        // unsubscribe.
        for w in wake {
            w.wake();
        }
    }

    fn add(&self, w: Arc<Watcher>) {
        let mut list = self.watchers.write().unwrap_or_else(|e| e.into_inner());
        list.push(w);
        self.count.store(list.len(), Ordering::SeqCst);
        drop(list);
        // Pairs with the fence in `watching`: what the subscriber reads next (a lookup in
        // `await_key`) sees every change the writers did not report to it.
        fence(Ordering::SeqCst);
    }

    fn remove(&self, w: &Arc<Watcher>) {
        let mut list = self.watchers.write().unwrap_or_else(|e| e.into_inner());
        list.retain(|x| !Arc::ptr_eq(x, w));
        self.count.store(list.len(), Ordering::Relaxed);
    }

    /// Wakes every watcher for good: the registry shut down.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let list = self.watchers.read().unwrap_or_else(|e| e.into_inner());
        for w in list.iter() {
            let q = w.queue.lock().unwrap_or_else(|e| e.into_inner());
            let waker = q.waker.clone();
            drop(q);
            w.ready.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A subscription to the change feed ([`Registry::watch`]). Dropping it unsubscribes.
/// Receive blocking ([`Watch::recv`], [`Watch::recv_timeout`]), without waiting
/// ([`Watch::try_recv`]), or asynchronously ([`Watch::recv_async`], any runtime).
pub struct Watch {
    watcher: Arc<Watcher>,
    hub: Weak<Hub>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Watch {
    fn closed(&self) -> bool {
        self.hub
            .upgrade()
            .is_none_or(|h| h.closed.load(Ordering::SeqCst))
    }

    /// The next change if one is waiting.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::all())?;
    /// assert!(watch.try_recv().is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn try_recv(&self) -> Option<Watched> {
        self.watcher
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .pop_front()
    }

    /// Waits for the next change; `None` once the registry has shut down (after the
    /// changes still queued).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::all())?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, 1), &Metadata::new())?;
    /// assert!(matches!(watch.recv(), Some(Watched::Change(_))));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn recv(&self) -> Option<Watched> {
        self.wait(None)
    }

    /// Waits up to `timeout` for the next change (a timeout too long for the clock, such
    /// as `Duration::MAX`, waits as [`Watch::recv`] does).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::all())?;
    /// assert!(watch.recv_timeout(Duration::from_millis(10)).is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Watched> {
        self.wait(Instant::now().checked_add(timeout))
    }

    fn wait(&self, deadline: Option<Instant>) -> Option<Watched> {
        let w = &self.watcher;
        let mut q = w.queue.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(x) = q.events.pop_front() {
                return Some(x);
            }
            if self.closed() {
                return None;
            }
            // Bounded waits: a hub dropped without `close` cannot leave us parked forever.
            let mut step = Duration::from_millis(100);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return None;
                }
                step = step.min(d - now);
            }
            q = w
                .ready
                .wait_timeout(q, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The next change, as a future (`None` once the registry has shut down).
    pub fn recv_async(&mut self) -> impl Future<Output = Option<Watched>> + Send + '_ {
        Next { watch: self }
    }
}

struct Next<'w> {
    watch: &'w Watch,
}

impl Future for Next<'_> {
    type Output = Option<Watched>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let watch = self.watch;
        let mut q = watch
            .watcher
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(x) = q.events.pop_front() {
            return Poll::Ready(Some(x));
        }
        if watch.closed() {
            return Poll::Ready(None);
        }
        q.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(&self.watcher);
        }
    }
}

impl Registry {
    /// Subscribes to the changes `filter` selects: registrations, updates,
    /// unregistrations and deaths, each delivered after it is published, in each shard's
    /// order, numbered per shard; a watcher that falls behind gets
    /// [`Watched::Lagged`] instead of unbounded memory (see the module docs of
    /// `watch.rs`).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`] for a key filter of an invalid key;
    /// [`ErrorKind::ForeignNamespace`] for a namespace of another registry;
    /// [`ErrorKind::InvalidMetadata`] for a capability name no entry could have;
    /// [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry, WatchFilter, Watched};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let watch = registry.watch(WatchFilter::namespace(ns))?;
    /// let p = registry.spawn();
    /// registry.register(&p, &Key::new(ns, "a"), &Metadata::new())?;
    /// drop(p); // its entry goes: a second change
    /// let mut changes = 0;
    /// while let Some(Watched::Change(_)) = watch.recv_timeout(Duration::from_secs(1)) {
    ///     changes += 1;
    ///     if changes == 2 { break; }
    /// }
    /// assert_eq!(changes, 2);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn watch(&self, filter: WatchFilter) -> Result<Watch, Error> {
        self.check_open()?;
        if let Some(ns) = filter.namespace {
            self.own(ns)?;
        }
        let key = match filter.key {
            Some((ns, encoded)) => {
                self.own(ns)?;
                Some(encoded?)
            }
            None => None,
        };
        let capability = filter
            .capability
            .as_deref()
            .map(|name| self.intern_capability(name))
            .transpose()?;
        let hub = self.hub();
        let watcher = Arc::new(Watcher {
            namespace: filter.namespace.map(|n| n.0),
            capability,
            key,
            capacity: filter.capacity.unwrap_or(1024).max(1),
            queue: Mutex::new(Queue {
                events: VecDeque::new(),
                next_seq: vec![0; hub.shards],
                waker: None,
            }),
            ready: Condvar::new(),
        });
        hub.add(watcher.clone());
        Ok(Watch {
            watcher,
            hub: Arc::downgrade(hub),
        })
    }

    /// Waits up to `timeout` for `key` to be registered by a live process and returns its
    /// entry (at once if it already is).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] if it was not registered in time; [`ErrorKind::InvalidKey`];
    /// [`ErrorKind::ShuttingDown`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("svc")?;
    /// let r = registry.clone();
    /// let t = std::thread::spawn(move || {
    ///     let p = r.spawn();
    ///     r.register(&p, &Key::new(ns, "db"), &Metadata::new()).unwrap();
    ///     p
    /// });
    /// let entry = registry.await_key(&Key::new(ns, "db"), Duration::from_secs(10))?;
    /// assert_eq!(entry.pid(), t.join().unwrap().pid());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn await_key(&self, key: &Key<'_>, timeout: Duration) -> Result<Entry, Error> {
        // `None`: longer than the clock holds (`Duration::MAX`): wait as long as it takes.
        let deadline = Instant::now().checked_add(timeout);
        // Subscribe first, then look: a registration between the two is seen either way.
        let watch = self.watch(WatchFilter::key(key).capacity(16))?;
        loop {
            if let Some(entry) = self.lookup(key)? {
                return Ok(entry);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Err(Error::new(ErrorKind::Timeout { deadline: timeout }));
            }
            if watch.wait(deadline).is_none() {
                self.check_open()?;
            }
        }
    }

    /// [`Registry::await_key`] as a future, with no deadline of its own (race it with
    /// your runtime's timeout): resolves when `key` is registered by a live process.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidKey`]; [`ErrorKind::ShuttingDown`].
    pub fn await_key_async(
        &self,
        key: &Key<'_>,
    ) -> impl Future<Output = Result<Entry, Error>> + Send + 'static {
        let registry = self.clone();
        let mut words = KeyWords::new();
        let encoded = key
            .encode(self.limits().max_name_len, &mut words)
            .map(|()| words);
        let watch = encoded.and_then(|w| {
            let mut f = WatchFilter::default().capacity(16);
            f.key = Some((key.namespace(), Ok(w.clone())));
            Ok((registry.watch(f)?, w))
        });
        async move {
            let (mut watch, words) = watch?;
            let key = OwnedKey::decode(&words, registry.tag()).expect("encoded key");
            loop {
                if let Some(entry) = registry.lookup(&key.as_key())? {
                    return Ok(entry);
                }
                if watch.recv_async().await.is_none() {
                    registry.check_open()?;
                }
            }
        }
    }
}
