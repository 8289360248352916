//! The scheduler: one tokio task per target, probing it on a fixed schedule.
//!
//! - The first probe comes after a random phase in `[0, interval)` (so targets registered
//!   together are spread over the interval), each later one exactly one interval after the
//!   one before, as the kubelet's probes: no jitter adds up over `unhealthyThreshold` slots,
//!   so a verdict comes at most `unhealthyThreshold × intervalSeconds` after the target
//!   starts failing, plus the last probe's own time (up to `timeoutSeconds`), any wait for a
//!   probe permit, and the wake-up grid.
//!   A task that falls more than one interval behind (an overloaded operator) skips the
//!   missed slots instead of bursting ([`Schedule`]). The task wakes at its slot rounded up
//!   to a 10 ms grid ([`WAKE_GRID`]), so that targets whose slots are close share one
//!   wake-up of the runtime.
//! - At most [`EngineOptions::max_concurrency`](super::EngineOptions) probes are in flight at
//!   once (a semaphore permit is held for the probe only, not for the wait).
//! - How late each probe starts after its wake-up time is recorded in
//!   `autoheal_probe_lateness_seconds` (and given to the lateness observer of the options);
//!   each probe is bounded by the target's timeout (connect + request + answer), after which
//!   it is a `Timeout` and its connection is dropped; each result is recorded with
//!   [`Metrics::observe_probe`] and fed to the target's [`ProbeCounter`], and a changed
//!   verdict is published to the engine.
//! - The task ends when its target is replaced or removed (it is aborted, or its publish finds
//!   a newer generation) or when the engine is dropped.

use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::counter::ProbeCounter;
use super::plan::TargetPlan;
use super::{Clients, Inner, InstanceKey, ProbeResult, Prober, ResultClass};
use crate::telemetry::Metrics;

/// Everything a probe task shares with the engine.
pub(super) struct TaskContext {
    pub(super) engine: Weak<Inner>,
    pub(super) metrics: Metrics,
    pub(super) limit: Arc<Semaphore>,
    pub(super) clients: Arc<Clients>,
    pub(super) lateness_observer: Option<Arc<dyn Fn(Duration) + Send + Sync>>,
}

/// Probes wake on this grid: a slot is rounded up to the next multiple of it (counted from a
/// process-wide origin), so that the probes of many targets start on one timer wake-up of the
/// runtime instead of one each. At 1,000 probes/s most of the operator's CPU went to those
/// wake-ups (context switches and timer re-arming in the kernel, `perf` at 2,000 targets);
/// a probe starts at most this much after its slot.
pub(super) const WAKE_GRID: Duration = Duration::from_millis(10);

/// The origin of [`WAKE_GRID`].
static GRID_ORIGIN: LazyLock<Instant> = LazyLock::new(Instant::now);

/// `t` rounded up to [`WAKE_GRID`].
fn on_grid(t: Instant) -> Instant {
    let origin = *GRID_ORIGIN;
    if t <= origin {
        return t;
    }
    let grid = WAKE_GRID.as_nanos();
    let slots = (t - origin).as_nanos().div_ceil(grid);
    origin + Duration::from_nanos(u64::try_from(slots * grid).unwrap_or(u64::MAX))
}

/// The probe times of one target.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    interval: Duration,
    next: Instant,
}

impl Schedule {
    /// A schedule whose first slot is a random phase in `[0, interval)` after `now`.
    pub(super) fn new(interval: Duration, now: Instant) -> Self {
        let phase = Duration::from_nanos(rand::random_range(0..interval.as_nanos().max(1) as u64));
        Self {
            interval,
            next: now + phase,
        }
    }

    /// The time of the next probe (its slot; the task wakes at [`Schedule::wake_at`]).
    #[cfg(test)]
    pub(super) fn next(&self) -> Instant {
        self.next
    }

    /// When the task wakes for the next probe: its time rounded up to [`WAKE_GRID`].
    pub(super) fn wake_at(&self) -> Instant {
        on_grid(self.next)
    }

    /// Moves to the slot one interval after the current one; slots missed by more than one
    /// interval at `now` are skipped.
    pub(super) fn advance(&mut self, now: Instant) {
        let interval = self.interval;
        self.next += interval;
        if self.next + interval < now {
            let behind = now - self.next;
            let slots = (behind.as_nanos() / interval.as_nanos().max(1)) as u32;
            self.next += interval * slots;
        }
    }
}

/// The probe task of one target (generation `generation` of `key`).
pub(super) async fn run_target(
    cx: TaskContext,
    key: InstanceKey,
    generation: u64,
    plan: TargetPlan,
) {
    let mut counter = ProbeCounter::new(plan.healthy_threshold, plan.unhealthy_threshold);
    let mut prober = Prober::new(&plan, cx.clients.client);
    let mut schedule = Schedule::new(plan.interval, Instant::now());
    loop {
        let wake_at = schedule.wake_at();
        tokio::time::sleep_until(wake_at).await;
        let Ok(permit) = cx.limit.acquire().await else {
            return;
        };
        let started = Instant::now();
        let lateness = started.saturating_duration_since(wake_at);
        cx.metrics.observe_probe_lateness(lateness);
        if let Some(observe) = &cx.lateness_observer {
            observe(lateness);
        }
        // Boxed: the probe's future (connect, TLS, request, answer) is several KB, and held
        // inline it would make every idle task that large (10,000 targets: tens of MB).
        let probe = Box::pin(prober.probe(&plan, &cx.clients));
        let result = match tokio::time::timeout(plan.timeout, probe).await {
            Ok(result) => result,
            // The probe future, and with it the connection it had taken, is dropped.
            Err(_) => ProbeResult {
                class: ResultClass::Timeout,
                evidence: format!(
                    "timeout after {}s waiting for {}",
                    plan.timeout.as_secs(),
                    plan.description
                ),
            },
        };
        drop(permit);
        cx.metrics
            .observe_probe(plan.kind, result.class, started.elapsed());
        if let Some(verdict) = counter.record(&result) {
            let Some(engine) = cx.engine.upgrade() else {
                return;
            };
            if !engine.publish(&key, generation, verdict) {
                return;
            }
        }
        schedule.advance(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_slot_is_within_one_interval() {
        let now = Instant::now();
        for _ in 0..100 {
            let s = Schedule::new(Duration::from_secs(10), now);
            assert!(s.next() >= now && s.next() < now + Duration::from_secs(10));
        }
    }

    #[test]
    fn slots_follow_the_interval_exactly() {
        let start = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(10), start);
        let first = s.next();
        for k in 1..=50u32 {
            s.advance(start);
            assert_eq!(s.next(), first + Duration::from_secs(10) * k, "slot {k}");
        }
    }

    #[test]
    fn probes_wake_on_the_grid_soon_after_their_slot() {
        let start = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(1), start);
        for _ in 0..200 {
            let wake = s.wake_at();
            assert!(wake >= s.next() && wake < s.next() + WAKE_GRID);
            assert_eq!(on_grid(wake), wake, "a wake time is on the grid");
            s.advance(start);
        }
        // Targets whose slots fall within one grid step share a wake-up: 500 random phases in
        // 100 ms wake on at most 11 grid points.
        let others: Vec<Instant> = (0..500)
            .map(|_| Schedule::new(Duration::from_millis(100), start).wake_at())
            .collect();
        let distinct: std::collections::HashSet<_> = others.iter().collect();
        assert!(distinct.len() <= 11, "{} distinct wake-ups", distinct.len());
    }

    #[test]
    fn missed_slots_are_skipped() {
        let start = Instant::now();
        let mut s = Schedule {
            interval: Duration::from_secs(1),
            next: start,
        };
        // The probe finished 10.5 intervals late: the next slot is not in the past by more
        // than one interval (no burst of catch-up probes).
        let now = start + Duration::from_millis(10_500);
        s.advance(now);
        assert!(
            s.next() + Duration::from_secs(1) >= now,
            "{:?}",
            now - s.next()
        );
        assert!(s.next() <= now + Duration::from_secs(1));
    }
}
