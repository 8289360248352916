//! The replacement planner, repair included (Restart/Replace steps, dry run, remediation
//! histories): total on any input, and its invariants hold — nothing when the breaker trips
//! or the group is paused, nothing in dry run, only distinct Unhealthy candidates acted on,
//! never more than maxInFlight in flight because of it, bounded memory.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::Unstructured;
use autoheal::api::{LifecycleState, RepairMode};
use autoheal::plan::InstanceView;
use autoheal::plan::repair::MAX_REMEDIATIONS;
use autoheal::plan::replacement::{
    Backoff, Limits, MAX_JUDGED, MAX_RECENT_FAILURES, ReplacementInputs, ReplacementMemory,
    by_name, in_flight, is_candidate, plan_replacements,
};
use autoheal_fuzz as g;
use libfuzzer_sys::fuzz_target;

fn run(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let spec = g::spec(u)?;
    let paused = u.ratio(1u8, 10)?;
    let instances = g::instances(u, 12)?;
    let nodes = g::nodes(u)?;
    let memory = ReplacementMemory {
        consecutive_failures: g::int(u)?,
        last_replacement_time: g::opt_timestamp(u)?,
        failing_template_hash: if u.arbitrary()? {
            Some(g::string(u, g::HASHES)?)
        } else {
            None
        },
        judged: (0..u.int_in_range(0..=4)?)
            .map(|_| g::string(u, g::NAMES))
            .collect::<arbitrary::Result<_>>()?,
        recent_failures: (0..u.int_in_range(0..=3)?)
            .map(|_| g::string(u, g::NAMES))
            .collect::<arbitrary::Result<_>>()?,
        reset_token: if u.arbitrary()? {
            Some(g::string(u, &["1", "2"])?)
        } else {
            None
        },
    };
    let reset = if u.arbitrary()? {
        Some(g::string(u, &["1", "2"])?)
    } else {
        None
    };
    let previous = if u.arbitrary()? {
        Some(g::condition(u, "ReplacementAllowed")?)
    } else {
        None
    };
    let remediations = g::remediations(u)?;
    let would_repair = g::would_repair(u)?;
    let backoff = if u.arbitrary()? {
        Backoff {
            base: std::time::Duration::from_secs(u.arbitrary::<u32>()?.into()),
            cap: std::time::Duration::from_secs(u.arbitrary::<u32>()?.into()),
        }
    } else {
        Backoff::default()
    };
    let template_hash = g::string(u, g::HASHES)?;
    let now = g::timestamp(u)?;

    let plan = plan_replacements(&ReplacementInputs {
        spec: &spec,
        paused,
        instances: &instances,
        nodes: &nodes,
        memory: &memory,
        template_hash: &template_hash,
        reset_request: reset.as_deref(),
        previous_condition: previous.as_ref(),
        backoff,
        remediations: &remediations,
        would_repair: &would_repair,
        now,
    });

    let limits = Limits::of(&spec);
    let index = by_name(&instances);
    let acts = !plan.terminate.is_empty()
        || !plan.launch_replacements_for.is_empty()
        || !plan.restart.is_empty();

    // Nothing when the breaker trips (or anything else blocks), when paused, in dry run.
    if plan.condition.status == "False" {
        assert!(!acts, "acted while ReplacementAllowed=False: {plan:?}");
    }
    if paused {
        assert!(!acts, "acted while paused");
    }
    if spec.repair.mode == RepairMode::DryRun {
        assert!(!acts, "acted in dry run");
    } else {
        assert!(plan.would_repair.is_empty());
    }

    // Acted on: distinct, present, Unhealthy candidates, never Standby or in maintenance.
    let mut acted = BTreeSet::new();
    for n in plan.terminate.iter().chain(&plan.launch_replacements_for) {
        assert!(acted.insert(n.clone()), "{n} acted on twice");
        let i = index.get(n.as_str()).expect("acted on an unknown Instance");
        assert!(is_candidate(i), "{n} is not a candidate");
        assert!(i.is_unhealthy() && !i.standby && !i.maintenance);
        assert!(i.state != LifecycleState::Standby);
    }
    for (n, _) in &plan.restart {
        assert!(index.contains_key(n.as_str()), "restart of unknown {n}");
    }

    // In flight: never pushed above maxInFlight by new replacements.
    if !plan.terminate.is_empty() || !plan.launch_replacements_for.is_empty() {
        let before = in_flight(&instances);
        let mut after: Vec<InstanceView> = instances.clone();
        for i in after.iter_mut() {
            if plan.terminate.contains(&i.name) {
                i.being_deleted = true;
                i.termination_reason = Some("Unhealthy".into());
            }
        }
        for (k, old) in plan.launch_replacements_for.iter().enumerate() {
            let mut s = instances[0].clone();
            s.name = format!("\u{1}surge-{k}");
            s.created_at = now;
            s.state = LifecycleState::Pending;
            s.health = None;
            s.detail = None;
            s.in_service_since = None;
            s.replaces = Some(old.clone());
            s.template_hash = Some(template_hash.clone());
            s.being_deleted = false;
            s.maintenance = false;
            s.standby = false;
            after.push(s);
        }
        let units = in_flight(&after);
        assert!(
            units <= before.max(limits.max_in_flight.max(0) as usize),
            "in flight {before} -> {units} with maxInFlight {}",
            limits.max_in_flight
        );
    }

    // Bounded memory and history.
    assert!(plan.remediations.len() <= MAX_REMEDIATIONS.max(remediations.len()));
    assert!(plan.memory.judged.len() <= MAX_JUDGED);
    assert!(
        plan.memory.recent_failures.len() <= MAX_RECENT_FAILURES.max(memory.recent_failures.len())
    );
    assert!(plan.memory.consecutive_failures >= 0);
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
