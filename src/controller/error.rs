//! Reconcile errors, their kinds, and the per-object exponential backoff of retries.
//!
//! Waiting is not an error: a reconcile that waits for something (a Pod to go, the store to
//! show its own launches) returns `Ok(Action::requeue(..))`. An [`Error`] is something that
//! went wrong; each has an [`ErrorKind`] (the `kind` label of
//! `autoheal_reconcile_errors_total`). Errors the operator cannot fix by retrying soon
//! ([`ErrorKind::is_refusal`]: 400, 403, 422 — RBAC, validation, an admission webhook) are
//! reported once as a Warning Event and a `Stalled` condition on the object; every error is
//! retried after a per-object exponential backoff ([`ErrorBackoff`]) that a success resets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// (namespace, name) of an object.
type Key = (String, String);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, naming the object.
        action: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A request could not be built.
    #[error("{0}")]
    Invalid(String),
}

/// What kind of failure an [`Error`] is (the `kind` metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// 409: the object changed since it was read (a stale read); retried at once.
    Conflict,
    /// 403: RBAC refused the request.
    Forbidden,
    /// 400 or 422: the API server (schema, CEL, an admission webhook or policy) refused it.
    Rejected,
    /// 404 where the object was expected.
    NotFound,
    /// 429 or 5xx: the API server is overloaded or failing.
    ServerError,
    /// The request did not reach the API server or its answer was lost.
    Transport,
    /// A request the operator could not build.
    Invalid,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// Every kind (the label values `autoheal_reconcile_errors_total` starts at 0).
    pub const ALL: [ErrorKind; 8] = [
        Self::Conflict,
        Self::Forbidden,
        Self::Rejected,
        Self::NotFound,
        Self::ServerError,
        Self::Transport,
        Self::Invalid,
        Self::Other,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::Forbidden => "forbidden",
            Self::Rejected => "rejected",
            Self::NotFound => "not_found",
            Self::ServerError => "server_error",
            Self::Transport => "transport",
            Self::Invalid => "invalid",
            Self::Other => "other",
        }
    }

    /// Whether retrying soon cannot help: a person must change RBAC, the object or a policy.
    pub fn is_refusal(self) -> bool {
        matches!(self, Self::Forbidden | Self::Rejected | Self::Invalid)
    }
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid(_) => ErrorKind::Invalid,
            Self::Kube { source, .. } => match source {
                kube::Error::Api(status) => match status.code {
                    409 => ErrorKind::Conflict,
                    403 => ErrorKind::Forbidden,
                    400 | 422 => ErrorKind::Rejected,
                    404 | 410 => ErrorKind::NotFound,
                    429 | 500..=599 => ErrorKind::ServerError,
                    _ => ErrorKind::Other,
                },
                kube::Error::HyperError(_)
                | kube::Error::Service(_)
                | kube::Error::ReadEvents(_)
                | kube::Error::HttpError(_) => ErrorKind::Transport,
                _ => ErrorKind::Other,
            },
        }
    }
}

/// Wraps an API error with what was being done.
pub fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Whether an API error is the HTTP status `code`.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Settings of the per-object error backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The delay after the first failure.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(300),
        }
    }
}

impl BackoffConfig {
    /// The delay before retry number `failures` (1 = after the first failure): `base ×
    /// 2^(failures-1)`, capped.
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(31);
        self.base.saturating_mul(1 << exp).min(self.cap)
    }
}

/// The failure streak of one object.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    failures: u32,
    refusal_reported: bool,
}

/// What [`ErrorBackoff::failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long to wait before retrying.
    pub delay: Duration,
    /// Consecutive failures of the object (0 for a conflict, which does not count).
    pub failures: u32,
    /// A refusal to report now: the first of the streak (reported once, not per retry).
    pub report_refusal: bool,
}

/// Consecutive failures per (controller, object); a success forgets the object.
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    config: BackoffConfig,
    failures: Mutex<HashMap<(&'static str, Key), Streak>>,
}

impl ErrorBackoff {
    /// A backoff with these settings.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, Key), Streak>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a failure of `key` and says when to retry. A conflict (a stale read) is
    /// retried after at most 200 ms without growing the backoff: the watch brings the newer
    /// object at once.
    pub fn failed(&self, controller: &'static str, key: &Key, kind: ErrorKind) -> Retry {
        if kind == ErrorKind::Conflict {
            return Retry {
                delay: self.config.base.min(Duration::from_millis(200)),
                failures: 0,
                report_refusal: false,
            };
        }
        let mut streaks = self.lock();
        let streak = streaks.entry((controller, key.clone())).or_default();
        streak.failures = streak.failures.saturating_add(1);
        let report_refusal = kind.is_refusal() && !streak.refusal_reported;
        streak.refusal_reported |= report_refusal;
        Retry {
            delay: self.config.delay(streak.failures),
            failures: streak.failures,
            report_refusal,
        }
    }

    /// Forgets the failures of `key` (it reconciled successfully). Returns `None` when it had
    /// none, else whether a refusal of the streak was reported (and should be cleared).
    pub fn succeeded(&self, controller: &'static str, key: &Key) -> Option<bool> {
        self.lock()
            .remove(&(controller, key.clone()))
            .map(|s| s.refusal_reported)
    }

    /// How many objects of `controller` are backing off now.
    pub fn backing_off(&self, controller: &'static str) -> usize {
        self.lock().keys().filter(|(c, _)| *c == controller).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api_error(code: u16) -> Error {
        let status = Status::failure("refused", "Reason").with_code(code);
        kube_err("doing it")(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn kinds_follow_the_status_code() {
        assert_eq!(api_error(409).kind(), ErrorKind::Conflict);
        assert_eq!(api_error(403).kind(), ErrorKind::Forbidden);
        assert_eq!(api_error(422).kind(), ErrorKind::Rejected);
        assert_eq!(api_error(400).kind(), ErrorKind::Rejected);
        assert_eq!(api_error(503).kind(), ErrorKind::ServerError);
        assert_eq!(api_error(429).kind(), ErrorKind::ServerError);
        assert_eq!(api_error(404).kind(), ErrorKind::NotFound);
        assert_eq!(Error::Invalid("x".into()).kind(), ErrorKind::Invalid);
        assert!(ErrorKind::Forbidden.is_refusal() && ErrorKind::Rejected.is_refusal());
        assert!(!ErrorKind::ServerError.is_refusal() && !ErrorKind::Conflict.is_refusal());
    }

    #[test]
    fn backoff_doubles_per_failure_up_to_the_cap_and_resets_on_success() {
        let b = ErrorBackoff::new(BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(5),
        });
        let k: Key = ("ns".into(), "a".into());
        let other: Key = ("ns".into(), "b".into());
        let delays: Vec<u64> = (0..5)
            .map(|_| b.failed("c", &k, ErrorKind::ServerError).delay.as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        assert_eq!(
            b.failed("c", &other, ErrorKind::ServerError)
                .delay
                .as_secs(),
            1
        );
        assert_eq!(b.backing_off("c"), 2);
        assert_eq!(b.succeeded("c", &k), Some(false));
        assert_eq!(b.succeeded("c", &k), None);
        assert_eq!(b.failed("c", &k, ErrorKind::ServerError).delay.as_secs(), 1);
    }

    #[test]
    fn conflicts_retry_quickly_without_growing_the_backoff() {
        let b = ErrorBackoff::new(BackoffConfig::default());
        let k: Key = ("ns".into(), "a".into());
        for _ in 0..5 {
            let retry = b.failed("c", &k, ErrorKind::Conflict);
            assert!(retry.delay <= Duration::from_millis(200));
            assert_eq!(retry.failures, 0);
            assert!(!retry.report_refusal);
        }
        assert_eq!(b.backing_off("c"), 0);
    }

    #[test]
    fn a_refusal_is_reported_once_per_streak() {
        let b = ErrorBackoff::new(BackoffConfig::default());
        let k: Key = ("ns".into(), "a".into());
        assert!(!b.failed("c", &k, ErrorKind::Transport).report_refusal);
        assert!(b.failed("c", &k, ErrorKind::Forbidden).report_refusal);
        assert!(!b.failed("c", &k, ErrorKind::Forbidden).report_refusal);
        assert!(!b.failed("c", &k, ErrorKind::Rejected).report_refusal);
        assert_eq!(b.succeeded("c", &k), Some(true), "to be cleared");
        assert!(b.failed("c", &k, ErrorKind::Rejected).report_refusal);
    }

    #[test]
    fn a_huge_failure_count_does_not_overflow() {
        let c = BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(300),
        };
        assert_eq!(c.delay(u32::MAX), Duration::from_secs(300));
        assert_eq!(c.delay(0), Duration::from_secs(1));
    }
}
