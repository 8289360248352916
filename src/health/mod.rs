//! Health: the pure evaluator that merges signals into a verdict, and the probe engine that
//! produces the probe signal.

pub mod evaluate;
pub mod probe;

pub use evaluate::{HealthEvent, HealthInputs, Verdict, assess, events};
pub use probe::{
    EngineOptions, HttpClient, InstanceKey, ProbeCounter, ProbeEngine, ProbeResult, ProbeTarget,
    ProbeVerdict,
};
