//! Asynchronous and batched writes.
//!
//! Every write goes to its key's shard writer as a command with a deadline (SPEC L1). The
//! blocking forms ([`Registry::register`] and friends) wait for the answer; the `async`
//! forms here return a future that any executor can drive (the writer wakes it; the
//! engine depends on no runtime). The batch forms send one command per shard for all of
//! that shard's items, so a batch costs one round trip per shard, not one per item.
//!
//! The `async` forms validate and queue the write when they are called, not when first
//! polled; if the shard's command queue is full (backpressure), that call blocks for up
//! to the write deadline, as the blocking forms do.
//!
//! Deadlines and futures: a future has no timer, so the deadline is enforced by the
//! writer when it reaches the write. A write it reaches after the deadline is not applied
//! and resolves to [`ErrorKind::Timeout`](crate::ErrorKind::Timeout). To stop waiting
//! sooner, drop the future (or race it with your runtime's timeout): a write the writer
//! has not reached by then is never applied.

use std::borrow::Borrow;
use std::future::Future;

use roster_shard::{Op, Ticket, WriteError};

use crate::error::Error;
use crate::key::Key;
use crate::metadata::Metadata;
use crate::process::Authority;
use crate::registry::{Registry, WriteCtx, WriteKind};
use crate::stats::{OpKind, OwnedTimer};

/// Per-item results of a batch write, in the order of its items.
pub type BatchResults = Vec<Result<(), Error>>;

impl Registry {
    /// [`Registry::register`] as a future: validation happens now (an invalid key or
    /// metadata resolves at once), the write is queued now, and the future resolves when
    /// the shard writer has applied it (or refused it, or found its deadline passed).
    /// `Send + 'static`: spawn it on any runtime. Queueing happens in this call (it blocks
    /// only while the shard's queue is full, up to the deadline).
    ///
    /// # Errors
    ///
    /// As [`Registry::register`], plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)
    /// if the writer reached the write after its deadline (it was not applied).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(2).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let agent = registry.spawn();
    /// let done = registry.register_async(&agent, &Key::new(ns, "a"), &Metadata::new());
    /// // Any executor drives it; here, a minimal one.
    /// block_on(done)?;
    /// assert!(registry.lookup(&Key::new(ns, "a"))?.is_some());
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     use std::task::{Context, Poll, Wake, Waker};
    /// #     struct T(std::thread::Thread);
    /// #     impl Wake for T { fn wake(self: std::sync::Arc<Self>) { self.0.unpark() } }
    /// #     let waker = Waker::from(std::sync::Arc::new(T(std::thread::current())));
    /// #     let mut f = std::pin::pin!(f);
    /// #     loop {
    /// #         if let Poll::Ready(v) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
    /// #             return v;
    /// #         }
    /// #         std::thread::park();
    /// #     }
    /// # }
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn register_async(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let timer = OwnedTimer::new(self, OpKind::Register);
        finish(
            self.start_write(owner, key, WriteKind::Register(metadata)),
            timer,
        )
    }

    /// [`Registry::unregister`] as a future (see [`Registry::register_async`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::unregister`], plus [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// block_on(registry.register_async(&p, &Key::new(ns, 1), &Metadata::new()))?;
    /// block_on(registry.unregister_async(&p, &Key::new(ns, 1)))?;
    /// assert!(registry.lookup(&Key::new(ns, 1))?.is_none());
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn unregister_async(
        &self,
        owner: &Authority,
        key: &Key<'_>,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let timer = OwnedTimer::new(self, OpKind::Unregister);
        finish(self.start_write(owner, key, WriteKind::Unregister), timer)
    }

    /// [`Registry::update_metadata`] as a future (see [`Registry::register_async`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::update_metadata`], plus
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// block_on(registry.register_async(&p, &Key::new(ns, 1), &Metadata::new()))?;
    /// block_on(registry.update_metadata_async(&p, &Key::new(ns, 1), &Metadata::new().capability("x")))?;
    /// assert!(registry.lookup(&Key::new(ns, 1))?.unwrap().has_capability_named(&registry, "x"));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn update_metadata_async(
        &self,
        owner: &Authority,
        key: &Key<'_>,
        metadata: &Metadata,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let timer = OwnedTimer::new(self, OpKind::Update);
        finish(
            self.start_write(owner, key, WriteKind::Update(metadata)),
            timer,
        )
    }

    /// Registers many keys for `owner`'s process in one round trip per shard (items are
    /// `(key, metadata)` pairs, the metadata owned or borrowed): each
    /// shard's items travel as one command, applied together (so they also share the
    /// deadline: a shard that reaches them late times out all of them, and applies none).
    /// Each item gets its own result, in order; an item that fails validation fails alone.
    /// The async form, dropped midway, cancels the parts whose shard writer has not yet
    /// taken them; it cannot tell which parts were applied.
    ///
    /// # Errors
    ///
    /// The outer error is for the whole call, with nothing applied:
    /// [`ErrorKind::ForeignProcess`](crate::ErrorKind::ForeignProcess) or
    /// [`ErrorKind::ShuttingDown`](crate::ErrorKind::ShuttingDown). Items fail as
    /// [`Registry::register`] does, or with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{ErrorKind, Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(4).build()?;
    /// let ns = registry.namespace("workers")?;
    /// let pool = registry.spawn();
    /// let items: Vec<_> = (0..100u64)
    ///     .map(|i| (Key::new(ns, i), Metadata::new().capability("work")))
    ///     .chain([(Key::new(ns, ""), Metadata::new())]) // invalid: an empty name
    ///     .collect();
    /// let results = registry.register_many(&pool, items.iter().map(|(k, m)| (*k, m)))?;
    /// assert!(results[..100].iter().all(|r| r.is_ok()));
    /// assert!(matches!(results[100].as_ref().unwrap_err().kind(), ErrorKind::InvalidKey { .. }));
    /// assert_eq!(registry.count(ns)?, 100);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn register_many<'k, M: Borrow<Metadata>>(
        &self,
        owner: &Authority,
        items: impl IntoIterator<Item = (Key<'k>, M)>,
    ) -> Result<BatchResults, Error> {
        let _timer = self.op_timer(OpKind::Batch);
        self.start_batch(owner, registrations(items))?.wait()
    }

    /// Unregisters many keys of `owner`'s process in one round trip per shard, with a
    /// result per key (see [`Registry::register_many`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::register_many`]; items fail as [`Registry::unregister`] does.
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let keys: Vec<_> = (0..10u64).map(|i| Key::new(ns, i)).collect();
    /// let meta = Metadata::new();
    /// registry.register_many(&p, keys.iter().map(|k| (*k, &meta)))?;
    /// let results = registry.unregister_many(&p, &keys)?;
    /// assert!(results.iter().all(|r| r.is_ok()));
    /// assert_eq!(registry.count(ns)?, 0);
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn unregister_many(
        &self,
        owner: &Authority,
        keys: &[Key<'_>],
    ) -> Result<BatchResults, Error> {
        let _timer = self.op_timer(OpKind::Batch);
        self.start_batch(owner, removals(keys))?.wait()
    }

    /// [`Registry::register_many`] as a future (see [`Registry::register_async`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::register_many`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new();
    /// let results = block_on(registry.register_many_async(&p, (0..10u64).map(|i| (Key::new(ns, i), &meta))))?;
    /// assert!(results.iter().all(|r| r.is_ok()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn register_many_async<'k, M: Borrow<Metadata>>(
        &self,
        owner: &Authority,
        items: impl IntoIterator<Item = (Key<'k>, M)>,
    ) -> impl Future<Output = Result<BatchResults, Error>> + Send + 'static {
        let timer = OwnedTimer::new(self, OpKind::Batch);
        let started = self.start_batch(owner, registrations(items));
        async move {
            let _timer = timer;
            started?.finish().await
        }
    }

    /// [`Registry::unregister_many`] as a future (see [`Registry::register_async`]).
    ///
    /// # Errors
    ///
    /// As [`Registry::unregister_many`].
    ///
    /// # Examples
    ///
    /// ```
    /// use roster::{Key, Metadata, Registry};
    /// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
    /// #     let mut f = std::pin::pin!(f);
    /// #     let waker = std::task::Waker::noop();
    /// #     let mut cx = std::task::Context::from_waker(&waker);
    /// #     loop {
    /// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v; }
    /// #         std::thread::yield_now();
    /// #     }
    /// # }
    ///
    /// let registry = Registry::builder().shards(1).build()?;
    /// let ns = registry.namespace("agents")?;
    /// let p = registry.spawn();
    /// let meta = Metadata::new();
    /// let keys: Vec<_> = (0..10u64).map(|i| Key::new(ns, i)).collect();
    /// block_on(registry.register_many_async(&p, keys.iter().map(|k| (*k, &meta))))?;
    /// let results = block_on(registry.unregister_many_async(&p, &keys))?;
    /// assert!(results.iter().all(|r| r.is_ok()));
    /// # Ok::<(), roster::Error>(())
    /// ```
    pub fn unregister_many_async(
        &self,
        owner: &Authority,
        keys: &[Key<'_>],
    ) -> impl Future<Output = Result<BatchResults, Error>> + Send + 'static {
        let timer = OwnedTimer::new(self, OpKind::Batch);
        let started = self.start_batch(owner, removals(keys));
        async move {
            let _timer = timer;
            started?.finish().await
        }
    }

    /// Validates every item, groups them by shard and sends one command per shard.
    fn start_batch<'k, M: Borrow<Metadata>>(
        &self,
        owner: &Authority,
        items: impl Iterator<Item = (Key<'k>, Option<M>)>,
    ) -> Result<Batch, Error> {
        let ctx = self.begin_write(owner)?;
        let mut results: BatchResults = Vec::with_capacity(items.size_hint().0);
        let mut groups: Vec<(Vec<Op>, Vec<usize>)> = vec![Default::default(); self.shard_count()];
        for (i, (key, meta)) in items.enumerate() {
            let change = match &meta {
                Some(m) => WriteKind::Register(m.borrow()),
                None => WriteKind::Unregister,
            };
            match self.encode_write(ctx.pid, &key, change) {
                Ok((shard, op)) => {
                    groups[shard].0.push(op);
                    groups[shard].1.push(i);
                    results.push(Ok(()));
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let mut sent = Vec::new();
        let until = ctx.until();
        for (shard, (ops, items)) in groups.into_iter().enumerate() {
            if ops.is_empty() {
                continue;
            }
            let ticket = self.shards()[shard].submit_batch(ops, until);
            sent.push(Sent {
                shard,
                items,
                ticket,
            });
        }
        Ok(Batch { ctx, results, sent })
    }
}

/// Batch items that register: each with its metadata.
fn registrations<'k, M>(
    items: impl IntoIterator<Item = (Key<'k>, M)>,
) -> impl Iterator<Item = (Key<'k>, Option<M>)> {
    items.into_iter().map(|(k, m)| (k, Some(m)))
}

/// Batch items that unregister: no metadata.
fn removals<'a, 'k: 'a>(
    keys: &'a [Key<'k>],
) -> impl Iterator<Item = (Key<'k>, Option<Metadata>)> + 'a {
    keys.iter().map(|&k| (k, None))
}

/// Waits for (or awaits) one write's ticket and reports its error against its context.
async fn finish(
    started: Result<(Ticket<()>, WriteCtx, usize), Error>,
    _timer: OwnedTimer,
) -> Result<(), Error> {
    let (ticket, ctx, shard) = started?;
    ticket.await.map_err(|e| ctx.error(e, shard))
}

/// A batch on its way: one command per shard it touches.
struct Batch {
    ctx: WriteCtx,
    /// Validation failures filled in; the rest are `Ok` until their shard answers.
    results: BatchResults,
    sent: Vec<Sent>,
}

/// One shard's part of a batch.
struct Sent {
    shard: usize,
    /// Indexes into the batch of this shard's items, in the order sent.
    items: Vec<usize>,
    ticket: Result<Ticket<Vec<Result<(), WriteError>>>, WriteError>,
}

impl Batch {
    /// Records one shard's answer against its items.
    fn settle(
        ctx: &WriteCtx,
        results: &mut BatchResults,
        shard: usize,
        items: &[usize],
        answer: Result<Vec<Result<(), WriteError>>, WriteError>,
    ) {
        match answer {
            Ok(each) => {
                for (&i, r) in items.iter().zip(each) {
                    results[i] = r.map_err(|e| ctx.error(e, shard));
                }
            }
            Err(e) => {
                for &i in items {
                    results[i] = Err(ctx.error(e, shard));
                }
            }
        }
    }

    fn wait(mut self) -> Result<BatchResults, Error> {
        for s in self.sent {
            let answer = s.ticket.and_then(Ticket::wait);
            Self::settle(&self.ctx, &mut self.results, s.shard, &s.items, answer);
        }
        Ok(self.results)
    }

    async fn finish(mut self) -> Result<BatchResults, Error> {
        for s in self.sent {
            let answer = match s.ticket {
                Ok(t) => t.await,
                Err(e) => Err(e),
            };
            Self::settle(&self.ctx, &mut self.results, s.shard, &s.items, answer);
        }
        Ok(self.results)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{ErrorKind, Key, Metadata, Registry};

    /// SPEC S6: a shard whose writer thread dies turns into errors for its callers (in
    /// flight, queued and later), never a hang; the other shards keep serving, and lookups
    /// still answer from what the dead shard had published.
    #[test]
    fn s6_a_failed_shard_errors_its_callers_and_the_others_keep_serving() {
        let r = Registry::builder()
            .shards(2)
            .write_deadline(Duration::from_secs(30))
            .build()
            .unwrap();
        let ns = r.namespace("ns").unwrap();
        let p = r.spawn();
        let shard_of = |k: u64| {
            let mut w = crate::key::KeyWords::new();
            Key::new(ns, k).encode(usize::MAX, &mut w).unwrap();
            r.route_index(&w).1
        };
        let (on0, on1): (Vec<u64>, Vec<u64>) = (0..1000u64).partition(|&k| shard_of(k) == 0);
        for &k in on0.iter().chain(&on1).take(20) {
            r.register(&p, &Key::new(ns, k), &Metadata::new()).unwrap();
        }
        // Writers in flight on shard 0 while it dies.
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..2)
                .map(|t| {
                    let (r, p, keys) = (&r, &p, &on0);
                    s.spawn(move || {
                        let mut failed = 0;
                        for &k in keys.iter().skip(50 + t * 20).take(20) {
                            match r.register(p, &Key::new(ns, k), &Metadata::new()) {
                                Ok(()) => {}
                                Err(e) => {
                                    assert_eq!(e.kind(), &ErrorKind::ShardFailed { shard: 0 });
                                    failed += 1;
                                }
                            }
                        }
                        failed
                    })
                })
                .collect();
            r.shards()[0].inject_fault();
            for w in writers {
                w.join().unwrap();
            }
        });
        let started = std::time::Instant::now();
        while !r.shards()[0].failed() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "writer never died"
            );
            std::thread::yield_now();
        }
        let err = r
            .register(&p, &Key::new(ns, on0[150]), &Metadata::new())
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::ShardFailed { shard: 0 });
        assert!(err.to_string().contains("shard 0"), "{err}");
        let err = r
            .register_async(&p, &Key::new(ns, on0[151]), &Metadata::new())
            .now_or_never()
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::ShardFailed { shard: 0 });
        // Shard 1 serves on; shard 0's published entries still read.
        r.register(&p, &Key::new(ns, on1[150]), &Metadata::new())
            .unwrap();
        assert!(r.lookup(&Key::new(ns, on1[150])).unwrap().is_some());
        assert!(r.lookup(&Key::new(ns, on0[0])).unwrap().is_some());
        let items = [
            (Key::new(ns, on0[160]), Metadata::new()),
            (Key::new(ns, on1[160]), Metadata::new()),
        ];
        let results = r.register_many(&p, items).unwrap();
        assert_eq!(
            results[0].as_ref().unwrap_err().kind(),
            &ErrorKind::ShardFailed { shard: 0 }
        );
        assert!(results[1].is_ok());
    }

    /// Polls a future once with a no-op waker: it must already be ready.
    trait NowOrNever: std::future::Future + Sized {
        fn now_or_never(self) -> Self::Output {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            match std::pin::pin!(self).poll(&mut cx) {
                std::task::Poll::Ready(v) => v,
                std::task::Poll::Pending => panic!("not ready"),
            }
        }
    }
    impl<F: std::future::Future> NowOrNever for F {}
}
