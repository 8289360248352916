//! What both reconcilers share: the client, the reflector stores, read-your-writes overlays,
//! launch/terminate expectations, the probe engine, metrics and the Event sink.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use crate::api::{Instance, ScalingGroup};
use crate::health::ProbeEngine;
use crate::telemetry::Metrics;

use super::events::EventSink;

/// (namespace, name) of an object.
pub type Key = (String, String);

/// Errors of one reconcile; the controller retries with a backoff.
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

/// Wraps an API error with what was being done.
pub fn kube_err(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Kube { action, source }
}

/// Whether an API error is the HTTP status `code`.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == code)
}

/// Shared state of the controllers.
pub struct Context {
    /// The API client (user agent `autoheal/<version>`).
    pub client: Client,
    /// Every ScalingGroup watched.
    pub groups: Store<ScalingGroup>,
    /// Every Instance watched.
    pub instances: Store<Instance>,
    /// Every Pod labelled `autoheal.dev/group`.
    pub pods: Store<Pod>,
    /// Every Node.
    pub nodes: Store<Node>,
    /// The probe engine.
    pub probes: ProbeEngine,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Where Events go.
    pub events: EventSink,
    /// Groups as last written by this process (read-your-writes).
    pub fresh_groups: Fresh<ScalingGroup>,
    /// Instances as last written by this process (read-your-writes).
    pub fresh_instances: Fresh<Instance>,
    /// Pods as last written by this process (read-your-writes).
    pub fresh_pods: Fresh<Pod>,
    /// Launches and terminations not yet seen in the Instance store, per group.
    pub expectations: Expectations,
    /// Warnings already reported, so each is reported once per process.
    pub reported: Reported,
}

impl Context {
    /// Runs one reconcile of `controller`, recording its duration in the metrics.
    pub async fn timed(
        &self,
        controller: &'static str,
        reconcile: impl std::future::Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let started = Instant::now();
        let result = reconcile.await;
        self.metrics
            .observe_reconcile(controller, started.elapsed());
        result
    }

    /// Counts and logs a failed reconcile of `object`, and retries it after a short backoff.
    pub fn retry_after_error<K: Resource>(
        &self,
        controller: &'static str,
        object: &K,
        err: &Error,
    ) -> Action {
        self.metrics.inc_reconcile_errors(controller);
        tracing::warn!(
            controller,
            namespace = object.namespace().unwrap_or_default(),
            name = %object.name_any(),
            "reconcile failed: {err}"
        );
        Action::requeue(Duration::from_secs(2))
    }

    /// The group from the store, or this process's newer write of it.
    pub fn group(&self, ns: &str, name: &str) -> Option<Arc<ScalingGroup>> {
        let stored = self.groups.get(&ObjectRef::new(name).within(ns));
        self.fresh_groups.resolve(ns, name, stored)
    }

    /// The Instance from the store, or this process's newer write of it.
    pub fn instance(&self, ns: &str, name: &str) -> Option<Arc<Instance>> {
        let stored = self.instances.get(&ObjectRef::new(name).within(ns));
        self.fresh_instances.resolve(ns, name, stored)
    }

    /// The Pod from the store, or this process's newer write of it.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<Pod>> {
        let stored = self.pods.get(&ObjectRef::new(name).within(ns));
        self.fresh_pods.resolve(ns, name, stored)
    }

    /// The Instances controlled by `group` (owner reference with its uid), freshest copies.
    pub fn members(&self, group: &ScalingGroup) -> Vec<Arc<Instance>> {
        let ns = group.namespace().unwrap_or_default();
        let uid = group.uid();
        let name = group.name_any();
        let mut members: Vec<Arc<Instance>> = self
            .instances
            .state()
            .into_iter()
            .filter(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.spec.group_name == name)
            .filter(|i| controlled_by(i.as_ref(), uid.as_deref()))
            // An Instance this process just finished (finalizer removed) may linger in the
            // store until the watch delivers its deletion: resolve() leaves it out.
            .filter_map(|i| {
                let n = i.name_any();
                self.fresh_instances.resolve(&ns, &n, Some(i))
            })
            .collect();
        members.sort_by_key(|i| i.name_any());
        members
    }
}

/// Whether `obj`'s controller owner reference has `uid` (true when `uid` is unknown).
pub fn controlled_by<K: Resource>(obj: &K, uid: Option<&str>) -> bool {
    let Some(uid) = uid else { return true };
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Parses a resourceVersion (an etcd revision in practice; opaque by contract).
fn revision<K: Resource>(obj: &K) -> Option<u64> {
    obj.meta().resource_version.as_deref()?.parse().ok()
}

enum FreshEntry<K> {
    /// Written by this process (`created`: by a create, so the store may not know it yet).
    Written {
        obj: Arc<K>,
        at: Instant,
        created: bool,
    },
    Deleted(Instant),
}

/// How long a deletion seen through the API hides a lagging store's copy (and a written copy
/// stands in for one the store does not have).
const DELETED_TTL: Duration = Duration::from_secs(60);

/// Read-your-writes overlay over a reflector store: objects this process wrote, kept until
/// the store shows the same or a newer resourceVersion.
///
/// Without it a reconcile that runs before the watch delivered the process's own write would
/// see the old object and could record a transition twice or repeat an action. Revisions are
/// compared as numbers (etcd revisions); when either does not parse, the store wins.
pub struct Fresh<K> {
    entries: Mutex<HashMap<Key, FreshEntry<K>>>,
}

impl<K> Default for Fresh<K> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Resource> Fresh<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, FreshEntry<K>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers an object as returned by an update or patch.
    pub fn remember(&self, obj: K) {
        self.insert(obj, false);
    }

    /// Remembers an object as returned by its create.
    pub fn remember_created(&self, obj: K) {
        self.insert(obj, true);
    }

    fn insert(&self, obj: K, created: bool) {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        self.lock().insert(
            key,
            FreshEntry::Written {
                obj: Arc::new(obj),
                at: Instant::now(),
                created,
            },
        );
    }

    /// Remembers that an object was deleted (the API said it is gone).
    pub fn deleted(&self, ns: &str, name: &str) {
        self.lock().insert(
            (ns.into(), name.into()),
            FreshEntry::Deleted(Instant::now()),
        );
    }

    /// The freshest known copy: the store's, unless this process wrote a newer one.
    pub fn resolve(&self, ns: &str, name: &str, stored: Option<Arc<K>>) -> Option<Arc<K>> {
        let key = (ns.to_string(), name.to_string());
        let mut entries = self.lock();
        let Some(entry) = entries.get(&key) else {
            return stored;
        };
        match entry {
            FreshEntry::Deleted(at) => {
                if stored.is_none() || at.elapsed() > DELETED_TTL {
                    entries.remove(&key);
                    stored
                } else {
                    None
                }
            }
            FreshEntry::Written { obj, at, created } => {
                let written = obj.clone();
                match stored {
                    // Created moments ago: the store will show it soon.
                    None if *created && at.elapsed() <= DELETED_TTL => Some(written),
                    // An object we updated is no longer in the store: it was deleted.
                    None => {
                        entries.remove(&key);
                        None
                    }
                    Some(s) => {
                        let same_object = s.meta().uid == written.meta().uid;
                        match (revision(s.as_ref()), revision(written.as_ref())) {
                            (Some(a), Some(b)) if same_object && a < b => Some(written),
                            _ => {
                                entries.remove(&key);
                                Some(s)
                            }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Expected {
    creates: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

/// How long an expectation may stay unmet before it is dropped (a watch hiccup must not
/// freeze a group forever).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);

/// Launches and terminations a group reconcile made that the Instance store does not show
/// yet (as ReplicaSet's expectations). A group reconcile plans nothing while its group has
/// unmet expectations, so a lagging store never causes a second launch or termination.
///
/// Kept in memory only: after a restart the stores are listed afresh, which shows every
/// Instance created or deleted before the crash.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<Key, Expected>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Expected>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Expects an Instance `name` of `group` to appear.
    pub fn expect_create(&self, group: &Key, name: &str) {
        let mut inner = self.lock();
        let e = inner.entry(group.clone()).or_default();
        e.creates.insert(name.into());
        e.since.get_or_insert_with(Instant::now);
    }

    /// Expects an Instance `name` of `group` to show its deletion.
    pub fn expect_delete(&self, group: &Key, name: &str) {
        let mut inner = self.lock();
        let e = inner.entry(group.clone()).or_default();
        e.deletes.insert(name.into());
        e.since.get_or_insert_with(Instant::now);
    }

    /// Drops an expectation whose request failed.
    pub fn forget(&self, group: &Key, name: &str) {
        if let Some(e) = self.lock().get_mut(group) {
            e.creates.remove(name);
            e.deletes.remove(name);
        }
    }

    /// Whether the store (given as the group's Instances) shows every expected change;
    /// met expectations are cleared.
    pub fn satisfied(&self, group: &Key, members: &[Arc<Instance>]) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.get_mut(group) else {
            return true;
        };
        let by_name: HashMap<String, &Arc<Instance>> =
            members.iter().map(|i| (i.name_any(), i)).collect();
        e.creates.retain(|n| !by_name.contains_key(n));
        e.deletes.retain(|n| {
            by_name
                .get(n)
                .is_some_and(|i| i.metadata.deletion_timestamp.is_none())
        });
        if e.creates.is_empty() && e.deletes.is_empty() {
            inner.remove(group);
            return true;
        }
        if e.since.is_some_and(|s| s.elapsed() > EXPECTATION_TTL) {
            tracing::warn!(
                namespace = %group.0, group = %group.1,
                creates = ?e.creates, deletes = ?e.deletes,
                "expected Instance changes never showed up in the watch; planning anew"
            );
            inner.remove(group);
            return true;
        }
        false
    }
}

/// Remembers which warnings were reported for which object, so a warning that persists is
/// reported once (per process), not on every reconcile.
#[derive(Default)]
pub struct Reported {
    inner: Mutex<HashMap<Key, HashSet<String>>>,
}

impl Reported {
    /// Returns the warnings of `current` not reported before, and forgets reported ones that
    /// are no longer current (so they are reported again if they come back).
    pub fn fresh(&self, key: &Key, current: &[String]) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_empty() {
            inner.remove(key);
            return Vec::new();
        }
        let seen = inner.entry(key.clone()).or_default();
        let new: Vec<String> = current
            .iter()
            .filter(|w| !seen.contains(*w))
            .cloned()
            .collect();
        seen.retain(|w| current.contains(w));
        seen.extend(new.iter().cloned());
        new
    }

    /// Forgets an object.
    pub fn forget(&self, key: &Key) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(rv: &str, uid: &str) -> Arc<ConfigMap> {
        Arc::new(ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        })
    }

    #[test]
    fn fresh_prefers_newer_writes_until_the_store_catches_up() {
        let fresh = Fresh::<ConfigMap>::default();
        fresh.remember((*cm("10", "u")).clone());
        let got = fresh.resolve("ns", "x", Some(cm("9", "u"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("10"));
        let got = fresh.resolve("ns", "x", Some(cm("11", "u"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("11"));
        // Entry dropped: the store is used from now on.
        let got = fresh.resolve("ns", "x", Some(cm("9", "u"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("9"));
    }

    #[test]
    fn fresh_ignores_other_objects_and_unparsable_versions() {
        let fresh = Fresh::<ConfigMap>::default();
        fresh.remember((*cm("10", "u")).clone());
        let got = fresh.resolve("ns", "x", Some(cm("5", "other"))).unwrap();
        assert_eq!(got.metadata.uid.as_deref(), Some("other"));
        fresh.remember((*cm("abc", "u")).clone());
        let got = fresh.resolve("ns", "x", Some(cm("5", "u"))).unwrap();
        assert_eq!(got.metadata.resource_version.as_deref(), Some("5"));
    }

    #[test]
    fn fresh_updates_do_not_resurrect_deleted_objects() {
        let fresh = Fresh::<ConfigMap>::default();
        fresh.remember((*cm("10", "u")).clone());
        assert!(
            fresh.resolve("ns", "x", None).is_none(),
            "gone from the store: gone"
        );
        fresh.remember_created((*cm("10", "u")).clone());
        assert!(
            fresh.resolve("ns", "x", None).is_some(),
            "just created: not yet in the store"
        );
    }

    #[test]
    fn fresh_deleted_hides_the_stale_copy() {
        let fresh = Fresh::<ConfigMap>::default();
        fresh.deleted("ns", "x");
        assert!(fresh.resolve("ns", "x", Some(cm("5", "u"))).is_none());
        assert!(fresh.resolve("ns", "x", None).is_none());
        // Cleared once the store agrees.
        assert!(fresh.resolve("ns", "x", Some(cm("6", "u"))).is_some());
    }

    #[test]
    fn reported_once_until_it_goes_away() {
        let r = Reported::default();
        let k = ("ns".to_string(), "i".to_string());
        assert_eq!(r.fresh(&k, &["a".into()]), vec!["a".to_string()]);
        assert!(r.fresh(&k, &["a".into()]).is_empty());
        assert_eq!(r.fresh(&k, &["b".into()]), vec!["b".to_string()]);
        assert!(r.fresh(&k, &[]).is_empty());
        assert_eq!(r.fresh(&k, &["a".into()]), vec!["a".to_string()]);
    }
}
