//! The instance refresh planner: total on any spec, stored refresh status, Instances, requests
//! and time; it terminates only distinct, present Instances counting toward capacity, never
//! one in maintenance, and its status stays in range.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use autoheal::api::{RefreshState, RefreshStatus};
use autoheal::plan::InstanceView;
use autoheal::plan::refresh::{RefreshInputs, plan};
use autoheal_fuzz as g;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use libfuzzer_sys::fuzz_target;

const STATES: &[RefreshState] = &[
    RefreshState::Pending,
    RefreshState::InProgress,
    RefreshState::Baking,
    RefreshState::Successful,
    RefreshState::Failed,
    RefreshState::Cancelling,
    RefreshState::Cancelled,
    RefreshState::RollbackInProgress,
    RefreshState::RollbackSuccessful,
    RefreshState::RollbackFailed,
];

fn named<'a>(instances: &'a [InstanceView], n: &'a str) -> impl Iterator<Item = &'a InstanceView> {
    instances.iter().filter(move |i| i.name == n)
}

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let spec = g::spec(u)?;
    let instances = g::instances(u, 12)?;
    let stored = if u.ratio(3u8, 4)? {
        Some(RefreshStatus {
            status: *u.choose(STATES)?,
            target_revision: g::string(u, g::HASHES)?,
            previous_revision: if u.arbitrary()? {
                Some(g::string(u, g::HASHES)?)
            } else {
                None
            },
            percentage_complete: g::int(u)?,
            instances_to_update: g::int(u)?,
            start_time: g::opt_timestamp(u)?.map(Time),
            end_time: g::opt_timestamp(u)?.map(Time),
            message: u.arbitrary()?,
            checkpoint: if u.arbitrary()? {
                Some(g::int(u)?)
            } else {
                None
            },
            checkpoint_until: g::opt_timestamp(u)?.map(Time),
            bake_until: g::opt_timestamp(u)?.map(Time),
            failed_instances: (0..u.int_in_range(0..=3)?)
                .map(|_| g::string(u, g::NAMES))
                .collect::<arbitrary::Result<_>>()?,
            request: if u.arbitrary()? {
                Some(g::string(u, &["1", "2"])?)
            } else {
                None
            },
            cancel_request: if u.arbitrary()? {
                Some(g::string(u, &["1", "2"])?)
            } else {
                None
            },
        })
    } else {
        None
    };
    let current_hash = g::string(u, g::HASHES)?;
    let available: BTreeSet<String> = (0..u.int_in_range(0..=3)?)
        .map(|_| g::string(u, g::HASHES))
        .collect::<arbitrary::Result<_>>()?;
    let refresh_request = if u.arbitrary()? {
        Some(g::string(u, &["1", "2"])?)
    } else {
        None
    };
    let cancel_request = if u.arbitrary()? {
        Some(g::string(u, &["1", "2"])?)
    } else {
        None
    };
    let held = if u.arbitrary()? {
        Some(g::string(u, &["Paused", "Suspended"])?)
    } else {
        None
    };
    let now = g::timestamp(u)?;

    let p = plan(&RefreshInputs {
        spec: &spec,
        group: "g",
        stored: stored.as_ref(),
        instances: &instances,
        current_hash: &current_hash,
        available: &available,
        refresh_request: refresh_request.as_deref(),
        cancel_request: cancel_request.as_deref(),
        held: held.as_deref(),
        now,
    });

    // Names are unique in a real store; with duplicates, one of that name must fit.
    let unique = instances
        .iter()
        .map(|i| &i.name)
        .collect::<BTreeSet<_>>()
        .len()
        == instances.len();
    let mut seen = BTreeSet::new();
    for n in p.terminate.iter().chain(&p.lifetime_terminate) {
        assert!(seen.insert(n.clone()) || !unique, "{n} terminated twice");
        assert!(
            named(&instances, n).any(|i| i.counts_toward_capacity()),
            "{n} is unknown or does not count toward capacity"
        );
    }
    for n in &p.terminate {
        assert!(
            named(&instances, n).any(|i| i.counts_toward_capacity() && !i.maintenance),
            "refresh terminated {n} in maintenance"
        );
    }
    if held.is_some() {
        assert!(
            p.terminate.is_empty() && p.lifetime_terminate.is_empty(),
            "acted while held"
        );
    }
    assert!(p.surge >= 0);
    // A refresh that rolls recomputes its percentage (a stored value out of range, from a
    // hand-edited status, is clamped); a finished or waiting one is kept as stored.
    let stored_in_range = stored
        .as_ref()
        .is_none_or(|s| (0..=100).contains(&s.percentage_complete) && s.instances_to_update >= 0);
    if let Some(s) = &p.status
        && ((s.status.is_running() && s.status != RefreshState::Pending) || stored_in_range)
    {
        assert!((0..=100).contains(&s.percentage_complete), "{s:?}");
        assert!(s.instances_to_update >= 0);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
