//! Kubernetes Events (events.k8s.io) for launches, state changes, terminations and hook
//! results. Publishing never fails a reconcile: errors are logged.
//!
//! Publishing never waits for the API server either, as client-go's event broadcaster: the
//! Event is built at once (its time is the moment it was published) and queued; a background
//! writer sends the queue with at most [`MAX_WRITES_IN_FLIGHT`] requests at once, so a burst
//! of Events (300 launches make ~1,800) never sits in the reconciles' path. The queue is
//! bounded: when it is full, publishing waits for room (no Event is dropped).
//! [`EventSink::flush`] waits until everything queued is written (graceful shutdown).
//!
//! A repeat of an Event (same object, type, reason, action *and note*) within
//! [`SERIES_TTL`] bumps the `series` of the first instead of creating another. The note is
//! part of that key (as in client-go): kube's own `Recorder` leaves it out, which folds, say,
//! a second health transition with new evidence into the first Event and loses its note.
//!
//! Similar Events (same object, type, reason and action, any note) are aggregated as
//! client-go's `EventCorrelator` does: the first [`MAX_SIMILAR`] distinct notes within
//! [`SERIES_TTL`] are Events of their own; later ones count in the series of one Event whose
//! note starts with [`AGGREGATE_PREFIX`] (a scale-up of 300 makes a dozen "Launched" Events
//! on the group, not 300). A series bump waits [`SERIES_PATCH_DELAY`] before it is written,
//! and the bumps that come meanwhile go with it (one patch, the latest count).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;

use crate::clock::Clock;
use kube::api::{Api, Patch, PatchParams, PostParams};

/// The reporting controller name on every Event.
pub const REPORTER: &str = "autoheal";

/// How long a published Event takes repeats into its series.
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// The longest note kept (the API server rejects notes over 1 kB).
const MAX_NOTE: usize = 1000;

/// How many Event writes the background writer has in flight at once.
pub const MAX_WRITES_IN_FLIGHT: usize = 4;

/// How many Events wait in the queue before publishing waits for room.
const QUEUE_CAPACITY: usize = 4096;

/// How many similar Events (see the module doc) with distinct notes are published as Events
/// of their own before the next ones are aggregated (client-go's `maxEvents`).
pub const MAX_SIMILAR: usize = 10;

/// The start of an aggregated Event's note (as client-go's).
pub const AGGREGATE_PREFIX: &str = "(combined from similar events): ";

/// How long a series bump waits before it is written, to take the bumps that follow with it.
pub const SERIES_PATCH_DELAY: Duration = Duration::from_millis(500);

/// How often the Events past [`SERIES_TTL`] are dropped from memory.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// What makes two Events the same one, repeated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    namespace: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    uid: Option<String>,
    type_: &'static str,
    reason: String,
    action: String,
    note: String,
}

/// A 64-bit digest of a [`SeriesKey`] or a note, keyed with the process's own random keys
/// ([`RandomState`]): what the series maps hold instead of the strings, so that remembering
/// an Event for [`SERIES_TTL`] costs a few dozen bytes (a scale-up of thousands remembers
/// thousands). Two keys would share a series only if their digests collided (about 1 in 2^64
/// for a pair; the random keys keep notes from being crafted to collide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Digest(u64);

/// What is remembered of a published Event to count its repeats in its series.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    /// The Event's name: the object a series bump patches.
    name: String,
    /// Its `eventTime`.
    first: Timestamp,
    /// Its `series.count` (1 before any repeat).
    count: i32,
    /// When it was last seen: its `series.lastObservedTime`, or its `eventTime`.
    last: Timestamp,
}

impl Published {
    /// The record of `event`; `None` for an Event without a name or time (never published).
    fn of(event: &Event) -> Option<Self> {
        let first = event.event_time.as_ref()?.0;
        Some(Self {
            name: event.metadata.name.clone()?,
            first,
            count: event.series.as_ref().map_or(1, |s| s.count),
            last: event
                .series
                .as_ref()
                .map_or(first, |s| s.last_observed_time.0),
        })
    }

    /// Whether it was last seen within [`SERIES_TTL`] of `now` (a repeat then counts in its
    /// series).
    fn is_live(&self, now: Timestamp) -> bool {
        self.last + SERIES_TTL > now
    }
}

/// Similar Events (same key but for the note) seen lately.
#[derive(Debug, Default)]
struct Similar {
    /// When the first of them was published.
    first: Timestamp,
    /// The digests of their distinct notes (at most [`MAX_SIMILAR`]).
    notes: Vec<Digest>,
}

/// The Events published lately, by key digest, to count repeats in their series.
#[derive(Default)]
struct Series {
    published: HashMap<Digest, Published>,
    /// Similar Events, by the digest of their key with an empty note.
    similar: HashMap<Digest, Similar>,
    /// The keys of every [`Digest`].
    digests: RandomState,
}

impl Series {
    fn digest(&self, value: &impl Hash) -> Digest {
        Digest(self.digests.hash_one(value))
    }

    /// The key and note to publish `key`'s Event under: its own, or once [`MAX_SIMILAR`]
    /// similar Events with other notes were published within [`SERIES_TTL`], the aggregate
    /// Event's (whose key has the note [`AGGREGATE_PREFIX`]).
    fn aggregate(&mut self, key: SeriesKey, now: Timestamp) -> (SeriesKey, String) {
        if self
            .published
            .get(&self.digest(&key))
            .is_some_and(|p| p.is_live(now))
        {
            // A repeat counts in its own series.
            let note = key.note.clone();
            return (key, note);
        }
        let mut similar = key.clone();
        similar.note = String::new();
        let (similar_digest, note_digest) = (self.digest(&similar), self.digest(&key.note));
        let seen = self
            .similar
            .entry(similar_digest)
            .or_insert_with(|| Similar {
                first: now,
                notes: Vec::new(),
            });
        if seen.first + SERIES_TTL <= now {
            // The earlier similar Events are past the TTL (not yet swept): start afresh.
            seen.first = now;
            seen.notes.clear();
        }
        if seen.notes.contains(&note_digest) {
            let note = key.note.clone();
            return (key, note);
        }
        if seen.notes.len() < MAX_SIMILAR {
            seen.notes.push(note_digest);
            let note = key.note.clone();
            return (key, note);
        }
        let note = truncate(format!("{AGGREGATE_PREFIX}{}", key.note));
        let mut aggregate = similar;
        aggregate.note = AGGREGATE_PREFIX.into();
        (aggregate, note)
    }

    /// The Event to write for `key` at `now`: `fresh()` when none was seen within
    /// [`SERIES_TTL`], else the bump of the remembered one's series (its name, namespace, time
    /// and series: what the merge patch of a bump changes).
    fn next(&self, key: &SeriesKey, now: Timestamp, fresh: impl FnOnce() -> Event) -> Event {
        match self
            .published
            .get(&self.digest(key))
            .filter(|p| p.is_live(now))
        {
            Some(p) => Event {
                metadata: ObjectMeta {
                    name: Some(p.name.clone()),
                    namespace: key.namespace.clone(),
                    ..ObjectMeta::default()
                },
                event_time: Some(MicroTime(p.first)),
                series: Some(EventSeries {
                    count: p.count + 1,
                    last_observed_time: MicroTime(now),
                }),
                ..Event::default()
            },
            None => fresh(),
        }
    }

    /// Forgets the Events, and the similar-Event counts, past [`SERIES_TTL`] at `now`, and
    /// gives their memory back when the maps are mostly empty (a scale-up of thousands
    /// leaves thousands of records here for [`SERIES_TTL`], none after).
    fn sweep(&mut self, now: Timestamp) {
        self.published.retain(|_, p| p.is_live(now));
        self.similar.retain(|_, s| s.first + SERIES_TTL > now);
        if self.published.len() < self.published.capacity() / 4 {
            self.published.shrink_to_fit();
        }
        if self.similar.len() < self.similar.capacity() / 4 {
            self.similar.shrink_to_fit();
        }
    }

    /// Remembers `event`, published under `key` (an Event without a name or time, never
    /// published, is forgotten instead).
    fn remember(&mut self, key: &SeriesKey, event: &Event) {
        let digest = self.digest(key);
        if let Some(p) = Published::of(event) {
            self.published.insert(digest, p);
        } else {
            self.published.remove(&digest);
        }
    }

    fn forget(&mut self, key: &SeriesKey) {
        let digest = self.digest(key);
        self.published.remove(&digest);
    }
}

/// One Event write waiting in the queue.
struct Write {
    key: SeriesKey,
    event: Event,
}

/// Publishes Events (queued; see the module doc).
#[derive(Clone)]
pub struct EventSink {
    clock: Arc<dyn Clock>,
    instance: String,
    series: Arc<Mutex<Series>>,
    queue: mpsc::Sender<Write>,
    pending: Arc<Pending>,
    /// Series bumps waiting [`SERIES_PATCH_DELAY`] to be queued, the latest per Event.
    bumps: Arc<Mutex<HashMap<SeriesKey, Event>>>,
}

/// Events queued or being written, and a wake-up for [`EventSink::flush`].
#[derive(Default)]
struct Pending {
    count: AtomicUsize,
    drained: Notify,
}

impl Pending {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.drained.notify_waiters();
        }
    }
}

impl EventSink {
    /// A sink reporting as `autoheal` from `instance` (e.g. the leader identity). Starts the
    /// background writer on the current Tokio runtime; it ends when every clone of the sink
    /// is dropped.
    pub fn new(client: Client, instance: &str, clock: Arc<dyn Clock>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let series: Arc<Mutex<Series>> = Arc::default();
        let pending: Arc<Pending> = Arc::default();
        tokio::spawn(write_events(
            client,
            receiver,
            series.clone(),
            pending.clone(),
        ));
        tokio::spawn(sweep_expired(
            Arc::downgrade(&series),
            clock.clone(),
            SWEEP_EVERY,
        ));
        Self {
            clock,
            instance: instance.into(),
            series,
            queue,
            pending,
            bumps: Arc::default(),
        }
    }

    /// Publishes a Normal Event about `regarding`.
    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(regarding, "Normal", reason, action, note)
            .await;
    }

    /// Publishes a Warning Event about `regarding`.
    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: String,
    ) {
        self.publish(regarding, "Warning", reason, action, note)
            .await;
    }

    /// Waits until every Event published so far is written (or failed), at most `limit`;
    /// false when some were still waiting at the limit.
    pub async fn flush(&self, limit: Duration) -> bool {
        let drained = async {
            loop {
                let notified = self.pending.drained.notified();
                if self.pending.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, drained).await.is_ok()
    }

    /// Builds the Event (or the next count of its series) now and queues its write.
    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = truncate(note);
        let now = self.clock.now();
        let key = SeriesKey {
            namespace: regarding.namespace.clone(),
            kind: regarding.kind.clone(),
            name: regarding.name.clone(),
            uid: regarding.uid.clone(),
            type_,
            reason: reason.into(),
            action: action.into(),
            note: note.clone(),
        };
        let event = {
            let mut series = self.lock();
            let (key, note) = series.aggregate(key, now);
            let event = series.next(&key, now, || Event {
                action: Some(action.into()),
                reason: Some(reason.into()),
                event_time: Some(MicroTime(now)),
                regarding: Some(regarding.clone()),
                note: Some(note),
                metadata: ObjectMeta {
                    namespace: regarding.namespace.clone(),
                    name: Some(format!(
                        "{}.{:x}",
                        regarding.name.as_deref().unwrap_or(REPORTER),
                        now.as_nanosecond()
                    )),
                    ..ObjectMeta::default()
                },
                reporting_controller: Some(REPORTER.into()),
                reporting_instance: Some(self.instance.clone()),
                type_: Some(type_.into()),
                ..Event::default()
            });
            // Remembered before it is written, so a repeat published meanwhile counts in its
            // series; a failed write forgets it again.
            series.remember(&key, &event);
            (key, event)
        };
        let (key, event) = event;
        if event.series.is_some() {
            self.bump(key, event);
            return;
        }
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        if self.queue.send(Write { key, event }).await.is_err() {
            self.pending.done();
            tracing::warn!(reason, "could not publish Event: the writer has stopped");
        }
    }

    /// Queues a series bump after [`SERIES_PATCH_DELAY`], with the bumps of the same Event
    /// that come meanwhile (only the latest is written).
    fn bump(&self, key: SeriesKey, event: Event) {
        let first = {
            let mut bumps = self.bumps.lock().unwrap_or_else(|e| e.into_inner());
            bumps.insert(key.clone(), event).is_none()
        };
        if !first {
            return;
        }
        self.pending.count.fetch_add(1, Ordering::AcqRel);
        let bumps = self.bumps.clone();
        let queue = self.queue.clone();
        let pending = self.pending.clone();
        tokio::spawn(async move {
            tokio::time::sleep(SERIES_PATCH_DELAY).await;
            let event = bumps.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
            let Some(event) = event else {
                pending.done();
                return;
            };
            if queue.send(Write { key, event }).await.is_err() {
                pending.done();
            }
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        lock(&self.series)
    }
}

/// Sweeps `series` every `every` ([`SWEEP_EVERY`]) until the sink is gone, so what is
/// remembered of a burst's Events does not stay in memory after their TTL when no other Event
/// comes.
async fn sweep_expired(series: Weak<Mutex<Series>>, clock: Arc<dyn Clock>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(series) = series.upgrade() else {
            return;
        };
        lock(&series).sweep(clock.now());
    }
}

fn lock(series: &Mutex<Series>) -> std::sync::MutexGuard<'_, Series> {
    series.lock().unwrap_or_else(|e| e.into_inner())
}

/// The background writer: sends each queued Event, [`MAX_WRITES_IN_FLIGHT`] at a time.
async fn write_events(
    client: Client,
    mut queue: mpsc::Receiver<Write>,
    series: Arc<Mutex<Series>>,
    pending: Arc<Pending>,
) {
    let slots = Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT));
    while let Some(write) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let series = series.clone();
        let pending = pending.clone();
        tokio::spawn(async move {
            send(&client, &series, write).await;
            drop(slot);
            pending.done();
        });
    }
}

/// Writes one Event: a create, or a patch of the first of its series.
async fn send(client: &Client, series: &Mutex<Series>, write: Write) {
    let Write { key, event } = write;
    let namespace = key.namespace.as_deref().unwrap_or("default");
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    let result = match event.series {
        Some(_) => {
            let name = event.metadata.name.clone().unwrap_or_default();
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&event))
                .await
        }
        None => api.create(&PostParams::default(), &event).await,
    };
    if let Err(e) = result {
        // Published afresh next time (the Event may be gone).
        lock(series).forget(&key);
        tracing::warn!(
            object = ?key.name, namespace = ?key.namespace, reason = %key.reason,
            "could not publish Event: {e}"
        );
    }
}

/// Cuts a note to [`MAX_NOTE`] bytes (on a character boundary).
fn truncate(mut note: String) -> String {
    if note.len() > MAX_NOTE {
        let mut cut = MAX_NOTE;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str, note: &str) -> SeriesKey {
        SeriesKey {
            namespace: Some("ns".into()),
            kind: Some("Instance".into()),
            name: Some("i".into()),
            uid: Some("u".into()),
            type_: "Normal",
            reason: reason.into(),
            action: "Evaluate".into(),
            note: note.into(),
        }
    }

    fn fresh(note: &str, now: Timestamp) -> Event {
        Event {
            metadata: ObjectMeta {
                name: Some(format!("i.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            note: Some(note.into()),
            event_time: Some(MicroTime(now)),
            ..Event::default()
        }
    }

    fn count(e: &Event) -> i32 {
        e.series.as_ref().map_or(1, |s| s.count)
    }

    #[test]
    fn repeats_count_in_the_series_but_a_new_note_is_a_new_event() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = t0 + SignedDuration::from_secs(10);
        let mut s = Series::default();
        let a = key("HealthChanged", "Healthy/Initializing → Healthy/OK");
        let e = s.next(&a, t0, || fresh("a", t0));
        assert_eq!(count(&e), 1);
        s.remember(&a, &e);
        let e = s.next(&a, t1, || fresh("a", t1));
        assert_eq!(count(&e), 2, "the same Event again: a repeat");
        s.remember(&a, &e);
        let b = key("HealthChanged", "Healthy/OK → Healthy/Warning");
        let e = s.next(&b, t1, || fresh("b", t1));
        assert_eq!(count(&e), 1, "same reason, new note: a new Event");
        assert_eq!(e.note.as_deref(), Some("b"));
    }

    #[test]
    fn similar_events_past_max_similar_count_in_one_aggregate() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut s = Series::default();
        let mut publish = |note: &str| {
            let (k, note) = s.aggregate(key("Launched", note), t0);
            let e = s.next(&k, t0, || fresh(&note, t0));
            s.remember(&k, &e);
            (k, e)
        };
        for n in 0..MAX_SIMILAR {
            let (k, e) = publish(&format!("launched Instance web-{n}"));
            assert_eq!(k.note, format!("launched Instance web-{n}"));
            assert_eq!(count(&e), 1);
        }
        let (k, e) = publish("launched Instance web-a");
        assert_eq!(k.note, AGGREGATE_PREFIX);
        assert_eq!(
            e.note.as_deref(),
            Some("(combined from similar events): launched Instance web-a")
        );
        assert_eq!(count(&e), 1);
        let (k2, e) = publish("launched Instance web-b");
        assert_eq!(k2, k);
        assert_eq!(
            count(&e),
            2,
            "the next one counts in the aggregate's series"
        );
        // A repeat of one of the first is still its own series.
        let (k, e) = publish("launched Instance web-0");
        assert_eq!(k.note, "launched Instance web-0");
        assert_eq!(count(&e), 2);
    }

    #[test]
    fn repeats_after_the_ttl_or_a_failure_start_afresh() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut s = Series::default();
        let a = key("Unhealthy", "x");
        let e = s.next(&a, t0, || fresh("x", t0));
        s.remember(&a, &e);
        let later = t0 + SERIES_TTL + SignedDuration::from_secs(1);
        assert_eq!(count(&s.next(&a, later, || fresh("x", later))), 1);
        let e = s.next(&a, later, || fresh("x", later));
        s.remember(&a, &e);
        s.forget(&a);
        assert_eq!(count(&s.next(&a, later, || fresh("x", later))), 1);
    }

    #[test]
    fn similar_events_after_the_ttl_are_events_of_their_own_again() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let later = t0 + SERIES_TTL;
        let mut s = Series::default();
        for n in 0..MAX_SIMILAR {
            s.aggregate(key("Launched", &format!("web-{n}")), t0);
        }
        let (k, _) = s.aggregate(key("Launched", "web-a"), t0);
        assert_eq!(k.note, AGGREGATE_PREFIX, "within the TTL: aggregated");
        let (k, note) = s.aggregate(key("Launched", "web-b"), later);
        assert_eq!(
            k.note, "web-b",
            "past the TTL, unswept: an Event of its own"
        );
        assert_eq!(note, "web-b");
    }

    #[test]
    fn a_sweep_forgets_what_is_past_the_ttl_and_keeps_the_rest() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = t0 + SignedDuration::from_mins(3);
        let mut s = Series::default();
        let publish = |s: &mut Series, object: &str, now: Timestamp| {
            let mut k = key("Launched", "launched");
            k.name = Some(object.into());
            k.uid = Some(object.into());
            let (k, note) = s.aggregate(k, now);
            let e = s.next(&k, now, || fresh(&note, now));
            s.remember(&k, &e);
            k
        };
        // A burst: one Event on each of 1,000 objects.
        for n in 0..1000 {
            publish(&mut s, &format!("web-{n}"), t0);
        }
        let recent = publish(&mut s, "recent", t1);
        assert_eq!(s.published.len(), 1001);
        let (published, similar) = (s.published.capacity(), s.similar.capacity());

        s.sweep(t0 + SERIES_TTL);
        assert_eq!(s.published.len(), 1, "only the Event seen within the TTL");
        assert!(s.published.contains_key(&s.digest(&recent)));
        assert_eq!(s.similar.len(), 1, "only the recent object's count");
        assert!(s.published.capacity() < published / 4, "memory given back");
        assert!(s.similar.capacity() < similar / 4, "memory given back");
        let e = s.next(&recent, t1 + SignedDuration::from_secs(1), || {
            fresh("launched", t1)
        });
        assert_eq!(count(&e), 2, "the kept one still counts repeats");
    }

    #[tokio::test]
    async fn the_sweeper_forgets_what_is_past_the_ttl_without_another_event_and_ends_with_the_sink()
    {
        /// A clock that reads the time it was set to.
        struct SetClock(Mutex<Timestamp>);
        impl Clock for SetClock {
            fn now(&self) -> Timestamp {
                *self.0.lock().unwrap()
            }
        }
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let clock = Arc::new(SetClock(Mutex::new(t0)));
        let series: Arc<Mutex<Series>> = Arc::default();
        let a = key("Unhealthy", "x");
        let e = lock(&series).next(&a, t0, || fresh("x", t0));
        lock(&series).remember(&a, &e);
        let every = Duration::from_millis(10);
        let sweeper = tokio::spawn(sweep_expired(Arc::downgrade(&series), clock.clone(), every));
        tokio::time::sleep(every * 5).await;
        assert_eq!(lock(&series).published.len(), 1, "within the TTL: kept");
        *clock.0.lock().unwrap() = t0 + SERIES_TTL;
        tokio::time::timeout(Duration::from_secs(10), async {
            while !lock(&series).published.is_empty() {
                tokio::time::sleep(every).await;
            }
        })
        .await
        .expect("swept");
        drop(series);
        tokio::time::timeout(Duration::from_secs(10), sweeper)
            .await
            .expect("the sweeper ends once the series is gone")
            .unwrap();
    }

    /// A client whose API server answers Event creates only once `gate` has a permit, and
    /// counts the requests it received.
    fn gated_client(gate: Arc<Semaphore>, received: Arc<AtomicUsize>) -> Client {
        use http_body_util::{BodyExt, Full};
        let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let gate = gate.clone();
            let received = received.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                received.fetch_add(1, Ordering::SeqCst);
                gate.acquire().await.unwrap().forget();
                let response = hyper::Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(Full::new(body))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        Client::new(service, "ns")
    }

    fn regarding() -> ObjectReference {
        ObjectReference {
            kind: Some("Instance".into()),
            namespace: Some("ns".into()),
            name: Some("i".into()),
            uid: Some("u".into()),
            ..ObjectReference::default()
        }
    }

    #[tokio::test]
    async fn publishing_does_not_wait_for_the_api_server_and_flush_waits_for_the_writes() {
        let gate = Arc::new(Semaphore::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let sink = EventSink::new(gated_client(gate.clone(), received.clone()), "test", clock);
        let published = async {
            for n in 0..10 {
                sink.normal(&regarding(), "Step", "Test", format!("step {n}"))
                    .await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), published)
            .await
            .expect("publishing returns while the API server has answered nothing");
        for _ in 0..500 {
            if received.load(Ordering::SeqCst) >= MAX_WRITES_IN_FLIGHT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !sink.flush(Duration::from_millis(100)).await,
            "nothing is written yet"
        );
        assert_eq!(
            received.load(Ordering::SeqCst),
            MAX_WRITES_IN_FLIGHT,
            "the writer sends at most MAX_WRITES_IN_FLIGHT at once"
        );
        gate.add_permits(10);
        assert!(sink.flush(Duration::from_secs(5)).await, "all ten written");
        assert_eq!(received.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn a_remembered_event_is_small_and_its_bump_names_the_first() {
        // What a scale-up of thousands keeps for SERIES_TTL: a digest and a small record
        // per Event (keys and notes are not held), not the Event.
        let entry = std::mem::size_of::<(Digest, Published)>();
        assert!(entry <= 80, "{entry} bytes");
        assert!(entry * 10 < std::mem::size_of::<(SeriesKey, Event)>());

        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1 = t0 + SignedDuration::from_secs(10);
        let mut s = Series::default();
        let a = key("Unhealthy", "x");
        let first = s.next(&a, t0, || fresh("x", t0));
        s.remember(&a, &first);
        let bump = s.next(&a, t1, || unreachable!("a repeat is a bump"));
        assert_eq!(bump.metadata.name, first.metadata.name);
        assert_eq!(bump.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(bump.event_time, first.event_time);
        let series = bump.series.as_ref().unwrap();
        assert_eq!((series.count, series.last_observed_time.0), (2, t1));
    }

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        let note = "é".repeat(600);
        let cut = truncate(note);
        assert!(cut.len() <= MAX_NOTE);
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(truncate("short".into()), "short");
    }
}
