//! Step 3, how many replacements may start now: [`budget::budget`].

use super::*;
use budget::{Budget, Load, backoff_until, budget};

fn limits(desired: i32, max: i32, max_in_flight: i32, min_healthy: i32) -> Limits {
    let mut s = spec(desired, max);
    s.replacement.max_in_flight = IntOrString::Int(max_in_flight);
    s.replacement.min_healthy_percentage = min_healthy;
    Limits::of(&s)
}

fn load(in_flight: usize, counting: usize) -> Load {
    Load {
        in_flight,
        counting,
    }
}

fn failed(failures: i32, last: Option<Timestamp>) -> ReplacementMemory {
    ReplacementMemory {
        consecutive_failures: failures,
        last_replacement_time: last,
        ..Default::default()
    }
}

#[test]
fn max_in_flight_less_what_is_in_flight() {
    let l = limits(10, 12, 3, 0);
    let none = ReplacementMemory::default();
    let b = budget(&l, &none, Backoff::default(), load(1, 10), t(0));
    assert_eq!(
        b,
        Budget {
            starts: 2,
            terminate_then_launch: 9,
            surges: 5,
            backoff_until: None,
            backing_off: false,
            spacing: None,
        }
    );
    assert_eq!(
        budget(&l, &none, Backoff::default(), load(5, 16), t(0)).starts,
        0
    );
    assert_eq!(
        budget(&l, &none, Backoff::default(), load(5, 16), t(0)).surges,
        0
    );
}

#[test]
fn min_healthy_percentage_bounds_the_terminate_then_launch_room() {
    let none = ReplacementMemory::default();
    // ceil(75% of 4) = 3 must stay: one hole at a time.
    let b = budget(
        &limits(4, 4, 4, 75),
        &none,
        Backoff::default(),
        load(0, 4),
        t(0),
    );
    assert_eq!((b.starts, b.terminate_then_launch), (4, 1));
    let b = budget(
        &limits(4, 4, 4, 75),
        &none,
        Backoff::default(),
        load(1, 4),
        t(0),
    );
    assert_eq!(b.terminate_then_launch, 0);
    let b = budget(
        &limits(4, 4, 4, 100),
        &none,
        Backoff::default(),
        load(0, 4),
        t(0),
    );
    assert_eq!(b.terminate_then_launch, 0);
}

#[test]
fn after_failures_one_at_a_time_and_not_before_the_backoff_ends() {
    let l = limits(10, 12, 5, 0);
    let backoff = Backoff::default();
    // Two failures: 20s after the last replacement.
    let memory = failed(2, Some(t(100)));
    let b = budget(&l, &memory, backoff, load(0, 10), t(110));
    assert_eq!(b.starts, 0);
    assert!(b.backing_off);
    assert_eq!(b.backoff_until, Some(t(120)));
    assert_eq!(b.spacing, Some(Duration::from_secs(20)));
    let b = budget(&l, &memory, backoff, load(0, 10), t(120));
    assert_eq!((b.starts, b.backing_off), (1, false));
    // Never a replacement before: no wait, still one at a time.
    let b = budget(&l, &failed(2, None), backoff, load(0, 10), t(0));
    assert_eq!((b.starts, b.backing_off, b.backoff_until), (1, false, None));
}

#[test]
fn backoff_past_the_end_of_time_never_ends() {
    let memory = failed(1, Some(Timestamp::MAX));
    assert_eq!(
        backoff_until(&memory, Backoff::default()),
        Some(Timestamp::MAX)
    );
    assert_eq!(
        backoff_until(&failed(0, Some(t(0))), Backoff::default()),
        None
    );
}

#[test]
fn requeue_at_the_end_of_the_backoff_or_after_the_spacing() {
    let l = limits(10, 12, 5, 0);
    let memory = failed(1, Some(t(100)));
    let b = budget(&l, &memory, Backoff::default(), load(0, 10), t(104));
    assert_eq!(b.requeue_after(0, 0, t(104)), None);
    assert_eq!(b.requeue_after(2, 0, t(104)), Some(Duration::from_secs(6)));
    let b = budget(&l, &memory, Backoff::default(), load(0, 10), t(200));
    assert_eq!(b.requeue_after(1, 1, t(200)), Some(Duration::from_secs(10)));
    assert_eq!(b.requeue_after(1, 0, t(200)), None);
    let b = budget(
        &l,
        &ReplacementMemory::default(),
        Backoff::default(),
        load(0, 10),
        t(200),
    );
    assert_eq!(b.requeue_after(3, 5, t(200)), None);
}
