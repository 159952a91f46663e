//! SPEC S5: single-key operations are linearizable. Concurrent histories recorded against
//! the real registry are checked per key with a Wing-Gong style search (as Porcupine does).
//!
//! **Recording.** Worker threads run a random mix of `register`, `unregister`,
//! `update_metadata` (blocking, `async`, and batched through `register_many` /
//! `unregister_many`), `lookup` and `lookup_many` over a handful of keys, so that most
//! operations contend. Each thread owns a process at a time and now and then drops it (a
//! death) and spawns another; some writes go through another thread's authority, which may
//! already be dead. Every operation is recorded with a call and a return time taken from
//! one shared logical clock (an `AtomicU64` bumped with `SeqCst` right before the call and
//! right after the return), so "A returned before B was called" is a total, real-time
//! order. A batch item is an operation of its own with the batch's interval; two `async`
//! writes awaited together share the interval from creating the first to finishing the
//! last; an `async` write is sometimes left in flight while its own process dies. Every
//! write stores a unique value (attribute `v`, with capabilities and a padding
//! attribute derived from it), so a lookup names the exact write it observed; a lookup
//! whose metadata does not match its `v` is recorded as garbled and never linearizes.
//!
//! **The model.** One key's state is `None` or `Some((pid, value))`. By a live process P:
//! `register` succeeds on `None` and otherwise answers `AlreadyRegistered` naming the
//! holder; `unregister` and `update_metadata` succeed when P holds the key and otherwise
//! answer `NotFound` (free) or `NotOwner` naming the holder. `lookup` returns the state. A
//! death of P (`drop(process)`, with the interval around the drop) is an operation in
//! *every* key's history: it frees the key if P holds it, and from its linearization point
//! on P is dead, so P's writes must answer `ProcessDead` — which, in turn, is a legal
//! answer only once P's death is linearized. A `Timeout` (SPEC L1: not applied) is a
//! no-op; none is expected with the 30 s deadline of [`builder`].
//!
//! **The check.** The history is split by key (deaths copied into every key's part). For
//! each key a depth-first search builds a linearization: at each step it may take any not
//! yet linearized operation that was called before the earliest return among the not yet
//! linearized ones, if the sequential model allows its recorded result there; it
//! backtracks on a dead end. Configurations already explored — the set of linearized
//! operations (a bitset) with the model state — are memoized, which keeps the search
//! polynomial for the low concurrency of these histories. Runs are kept short (a few
//! hundred operations per key, a few thousand in the long run) instead of weakening the
//! check. Checking each key alone is
//! sound for single-key operations (linearizability is local); deaths span keys, so the
//! per-key check is a necessary condition for them. The checker's own test feeds it
//! hand-built histories, legal and illegal, and a recorded history with one read
//! falsified, so it cannot silently accept everything.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Instant;

use roster::{Authority, Entry, Error, ErrorKind, Key, Metadata, Namespace, Pid, Process};
use roster::{Registry, ValueRef};

use super::common::{block_on, builder};

// ---------------------------------------------------------------------------------------
// Histories.

/// What an operation asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Call {
    Register(u64),
    Unregister,
    Update(u64),
    Lookup,
    /// The death of the op's pid: part of every key's history.
    Kill,
}

/// What it answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ret {
    Ok,
    /// `AlreadyRegistered { owner }`.
    Taken(Pid),
    NotFound,
    NotOwner(Pid),
    /// `ProcessDead { pid }`.
    Dead(Pid),
    Timeout,
    /// A lookup's entry: its pid and its `v`.
    Found(Pid, u64),
    /// A lookup's miss.
    Missing,
    /// A lookup's entry whose metadata does not match its `v` (a torn read).
    Garbled,
}

/// One recorded operation.
#[derive(Clone, Copy, Debug)]
struct Op {
    /// The key (an index below the run's key count); `None` for a death.
    key: Option<u64>,
    call: u64,
    ret: u64,
    /// The caller of a write, the dying process of a death; `Pid::NONE` for lookups.
    pid: Pid,
    what: Call,
    result: Ret,
    thread: usize,
    /// Which API form: `sync`, `async`, `many` (a batch), `drop`.
    via: &'static str,
    /// Whether the write went through another thread's authority.
    borrowed: bool,
}

impl Op {
    fn line(&self, origin: u64) -> String {
        let what = match self.what {
            Call::Register(v) => format!("register v={v}"),
            Call::Unregister => "unregister".to_owned(),
            Call::Update(v) => format!("update v={v}"),
            Call::Lookup => "lookup".to_owned(),
            Call::Kill => "KILL".to_owned(),
        };
        let result = match self.result {
            Ret::Found(p, v) => format!("Found({p:?}, v={v})"),
            r => format!("{r:?}"),
        };
        let who = if self.what == Call::Lookup {
            String::new()
        } else {
            format!("{:?} ", self.pid)
        };
        format!(
            "[{:>6}..{:>6}] t{} {who}{what} -> {result} ({}{})",
            self.call - origin,
            self.ret - origin,
            self.thread,
            self.via,
            if self.borrowed { ", borrowed" } else { "" }
        )
    }
}

// ---------------------------------------------------------------------------------------
// The sequential model and the checker.

/// One key: free, or held by a pid with a value.
type State = Option<(Pid, u64)>;

/// Applies `op` to `state` if the model allows its recorded result there. `dead`: the
/// caller's death is already linearized.
fn step(state: State, op: &Op, dead: bool) -> Option<State> {
    let write = matches!(
        op.what,
        Call::Register(_) | Call::Unregister | Call::Update(_)
    );
    if write && op.result == Ret::Timeout {
        return Some(state);
    }
    if write && dead {
        return (op.result == Ret::Dead(op.pid)).then_some(state);
    }
    let mine = |s: State| s.is_some_and(|(p, _)| p == op.pid);
    match (op.what, op.result, state) {
        (Call::Kill, _, s) => Some(if mine(s) { None } else { s }),
        (Call::Lookup, Ret::Missing, None) => Some(None),
        (Call::Lookup, Ret::Found(p, v), Some(s)) if s == (p, v) => Some(state),
        (Call::Register(v), Ret::Ok, None) => Some(Some((op.pid, v))),
        (Call::Register(_), Ret::Taken(t), Some((o, _))) if t == o => Some(state),
        (Call::Unregister | Call::Update(_), Ret::NotFound, None) => Some(None),
        (Call::Unregister | Call::Update(_), Ret::NotOwner(t), Some((o, _)))
            if t == o && o != op.pid =>
        {
            Some(state)
        }
        (Call::Unregister, Ret::Ok, s) if mine(s) => Some(None),
        (Call::Update(v), Ret::Ok, s) if mine(s) => Some(Some((op.pid, v))),
        _ => None,
    }
}

/// A set of operation indexes.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Bits {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    /// The first index not in the set (may be past the end).
    fn first_clear(&self) -> usize {
        let w = self.0.iter().position(|&w| w != !0).unwrap_or(self.0.len());
        w * 64 + self.0.get(w).map_or(0, |w| w.trailing_ones() as usize)
    }
}

/// The operations that may be linearized next: not yet linearized, and called before the
/// earliest return among those not yet linearized. `ops` is sorted by call time.
fn candidates(ops: &[Op], done: &Bits) -> Vec<usize> {
    let mut min_ret = u64::MAX;
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate().skip(done.first_clear()) {
        // Every later op was called after this one, so returns after `min_ret` too.
        if op.call > min_ret {
            break;
        }
        if !done.get(i) {
            min_ret = min_ret.min(op.ret);
            out.push(i);
        }
    }
    out.retain(|&i| ops[i].call < min_ret);
    out
}

/// Searches for a linearization of one key's history (`ops` sorted by call time). `Ok`:
/// the number of configurations explored; `Err`: the longest linearizable prefix found
/// (operation indexes in linearization order).
fn linearize(ops: &[Op]) -> Result<usize, Vec<usize>> {
    let n = ops.len();
    assert!(ops.windows(2).all(|w| w[0].call <= w[1].call));
    let kill_of: HashMap<Pid, usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.what == Call::Kill)
        .map(|(i, o)| (o.pid, i))
        .collect();
    let killed_by: Vec<Option<usize>> = ops
        .iter()
        .map(|o| match o.what {
            Call::Kill | Call::Lookup => None,
            _ => kill_of.get(&o.pid).copied(),
        })
        .collect();

    struct Frame {
        state: State,
        cands: Vec<usize>,
        next: usize,
    }
    let mut done = Bits::new(n);
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut path: Vec<usize> = Vec::new();
    let mut best: Vec<usize> = Vec::new();
    let mut stack = vec![Frame {
        state: None,
        cands: candidates(ops, &done),
        next: 0,
    }];
    while let Some(top) = stack.last_mut() {
        if path.len() == n {
            return Ok(seen.len());
        }
        let Some(&i) = top.cands.get(top.next) else {
            stack.pop();
            if let Some(i) = path.pop() {
                done.clear(i);
            }
            continue;
        };
        top.next += 1;
        let dead = killed_by[i].is_some_and(|k| done.get(k));
        let Some(state) = step(top.state, &ops[i], dead) else {
            continue;
        };
        done.set(i);
        if !seen.insert((done.0.clone(), state)) {
            done.clear(i);
            continue;
        }
        path.push(i);
        if path.len() > best.len() {
            best.clone_from(&path);
        }
        let cands = candidates(ops, &done);
        stack.push(Frame {
            state,
            cands,
            next: 0,
        });
    }
    Err(best)
}

/// What checking a whole history found.
#[derive(Default, Debug)]
struct Checked {
    /// Operations recorded (a death once).
    ops: usize,
    /// Operations in the per-key histories (a death once per key).
    events: usize,
    /// The longest per-key history.
    longest: usize,
    /// Per-key events whose interval overlaps another's in the same key's history.
    overlapping: usize,
    /// Search configurations explored.
    states: usize,
}

impl Checked {
    fn add(&mut self, c: &Checked) {
        self.ops += c.ops;
        self.events += c.events;
        self.longest = self.longest.max(c.longest);
        self.overlapping += c.overlapping;
        self.states += c.states;
    }
}

/// How many operations of `h` (sorted by call time) overlap another one.
fn overlapping(h: &[Op]) -> usize {
    let mut max_ret = 0;
    (0..h.len())
        .filter(|&i| {
            let before = i > 0 && max_ret > h[i].call;
            max_ret = max_ret.max(h[i].ret);
            before || h.get(i + 1).is_some_and(|n| n.call < h[i].ret)
        })
        .count()
}

/// The history of key `k` (deaths included), sorted by call time.
fn key_history(ops: &[Op], k: u64) -> Vec<Op> {
    let mut h: Vec<Op> = ops
        .iter()
        .filter(|o| o.key.is_none_or(|x| x == k))
        .copied()
        .collect();
    h.sort_by_key(|o| o.call);
    h
}

/// Checks every key of `keys` in `ops`; `Err` describes the first key with no
/// linearization, with its history.
fn check(ops: &[Op], keys: u64) -> Result<Checked, String> {
    let mut c = Checked {
        ops: ops.len(),
        ..Checked::default()
    };
    for k in 0..keys {
        let h = key_history(ops, k);
        c.events += h.len();
        c.longest = c.longest.max(h.len());
        c.overlapping += overlapping(&h);
        match linearize(&h) {
            Ok(states) => c.states += states,
            Err(best) => return Err(report(k, &h, &best)),
        }
    }
    Ok(c)
}

/// A key's history, one line per operation in call order, marked with the position each
/// took in the longest linearizable prefix found (`--`: not in it).
fn report(k: u64, h: &[Op], best: &[usize]) -> String {
    let origin = h.first().map_or(0, |o| o.call);
    let mut at = vec![None; h.len()];
    let mut state: State = None;
    let mut dead = HashSet::new();
    for (n, &i) in best.iter().enumerate() {
        at[i] = Some(n);
        if h[i].what == Call::Kill {
            dead.insert(h[i].pid);
        }
        state = step(state, &h[i], dead.contains(&h[i].pid)).unwrap_or(state);
    }
    let mut s = format!(
        "key {k}: no linearization of its {} operations; the longest linearizable prefix \
         has {} (marked #n, in its order), ending in state {state:?}; times are logical \
         ticks from {origin}.\n",
        h.len(),
        best.len()
    );
    if let Some(first) = at.iter().position(Option::is_none) {
        let _ = writeln!(
            s,
            "The first operation (by call) it could not place: {}",
            h[first].line(origin)
        );
    }
    for (i, op) in h.iter().enumerate() {
        let mark = at[i].map_or("  --".to_owned(), |n| format!("#{n:>3}"));
        let _ = writeln!(s, "  {mark} {}", op.line(origin));
    }
    s
}

// ---------------------------------------------------------------------------------------
// The workload.

/// A tiny xorshift generator: runs differ by seed, not by a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type WriteFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// The padding attribute of value `v`: its length varies, so updates move blocks.
fn pad(v: u64) -> String {
    format!("{v:x}-").repeat(1 + (v % 7) as usize)
}

/// The metadata of value `v`: `v`, `v % 4` capabilities, and a padding unless `3 | v`.
fn meta(v: u64) -> Metadata {
    let mut m = Metadata::new().attribute("v", v as i64);
    for c in 0..v % 4 {
        m = m.capability(format!("c{c}"));
    }
    if v % 3 != 0 {
        m = m.attribute("pad", pad(v));
    }
    m
}

/// What a lookup saw.
fn observe(entry: Option<&Entry>) -> Ret {
    let Some(e) = entry else {
        return Ret::Missing;
    };
    let Some(ValueRef::Int(v)) = e.attribute("v") else {
        return Ret::Garbled;
    };
    let v = v as u64;
    let caps = e.capabilities().count() as u64 == v % 4;
    let padded = match e.attribute("pad") {
        None => v % 3 == 0,
        Some(ValueRef::Str(s)) => v % 3 != 0 && s == pad(v),
        Some(_) => false,
    };
    if caps && padded {
        Ret::Found(e.pid(), v)
    } else {
        Ret::Garbled
    }
}

/// What a write answered.
fn outcome(r: &Result<(), Error>) -> Ret {
    let Err(e) = r else { return Ret::Ok };
    match e.kind() {
        ErrorKind::AlreadyRegistered { owner } => Ret::Taken(*owner),
        ErrorKind::NotFound => Ret::NotFound,
        ErrorKind::NotOwner { owner } => Ret::NotOwner(*owner),
        ErrorKind::ProcessDead { pid } => Ret::Dead(*pid),
        ErrorKind::Timeout { .. } => Ret::Timeout,
        _ => panic!("unexpected error from a write: {e}"),
    }
}

/// One round: a fresh set of keys in a registry, the threads' shared state.
struct Round<'a> {
    r: &'a Registry,
    ns: Namespace,
    /// The name of key 0 of this round.
    base: u64,
    keys: u64,
    clock: AtomicU64,
    values: AtomicU64,
    /// Every process's authority, the dead ones too.
    authorities: Mutex<Vec<Authority>>,
}

impl Round<'_> {
    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    fn value(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    fn key(&self, k: u64) -> Key<'static> {
        Key::new(self.ns, self.base + k)
    }

    fn spawn(&self) -> Process {
        let p = self.r.spawn();
        self.authorities.lock().unwrap().push(p.authority());
        p
    }

    /// Some recent process's authority, perhaps dead, perhaps another thread's.
    fn any_authority(&self, rng: &mut Rng) -> Authority {
        let all = self.authorities.lock().unwrap();
        let recent = all.len().min(16);
        all[all.len() - 1 - rng.below(recent as u64) as usize].clone()
    }

    /// A random write call with a fresh value.
    fn write_call(&self, rng: &mut Rng) -> Call {
        match rng.below(3) {
            0 => Call::Register(self.value()),
            1 => Call::Unregister,
            _ => Call::Update(self.value()),
        }
    }

    fn write(&self, who: &Authority, k: u64, what: Call) -> Result<(), Error> {
        let key = self.key(k);
        match what {
            Call::Register(v) => self.r.register(who, &key, &meta(v)),
            Call::Unregister => self.r.unregister(who, &key),
            Call::Update(v) => self.r.update_metadata(who, &key, &meta(v)),
            _ => unreachable!(),
        }
    }

    fn write_async(&self, who: &Authority, k: u64, what: Call) -> WriteFuture {
        let key = self.key(k);
        match what {
            Call::Register(v) => Box::pin(self.r.register_async(who, &key, &meta(v))),
            Call::Unregister => Box::pin(self.r.unregister_async(who, &key)),
            Call::Update(v) => Box::pin(self.r.update_metadata_async(who, &key, &meta(v))),
            _ => unreachable!(),
        }
    }

    /// `1..=max` distinct keys.
    fn some_keys(&self, rng: &mut Rng, max: u64) -> Vec<u64> {
        let mut all: Vec<u64> = (0..self.keys).collect();
        for i in (1..all.len()).rev() {
            all.swap(i, rng.below(i as u64 + 1) as usize);
        }
        all.truncate(1 + rng.below(max.min(self.keys)) as usize);
        all
    }

    /// Kills `p` (drops it), recording the death.
    fn kill(&self, thread: usize, p: Process, log: &mut Vec<Op>) {
        let pid = p.pid();
        let call = self.tick();
        drop(p);
        let ret = self.tick();
        log.push(Op {
            key: None,
            call,
            ret,
            pid,
            what: Call::Kill,
            result: Ret::Ok,
            thread,
            via: "drop",
            borrowed: false,
        });
    }

    /// One thread's part of the round: `steps` random steps.
    fn worker(&self, thread: usize, steps: usize, seed: u64) -> Vec<Op> {
        let mut rng = Rng(seed | 1);
        let mut log = Vec::with_capacity(steps * 2);
        let mut me = self.spawn();
        for _ in 0..steps {
            let who = if rng.below(100) < 15 {
                self.any_authority(&mut rng)
            } else {
                me.authority()
            };
            let borrowed = who.pid() != me.pid();
            let op = |k: u64, call: u64, ret: u64, what: Call, result: Ret, via| Op {
                key: Some(k),
                call,
                ret,
                pid: if what == Call::Lookup {
                    Pid::NONE
                } else {
                    who.pid()
                },
                what,
                result,
                thread,
                via,
                borrowed,
            };
            let k = rng.below(self.keys);
            match rng.below(100) {
                // A death, and a new process.
                0..=3 => {
                    self.kill(thread, me, &mut log);
                    me = self.spawn();
                }
                // An async write of our own process in flight across its death.
                4..=5 => {
                    let what = self.write_call(&mut rng);
                    let pid = me.pid();
                    let call = self.tick();
                    let f = self.write_async(&me, k, what);
                    self.kill(thread, me, &mut log);
                    me = self.spawn();
                    let result = outcome(&block_on(f));
                    log.push(Op {
                        pid,
                        borrowed: false,
                        ..op(k, call, self.tick(), what, result, "async")
                    });
                }
                6..=52 => {
                    let what = match rng.below(9) {
                        0..=3 => Call::Register(self.value()),
                        4..=6 => Call::Unregister,
                        _ => Call::Update(self.value()),
                    };
                    let call = self.tick();
                    let result = outcome(&self.write(&who, k, what));
                    log.push(op(k, call, self.tick(), what, result, "sync"));
                }
                53..=70 => {
                    let call = self.tick();
                    let found = self.r.lookup(&self.key(k)).expect("lookup");
                    let ret = self.tick();
                    log.push(op(
                        k,
                        call,
                        ret,
                        Call::Lookup,
                        observe(found.as_ref()),
                        "sync",
                    ));
                }
                71..=77 => {
                    let ks: Vec<u64> = (0..1 + rng.below(4))
                        .map(|_| rng.below(self.keys))
                        .collect();
                    let keys: Vec<Key> = ks.iter().map(|&k| self.key(k)).collect();
                    let mut seen = vec![Ret::Garbled; ks.len()];
                    let call = self.tick();
                    self.r
                        .lookup_many(&keys, |i, e| seen[i] = observe(e))
                        .expect("lookup_many");
                    let ret = self.tick();
                    for (&k, result) in ks.iter().zip(seen) {
                        log.push(op(k, call, ret, Call::Lookup, result, "many"));
                    }
                }
                78..=86 => {
                    let ks = self.some_keys(&mut rng, 3);
                    let values: Vec<u64> = ks.iter().map(|_| self.value()).collect();
                    let items: Vec<(Key, Metadata)> = ks
                        .iter()
                        .zip(&values)
                        .map(|(&k, &v)| (self.key(k), meta(v)))
                        .collect();
                    let items = items.iter().map(|(k, m)| (*k, m));
                    let call = self.tick();
                    let results = if rng.below(2) == 0 {
                        self.r.register_many(&who, items)
                    } else {
                        block_on(self.r.register_many_async(&who, items))
                    }
                    .expect("register_many");
                    let ret = self.tick();
                    for ((&k, &v), r) in ks.iter().zip(&values).zip(&results) {
                        let what = Call::Register(v);
                        log.push(op(k, call, ret, what, outcome(r), "many"));
                    }
                }
                87..=89 => {
                    let ks = self.some_keys(&mut rng, 3);
                    let keys: Vec<Key> = ks.iter().map(|&k| self.key(k)).collect();
                    let call = self.tick();
                    let results = self.r.unregister_many(&who, &keys).expect("batch");
                    let ret = self.tick();
                    for (&k, r) in ks.iter().zip(&results) {
                        log.push(op(k, call, ret, Call::Unregister, outcome(r), "many"));
                    }
                }
                // One or two async writes in flight together.
                _ => {
                    let writes: Vec<(u64, Call)> = (0..1 + rng.below(2))
                        .map(|i| {
                            let k = if i == 0 { k } else { rng.below(self.keys) };
                            (k, self.write_call(&mut rng))
                        })
                        .collect();
                    let call = self.tick();
                    let futures: Vec<WriteFuture> = writes
                        .iter()
                        .map(|&(k, what)| self.write_async(&who, k, what))
                        .collect();
                    let results: Vec<Ret> =
                        futures.into_iter().map(|f| outcome(&block_on(f))).collect();
                    let ret = self.tick();
                    for (&(k, what), result) in writes.iter().zip(results) {
                        log.push(op(k, call, ret, what, result, "async"));
                    }
                }
            }
        }
        self.kill(thread, me, &mut log);
        log
    }
}

/// Registry settings of a run.
#[derive(Clone, Copy, Debug)]
struct Config {
    shards: usize,
    read_attempts: u32,
    capacity: usize,
    line_cache: bool,
}

/// Runs `rounds` rounds of `threads` x `steps` steps over `keys` keys on one registry of
/// `config`, checking each round's history; panics with the history of a key that has no
/// linearization.
fn run(
    config: Config,
    rounds: usize,
    threads: usize,
    steps: usize,
    keys: u64,
    seed: u64,
) -> Checked {
    let r = builder()
        .shards(config.shards)
        .read_attempts(config.read_attempts)
        .capacity(config.capacity)
        .line_cache(config.line_cache)
        .build()
        .expect("registry builds");
    let ns = r.namespace("lin").unwrap();
    let mut total = Checked::default();
    for round in 0..rounds {
        let round_state = Round {
            r: &r,
            ns,
            base: round as u64 * 1000,
            keys,
            clock: AtomicU64::new(0),
            values: AtomicU64::new(1),
            authorities: Mutex::new(Vec::new()),
        };
        let start = Barrier::new(threads);
        let ops: Vec<Op> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let seed = seed
                        ^ (round as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ (t as u64 + 1) << 48;
                    let (state, start) = (&round_state, &start);
                    s.spawn(move || {
                        start.wait();
                        state.worker(t, steps, seed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        match check(&ops, keys) {
            Ok(c) => total.add(&c),
            Err(report) => {
                eprintln!("{config:?}, round {round}, seed {seed:#x}:\n{report}");
                panic!(
                    "S5: a history with no linearization ({config:?}, round {round}); see stderr"
                );
            }
        }
    }
    total
}

const CONFIGS: [Config; 4] = [
    Config {
        shards: 1,
        read_attempts: 64,
        capacity: 16,
        line_cache: false,
    },
    Config {
        shards: 4,
        read_attempts: 1,
        capacity: 16,
        line_cache: false,
    },
    Config {
        shards: 4,
        read_attempts: 64,
        capacity: 1024,
        line_cache: false,
    },
    // Reads that hit the line cache, or meet a line being written and fall through.
    Config {
        shards: 2,
        read_attempts: 64,
        capacity: 1024,
        line_cache: true,
    },
];

/// SPEC S5: histories of concurrent single-key operations, deaths included, are
/// linearizable, for one and several shards, with the reader's fallback path and with
/// the line cache.
#[test]
fn s5_histories_are_linearizable() {
    let started = Instant::now();
    let mut total = Checked::default();
    for (i, config) in CONFIGS.into_iter().enumerate() {
        let c = run(config, 2, 4, 300, 4 + i as u64, 0x5eed + i as u64);
        total.add(&c);
    }
    assert!(total.ops >= 4 * 2 * 4 * 300, "{total:?}");
    // Most operations overlap another of their key: the histories are concurrent.
    assert!(total.overlapping * 2 > total.events, "{total:?}");
    eprintln!("s5: {total:?} in {:?}", started.elapsed());
}

/// SPEC S5 at length: run explicitly (`-- --ignored`) before calling a change done.
#[test]
#[ignore = "long: about half a million operations"]
fn s5_long_linearizability_run() {
    let started = Instant::now();
    let mut total = Checked::default();
    let seed = std::env::var("ROSTER_LIN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1234_5678);
    for (i, config) in CONFIGS.into_iter().enumerate() {
        for (threads, keys) in [(4, 3u64), (4, 6), (8, 4)] {
            let seed = seed ^ (i as u64) << 32 ^ (threads as u64) << 16 ^ keys;
            let c = run(config, 10, threads, 1000, keys, seed);
            total.add(&c);
        }
    }
    eprintln!(
        "s5 long: {} operations recorded, {} per-key events checked ({} overlapping another, \
         longest key history {}, {} search states) in {:?}",
        total.ops,
        total.events,
        total.overlapping,
        total.longest,
        total.states,
        started.elapsed()
    );
    assert!(total.ops >= 200_000, "{total:?}");
}

// ---------------------------------------------------------------------------------------
// The checker's own test.

/// Hand-built histories of key 0 (deaths are `key: None`).
fn h(ops: &[(u64, u64, Pid, Call, Ret)]) -> Vec<Op> {
    ops.iter()
        .map(|&(call, ret, pid, what, result)| Op {
            key: (what != Call::Kill).then_some(0),
            call,
            ret,
            pid,
            what,
            result,
            thread: 0,
            via: "hand",
            borrowed: false,
        })
        .collect()
}

#[test]
fn s5_checker_accepts_linearizable_and_rejects_other_histories() {
    use Call::*;
    use Ret::*;
    let r = builder().shards(1).build().unwrap();
    let (p, q) = (r.spawn(), r.spawn());
    let (p, q, none) = (p.pid(), q.pid(), Pid::NONE);

    let legal: Vec<(&str, Vec<Op>)> = vec![
        (
            "a register, a losing rival, reads, an update, a death, a dead write",
            h(&[
                (0, 3, p, Register(1), Ok),
                (1, 4, q, Register(2), Taken(p)),
                (2, 5, none, Lookup, Found(p, 1)),
                (6, 7, none, Lookup, Found(p, 1)),
                (8, 11, p, Update(3), Ok),
                (9, 10, none, Lookup, Found(p, 1)),
                (9, 12, none, Lookup, Found(p, 3)),
                (13, 16, p, Kill, Ok),
                (14, 15, none, Lookup, Found(p, 3)),
                (17, 18, p, Unregister, Dead(p)),
                (19, 20, none, Lookup, Missing),
                (21, 22, q, Register(4), Ok),
                (23, 24, p, Register(5), Dead(p)),
                (25, 26, q, Unregister, Ok),
                (27, 28, q, Update(6), NotFound),
            ]),
        ),
        (
            "a lookup called first sees a write that is called later",
            h(&[
                (0, 10, none, Lookup, Found(p, 1)),
                (2, 3, p, Register(1), Ok),
                (4, 5, q, Unregister, NotOwner(p)),
            ]),
        ),
        (
            "a write answered ProcessDead while its process dies",
            h(&[(0, 5, p, Kill, Ok), (1, 2, p, Register(1), Dead(p))]),
        ),
        (
            "a write answered Ok while its process dies",
            h(&[
                (0, 5, p, Kill, Ok),
                (1, 6, p, Register(1), Ok),
                (7, 8, none, Lookup, Missing),
                (9, 10, q, Register(2), Ok),
            ]),
        ),
        (
            "a timeout changes nothing",
            h(&[
                (0, 1, p, Register(1), Timeout),
                (2, 3, none, Lookup, Missing),
            ]),
        ),
    ];
    for (what, ops) in &legal {
        assert!(check(ops, 1).is_ok(), "rejected a legal history: {what}");
    }

    let illegal: Vec<(&str, Vec<Op>)> = vec![
        (
            "a lookup returns a value before its write was called",
            h(&[
                (0, 1, none, Lookup, Found(p, 1)),
                (2, 3, p, Register(1), Ok),
            ]),
        ),
        (
            "two overlapping registrations both win",
            h(&[(0, 3, p, Register(1), Ok), (1, 4, q, Register(2), Ok)]),
        ),
        (
            "ProcessDead before the process died",
            h(&[(0, 1, p, Register(1), Dead(p)), (2, 3, p, Kill, Ok)]),
        ),
        (
            "a write succeeds after its process died",
            h(&[(0, 1, p, Kill, Ok), (2, 3, p, Register(1), Ok)]),
        ),
        (
            "a stale read after an update returned",
            h(&[
                (0, 1, p, Register(1), Ok),
                (2, 3, p, Update(2), Ok),
                (4, 5, none, Lookup, Found(p, 1)),
            ]),
        ),
        (
            "a read goes back to the old value after seeing the new one",
            h(&[
                (0, 1, p, Register(1), Ok),
                (2, 9, p, Update(2), Ok),
                (3, 4, none, Lookup, Found(p, 2)),
                (5, 6, none, Lookup, Found(p, 1)),
            ]),
        ),
        (
            "a dead process's entry read after its death",
            h(&[
                (0, 1, p, Register(1), Ok),
                (2, 3, p, Kill, Ok),
                (4, 5, none, Lookup, Found(p, 1)),
            ]),
        ),
        (
            "AlreadyRegistered names the wrong owner",
            h(&[(0, 1, p, Register(1), Ok), (2, 3, q, Register(2), Taken(q))]),
        ),
        (
            "another process unregisters the holder's key",
            h(&[(0, 1, p, Register(1), Ok), (2, 3, q, Unregister, Ok)]),
        ),
        (
            "a garbled read",
            h(&[(0, 1, p, Register(1), Ok), (2, 3, none, Lookup, Garbled)]),
        ),
        (
            "NotFound for the holder's own key",
            h(&[(0, 1, p, Register(1), Ok), (2, 3, p, Update(2), NotFound)]),
        ),
    ];
    for (what, ops) in &illegal {
        let err = check(ops, 1).expect_err(what);
        assert!(err.contains("no linearization"), "{err}");
    }

    // Histories wide and long stay fast: 3000 sequential ops, and 12 overlapping readers.
    let mut long = Vec::new();
    for i in 0..1000u64 {
        long.push((6 * i, 6 * i + 1, p, Register(i + 1), Ok));
        long.push((6 * i + 2, 6 * i + 3, none, Lookup, Found(p, i + 1)));
        long.push((6 * i + 4, 6 * i + 5, p, Unregister, Ok));
    }
    assert_eq!(check(&h(&long), 1).unwrap().events, 3000);
    let mut wide = vec![(0, 100, p, Register(1), Ok), (1, 101, p, Update(2), Ok)];
    for i in 0..12u64 {
        wide.push((2 + i, 102 + i, none, Lookup, Found(p, 1 + i % 2)));
    }
    assert!(check(&h(&wide), 1).is_ok());

    // A recorded history passes, and fails once one of its reads is falsified.
    let round = Round {
        r: &r,
        ns: r.namespace("self-test").unwrap(),
        base: 0,
        keys: 2,
        clock: AtomicU64::new(0),
        values: AtomicU64::new(1),
        authorities: Mutex::new(Vec::new()),
    };
    let mut ops = round.worker(0, 300, 7);
    check(&ops, 2).expect("a one-thread history is linearizable");
    let read = ops
        .iter_mut()
        .find(|o| matches!(o.result, Found(..)))
        .expect("some lookup found an entry");
    let Found(pid, v) = read.result else {
        unreachable!()
    };
    read.result = Found(pid, v + 1_000_000);
    assert!(check(&ops, 2).is_err());
}
