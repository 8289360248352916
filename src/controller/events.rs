//! Kubernetes Events (events.k8s.io) for launches, state changes, terminations and hook
//! results. Publishing never fails a reconcile: errors are logged.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// The reporting controller name on every Event.
pub const REPORTER: &str = "autoheal";

/// Publishes Events.
#[derive(Clone)]
pub struct EventSink {
    recorder: Recorder,
}

impl EventSink {
    /// A sink reporting as `autoheal` from `instance` (e.g. the leader identity).
    pub fn new(client: Client, instance: &str) -> Self {
        Self {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: REPORTER.into(),
                    instance: Some(instance.into()),
                },
            ),
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
        self.publish(regarding, EventType::Normal, reason, action, note)
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
        self.publish(regarding, EventType::Warning, reason, action, note)
            .await;
    }

    async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        mut note: String,
    ) {
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(
                object = ?regarding.name, namespace = ?regarding.namespace, reason,
                "could not publish Event: {e}"
            );
        }
    }
}
