//! The verdict counter: consecutive results measured against the thresholds.
//!
//! [`ProbeCounter`] is pure (no I/O, no clock): the engine keeps one per target and feeds it
//! every [`ProbeResult`]. An undecided target becomes healthy after `healthyThreshold`
//! consecutive successes or unhealthy after `unhealthyThreshold` consecutive failures,
//! whichever comes first; a healthy target becomes unhealthy after `unhealthyThreshold`
//! consecutive failures; an unhealthy target becomes healthy after `healthyThreshold`
//! consecutive successes. A new [`ProbeVerdict`] leaves the counter only when its
//! [signature](ProbeVerdict::signature) changes.

use super::{ProbeResult, ProbeVerdict, VerdictSignature};

/// Counts consecutive results against the thresholds (pure; the engine keeps one per target).
#[derive(Debug, Clone)]
pub struct ProbeCounter {
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    healthy: Option<bool>,
    failures: u32,
    successes: u32,
    published: VerdictSignature,
}

impl ProbeCounter {
    /// A counter with no results; thresholds are clamped to 1..=10 (the API's range).
    pub fn new(healthy_threshold: i32, unhealthy_threshold: i32) -> Self {
        Self {
            healthy_threshold: healthy_threshold.clamp(1, 10) as u32,
            unhealthy_threshold: unhealthy_threshold.clamp(1, 10) as u32,
            healthy: None,
            failures: 0,
            successes: 0,
            published: VerdictSignature {
                healthy: None,
                failing: false,
            },
        }
    }

    /// Records a result; returns the new verdict when its signature changed.
    pub fn record(&mut self, result: &ProbeResult) -> Option<ProbeVerdict> {
        if result.passed() {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.healthy != Some(true) && self.successes >= self.healthy_threshold {
                self.healthy = Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.healthy != Some(false) && self.failures >= self.unhealthy_threshold {
                self.healthy = Some(false);
            }
        }
        let verdict = self.verdict(result);
        let signature = verdict.signature();
        if signature == self.published {
            return None;
        }
        self.published = signature;
        Some(verdict)
    }

    fn verdict(&self, result: &ProbeResult) -> ProbeVerdict {
        let plural = |n: u32, what: &str| {
            if n == 1 {
                format!("1 consecutive {what}")
            } else if what.ends_with('s') {
                format!("{n} consecutive {what}es")
            } else {
                format!("{n} consecutive {what}s")
            }
        };
        let evidence = &result.evidence;
        let message = match (self.healthy, result.passed()) {
            (Some(false), _) => format!("{evidence}, {}", plural(self.failures, "failure")),
            (_, false) => format!(
                "{evidence}, {} (unhealthy at {})",
                plural(self.failures, "failure"),
                self.unhealthy_threshold
            ),
            (Some(true), true) => format!("{evidence}, {}", plural(self.successes, "success")),
            (None, true) => format!(
                "{evidence}, {} of {} needed",
                plural(self.successes, "success"),
                self.healthy_threshold
            ),
        };
        ProbeVerdict {
            healthy: self.healthy,
            consecutive_failures: self.failures,
            consecutive_successes: self.successes,
            message,
            failure: (!result.passed()).then_some(result.class),
            unhealthy_threshold: self.unhealthy_threshold,
            healthy_threshold: self.healthy_threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ResultClass;

    fn ok() -> ProbeResult {
        ProbeResult {
            class: ResultClass::Success,
            evidence: "HTTP 200 from a:1/".into(),
        }
    }
    fn fail() -> ProbeResult {
        ProbeResult {
            class: ResultClass::HttpStatus,
            evidence: "HTTP 503 from a:1/".into(),
        }
    }

    #[test]
    fn undecided_until_a_threshold_is_reached() {
        let mut c = ProbeCounter::new(2, 3);
        assert_eq!(c.record(&ok()), None, "1 of 2 successes: still undecided");
        let v = c.record(&ok()).expect("healthy after 2");
        assert_eq!(v.healthy, Some(true));
        assert_eq!(v.consecutive_successes, 2);
        assert_eq!(v.message, "HTTP 200 from a:1/, 2 consecutive successes");
        assert_eq!(c.record(&ok()), None, "no change, nothing published");
    }

    #[test]
    fn failures_below_threshold_are_a_warning_then_unhealthy() {
        let mut c = ProbeCounter::new(2, 3);
        c.record(&ok());
        c.record(&ok());
        let w = c.record(&fail()).expect("warning published");
        assert_eq!(w.healthy, Some(true));
        assert!(w.is_warning());
        assert_eq!(w.failure, Some(ResultClass::HttpStatus));
        assert_eq!(
            w.message,
            "HTTP 503 from a:1/, 1 consecutive failure (unhealthy at 3)"
        );
        assert_eq!(c.record(&fail()), None, "2nd failure: same signature");
        let u = c.record(&fail()).expect("unhealthy at 3");
        assert_eq!(u.healthy, Some(false));
        assert!(!u.is_warning());
        assert_eq!(u.message, "HTTP 503 from a:1/, 3 consecutive failures");
        assert_eq!(c.record(&fail()), None);
        // Recovery needs healthyThreshold successes; one is not a change.
        assert_eq!(c.record(&ok()), None);
        let h = c.record(&ok()).expect("healthy again");
        assert_eq!(h.healthy, Some(true));
        assert!(!h.is_warning());
    }

    #[test]
    fn an_intermittent_failure_is_warning_then_ok() {
        let mut c = ProbeCounter::new(1, 2);
        assert_eq!(c.record(&ok()).unwrap().healthy, Some(true));
        assert!(c.record(&fail()).unwrap().is_warning());
        let back = c.record(&ok()).unwrap();
        assert_eq!(back.healthy, Some(true));
        assert!(!back.is_warning());
    }

    #[test]
    fn undecided_and_failing_is_a_warning_and_can_go_unhealthy_first() {
        let mut c = ProbeCounter::new(2, 2);
        let w = c.record(&fail()).unwrap();
        assert_eq!(w.healthy, None);
        assert!(w.is_warning());
        let u = c.record(&fail()).unwrap();
        assert_eq!(u.healthy, Some(false));
    }

    #[test]
    fn thresholds_are_clamped() {
        let mut c = ProbeCounter::new(0, -5);
        assert_eq!(c.record(&fail()).unwrap().healthy, Some(false));
        let mut c = ProbeCounter::new(99, 1);
        for _ in 0..9 {
            assert_eq!(c.record(&ok()), None);
        }
        assert_eq!(c.record(&ok()).unwrap().healthy, Some(true));
    }
}
