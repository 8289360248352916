//! `kubectl autoheal history sg/NAME`: the group's remediation history (`status.remediations`,
//! newest first) as a table; while none is recorded, the repair Events say what happened.

use k8s_openapi::jiff::Timestamp;

use super::{EventView, ago, human, table};
use crate::api::names::reason;
use crate::api::{RemediationOutcome, ScalingGroup};

/// The Event reasons of repairs (what the history falls back to).
pub const REPAIR_EVENT_REASONS: [&str; 8] = [
    reason::REPLACING,
    reason::REPLACEMENT_READY,
    reason::REPLACEMENT_FAILED,
    reason::REPLACEMENT_SUCCEEDED,
    reason::RESTARTING,
    reason::RESTART_SUCCEEDED,
    reason::REPAIR_ESCALATED,
    reason::WOULD_REPAIR,
];

fn outcome(o: RemediationOutcome) -> &'static str {
    match o {
        RemediationOutcome::InProgress => "InProgress",
        RemediationOutcome::Succeeded => "Succeeded",
        RemediationOutcome::Failed => "Failed",
        RemediationOutcome::Escalated => "Escalated",
        RemediationOutcome::Abandoned => "Abandoned",
    }
}

/// The history table of a group, with the repair Events when `status.remediations` is empty.
pub fn history(group: &ScalingGroup, events: &[EventView], now: Timestamp) -> String {
    let name = group.metadata.name.as_deref().unwrap_or_default();
    let status = group.status.clone().unwrap_or_default();
    if status.remediations.is_empty() {
        let mut repairs: Vec<&EventView> = events
            .iter()
            .filter(|e| REPAIR_EVENT_REASONS.contains(&e.reason.as_str()))
            .collect();
        if repairs.is_empty() {
            return format!("No remediations recorded for group {name}.\n");
        }
        repairs.sort_by_key(|e| std::cmp::Reverse(e.time));
        let rows: Vec<Vec<String>> = repairs
            .iter()
            .map(|e| vec![ago(now, e.time), e.reason.clone(), e.message.clone()])
            .collect();
        return format!(
            "No remediations recorded in status for group {name}; its repair Events, newest first:\n{}",
            table(&["AGE", "EVENT", "MESSAGE"], &rows)
        );
    }
    let rows: Vec<Vec<String>> = status
        .remediations
        .iter()
        .map(|r| {
            let took = match &r.finished {
                Some(f) => human(f.0.duration_since(r.started.0).as_secs()),
                None => format!(
                    "{} so far",
                    human(now.duration_since(r.started.0).as_secs())
                ),
            };
            vec![
                ago(now, Some(r.started.0)),
                r.instance.clone(),
                r.action.as_str().to_string(),
                (r.step + 1).to_string(),
                outcome(r.outcome).to_string(),
                took,
                r.replacement.clone().unwrap_or_else(|| "-".into()),
                r.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "STARTED",
            "INSTANCE",
            "ACTION",
            "STEP",
            "OUTCOME",
            "DURATION",
            "REPLACEMENT",
            "REASON",
        ],
        &rows,
    )
}
