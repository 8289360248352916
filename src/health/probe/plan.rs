//! The plan of a target: everything its probe task needs, computed once from the
//! [`ProbeTarget`] when the target is set (address, scheme, request, accepted statuses,
//! interval, timeout, thresholds, and the description used in evidence).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hyper::http::{HeaderValue, Uri};

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

/// Percent-encodes bytes that cannot appear in a request line (blanks, controls, non-ASCII).
pub(super) fn sanitize_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        out.push('/');
    }
    for b in path.bytes() {
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request target of a [sanitized](sanitize_path) path for hyper. The few printable
/// characters that [`Uri`] refuses (`"<>\^`{|}` in some positions) are percent-encoded; the
/// path is otherwise sent as the hand-written client sends it (a `#fragment` is not sent).
pub(super) fn request_uri(path: &str) -> Uri {
    if let Ok(uri) = Uri::try_from(path) {
        return uri;
    }
    let mut encoded = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        if matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}') {
            encoded.push_str(&format!("%{:02X}", c as u32));
        } else {
            encoded.push(c);
        }
    }
    Uri::try_from(encoded).unwrap_or_else(|_| Uri::from_static("/"))
}

/// The statuses an HTTP probe accepts, e.g. `200-399` or `200,204,300-308`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl Default for StatusSet {
    fn default() -> Self {
        Self(vec![(200, 399)])
    }
}

impl StatusSet {
    /// Parses a list of codes and ranges; parts that cannot be understood are skipped, and an
    /// empty result means the default `200-399` (the API server validates the field).
    pub fn parse(spec: &str) -> Self {
        let ranges: Vec<(u16, u16)> = spec
            .split(',')
            .filter_map(|part| {
                let part = part.trim();
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                let (a, b) = (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?);
                (a <= b).then_some((a, b))
            })
            .collect();
        if ranges.is_empty() {
            Self::default()
        } else {
            Self(ranges)
        }
    }

    /// Whether `status` is accepted.
    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&status))
    }
}
