//! The pure core of the `kubectl autoheal` plugin (binary `kubectl-autoheal`): functions from
//! fetched objects (a ScalingGroup, its Instances, their Events) and `now` to the text or JSON
//! a person reads. No I/O and no clock; the binary fetches and prints.
//!
//! - [`why`]: `why inst/NAME` and `why sg/NAME`: the verdict, each signal with its evidence and
//!   threshold, what the group does next and what blocks it ([`why::Blocker`]).
//! - [`history`]: `history sg/NAME`: the remediation history as a table.
//! - [`describe`]: `describe-groups [NAME] -o json|table`, in the shape of
//!   `aws autoscaling describe-auto-scaling-groups`.
//! - [`health`]: `set-instance-health inst/NAME Healthy|Unhealthy`: the annotation patch.

pub mod describe;
pub mod health;
pub mod history;
pub mod why;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;

/// One Event as the plugin shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventView {
    /// When it last happened, if known.
    pub time: Option<Timestamp>,
    /// Normal or Warning.
    pub type_: String,
    /// The CamelCase reason.
    pub reason: String,
    /// The message.
    pub message: String,
    /// How many times it happened (1 unless it repeated).
    pub count: i32,
}

impl EventView {
    /// The view of a core/v1 Event (Events written with events.k8s.io/v1 read the same).
    pub fn from_core(e: &Event) -> Self {
        let time = e
            .series
            .as_ref()
            .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
            .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
            .or_else(|| e.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let count = e
            .series
            .as_ref()
            .and_then(|s| s.count)
            .or(e.count)
            .unwrap_or(1)
            .max(1);
        Self {
            time,
            type_: e.type_.clone().unwrap_or_else(|| "Normal".into()),
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count,
        }
    }
}

/// A duration in seconds for people: `45s`, `3m20s`, `2h5m`, `3d4h`.
pub fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        let (m, r) = (s / 60, s % 60);
        if r == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{r}s")
        }
    } else if s < 86400 {
        let (h, m) = (s / 3600, (s % 3600) / 60);
        if m == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{m}m")
        }
    } else {
        let (d, h) = (s / 86400, (s % 86400) / 3600);
        if h == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{h}h")
        }
    }
}

/// Whole seconds from `from` to `to` (negative when `to` is earlier), rounded up.
pub fn seconds_between(from: Timestamp, to: Timestamp) -> i64 {
    let d = to.duration_since(from);
    let s = d.as_secs();
    if d.subsec_nanos() > 0 { s + 1 } else { s }
}

/// `in 3m20s` for a time to come, `now` for one that has passed.
pub fn time_left(now: Timestamp, then: Timestamp) -> String {
    let s = seconds_between(now, then);
    if s <= 0 {
        "now".into()
    } else {
        format!("in {}", human(s))
    }
}

/// `3m20s ago`, or `-` without a time.
pub fn ago(now: Timestamp, then: Option<Timestamp>) -> String {
    match then {
        Some(t) => format!("{} ago", human(now.duration_since(t).as_secs())),
        None => "-".into(),
    }
}

/// A timestamp to the second, RFC 3339 (`2026-12-01T13:54:28Z`).
pub fn at(t: Timestamp) -> String {
    t.round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(t)
        .to_string()
}

/// Rows of cells as a left-aligned table with two blanks between columns (as `kubectl get`).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The recent Events as indented lines, newest last (at most `limit`).
pub fn events_section(events: &[EventView], now: Timestamp, limit: usize) -> String {
    if events.is_empty() {
        return "Recent events: none\n".into();
    }
    let mut sorted: Vec<&EventView> = events.iter().collect();
    sorted.sort_by_key(|e| e.time);
    let skip = sorted.len().saturating_sub(limit);
    let rows: Vec<Vec<String>> = sorted[skip..]
        .iter()
        .map(|e| {
            let count = if e.count > 1 {
                format!(" (x{})", e.count)
            } else {
                String::new()
            };
            vec![
                ago(now, e.time),
                e.type_.clone(),
                e.reason.clone(),
                format!("{}{count}", e.message),
            ]
        })
        .collect();
    let mut out = String::from("Recent events:\n");
    for l in table(&["AGE", "TYPE", "REASON", "MESSAGE"], &rows).lines() {
        out.push_str("  ");
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;

/// What a command names: `inst/NAME` or `sg/NAME` (kubectl's spellings of both kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An Instance.
    Instance(String),
    /// A ScalingGroup.
    Group(String),
}

impl Target {
    /// Parses `inst/NAME`, `instance/NAME`, `instances/NAME`, `instances.autoheal.dev/NAME`,
    /// `sg/NAME`, `scalinggroup/NAME`, `scalinggroups/NAME`, `scalinggroups.autoheal.dev/NAME`
    /// (kinds in any case).
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some((kind, name)) = s.split_once('/') else {
            return Err(format!(
                "{s:?} does not name a kind: write inst/{s} or sg/{s}"
            ));
        };
        if name.is_empty() || name.contains('/') {
            return Err(format!(
                "{s:?} is not KIND/NAME (e.g. inst/web-7xk2p or sg/web)"
            ));
        }
        let kind = kind.to_ascii_lowercase();
        let kind = kind.strip_suffix(".autoheal.dev").unwrap_or(&kind);
        match kind {
            "inst" | "instance" | "instances" => Ok(Self::Instance(name.into())),
            "sg" | "scalinggroup" | "scalinggroups" => Ok(Self::Group(name.into())),
            other => Err(format!(
                "unknown kind {other:?} in {s:?}: use inst/NAME (Instance) or sg/NAME (ScalingGroup)"
            )),
        }
    }
}
