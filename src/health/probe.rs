//! The probe engine: HTTP and TCP checks from the operator to each Instance.
//!
//! INTERFACE STUB — the health engine work replaces the body.

use std::net::IpAddr;

use crate::api::Probe;

/// What to probe for one Instance.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeTarget {
    /// The Instance's address (its Pod IP).
    pub address: IpAddr,
    /// The probe configuration.
    pub probe: Probe,
}

/// The probe engine's verdict for one Instance, with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeVerdict {
    /// `Some(true)` healthy, `Some(false)` unhealthy, `None` not enough results yet.
    pub healthy: Option<bool>,
    /// Consecutive failures so far (below the threshold this means Warning).
    pub consecutive_failures: u32,
    /// Consecutive successes so far.
    pub consecutive_successes: u32,
    /// The evidence, e.g. `HTTP 503 from 10.0.0.7:8080/healthz, 3 consecutive failures`.
    pub message: String,
}

/// Identifies an Instance: (namespace, name).
pub type InstanceKey = (String, String);

/// Runs the probes; only verdict changes leave it.
#[derive(Clone, Default)]
pub struct ProbeEngine {}

impl ProbeEngine {
    /// Sets (or with `None` removes) the probe target of an Instance.
    pub fn set_target(&self, key: &InstanceKey, target: Option<ProbeTarget>) {
        let _ = (key, target);
    }

    /// The current verdict of an Instance, if it has a target.
    pub fn verdict(&self, key: &InstanceKey) -> Option<ProbeVerdict> {
        let _ = key;
        None
    }
}
