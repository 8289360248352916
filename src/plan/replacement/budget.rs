//! Step 3 of the planner: how many replacements may start now.
//!
//! Three limits bound new replacements: `maxInFlight` (replacements in flight, see
//! [`super::in_flight_units`]), `minHealthyPercentage` (each TerminateThenLaunch replacement
//! leaves a hole in serving capacity while in flight) and `maxSize + maxInFlight` (Instances
//! counting toward capacity while surging). After failures, replacements start one at a time
//! and at least the [`Backoff`] delay apart.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{Backoff, Limits, ReplacementMemory, add, time_until};

/// What the group holds now, that the limits are measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Replacements in flight (see [`super::in_flight`]).
    pub in_flight: usize,
    /// Instances counting toward capacity.
    pub counting: usize,
}

/// How many replacements may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// Replacements of any kind that may start: the room left under `maxInFlight`, at most 1
    /// after failures, 0 while backing off.
    pub starts: usize,
    /// Of the replacements started now (of any kind), how many may be started before a
    /// TerminateThenLaunch one no longer fits under `minHealthyPercentage`: the room
    /// `desired - ceil(minHealthyPercentage% × desired)` less the replacements in flight.
    pub terminate_then_launch: usize,
    /// Surge Instances that may be launched: `maxSize + maxInFlight` less the Instances
    /// counting toward capacity.
    pub surges: usize,
    /// When the backoff after failures ends (`None` without failures or without a previous
    /// replacement; the end of time when it overflows).
    pub backoff_until: Option<Timestamp>,
    /// Whether that end is still to come: nothing starts.
    pub backing_off: bool,
    /// The wait between two starts after failures (`None` without failures).
    pub spacing: Option<Duration>,
}

/// Step 3: the budget of replacement starts, given the resolved `limits`, the judged `memory`
/// (failure count, last replacement time), the `backoff` and the current `load`.
pub fn budget(
    limits: &Limits,
    memory: &ReplacementMemory,
    backoff: Backoff,
    load: Load,
    now: Timestamp,
) -> Budget {
    let failures = memory.consecutive_failures;
    let backoff_until = backoff_until(memory, backoff);
    // A backoff whose end overflows (saturated to the end of time) never ends, even at it.
    let backing_off = backoff_until.is_some_and(|t| t > now || t == Timestamp::MAX);
    let in_flight = load.in_flight as i64;
    let room = |limit: i64, used: i64| (limit - used).max(0) as usize;
    let mut starts = room(i64::from(limits.max_in_flight), in_flight);
    if failures > 0 {
        starts = starts.min(1);
    }
    if backing_off {
        starts = 0;
    }
    Budget {
        starts,
        terminate_then_launch: room(i64::from(limits.terminate_then_launch_room), in_flight),
        surges: room(i64::from(limits.max_with_surge), load.counting as i64),
        backoff_until,
        backing_off,
        spacing: (failures > 0).then(|| backoff.delay(failures)),
    }
}

/// When the backoff after `memory.consecutive_failures` failures ends: the backoff delay after
/// the last replacement started; `None` without failures or without a last replacement; the
/// end of time when that overflows.
pub fn backoff_until(memory: &ReplacementMemory, backoff: Backoff) -> Option<Timestamp> {
    let failures = memory.consecutive_failures;
    if failures <= 0 {
        return None;
    }
    memory.last_replacement_time.and_then(|t| {
        SignedDuration::try_from(backoff.delay(failures))
            .ok()
            .and_then(|d| add(t, d))
            .or(Some(Timestamp::MAX))
    })
}

impl Budget {
    /// When to plan again for the `waiting` candidates the budget left out after `started`
    /// replacements started: at the end of the backoff when nothing could start because of it,
    /// or after the spacing between starts when one started after failures.
    pub fn requeue_after(
        &self,
        waiting: usize,
        started: usize,
        now: Timestamp,
    ) -> Option<Duration> {
        if waiting == 0 {
            return None;
        }
        if started == 0 && self.backing_off {
            return self.backoff_until.map(|until| time_until(now, until));
        }
        if started > 0 {
            return self.spacing;
        }
        None
    }
}
