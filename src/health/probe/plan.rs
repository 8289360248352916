//! The plan of a target: everything its probe task needs, computed once from the
//! [`ProbeTarget`] when the target is set (address, scheme, request, accepted statuses,
//! interval, timeout, thresholds, and the description used in evidence).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::http::{HeaderValue, Uri};

use super::http::{StatusSet, request_uri, sanitize_path};
use super::{ProbeKind, ProbeTarget};
use crate::api::Scheme;

/// Everything a probe task needs, computed once per target.
pub(super) struct TargetPlan {
    pub(super) kind: ProbeKind,
    pub(super) addr: SocketAddr,
    pub(super) tls: bool,
    /// The raw HTTP request (HTTP probes, hand-written client).
    pub(super) request: Vec<u8>,
    /// The request target (HTTP probes, hyper client).
    pub(super) uri: Uri,
    /// The `Host` header value, e.g. `10.0.0.7:8080` (HTTP probes, hyper client).
    pub(super) host: HeaderValue,
    pub(super) expected: StatusSet,
    pub(super) interval: Duration,
    pub(super) timeout: Duration,
    pub(super) healthy_threshold: i32,
    pub(super) unhealthy_threshold: i32,
    /// e.g. `127.0.0.5:8080/healthz` or `127.0.0.5:5432`.
    pub(super) description: String,
}

/// The `User-Agent` of HTTP probes.
pub(super) const USER_AGENT: &str = concat!("autoheal-probe/", env!("CARGO_PKG_VERSION"));

impl TargetPlan {
    pub(super) fn new(target: &ProbeTarget, interval_override: Option<Duration>) -> Self {
        let p = &target.probe;
        let interval = interval_override
            .unwrap_or_else(|| Duration::from_secs(p.interval_seconds.clamp(1, 300) as u64));
        let timeout = Duration::from_secs(p.timeout_seconds.clamp(1, 120) as u64);
        let port_of = |port: i32| u16::try_from(port).unwrap_or(0);
        let (kind, port, tls, path, expected) = match (&p.http, &p.tcp) {
            (Some(h), _) => (
                ProbeKind::Http,
                port_of(h.port),
                h.scheme == Scheme::Https,
                sanitize_path(&h.path),
                StatusSet::parse(&h.expected_statuses),
            ),
            (None, Some(t)) => (
                ProbeKind::Tcp,
                port_of(t.port),
                false,
                String::new(),
                StatusSet::default(),
            ),
            // Refused by the API schema; probe the TCP port 0 so it fails visibly.
            (None, None) => (
                ProbeKind::Tcp,
                0,
                false,
                String::new(),
                StatusSet::default(),
            ),
        };
        let addr = SocketAddr::new(target.address, port);
        let host = match target.address {
            IpAddr::V4(a) => format!("{a}:{port}"),
            IpAddr::V6(a) => format!("[{a}]:{port}"),
        };
        let (request, uri) = match kind {
            ProbeKind::Http => (
                format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n",
                )
                .into_bytes(),
                request_uri(&path),
            ),
            ProbeKind::Tcp => (Vec::new(), Uri::from_static("/")),
        };
        Self {
            kind,
            addr,
            tls,
            request,
            uri,
            host: HeaderValue::from_str(&host).expect("an IP address and port is a valid header"),
            expected,
            interval,
            timeout,
            healthy_threshold: p.healthy_threshold,
            unhealthy_threshold: p.unhealthy_threshold,
            description: format!("{host}{path}"),
        }
    }
}
