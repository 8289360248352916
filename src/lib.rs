//! autoheal: auto scaling groups with health checking and automatic repair for Kubernetes.
//!
//! Data flows one way: watches and probes feed pure decisions ([`health`], [`plan`]) whose
//! results the thin I/O shell ([`controller`]) applies as status writes and object changes.
//! The user-facing vocabulary (kinds, labels, annotations, condition names) lives in [`api`].
#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod clock;
pub mod controller;
pub mod health;
pub mod plan;
pub mod plugin;
pub mod telemetry;
