//! The lifecycle state machine: total on any record, annotations, hooks, Pod facts and time
//! (including the ends of time), with a bounded history; stepping again from its own output
//! stays total too.
#![no_main]

use arbitrary::Unstructured;
use autoheal::api::{HookResult, HookTransition, PendingHook, RestartRecord, StateEntry};
use autoheal::plan::lifecycle::{
    Facts, MAX_STATE_HISTORY, PodFacts, Record, TerminationReason, next,
};
use autoheal_fuzz as g;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use libfuzzer_sys::fuzz_target;

const REASONS: &[TerminationReason] = &[
    TerminationReason::ScaleIn,
    TerminationReason::Unhealthy,
    TerminationReason::GroupDeleted,
    TerminationReason::LaunchAbandoned,
    TerminationReason::Deleted,
    TerminationReason::Refresh,
    TerminationReason::MaxInstanceLifetime,
];

fn record(u: &mut Unstructured<'_>) -> arbitrary::Result<Record> {
    let history = (0..u.int_in_range(0..=40)?)
        .map(|_| {
            Ok(StateEntry {
                state: *u.choose(g::STATES)?,
                entered_at: Time(g::timestamp(u)?),
                reason: if u.arbitrary()? {
                    Some(u.arbitrary()?)
                } else {
                    None
                },
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    let hooks = (0..u.int_in_range(0..=3)?)
        .map(|_| {
            Ok(PendingHook {
                name: g::string(u, &["h1", "h2", ""])?,
                transition: *u.choose(&[HookTransition::Launch, HookTransition::Terminate])?,
                started_at: Time(g::timestamp(u)?),
                deadline: Time(g::timestamp(u)?),
                last_heartbeat: if u.arbitrary()? {
                    Some(g::string(u, &["1", "2"])?)
                } else {
                    None
                },
                result: *u.choose(&[
                    None,
                    Some(HookResult::Continue),
                    Some(HookResult::Abandon),
                ])?,
            })
        })
        .collect::<arbitrary::Result<_>>()?;
    Ok(Record {
        state: if u.ratio(7u8, 8)? {
            Some(*u.choose(g::STATES)?)
        } else {
            None
        },
        history,
        hooks,
        termination_reason: if u.arbitrary()? {
            Some(g::string(u, &["ScaleIn", "Unhealthy", "Deleted", "x"])?)
        } else {
            None
        },
        deregistered_at: g::opt_timestamp(u)?.map(Time),
        restart: if u.arbitrary()? {
            Some(RestartRecord {
                token: g::string(u, &["t1", "t2"])?,
                started_at: Time(g::timestamp(u)?),
                old_pod_uid: if u.arbitrary()? {
                    Some(g::string(u, &["u1", "u2"])?)
                } else {
                    None
                },
                pod_running_at: g::opt_timestamp(u)?.map(Time),
            })
        } else {
            None
        },
        restart_count: g::int(u)?,
    })
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let record = record(u)?;
    let annotations = g::annotations(u)?;
    let hooks = g::hooks(u)?;
    let termination_requested = if u.arbitrary()? {
        Some(*u.choose(REASONS)?)
    } else {
        None
    };
    let deregistration_delay_seconds = match u.int_in_range(0u8..=3)? {
        0 => u.arbitrary()?,
        1 => i64::MAX,
        _ => u.int_in_range(-5..=120)?,
    };
    let pod = PodFacts {
        exists: u.arbitrary()?,
        running: u.arbitrary()?,
        in_service_label: u.arbitrary()?,
        being_deleted: u.arbitrary()?,
    };
    let pod_uid = if u.arbitrary()? {
        Some(g::string(u, &["u1", "u2"])?)
    } else {
        None
    };
    let restart_request = if u.arbitrary()? {
        Some(g::string(u, &["t1", "t2"])?)
    } else {
        None
    };
    let add_to_service_suspended = u.arbitrary()?;
    let now = g::timestamp(u)?;
    let later = g::timestamp(u)?;

    let facts = |record| Facts {
        record,
        annotations: &annotations,
        termination_requested,
        hooks: &hooks,
        deregistration_delay_seconds,
        add_to_service_suspended,
        pod,
        pod_uid: pod_uid.as_deref(),
        restart_request: restart_request.as_deref(),
    };
    let step = next(&facts(&record), now);
    let bound = MAX_STATE_HISTORY.max(record.history.len());
    assert!(
        step.record.history.len() <= bound,
        "history grew past its bound"
    );
    // Stepping on from its own output (now, then later) stays total and bounded.
    let again = next(&facts(&step.record), now);
    assert!(again.record.history.len() <= bound);
    let then = next(&facts(&again.record), later);
    assert!(then.record.history.len() <= bound);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
