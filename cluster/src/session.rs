//! A node's session: one etcd lease, kept alive, and one watch feeding the replica.
//!
//! **Fencing.** etcd expires a lease no sooner than its TTL after the last keepalive
//! the leader received, and the leader receives a keepalive after this node sent it. So
//! when the answer to a keepalive sent at `t` grants `ttl`, the lease holds at least
//! until `t + ttl`: the node's *deadline*. A watchdog fences the node at `deadline -
//! ttl/5` unless a later keepalive has moved the deadline. Fencing first marks the node
//! fenced (so writes in flight undo their local step), then stops the watch, kills every
//! remote stand-in (their entries vanish at once), and removes every claimed entry from
//! the local registry; all of this happens before the lease can have expired, so a name
//! this node shows as held is never held by another node at the same time (up to the
//! drift between the two clocks over one TTL, which the fifth of a TTL covers).
//!
//! Keepalives go every `ttl/3`, so two can be lost before the watchdog fires. A
//! keepalive answer with a TTL of 0 means etcd has already expired the lease: the node
//! fences at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, WatchOptions};
use tokio::time::sleep;

use crate::cluster::{group_by_owner, lock, since_epoch, Inner, FENCED, LEFT, LIVE};
use crate::Error;

/// Starts the first session, and the sweeper that outlives sessions.
pub(crate) async fn start(inner: &Arc<Inner>) -> Result<(), Error> {
    let _g = inner.session_lock.lock().await;
    begin(inner).await?;
    inner.spawn(sweeper(Arc::downgrade(inner)));
    Ok(())
}

/// Starts a session after a fence.
pub(crate) async fn rejoin(inner: &Arc<Inner>) -> Result<(), Error> {
    let _g = inner.session_lock.lock().await;
    match inner.state.load(Ordering::Acquire) {
        LIVE => Ok(()),
        LEFT => Err(Error::Left),
        _ => begin(inner).await,
    }
}

/// [`rejoin`] with its future's type written out: the rejoin loop that fencing starts
/// reaches `begin`, which starts the keepalive that may fence again, and a cycle of
/// opaque futures cannot be proven `Send`.
fn rejoin_boxed(
    inner: Arc<Inner>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>> {
    Box::pin(async move { rejoin(&inner).await })
}

/// A lease (kept alive from the start), a snapshot, then the watch; the node is live
/// after. Runs under the session lock.
async fn begin(inner: &Arc<Inner>) -> Result<(), Error> {
    let ttl_secs = inner.config.lease_ttl.as_secs().max(1) as i64;
    let sent = Instant::now();
    let mut client = inner.client.clone();
    let grant = inner.timed(client.lease_grant(ttl_secs, None)).await?;
    let id = grant.id();
    let ttl = Duration::from_secs(grant.ttl().max(1) as u64);
    set_deadline(inner, sent + ttl);
    inner
        .counters
        .lease_ttl_ms
        .store(ttl.as_millis() as u64, Ordering::Relaxed);
    inner.lease.store(id, Ordering::Release);
    // Renewals start now: a snapshot may take longer than a TTL.
    inner.spawn(keepalive(inner.clone(), id, ttl));
    let revoke = |inner: &Arc<Inner>| {
        inner.ended_lease.store(id, Ordering::Release);
        let inner = inner.clone();
        async move {
            let mut client = inner.client.clone();
            let _ = inner.timed(client.lease_revoke(id)).await;
        }
    };
    let rev = match inner.resync().await {
        Ok(rev) => rev,
        Err(e) => {
            revoke(inner).await;
            return Err(e);
        }
    };
    if tokio::time::Instant::now() >= fence_time(inner, ttl) {
        // The lease could not be renewed while we loaded: start again later.
        revoke(inner).await;
        return Err(Error::Unreachable {
            endpoints: inner.config.endpoints.clone(),
            timeout: ttl,
        });
    }
    if inner
        .state
        .compare_exchange(FENCED, LIVE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        // Left (the last handle dropped) while we started.
        revoke(inner).await;
        return Err(Error::Left);
    }
    let watch = inner.runtime.spawn(watch(inner.clone(), id, rev + 1));
    if let Some(old) = lock(&inner.watch_task).replace(watch) {
        old.abort();
    }
    Ok(())
}

fn set_deadline(inner: &Inner, deadline: Instant) {
    inner
        .counters
        .lease_deadline_ns
        .store(since_epoch(deadline), Ordering::Relaxed);
}

fn fence_time(inner: &Inner, ttl: Duration) -> tokio::time::Instant {
    let deadline = inner.counters.lease_deadline_ns.load(Ordering::Relaxed);
    let now = Instant::now();
    let left = Duration::from_nanos(deadline.saturating_sub(since_epoch(now)));
    tokio::time::Instant::from_std(now + left.saturating_sub(ttl / 5))
}

/// Whether lease `id` is this node's and its session has not ended.
fn current(inner: &Inner, id: i64) -> bool {
    inner.lease.load(Ordering::Acquire) == id
        && inner.ended_lease.load(Ordering::Acquire) != id
        && inner.state.load(Ordering::Acquire) != LEFT
}

/// One keepalive sent and answered: when it was sent and the TTL granted (0: the lease
/// is gone), or `None` after an error other than a missing lease.
async fn renew(
    inner: &Inner,
    id: i64,
    stream: &mut Option<(LeaseKeeper, LeaseKeepAliveStream)>,
) -> Option<(Instant, i64)> {
    let gone = |e: &Error| matches!(e, Error::Etcd(m) if m.contains("lease not found"));
    if stream.is_none() {
        let mut client = inner.client.clone();
        match inner.timed(client.lease_keep_alive(id)).await {
            Ok(s) => *stream = Some(s),
            Err(e) if gone(&e) => return Some((Instant::now(), 0)),
            Err(_) => return None,
        }
    }
    let (keeper, answers) = stream.as_mut()?;
    let sent = Instant::now();
    if keeper.keep_alive().await.is_err() {
        *stream = None;
        return None;
    }
    match inner.timed(answers.message()).await {
        Ok(Some(answer)) => Some((sent, answer.ttl())),
        Err(e) if gone(&e) => Some((sent, 0)),
        _ => {
            // The stream is dropped, so a late answer is never taken for a later send.
            *stream = None;
            None
        }
    }
}

/// Keeps lease `id` alive until its session ends, fencing the node when it cannot (see
/// the module docs). Every wait races the watchdog, which is polled first.
async fn keepalive(inner: Arc<Inner>, id: i64, ttl: Duration) {
    let mut stream = None;
    while current(&inner, id) {
        let fence_at = fence_time(&inner, ttl);
        if tokio::time::Instant::now() >= fence_at {
            fence(&inner, id, "lease not renewed in time").await;
            return;
        }
        let round = tokio::select! {
            biased;
            _ = tokio::time::sleep_until(fence_at) => {
                fence(&inner, id, "lease not renewed in time").await;
                return;
            }
            r = renew(&inner, id, &mut stream) => r,
        };
        let pause = match round {
            Some((_, granted)) if granted <= 0 => {
                fence(&inner, id, "etcd expired the lease").await;
                return;
            }
            Some((sent, granted)) => {
                if !current(&inner, id) {
                    return; // a late answer for an ended session: not this deadline's
                }
                set_deadline(&inner, sent + Duration::from_secs(granted as u64));
                ttl / 3
            }
            None => Duration::from_millis(200),
        };
        let fence_at = fence_time(&inner, ttl);
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(fence_at) => {
                fence(&inner, id, "lease not renewed in time").await;
                return;
            }
            _ = sleep(pause) => {}
        }
    }
}

/// Every half second until the node leaves: retries releases etcd could not take, and
/// checks suspect keys (claims that may have committed with no record here), deleting
/// any that etcd holds under this node's lease with no record.
async fn sweeper(inner: std::sync::Weak<Inner>) {
    loop {
        sleep(Duration::from_millis(500)).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.state.load(Ordering::Acquire) == LEFT {
            return;
        }
        let orphans = std::mem::take(&mut *lock(&inner.orphans));
        if !orphans.is_empty() && inner.release_batch(&orphans).await.is_err() {
            lock(&inner.orphans).extend(orphans);
        }
        let suspects = std::mem::take(&mut *lock(&inner.suspects));
        for key in suspects {
            sweep(&inner, key).await;
        }
    }
}

/// Deletes the suspect `key` if etcd holds it under this node's lease with no record and
/// no claim of it on its way; puts it back on the list while one is.
async fn sweep(inner: &Inner, key: Vec<u8>) {
    // In flight first: a claim records before it settles.
    let pending = |key: &[u8]| {
        let in_flight = lock(&inner.in_flight).contains_key(key);
        (in_flight, lock(&inner.claims).by_key.contains_key(key))
    };
    match pending(&key) {
        (true, _) => return lock(&inner.suspects).push(key),
        (false, true) => return, // a claim after all
        (false, false) => {}
    }
    let mut client = inner.client.clone();
    let Ok(resp) = inner.timed(client.get(key.clone(), None)).await else {
        return lock(&inner.suspects).push(key);
    };
    let lease = inner.lease.load(Ordering::Acquire);
    let Some(kv) = resp.kvs().first().filter(|kv| kv.lease() == lease) else {
        return; // gone, or not ours
    };
    // What etcd showed was committed before this second look: a claim of it still on its
    // way, or already recorded, keeps it.
    match pending(&key) {
        (true, _) => lock(&inner.suspects).push(key),
        (false, true) => {}
        (false, false) => {
            let orphan = (key, kv.create_revision());
            if inner
                .release_batch(std::slice::from_ref(&orphan))
                .await
                .is_err()
            {
                lock(&inner.orphans).push(orphan);
            }
        }
    }
}

/// Follows the cluster's prefix from revision `from` into the replica, reconnecting after
/// errors and re-syncing after a compaction, until session `id` ends. A stream that is
/// silent for a lease TTL is asked for a progress report, and re-opened if it stays
/// silent for another.
async fn watch(inner: Arc<Inner>, id: i64, mut from: i64) {
    // The whole prefix: claims and namespace markers, in one revision order.
    let prefix = format!("{}/", inner.config.prefix);
    let quiet = inner.config.lease_ttl;
    let mut backoff = Duration::from_millis(50);
    while inner.still_live(id) {
        let options = WatchOptions::new().with_prefix().with_start_revision(from);
        let mut client = inner.client.clone();
        let (mut watcher, mut stream) = match inner
            .timed(client.watch(prefix.clone(), Some(options)))
            .await
        {
            Ok(s) => s,
            Err(_) => {
                inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let mut asked = false;
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = sleep(quiet) => {
                    if asked || watcher.request_progress().await.is_err() {
                        inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    asked = true;
                    continue;
                }
            };
            asked = false;
            match message {
                Ok(Some(resp)) => {
                    backoff = Duration::from_millis(50);
                    if resp.compact_revision() > 0 {
                        // Our next revision is compacted away: start over from a snapshot.
                        match inner.resync().await {
                            Ok(rev) => from = rev + 1,
                            Err(_) => sleep(backoff).await,
                        }
                        break;
                    }
                    if resp.canceled() {
                        inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        break;
                    }
                    if let Some(h) = resp.header() {
                        inner.seen_revision(h.revision());
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    let mut replica = inner.replica.lock().await;
                    inner.apply_events(&mut replica, resp.events()).await;
                    drop(replica);
                    let last = resp
                        .events()
                        .iter()
                        .filter_map(|ev| ev.kv().map(|kv| kv.mod_revision()))
                        .fold(from - 1, i64::max);
                    from = last + 1;
                    inner
                        .counters
                        .applied_revision
                        .store(last, Ordering::Relaxed);
                    inner.delivered(last);
                }
                Ok(None) | Err(_) => {
                    inner.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

/// Fences the node if lease `id` is still its live session's (see the module docs);
/// `why` is for a future tracing hook.
pub(crate) async fn fence(inner: &Arc<Inner>, id: i64, why: &str) {
    let _ = why;
    let _g = inner.session_lock.lock().await;
    if inner.lease.load(Ordering::Acquire) != id
        || inner
            .state
            .compare_exchange(LIVE, FENCED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return;
    }
    inner.ended_lease.store(id, Ordering::Release);
    inner.counters.fences.fetch_add(1, Ordering::Relaxed);
    release_locally(inner).await;
    // How early the fence completed: a late one (a scheduler that held this task past
    // the margin) is counted, for operators to see.
    let deadline = inner.counters.lease_deadline_ns.load(Ordering::Relaxed);
    let now = since_epoch(Instant::now());
    let c = &inner.counters;
    c.fence_margin_ns
        .store(deadline.saturating_sub(now).max(1), Ordering::Relaxed);
    if now > deadline {
        c.late_fences.fetch_add(1, Ordering::Relaxed);
    }
    let revoker = inner.clone();
    inner.spawn(async move {
        let mut client = revoker.client.clone();
        let _ = revoker.timed(client.lease_revoke(id)).await;
    });
    if inner.config.auto_rejoin {
        let weak = Arc::downgrade(inner);
        inner.spawn(async move {
            loop {
                sleep(Duration::from_secs(1)).await;
                let Some(inner) = weak.upgrade() else { return };
                match rejoin_boxed(inner).await {
                    Ok(()) | Err(Error::Left) => return,
                    Err(_) => {}
                }
            }
        });
    }
}

/// Stops the watch, drops the replica and removes every claimed entry from the local
/// registry (with no deadline: they must go). Death monitors stay: they find no claims.
async fn release_locally(inner: &Inner) {
    if let Some(w) = lock(&inner.watch_task).take() {
        w.abort();
    }
    inner.replica.lock().await.clear();
    let claims = {
        let mut claims = lock(&inner.claims);
        claims.by_pid.clear();
        std::mem::take(&mut claims.by_key)
    };
    for (authority, keys) in group_by_owner(claims.into_values()) {
        let keys: Vec<roster::Key<'_>> = keys.iter().map(|k| k.as_key()).collect();
        let _ = inner
            .internal
            .unregister_many_async(&authority, &keys)
            .await;
    }
}

/// Leaves the cluster.
pub(crate) async fn leave(inner: &Arc<Inner>) -> Result<(), Error> {
    let _g = inner.session_lock.lock().await;
    let was = inner.state.swap(LEFT, Ordering::AcqRel);
    release_locally(inner).await;
    let result = if was == LIVE {
        let id = inner.lease.load(Ordering::Acquire);
        let mut client = inner.client.clone();
        inner.timed(client.lease_revoke(id)).await.map(|_| ())
    } else {
        Ok(())
    };
    inner.stop_tasks();
    result
}
