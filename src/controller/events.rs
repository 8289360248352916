//! Kubernetes Events (events.k8s.io) for launches, state changes, terminations and hook
//! results. Publishing never fails a reconcile: errors are logged.
//!
//! A repeat of an Event (same object, type, reason, action *and note*) within
//! [`SERIES_TTL`] bumps the `series` of the first instead of creating another. The note is
//! part of that key (as in client-go): kube's own `Recorder` leaves it out, which folds, say,
//! a second health transition with new evidence into the first Event and loses its note.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// The Events published lately, by key, to count repeats in their series.
#[derive(Default)]
struct Series {
    published: HashMap<SeriesKey, Event>,
}

impl Series {
    /// The Event to write for `key` at `now`: the cached one with its series bumped, or
    /// `fresh()`. Forgets Events last seen more than [`SERIES_TTL`] ago.
    fn next(&mut self, key: &SeriesKey, now: Timestamp, fresh: impl FnOnce() -> Event) -> Event {
        self.published.retain(|_, e| {
            let last = e
                .series
                .as_ref()
                .map(|s| s.last_observed_time.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0));
            last.is_some_and(|t| t + SERIES_TTL > now)
        });
        match self.published.get(key) {
            Some(e) => {
                let mut e = e.clone();
                e.series = Some(EventSeries {
                    count: e.series.as_ref().map_or(2, |s| s.count + 1),
                    last_observed_time: MicroTime(now),
                });
                e
            }
            None => fresh(),
        }
    }

    fn remember(&mut self, key: SeriesKey, event: Event) {
        self.published.insert(key, event);
    }

    fn forget(&mut self, key: &SeriesKey) {
        self.published.remove(key);
    }
}

/// Publishes Events.
#[derive(Clone)]
pub struct EventSink {
    client: Client,
    clock: Arc<dyn Clock>,
    instance: String,
    series: Arc<Mutex<Series>>,
}

impl EventSink {
    /// A sink reporting as `autoheal` from `instance` (e.g. the leader identity).
    pub fn new(client: Client, instance: &str, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            clock,
            instance: instance.into(),
            series: Arc::default(),
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

    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: &'static str,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let note = truncate(note);
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
        let now = self.clock.now();
        let event = self.lock().next(&key, now, || Event {
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
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let result = match event.series {
            Some(_) => {
                let name = event.metadata.name.clone().unwrap_or_default();
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&event))
                    .await
            }
            None => api.create(&PostParams::default(), &event).await,
        };
        match result {
            Ok(_) => self.lock().remember(key, event),
            Err(e) => {
                // Published afresh next time (the Event may be gone).
                self.lock().forget(&key);
                tracing::warn!(
                    object = ?regarding.name, namespace = ?regarding.namespace, reason,
                    "could not publish Event: {e}"
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
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
        s.remember(a.clone(), e);
        let e = s.next(&a, t1, || fresh("a", t1));
        assert_eq!(count(&e), 2, "the same Event again: a repeat");
        s.remember(a.clone(), e);
        let b = key("HealthChanged", "Healthy/OK → Healthy/Warning");
        let e = s.next(&b, t1, || fresh("b", t1));
        assert_eq!(count(&e), 1, "same reason, new note: a new Event");
        assert_eq!(e.note.as_deref(), Some("b"));
    }

    #[test]
    fn repeats_after_the_ttl_or_a_failure_start_afresh() {
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut s = Series::default();
        let a = key("Unhealthy", "x");
        let e = s.next(&a, t0, || fresh("x", t0));
        s.remember(a.clone(), e);
        let later = t0 + SERIES_TTL + SignedDuration::from_secs(1);
        assert_eq!(count(&s.next(&a, later, || fresh("x", later))), 1);
        let e = s.next(&a, later, || fresh("x", later));
        s.remember(a.clone(), e);
        s.forget(&a);
        assert_eq!(count(&s.next(&a, later, || fresh("x", later))), 1);
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
