//! Domain enums shared by several parts of the operator (API types, health, telemetry).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The kind of a probe (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// An HTTP(S) GET probe.
    Http,
    /// A TCP connect probe.
    Tcp,
}

impl ProbeKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tcp => "tcp",
        }
    }
}

/// The class of one probe result (`result` label); failure classes are kept apart as GCP
/// does with UNHEALTHY vs TIMEOUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResultClass {
    /// The probe passed.
    Success,
    /// An HTTP answer with a status outside `expectedStatuses`.
    HttpStatus,
    /// No answer within `timeoutSeconds`.
    Timeout,
    /// The connection was refused (nothing listens).
    Refused,
    /// The connection was reset or closed before an answer.
    Reset,
    /// Anything else (unreachable, malformed answer, TLS failure...).
    Error,
}

impl ResultClass {
    /// Every class, in label order.
    pub const ALL: [ResultClass; 6] = [
        Self::Success,
        Self::HttpStatus,
        Self::Timeout,
        Self::Refused,
        Self::Reset,
        Self::Error,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpStatus => "http_status",
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Error => "error",
        }
    }

    /// Position in [`ResultClass::ALL`].
    pub fn index(self) -> usize {
        match self {
            Self::Success => 0,
            Self::HttpStatus => 1,
            Self::Timeout => 2,
            Self::Refused => 3,
            Self::Reset => 4,
            Self::Error => 5,
        }
    }
}

/// The transition a lifecycle hook holds.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord,
)]
pub enum HookTransition {
    /// Holds new Instances in Pending:Wait.
    Launch,
    /// Holds leaving Instances in Terminating:Wait.
    Terminate,
}

/// The outcome of a lifecycle hook.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HookResult {
    /// Proceed with the transition.
    Continue,
    /// For Launch: terminate the Instance (and relaunch). For Terminate: proceed, as Continue.
    #[default]
    Abandon,
}
