//! Step 1, judging past replacements: [`judge::judge`] and its parts.

use super::*;
use judge::{Judgement, forget_gone, judge_replacements, judgement, reset_failures};

const GRACE: SignedDuration = SignedDuration::from_secs(60);

fn failing(failures: i32, template: &str) -> ReplacementMemory {
    ReplacementMemory {
        consecutive_failures: failures,
        failing_template_hash: Some(template.into()),
        recent_failures: vec!["x".into()],
        ..Default::default()
    }
}

#[test]
fn forget_gone_drops_absent_and_repeated_names_and_negative_counts() {
    let instances = vec![inst("a"), inst("b")];
    let index = by_name(&instances);
    let mut memory = ReplacementMemory {
        consecutive_failures: -3,
        judged: vec!["a".into(), "gone".into(), "b".into(), "a".into()],
        ..Default::default()
    };
    forget_gone(&mut memory, &index);
    assert_eq!(memory.judged, vec!["a", "b"]);
    assert_eq!(memory.consecutive_failures, 0);
}

#[test]
fn a_template_change_forgets_the_failures_of_the_previous_template() {
    let mut memory = failing(2, "old-hash");
    let events = reset_failures(&mut memory, CUR, None);
    assert_eq!(memory.consecutive_failures, 0);
    assert_eq!(memory.failing_template_hash, None);
    assert!(memory.recent_failures.is_empty());
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, reason::FAILURES_RESET);
    assert_eq!(events[0].type_, EventType::Normal);

    let mut memory = failing(2, CUR);
    assert!(reset_failures(&mut memory, CUR, None).is_empty());
    assert_eq!(memory, failing(2, CUR));
}

#[test]
fn a_reset_value_clears_failures_once_and_is_remembered() {
    let mut memory = failing(3, CUR);
    let events = reset_failures(&mut memory, CUR, Some("one"));
    assert_eq!(
        events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::FAILURES_RESET]
    );
    assert_eq!(memory.consecutive_failures, 0);
    assert_eq!(memory.reset_token.as_deref(), Some("one"));

    // The same value again does not clear new failures.
    memory.consecutive_failures = 1;
    assert!(reset_failures(&mut memory, CUR, Some("one")).is_empty());
    assert_eq!(memory.consecutive_failures, 1);

    // A new value without failures is remembered silently.
    let mut memory = ReplacementMemory::default();
    assert!(reset_failures(&mut memory, CUR, Some("two")).is_empty());
    assert_eq!(memory.reset_token.as_deref(), Some("two"));
}

#[test]
fn judgement_of_one_replacement() {
    // InService at t(0), grace 60s.
    let r = replacing(inst("r"), "a");
    assert_eq!(judgement(&sick("r"), GRACE, t(10)), Judgement::Failed);
    assert_eq!(
        judgement(&leaving(sick("r")), GRACE, t(10)),
        Judgement::Failed
    );
    assert_eq!(
        judgement(&r.clone().tap(|r| r.being_deleted = true), GRACE, t(10)),
        Judgement::Abandoned
    );
    assert_eq!(judgement(&r, GRACE, t(10)), Judgement::Pending(Some(t(60))));
    assert_eq!(judgement(&r, GRACE, t(60)), Judgement::Succeeded);
    let warning = r.clone().tap(|r| r.detail = Some(HealthDetail::Warning));
    assert_eq!(judgement(&warning, GRACE, t(100)), Judgement::Pending(None));
    assert_eq!(
        judgement(&pending("r"), GRACE, t(100)),
        Judgement::Pending(None)
    );
    let maintained = r.tap(|r| r.maintenance = true);
    assert_eq!(
        judgement(&maintained, GRACE, t(100)),
        Judgement::Pending(None)
    );
}

#[test]
fn judge_replacements_counts_current_failures_and_records_older_ones() {
    let instances = vec![
        created(replacing(sick("r1"), "a"), 1),
        created(replacing(sick("r2"), "b"), 2).tap(|r| r.template_hash = Some("old".into())),
        created(replacing(inst("r3"), "c"), 3).tap(|r| r.in_service_since = Some(t(990))),
    ];
    let index = by_name(&instances);
    let mut memory = ReplacementMemory::default();
    let (events, requeue) = judge_replacements(&mut memory, &index, CUR, GRACE, 3, t(1000));
    assert_eq!(memory.consecutive_failures, 1);
    assert_eq!(memory.failing_template_hash.as_deref(), Some(CUR));
    assert_eq!(memory.recent_failures, vec!["r1"]);
    assert_eq!(memory.judged, vec!["r1", "r2"]);
    assert_eq!(
        events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::REPLACEMENT_FAILED]
    );
    assert!(events[0].message.contains("1 of maxConsecutiveFailures 3"));
    // r3's grace period ends at t(1050).
    assert_eq!(requeue, Some(Duration::from_secs(50)));

    // Judged names are not judged again.
    let (events, _) = judge_replacements(&mut memory, &index, CUR, GRACE, 3, t(1000));
    assert!(events.is_empty());
    assert_eq!(memory.consecutive_failures, 1);
}

#[test]
fn a_success_clears_the_failure_count() {
    let instances = vec![replacing(inst("r"), "a")];
    let index = by_name(&instances);
    let mut memory = failing(2, CUR);
    let (events, requeue) = judge_replacements(&mut memory, &index, CUR, GRACE, 3, t(1000));
    assert_eq!(
        events.iter().map(|e| e.reason).collect::<Vec<_>>(),
        vec![reason::REPLACEMENT_SUCCEEDED]
    );
    assert_eq!(memory.consecutive_failures, 0);
    assert!(memory.recent_failures.is_empty());
    assert_eq!(memory.judged, vec!["r"]);
    assert_eq!(requeue, None);
}

#[test]
fn recent_failures_keep_the_most_recent_ones() {
    let instances: Vec<InstanceView> = (0..MAX_RECENT_FAILURES + 2)
        .map(|n| created(replacing(sick(&format!("r{n:02}")), "a"), n as i64))
        .collect();
    let index = by_name(&instances);
    let mut memory = ReplacementMemory::default();
    judge_replacements(&mut memory, &index, CUR, GRACE, 100, t(1000));
    assert_eq!(memory.consecutive_failures, MAX_RECENT_FAILURES as i32 + 2);
    assert_eq!(memory.recent_failures.len(), MAX_RECENT_FAILURES);
    assert_eq!(memory.recent_failures[0], "r02");
}

#[test]
fn judge_resets_but_does_not_judge_while_paused_or_health_check_suspended() {
    let instances = vec![replacing(sick("r"), "a")];
    let index = by_name(&instances);
    let memory = failing(1, "old-hash");
    let mut s = spec(2, 3);
    for (paused, suspended) in [(true, vec![]), (false, vec![Process::HealthCheck])] {
        s.suspended_processes = suspended;
        let inputs = ReplacementInputs {
            spec: &s,
            paused,
            instances: &instances,
            nodes: &[],
            memory: &memory,
            template_hash: CUR,
            reset_request: None,
            previous_condition: None,
            backoff: Backoff::default(),
            remediations: &[],
            would_repair: &[],
            now: t(1000),
        };
        let judged = judge::judge(&inputs, &Limits::of(&s), &index);
        assert_eq!(judged.memory.consecutive_failures, 0);
        assert!(judged.memory.judged.is_empty());
        assert_eq!(
            judged.events.iter().map(|e| e.reason).collect::<Vec<_>>(),
            vec![reason::FAILURES_RESET]
        );
    }
}
