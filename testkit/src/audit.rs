//! The control plane's audit log: the policy it is written with and a reader.

use std::path::Path;

use serde::Deserialize;

/// The verbs the audit policy records.
pub const AUDITED_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

/// Audit policy: one `ResponseComplete` event at Metadata level for every write
/// request (create, update, patch, delete, deletecollection), nothing else.
pub(crate) const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  verbs: ["create", "update", "patch", "delete", "deletecollection"]
- level: None
"#;

/// One write request recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditWrite {
    /// `create`, `update`, `patch`, `delete` or `deletecollection`.
    pub verb: String,
    /// The authenticated user name (e.g. `admin`, `system:kube-controller-manager`,
    /// `system:serviceaccount:NS:NAME`).
    pub user: String,
    /// The request's User-Agent header (empty when absent).
    pub user_agent: String,
    /// The resource (plural, e.g. `pods`, `replicasets`; empty for non-resource URLs).
    pub resource: String,
    /// The subresource (`status`, `eviction`, `binding`, …; empty for the main resource).
    pub subresource: String,
    /// The API group (empty for the core group).
    pub api_group: String,
    /// The namespace (empty for cluster-scoped resources).
    pub namespace: String,
    /// The object's name (may be empty, e.g. for `deletecollection`, or a create
    /// with `generateName`).
    pub name: String,
    /// The HTTP status code of the response (0 when not recorded).
    pub code: u16,
    /// When the apiserver received the request (RFC 3339 with microseconds, UTC).
    pub request_received_timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default)]
    stage: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: User,
    #[serde(default)]
    user_agent: String,
    #[serde(default)]
    object_ref: ObjectRef,
    #[serde(default)]
    response_status: Option<Status>,
    #[serde(default)]
    request_received_timestamp: String,
}

#[derive(Deserialize, Default)]
struct User {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectRef {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    subresource: String,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    code: u16,
}

/// Reads the audit log at `path` (JSON lines) and returns its write events, oldest first.
///
/// A missing file reads as no events; a line that does not parse (e.g. one being
/// written right now) is skipped. The apiserver writes each event just after it
/// answers the request, so poll (see [`crate::wait_for`]) rather than expecting a
/// write to show up the instant its response arrives.
pub fn audit_writes(path: &Path) -> Vec<AuditWrite> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    parse(&String::from_utf8_lossy(&bytes))
}

/// The audit log's size now: where [`audit_writes_after`] starts to read only what comes next.
pub fn audit_log_end(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The write events of the complete lines of the audit log at `path` from byte `offset` on,
/// oldest first, and the offset just past the last complete line read (pass it to the next
/// call to read on from there). Cheap to poll: reads only what was appended.
pub fn audit_writes_after(path: &Path, offset: u64) -> (Vec<AuditWrite>, u64) {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), offset);
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (Vec::new(), offset);
    }
    // Only whole lines: the last one may be being written right now.
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let writes = parse(&String::from_utf8_lossy(&bytes[..complete]));
    (writes, offset + complete as u64)
}

fn parse(text: &str) -> Vec<AuditWrite> {
    text.lines()
        .filter_map(|line| serde_json::from_str::<Event>(line).ok())
        .filter(|e| e.stage == "ResponseComplete" && AUDITED_VERBS.contains(&e.verb.as_str()))
        .map(|e| AuditWrite {
            verb: e.verb,
            user: e.user.username,
            user_agent: e.user_agent,
            resource: e.object_ref.resource,
            subresource: e.object_ref.subresource,
            api_group: e.object_ref.api_group,
            namespace: e.object_ref.namespace,
            name: e.object_ref.name,
            code: e.response_status.map_or(0, |s| s.code),
            request_received_timestamp: e.request_received_timestamp,
        })
        .collect()
}
