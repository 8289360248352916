//! What both reconcilers share: the client, the reflector stores, read-your-writes overlays,
//! launch/terminate expectations, the probe engine, metrics and the Event sink.

use crate::api::WatchedPod;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};

use crate::api::{
    CONDITION_STALLED, Instance, REASON_REQUEST_REFUSED, REASON_REQUESTS_ACCEPTED, ScalingGroup,
};
use crate::clock::Clock;
use crate::health::ProbeEngine;
use crate::plan::replacement::Backoff;
use crate::telemetry::Metrics;

use super::error::{BackoffConfig, Error, ErrorBackoff, ErrorKind};
use super::events::EventSink;
use super::streams::Index;

/// The key of an Instance in [`Context::instances_by_group`]: (namespace, group name).
pub fn group_of_instance(instance: &Instance) -> Option<Key> {
    Some((instance.namespace()?, instance.spec.group_name.clone()))
}

/// (namespace, name) of an object.
pub type Key = (String, String);

/// Field manager of the operator's server-side applies.
pub const FIELD_MANAGER: &str = "autoheal";

/// How often a settled object is looked at again without any event.
pub const RESYNC: Duration = Duration::from_secs(300);

/// What a reconcile does when the overlay hides an object: while the store still holds it
/// (this process's deletion has not reached the watch yet), look again soon, so a reconcile
/// that finds nothing is never the last word on an object that exists.
pub fn store_lags_or_gone(store_holds_it: bool) -> kube::runtime::controller::Action {
    if store_holds_it {
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    } else {
        kube::runtime::controller::Action::await_change()
    }
}

/// Tunables of the reconcilers (`autoheal run` flags; tests shorten them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// Backoff between replacement starts after failed replacements.
    pub replacement_backoff: Backoff,
    /// Backoff of a reconcile after an error.
    pub error_backoff: BackoffConfig,
}

/// Shared state of the controllers.
pub struct Context {
    /// The API client (user agent `autoheal/<version>`).
    pub client: Client,
    /// Every ScalingGroup watched.
    pub groups: Store<ScalingGroup>,
    /// Every Instance watched.
    pub instances: Store<Instance>,
    /// The watched Instances by (namespace, group name).
    pub instances_by_group: Index<Instance>,
    /// Every Pod labelled `autoheal.dev/group`.
    pub pods: Store<WatchedPod>,
    /// Every Node.
    pub nodes: Store<Node>,
    /// ControllerRevisions labelled `autoheal.dev/group` (the groups' template revisions);
    /// empty until [`Context::with_revisions`] gives it a watched store.
    pub revisions: Store<ControllerRevision>,
    /// The probe engine.
    pub probes: ProbeEngine,
    /// The operator's metrics.
    pub metrics: Metrics,
    /// Where Events go.
    pub events: EventSink,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// Tunables.
    pub settings: Settings,
    /// Per-object backoff after errors.
    pub backoff: ErrorBackoff,
    /// Groups as last written by this process (read-your-writes).
    pub fresh_groups: Fresh<ScalingGroup>,
    /// Instances as last written by this process (read-your-writes).
    pub fresh_instances: Fresh<Instance>,
    /// Pods as last written by this process (read-your-writes).
    pub fresh_pods: Fresh<WatchedPod>,
    /// Launches and terminations not yet seen in the Instance store, per group.
    pub expectations: Expectations,
    /// Warnings already reported, so each is reported once per process.
    pub reported: Reported,
    /// When each group's status was last written, and how long that took (paces
    /// observation-only writes).
    pub group_writes: WritePace,
    /// Since when each Instance has had an observation-only status change left unwritten.
    pub instance_observations: Pacer,
}

impl Context {
    /// A context over these stores, with empty overlays and expectations.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: Client,
        groups: Store<ScalingGroup>,
        instances: Store<Instance>,
        instances_by_group: Index<Instance>,
        pods: Store<WatchedPod>,
        nodes: Store<Node>,
        probes: ProbeEngine,
        metrics: Metrics,
        events: EventSink,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            fresh_groups: Fresh::new(groups.clone()),
            fresh_instances: Fresh::new(instances.clone()),
            fresh_pods: Fresh::new(pods.clone()),
            groups,
            instances,
            instances_by_group,
            pods,
            nodes,
            revisions: kube::runtime::reflector::store::Writer::default().as_reader(),
            probes,
            metrics,
            events,
            clock,
            backoff: ErrorBackoff::new(settings.error_backoff),
            settings,
            expectations: Expectations::default(),
            reported: Reported::default(),
            group_writes: WritePace::default(),
            instance_observations: Pacer::default(),
        }
    }

    /// Runs one reconcile of `controller` for `key`, recording its duration. A success
    /// resets the object's error backoff and clears a `Stalled` condition a refusal set.
    pub async fn timed<K: Reconciled>(
        self: &Arc<Self>,
        controller: &'static str,
        key: &Key,
        reconcile: impl std::future::Future<Output = Result<Action, Error>>,
    ) -> Result<Action, Error> {
        let started = Instant::now();
        let result = reconcile.await;
        self.metrics
            .observe_reconcile(controller, started.elapsed());
        if result.is_ok()
            && let Some(refusal_reported) = self.backoff.succeeded(controller, key)
        {
            self.metrics
                .set_backing_off(controller, self.backoff.backing_off(controller));
            if refusal_reported {
                set_stalled::<K>(self, key, None).await;
            }
        }
        result
    }

    /// Counts and logs a failed reconcile of `object` and retries it after the object's
    /// exponential backoff (a conflict from a stale read is retried at once). The first
    /// refusal of a streak (403, 400/422) is reported once, as a Warning Event and a
    /// `Stalled=True` condition on the object.
    pub fn retry_after_error<K: Reconciled>(
        self: &Arc<Self>,
        controller: &'static str,
        object: &Arc<K>,
        err: &Error,
    ) -> Action {
        let kind = err.kind();
        let key: Key = (object.namespace().unwrap_or_default(), object.name_any());
        let retry = self.backoff.failed(controller, &key, kind);
        self.metrics.inc_reconcile_errors(controller, kind.as_str());
        self.metrics
            .set_backing_off(controller, self.backoff.backing_off(controller));
        if kind == ErrorKind::Conflict {
            tracing::debug!(
                controller,
                namespace = %key.0,
                name = %key.1,
                "stale read, retrying: {err}"
            );
        } else {
            tracing::warn!(
                controller,
                namespace = %key.0,
                name = %key.1,
                kind = kind.as_str(),
                failures = retry.failures,
                retry_in = ?retry.delay,
                "reconcile failed: {err}"
            );
        }
        if retry.report_refusal {
            let ctx = self.clone();
            let object = object.clone();
            let message = format!(
                "{err} (retrying with a backoff, at most every {:?}; fix the cause to resume)",
                self.settings.error_backoff.cap
            );
            tokio::spawn(async move {
                ctx.events
                    .warning(
                        &object.object_ref(&()),
                        REASON_REQUEST_REFUSED,
                        "Reconcile",
                        message.clone(),
                    )
                    .await;
                set_stalled::<K>(&ctx, &key, Some(&message)).await;
            });
        }
        Action::requeue(retry.delay)
    }

    /// The same context reading the groups' ControllerRevisions from `store`.
    pub fn with_revisions(mut self, store: Store<ControllerRevision>) -> Self {
        self.revisions = store;
        self
    }

    /// The ControllerRevisions controlled by `group` (owner reference with its uid).
    pub fn revisions_of(&self, group: &ScalingGroup) -> Vec<Arc<ControllerRevision>> {
        let ns = group.namespace();
        let uid = group.uid();
        let name = group.name_any();
        self.revisions
            .state()
            .into_iter()
            .filter(|r| r.namespace() == ns)
            .filter(|r| r.labels().get(crate::api::LABEL_GROUP) == Some(&name))
            .filter(|r| controlled_by(r.as_ref(), uid.as_deref()))
            .collect()
    }

    /// The group from the store, or this process's newer write of it.
    pub fn group(&self, ns: &str, name: &str) -> Option<Arc<ScalingGroup>> {
        self.fresh_groups.get(ns, name)
    }

    /// The Instance from the store, or this process's newer write of it.
    pub fn instance(&self, ns: &str, name: &str) -> Option<Arc<Instance>> {
        self.fresh_instances.get(ns, name)
    }

    /// The Pod from the store, or this process's newer write of it.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Arc<WatchedPod>> {
        self.fresh_pods.get(ns, name)
    }

    /// The Nodes the replacement breaker of a group with Instances `views` looks at: those in
    /// the zones its placed Instances run in (Nodes without a zone label form one zone), or
    /// every Node when that leaves none (see [`crate::plan::replacement::breaker`]).
    pub fn nodes_around(&self, views: &[crate::plan::InstanceView]) -> Vec<crate::plan::NodeView> {
        let all = self.nodes.state();
        let zone_of = |i: &crate::plan::InstanceView| -> Option<Option<String>> {
            let node = i.placement.node.as_deref()?;
            Some(match self.nodes.get(&ObjectRef::new(node)) {
                Some(n) => n.labels().get(crate::api::names::LABEL_ZONE).cloned(),
                None => i.placement.zone.clone(),
            })
        };
        let zones: HashSet<Option<String>> = views
            .iter()
            .filter(|i| i.counts_toward_capacity())
            .filter_map(zone_of)
            .collect();
        let around: Vec<crate::plan::NodeView> = all
            .iter()
            .filter(|n| zones.contains(&n.labels().get(crate::api::names::LABEL_ZONE).cloned()))
            .map(|n| crate::plan::NodeView::from_node(n))
            .collect();
        if around.is_empty() {
            all.iter()
                .map(|n| crate::plan::NodeView::from_node(n))
                .collect()
        } else {
            around
        }
    }

    /// The Instances controlled by `group` (owner reference with its uid), freshest copies.
    pub fn members(&self, group: &ScalingGroup) -> Vec<Arc<Instance>> {
        let key = (group.namespace().unwrap_or_default(), group.name_any());
        let uid = group.uid();
        let mut members: Vec<Arc<Instance>> = self
            .instances_by_group
            .lookup(&key, &self.instances)
            .into_iter()
            .filter(|i| controlled_by(i.as_ref(), uid.as_deref()))
            // An Instance this process just finished (finalizer removed) may linger in the
            // store until the watch delivers its deletion: resolve() leaves it out.
            .filter_map(|i| self.fresh_instances.resolve(Some(i)))
            .collect();
        members.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        members
    }
}

/// What [`Context::timed`] and [`Context::retry_after_error`] need of a reconciled kind: a
/// namespaced object with a status subresource holding conditions.
pub trait Reconciled:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Reconciled for K where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Applies `status` to `obj` (server-side apply, the operator's field manager), guarded by
/// the resourceVersion it was computed from: a status computed from a stale copy gets 409
/// (and the reconcile runs again on the newer one). The written object goes into `fresh`; a
/// conflict drops what `fresh` held of it.
pub async fn apply_status<K: Reconciled>(
    client: &Client,
    fresh: &Fresh<K>,
    obj: &K,
    status: &impl serde::Serialize,
) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "resourceVersion": obj.resource_version() },
        "status": status,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(super::error::kube_err(format!(
            "writing the status of {} {ns}/{name}",
            K::kind(&())
        )));
    match written {
        Ok(written) => {
            fresh.remember(written, obj.resource_version().as_deref());
            Ok(())
        }
        Err(e) => {
            if e.kind() == ErrorKind::Conflict {
                fresh.forget(&ns, &name);
            }
            Err(e)
        }
    }
}

/// Field manager of the `Stalled` condition: apart from the status the reconcilers own, so
/// each writer's apply leaves the other's fields alone.
pub const STALLED_MANAGER: &str = "autoheal-stalled";

/// Sets (`Some(message)`) or clears (`None`) the `Stalled=True` condition (reason
/// `RequestRefused`) on an object, with its own field manager. Failures are logged only: this
/// reports a problem, it must not become one.
async fn set_stalled<K: Reconciled>(ctx: &Context, key: &Key, message: Option<&str>) {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.0);
    let conditions = match message {
        Some(message) => serde_json::json!([{
            "type": CONDITION_STALLED,
            "status": "True",
            "reason": REASON_REQUEST_REFUSED,
            "message": message.chars().take(32 * 1024).collect::<String>(),
            "lastTransitionTime": crate::plan::lifecycle::ceil_to_second(ctx.clock.now()),
        }]),
        // On a group the group step also decides `Stalled` (and co-owns the item once it
        // has applied it): the report hands it back as False rather than removing it, which
        // would leave the group step's share of the item behind without its required fields.
        None if K::kind(&()) == ScalingGroup::kind(&()) => serde_json::json!([{
            "type": CONDITION_STALLED,
            "status": "False",
            "reason": REASON_REQUESTS_ACCEPTED,
            "message": "the API server accepts the operator's requests again",
            "lastTransitionTime": crate::plan::lifecycle::ceil_to_second(ctx.clock.now()),
        }]),
        None => serde_json::json!([]),
    };
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": { "conditions": conditions },
    });
    if let Err(e) = api
        .patch_status(
            &key.1,
            &PatchParams::apply(STALLED_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        tracing::debug!(namespace = %key.0, name = %key.1, "could not record Stalled: {e}");
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

enum FreshEntry<K> {
    /// Written by this process. `superseded` holds the resourceVersions this write (and the
    /// chain of this process's writes it ends) was made over: while the store shows one of
    /// them, it lags. `created`: the chain began where the store had no such object.
    Written {
        obj: Arc<K>,
        superseded: Vec<String>,
        created: bool,
        at: Instant,
    },
    /// Deleted by this process (the API said it is gone or going).
    Deleted { uid: Option<String>, at: Instant },
}

/// How long an entry may stand in for the store at most (a lost watch event must not pin an
/// old copy forever).
const FRESH_TTL: Duration = Duration::from_secs(60);

/// Read-your-writes overlay over a reflector store: the objects this process wrote, used
/// until the store moves past the version they were written over.
///
/// A watch delivers a write some milliseconds after the API answered it; a reconcile that
/// runs in between (another event of the same object) would see the old object and repeat
/// the step it just took. No resourceVersion is ever compared by order (they are opaque):
/// the overlay only asks whether the store still shows a version the write was made over (the
/// store's version at the time, or an earlier write of this process the store has not shown
/// yet). Once it shows anything else, the store has seen the write or a later one, and wins. Entries are tied to the object's UID, so an object deleted and re-created under the
/// same name is never hidden nor shadowed by its predecessor. Status writes also carry the
/// resourceVersion they were computed from, so a stale copy can never overwrite a newer one.
pub struct Fresh<K: kube::Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    entries: Mutex<HashMap<Key, FreshEntry<K>>>,
}

impl<K> Fresh<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    /// An overlay over `store`.
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, FreshEntry<K>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stored(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let reference = ObjectRef::new(name);
        let reference = if ns.is_empty() {
            reference
        } else {
            reference.within(ns)
        };
        self.store.get(&reference)
    }

    /// Remembers an object as returned by its create. When the store already holds it, the
    /// watch delivered the create (or a later change) before the answer was handled: nothing
    /// to remember.
    pub fn remember_created(&self, obj: K) {
        self.insert(obj, true, None);
    }

    /// Remembers an object as returned by an update, patch or delete, written over the copy
    /// of resourceVersion `over` (the one the decision was made on; `None` when unknown). An
    /// object the store does not hold (and this process did not just create) is gone: nothing
    /// to remember. When the store shows a version that is neither `over` nor one of this
    /// process's writes it has yet to show, it has moved past this write (the watch delivered
    /// the write and a later change before the answer was handled): nothing to remember
    /// either, or the older answer would hide the newer object.
    pub fn remember(&self, obj: K, over: Option<&str>) {
        self.insert(obj, false, over);
    }

    fn insert(&self, obj: K, created: bool, over: Option<&str>) {
        let ns = obj.namespace().unwrap_or_default();
        let name = obj.name_any();
        let stored = self
            .stored(&ns, &name)
            .filter(|s| s.meta().uid == obj.meta().uid)
            .and_then(|s| s.meta().resource_version.clone());
        let key = (ns, name);
        let mut entries = self.lock();
        if stored.is_some() && (stored == obj.meta().resource_version || created) {
            // The store already shows this write (or, for a create, the object: this write or
            // a later one).
            entries.remove(&key);
            return;
        }
        // A write over this process's previous write that the store does not show yet extends
        // that chain: the store lags while it shows any version of the chain.
        let chained = match entries.get(&key) {
            Some(FreshEntry::Written {
                obj: previous,
                superseded,
                created,
                ..
            }) if previous.meta().uid == obj.meta().uid => {
                let lagging = match &stored {
                    None => *created,
                    Some(rv) => {
                        superseded.contains(rv)
                            || previous.meta().resource_version.as_ref() == Some(rv)
                    }
                };
                lagging.then(|| {
                    let mut chain = superseded.clone();
                    chain.extend(previous.meta().resource_version.clone());
                    (chain, *created)
                })
            }
            _ => None,
        };
        let moved_past = match (&stored, over) {
            (Some(shown), Some(base)) => shown != base,
            _ => false,
        };
        let (superseded, created) = match chained {
            Some(chain) => chain,
            // The store shows neither the base of this write nor an earlier write of this
            // process: it has this write and a later change.
            None if moved_past => {
                entries.remove(&key);
                return;
            }
            // Updated, but not in the store: deleted meanwhile (never a stand-in for it).
            None if stored.is_none() && !created => {
                entries.remove(&key);
                return;
            }
            None => (stored.iter().cloned().collect(), stored.is_none()),
        };
        entries.insert(
            key,
            FreshEntry::Written {
                obj: Arc::new(obj),
                superseded,
                created,
                at: Instant::now(),
            },
        );
    }

    /// Remembers that an object (`uid`) was deleted or its deletion finished.
    pub fn deleted(&self, ns: &str, name: &str, uid: Option<String>) {
        self.lock().insert(
            (ns.into(), name.into()),
            FreshEntry::Deleted {
                uid,
                at: Instant::now(),
            },
        );
    }

    /// Forgets what this process wrote of an object (its write turned out stale).
    pub fn forget(&self, ns: &str, name: &str) {
        self.lock().remove(&(ns.to_string(), name.to_string()));
    }

    /// The freshest known copy of `ns/name`.
    pub fn get(&self, ns: &str, name: &str) -> Option<Arc<K>> {
        let stored = self.stored(ns, name);
        self.resolve_key((ns.to_string(), name.to_string()), stored)
    }

    /// The freshest known copy of an object the store holds.
    pub fn resolve(&self, stored: Option<Arc<K>>) -> Option<Arc<K>> {
        let s = stored.as_ref()?;
        let key = (s.namespace().unwrap_or_default(), s.name_any());
        self.resolve_key(key, stored)
    }

    fn resolve_key(&self, key: Key, stored: Option<Arc<K>>) -> Option<Arc<K>> {
        let mut entries = self.lock();
        let Some(entry) = entries.get(&key) else {
            return stored;
        };
        let (keep, answer) = match entry {
            FreshEntry::Deleted { uid, at } => match &stored {
                // The same object, still in a lagging store: hidden for a while.
                Some(s) if s.meta().uid == *uid && at.elapsed() <= FRESH_TTL => (true, None),
                // Gone, or a new object under the same name: the store is right.
                _ => (false, stored),
            },
            FreshEntry::Written {
                obj,
                superseded,
                created,
                at,
            } => {
                let fresh = at.elapsed() <= FRESH_TTL;
                match &stored {
                    // Created moments ago: the store will show it soon.
                    None if *created && fresh => (true, Some(obj.clone())),
                    // Not (or no longer) in the store: deleted.
                    None => (false, None),
                    Some(s) if s.meta().uid != obj.meta().uid => (false, stored),
                    // The store still shows a version this write was made over.
                    Some(s)
                        if fresh
                            && s.meta()
                                .resource_version
                                .as_ref()
                                .is_some_and(|rv| superseded.contains(rv)) =>
                    {
                        (true, Some(obj.clone()))
                    }
                    // It moved on: it has this write, or a later one.
                    Some(_) => (false, stored),
                }
            }
        };
        if !keep {
            entries.remove(&key);
        }
        answer
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
/// Keyed by the group's UID: a group deleted and re-created under the same name starts with
/// none. Kept in memory only: after a restart the stores are listed afresh, which shows every
/// Instance created or deleted before the crash.
#[derive(Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Expects an Instance `name` of the group `group_uid` to appear.
    pub fn expect_create(&self, group_uid: &str, name: &str) {
        let mut inner = self.lock();
        let e = inner.entry(group_uid.into()).or_default();
        e.creates.insert(name.into());
        e.since.get_or_insert_with(Instant::now);
    }

    /// Expects an Instance `name` of the group `group_uid` to show its deletion.
    pub fn expect_delete(&self, group_uid: &str, name: &str) {
        let mut inner = self.lock();
        let e = inner.entry(group_uid.into()).or_default();
        e.deletes.insert(name.into());
        e.since.get_or_insert_with(Instant::now);
    }

    /// Drops an expectation whose request failed.
    pub fn forget(&self, group_uid: &str, name: &str) {
        if let Some(e) = self.lock().get_mut(group_uid) {
            e.creates.remove(name);
            e.deletes.remove(name);
        }
    }

    /// Drops every expectation of a group that is gone.
    pub fn forget_group(&self, group_uid: &str) {
        self.lock().remove(group_uid);
    }

    /// Whether the store (given as the group's Instances) shows every expected change;
    /// met expectations are cleared.
    pub fn satisfied(&self, group_uid: &str, members: &[Arc<Instance>]) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.get_mut(group_uid) else {
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
            inner.remove(group_uid);
            return true;
        }
        if e.since.is_some_and(|s| s.elapsed() > EXPECTATION_TTL) {
            tracing::warn!(
                group_uid,
                creates = ?e.creates, deletes = ?e.deletes,
                "expected Instance changes never showed up in the watch; planning anew"
            );
            inner.remove(group_uid);
            return true;
        }
        false
    }
}

/// One moment per object, in memory only (a restarted operator starts with none, so its first
/// reconcile of an object writes whatever is due): the reconcilers use it to pace status
/// writes that only carry observations.
#[derive(Default)]
pub struct Pacer {
    inner: Mutex<HashMap<Key, Instant>>,
}

impl Pacer {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instant>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `at` for `key` (replacing what was there).
    pub fn set(&self, key: &Key, at: Instant) {
        self.lock().insert(key.clone(), at);
    }

    /// The moment recorded for `key`, recording `at` first when there is none.
    pub fn get_or_set(&self, key: &Key, at: Instant) -> Instant {
        *self.lock().entry(key.clone()).or_insert(at)
    }

    /// The moment recorded for `key`.
    pub fn get(&self, key: &Key) -> Option<Instant> {
        self.lock().get(key).copied()
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
    }

    /// How long from `now` until `interval` has passed since the moment of `key`: `None` when
    /// it has (or nothing is recorded).
    pub fn wait(&self, key: &Key, interval: Duration, now: Instant) -> Option<Duration> {
        let since = self.get(key)?;
        let due = since + interval;
        (due > now).then(|| due - now)
    }
}

/// When each object's status was last written and how long the write took, in memory only:
/// the group reconciler holds observation-only writes back for an interval that grows when
/// the API server answers slowly (see [`crate::controller::group::observation_interval`]).
#[derive(Default)]
pub struct WritePace {
    inner: Mutex<HashMap<Key, (Instant, Duration)>>,
}

impl WritePace {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Instant, Duration)>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `key`'s status was written at `at`, in `took`.
    pub fn record(&self, key: &Key, at: Instant, took: Duration) {
        self.lock().insert(key.clone(), (at, took));
    }

    /// How long from `now` until the interval `interval_after(took)` has passed since the last
    /// write of `key`: `None` when it has (or nothing is recorded).
    pub fn wait(
        &self,
        key: &Key,
        interval_after: impl Fn(Duration) -> Duration,
        now: Instant,
    ) -> Option<Duration> {
        let (at, took) = self.lock().get(key).copied()?;
        let due = at + interval_after(took);
        (due > now).then(|| due - now)
    }

    /// Forgets `key`.
    pub fn forget(&self, key: &Key) {
        self.lock().remove(key);
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
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher::Event;

    fn cm(rv: &str, uid: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("x".into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                uid: Some(uid.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A store holding `objects`, with its writer to change it.
    fn store(objects: &[ConfigMap]) -> (Store<ConfigMap>, Writer<ConfigMap>) {
        let mut writer = Writer::<ConfigMap>::default();
        writer.apply_watcher_event(&Event::Init);
        for o in objects {
            writer.apply_watcher_event(&Event::InitApply(o.clone()));
        }
        writer.apply_watcher_event(&Event::InitDone);
        (writer.as_reader(), writer)
    }

    fn rv(obj: Option<Arc<ConfigMap>>) -> Option<String> {
        obj.and_then(|o| o.metadata.resource_version.clone())
    }

    #[test]
    fn a_write_stands_until_the_store_moves_off_the_version_it_was_made_over() {
        let (s, mut w) = store(&[cm("9", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "u"), None);
        assert_eq!(
            rv(fresh.get("ns", "x")).as_deref(),
            Some("10"),
            "store lags"
        );
        // Versions are opaque: any other version than the base means the store moved on.
        w.apply_watcher_event(&Event::Apply(cm("a7", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("a7"));
        // The entry is gone: the store is used from now on.
        w.apply_watcher_event(&Event::Apply(cm("9", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("9"));
    }

    /// The watch delivered a write and a later change before the write's answer was
    /// handled: the answer must not stand in for the newer object (it once pinned a Pod's
    /// creation answer over its Running status, and its Instance stayed Pending).
    #[test]
    fn an_answer_the_store_has_moved_past_is_not_a_stand_in() {
        // A create answered after the store shows the object bound and running.
        let (s, _w) = store(&[cm("12", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember_created(cm("10", "u"));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("12"));
        assert!(fresh.lock().is_empty());
        // A patch made over version 9, answered as 10, after the store shows 11.
        let (s, _w) = store(&[cm("11", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "u"), Some("9"));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("11"));
        assert!(fresh.lock().is_empty());
        // The store still shows the base: the answer stands until it moves.
        let (s, mut w) = store(&[cm("9", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "u"), Some("9"));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("10"));
        // A second write made over the first (the overlay's copy), the store still at 9.
        fresh.remember(cm("11", "u"), Some("10"));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("11"));
        w.apply_watcher_event(&Event::Apply(cm("10", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("11"));
        w.apply_watcher_event(&Event::Apply(cm("12", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("12"));
    }

    #[test]
    fn chained_writes_stand_until_the_store_shows_the_last() {
        let (s, mut w) = store(&[cm("5", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("6", "u"), None);
        // A second write computed from the first, before the store showed either.
        fresh.remember(cm("7", "u"), None);
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("7"));
        // The store shows the first write: still behind the second.
        w.apply_watcher_event(&Event::Apply(cm("6", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("7"));
        w.apply_watcher_event(&Event::Apply(cm("7", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("7"));
        assert!(fresh.lock().is_empty(), "caught up: no entry left");
        // Someone else's write after ours: the store wins at once.
        fresh.remember(cm("8", "u"), None);
        w.apply_watcher_event(&Event::Apply(cm("9", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("9"));
    }

    #[test]
    fn a_create_followed_by_a_write_stands_until_the_store_shows_it() {
        let (s, mut w) = store(&[]);
        let fresh = Fresh::new(s);
        fresh.remember_created(cm("1", "u"));
        fresh.remember(cm("2", "u"), None);
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("2"));
        w.apply_watcher_event(&Event::Apply(cm("1", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("2"));
        w.apply_watcher_event(&Event::Apply(cm("2", "u")));
        assert_eq!(rv(fresh.get("ns", "x")).as_deref(), Some("2"));
    }

    /// An out-of-band delete: the operator's own delete of the Pod answers with the Pod
    /// still terminating, after the store already dropped it. It must not come back as a
    /// stand-in (it once did, for a minute, holding an Instance in Terminating:Proceed).
    #[test]
    fn an_update_answer_for_an_object_the_store_dropped_is_not_a_stand_in() {
        let (s, _w) = store(&[]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "u"), None);
        assert!(fresh.get("ns", "x").is_none());
        assert!(fresh.lock().is_empty());
    }

    #[test]
    fn a_write_the_store_already_shows_leaves_no_entry() {
        let (s, _w) = store(&[cm("10", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "u"), None);
        assert!(fresh.lock().is_empty());
    }

    #[test]
    fn a_new_object_under_the_same_name_is_never_shadowed() {
        let (s, mut w) = store(&[cm("9", "old")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("10", "old"), None);
        w.apply_watcher_event(&Event::Delete(cm("9", "old")));
        w.apply_watcher_event(&Event::Apply(cm("3", "new")));
        let got = fresh.get("ns", "x").unwrap();
        assert_eq!(got.metadata.uid.as_deref(), Some("new"));
    }

    #[test]
    fn a_deletion_hides_only_the_deleted_object() {
        let (s, mut w) = store(&[cm("5", "old")]);
        let fresh = Fresh::new(s);
        fresh.deleted("ns", "x", Some("old".into()));
        assert!(fresh.get("ns", "x").is_none(), "the lagging copy is hidden");
        // Deleted and re-created under the same name (kubectl delete && kubectl apply):
        // the new object is served at once.
        w.apply_watcher_event(&Event::Delete(cm("5", "old")));
        w.apply_watcher_event(&Event::Apply(cm("8", "new")));
        assert_eq!(
            fresh.get("ns", "x").unwrap().metadata.uid.as_deref(),
            Some("new")
        );
    }

    #[test]
    fn a_deletion_seen_before_the_store_lists_the_new_object_does_not_hide_it() {
        let (s, mut w) = store(&[]);
        let fresh = Fresh::new(s);
        fresh.deleted("ns", "x", Some("old".into()));
        assert!(fresh.get("ns", "x").is_none());
        w.apply_watcher_event(&Event::Apply(cm("8", "new")));
        assert!(fresh.get("ns", "x").is_some());
    }

    #[test]
    fn a_create_stands_in_until_the_store_shows_it_and_updates_do_not_resurrect() {
        let (s, mut w) = store(&[]);
        let fresh = Fresh::new(s);
        fresh.remember_created(cm("10", "u"));
        assert!(
            fresh.get("ns", "x").is_some(),
            "just created: not yet in the store"
        );
        w.apply_watcher_event(&Event::Apply(cm("10", "u")));
        assert!(fresh.get("ns", "x").is_some());
        w.apply_watcher_event(&Event::Delete(cm("10", "u")));
        assert!(fresh.get("ns", "x").is_none());
        // An update of an object the store had: once the store drops it, it is gone.
        let (s, mut w) = store(&[cm("1", "u")]);
        let fresh = Fresh::new(s);
        fresh.remember(cm("2", "u"), None);
        w.apply_watcher_event(&Event::Delete(cm("1", "u")));
        assert!(fresh.get("ns", "x").is_none(), "gone from the store: gone");
    }

    #[test]
    fn expectations_are_per_group_uid() {
        let e = Expectations::default();
        e.expect_create("uid-1", "web-aaaaa");
        assert!(!e.satisfied("uid-1", &[]));
        // The same group name re-created: a new UID, no inherited expectations.
        assert!(e.satisfied("uid-2", &[]));
        e.forget_group("uid-1");
        assert!(e.satisfied("uid-1", &[]));
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
