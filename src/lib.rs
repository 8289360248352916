//! autoheal: auto scaling groups with health checking and automatic repair for Kubernetes.
//!
//! Data flows one way (see `ARCHITECTURE.md` in the design folder): watches and probes feed
//! pure decisions ([`health`], [`plan`]) whose results the thin I/O shell applies as status
//! writes and object changes.

pub mod admin;
pub mod api;
pub mod controller;
pub mod health;
pub mod plan;
pub mod telemetry;
