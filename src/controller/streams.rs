//! One watch per kind, shared: a reflector store plus a fan-out of every changed object
//! (applied or deleted) to several controllers' trigger streams. Each change is sent as one
//! `Arc` that every subscriber shares: no subscriber gets a copy of its own.
//!
//! kube's shared streams (`reflect_shared`) do not pass deletions on; controllers here need
//! them (an Instance deleted → its group reconciles; a Pod gone → its Instance proceeds), so
//! the fan-out is done here, after the reflector has updated the store. The same loop keeps
//! each [`Index`] of the kind in step with its store.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::{Instance, LifecycleState, PodTemplate};

/// The key an [`Index`] groups objects by: (namespace, a name derived from the object).
pub type Key = (String, String);

/// A trigger stream as the kube `Controller` takes it (its `*_shared_stream` methods).
pub type Trigger<K> = BoxStream<'static, Arc<K>>;

/// Watches `api`: returns the store, `subscribers` trigger streams that each receive every
/// applied or deleted object, and the future that drives the watch (spawn it). The watch
/// keeps each of `indexes` in step with the store, and passes every object through `trim`
/// (what the operator never reads need not be held in memory) before anything sees it.
pub fn fan_out<K>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
    indexes: Vec<Index<K>>,
    trim: fn(&mut K),
) -> (Store<K>, Vec<Trigger<K>>, BoxFuture<'static, ()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| futures::channel::mpsc::unbounded::<Arc<K>>())
        .unzip();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let store = reader.clone();
    let driver = async move {
        let before_store = indexes.clone();
        let stream = watcher(api, config)
            .default_backoff()
            .modify(move |obj: &mut K| {
                // Nobody here reads managedFields: don't keep them in memory.
                obj.managed_fields_mut().clear();
                trim(obj);
            })
            .map(move |event| {
                if let Ok(event) = &event {
                    for index in &before_store {
                        index.before_store(event);
                    }
                }
                event
            })
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Ok(event) = &event {
                for index in &indexes {
                    index.after_store(event, &store);
                }
            }
            match event {
                Ok(
                    watcher::Event::Apply(obj)
                    | watcher::Event::InitApply(obj)
                    | watcher::Event::Delete(obj),
                ) => {
                    // Moved, not copied: the store keeps a copy of its own, and the
                    // subscribers only read this one (mostly for its reference).
                    let obj = Arc::new(obj);
                    for tx in &senders {
                        let _ = tx.unbounded_send(obj.clone());
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(kind = %kind, "watch failed (retrying): {e}"),
            }
        }
        tracing::error!(kind = %kind, "watch ended");
    }
    .boxed();
    let triggers = receivers.into_iter().map(StreamExt::boxed).collect();
    (reader, triggers, driver)
}

/// Keeps nothing out: for kinds whose whole object the operator reads.
pub fn keep_all<K>(_: &mut K) {}

/// What the operator keeps of a watched Instance: all of it, except the Pod template of an
/// Instance past `Pending` (`Pending:Wait` included). The template is read only to create the
/// Pod, which happens in `Pending` alone; after that it is most of an Instance's size (a
/// container is 2 KB in memory before its strings). A copy that still says `Pending`, or has
/// no state yet, keeps it whole; the one step that creates a Pod from a later state (a restart
/// whose Pod is already gone) reads the Instance from the API server first.
pub fn trim_instance(inst: &mut Instance) {
    let launched = inst
        .status
        .as_ref()
        .and_then(|s| s.lifecycle_state)
        .is_some_and(|s| !matches!(s, LifecycleState::Pending | LifecycleState::PendingWait));
    if launched {
        inst.spec.pod_template = PodTemplate::default();
    }
}

/// The objects of one kind grouped by a key computed from each (e.g. Instances by their
/// group), maintained by [`fan_out`] beside the store, so that a reconcile finds a group's
/// members without scanning every object.
///
/// The store stays the truth: [`Index::lookup`] reads each indexed reference back from the
/// store and keeps the objects whose key still matches. The index therefore may hold a
/// reference the store has dropped (it is skipped), and never misses one the store holds
/// under the key it was indexed by: a new or changed object is indexed before the store shows
/// it, a deleted one is unindexed after, and a relist rebuilds the index from the store it
/// left. An object whose key changes moves to its new key at once, while the store may still
/// show it under the old one for the event (or, in a relist, until it ends); an Instance's
/// group never changes (its `groupName` is immutable), so its index has no such window.
pub struct Index<K: Resource> {
    key_of: fn(&K) -> Option<Key>,
    entries: Arc<RwLock<IndexEntries<K>>>,
}

impl<K: Resource> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            key_of: self.key_of,
            entries: self.entries.clone(),
        }
    }
}

struct IndexEntries<K: Resource> {
    by_key: HashMap<Key, HashSet<ObjectRef<K>>>,
    key_by_ref: HashMap<ObjectRef<K>, Key>,
}

impl<K: Resource> Default for IndexEntries<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            key_by_ref: HashMap::new(),
        }
    }
}

impl<K: Resource> IndexEntries<K>
where
    K::DynamicType: Default + Eq + Hash + Clone,
{
    fn insert(&mut self, object: ObjectRef<K>, key: Option<Key>) {
        let old = match &key {
            Some(key) => self.key_by_ref.insert(object.clone(), key.clone()),
            None => self.key_by_ref.remove(&object),
        };
        if old == key {
            return;
        }
        if let Some(old) = old {
            self.unlist(&object, &old);
        }
        if let Some(key) = key {
            self.by_key.entry(key).or_default().insert(object);
        }
    }

    fn remove(&mut self, object: &ObjectRef<K>) {
        if let Some(old) = self.key_by_ref.remove(object) {
            self.unlist(object, &old);
        }
    }

    fn unlist(&mut self, object: &ObjectRef<K>, key: &Key) {
        if let Some(listed) = self.by_key.get_mut(key) {
            listed.remove(object);
            if listed.is_empty() {
                self.by_key.remove(key);
            }
        }
    }
}

impl<K> Index<K>
where
    K: Resource + Clone,
    K::DynamicType: Default + Eq + Hash + Clone,
{
    /// An empty index keyed by `key_of` (`None`: the object is not indexed).
    pub fn new(key_of: fn(&K) -> Option<Key>) -> Self {
        Self {
            key_of,
            entries: Arc::default(),
        }
    }

    /// An index keyed by `key_of` holding what `store` holds now (for tests and tools; a
    /// watched index is kept by [`fan_out`]).
    pub fn of_store(key_of: fn(&K) -> Option<Key>, store: &Store<K>) -> Self {
        let index = Self::new(key_of);
        index.rebuild(store);
        index
    }

    /// The objects of the store under `key`.
    pub fn lookup(&self, key: &Key, store: &Store<K>) -> Vec<Arc<K>> {
        let listed: Vec<ObjectRef<K>> = {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            match entries.by_key.get(key) {
                Some(listed) => listed.iter().cloned().collect(),
                None => return Vec::new(),
            }
        };
        listed
            .iter()
            .filter_map(|object| store.get(object))
            .filter(|obj| (self.key_of)(obj).as_ref() == Some(key))
            .collect()
    }

    /// Before the store takes `event`: index what it adds or changes.
    fn before_store(&self, event: &watcher::Event<K>) {
        if let watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) = event {
            let key = (self.key_of)(obj);
            let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
            entries.insert(bare_ref(obj), key);
        }
    }

    /// After the store took `event`: unindex what it deleted; after a relist, index exactly
    /// what the store holds.
    fn after_store(&self, event: &watcher::Event<K>, store: &Store<K>) {
        match event {
            watcher::Event::Delete(obj) => {
                let object = bare_ref(obj);
                if store.get(&object).is_none() {
                    let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
                    entries.remove(&object);
                }
            }
            watcher::Event::InitDone => self.rebuild(store),
            _ => {}
        }
    }

    fn rebuild(&self, store: &Store<K>) {
        let mut fresh = IndexEntries::default();
        for obj in store.state() {
            fresh.insert(bare_ref(obj.as_ref()), (self.key_of)(&obj));
        }
        *self.entries.write().unwrap_or_else(|e| e.into_inner()) = fresh;
    }
}

/// A reference by namespace and name alone. The index keeps two per object, and a reference
/// made by `ObjectRef::from_obj` also holds the resourceVersion and UID, which neither the
/// index nor the store's lookup compares (two more strings per reference, ≈ 160 bytes per
/// indexed object).
fn bare_ref<K>(obj: &K) -> ObjectRef<K>
where
    K: Resource,
    K::DynamicType: Default,
{
    let object = ObjectRef::new(obj.meta().name.as_deref().unwrap_or_default());
    match obj.meta().namespace.as_deref() {
        Some(ns) => object.within(ns),
        None => object,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::runtime::reflector::store::Writer;
    use proptest::prelude::*;

    use super::*;

    fn group_label(cm: &ConfigMap) -> Option<Key> {
        Some((cm.namespace()?, cm.labels().get("group")?.clone()))
    }

    fn cm(name: u8, group: Option<u8>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("cm-{name}")),
                namespace: Some("ns".into()),
                labels: group.map(|g| [("group".to_string(), format!("g{g}"))].into()),
                // The store's references carry these; the index's do not.
                uid: Some(format!("uid-{name}")),
                resource_version: Some(format!(
                    "{}",
                    u16::from(name) * 10 + u16::from(group.unwrap_or(9))
                )),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    /// What happens to the watched kind.
    #[derive(Debug, Clone)]
    enum Change {
        /// Created or changed (group `None`: not indexed).
        Apply(u8, Option<u8>),
        /// Deleted, if it exists.
        Delete(u8),
        /// The watch lists again, having missed the deletion of these (a watch gap).
        Relist(Vec<u8>),
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            4 => (0..8u8, proptest::option::of(0..3u8)).prop_map(|(n, g)| Change::Apply(n, g)),
            2 => (0..8u8).prop_map(Change::Delete),
            1 => proptest::collection::vec(0..8u8, 0..3).prop_map(Change::Relist),
        ]
    }

    /// Feeds `event` as the watch loop does: index, store, index.
    fn feed(
        index: &Index<ConfigMap>,
        writer: &mut Writer<ConfigMap>,
        event: watcher::Event<ConfigMap>,
    ) {
        index.before_store(&event);
        writer.apply_watcher_event(&event);
        index.after_store(&event, &writer.as_reader());
    }

    fn names(objects: Vec<Arc<ConfigMap>>) -> BTreeSet<String> {
        objects.iter().map(|o| o.name_any()).collect()
    }

    fn by_scan(store: &Store<ConfigMap>, key: &Key) -> BTreeSet<String> {
        names(
            store
                .state()
                .into_iter()
                .filter(|o| group_label(o).as_ref() == Some(key))
                .collect(),
        )
    }

    proptest! {
        /// Whatever the watch delivers, a lookup finds exactly what a scan of the store finds,
        /// and while an event is on its way into the store the lookup still finds every
        /// object the store holds under that key and that the event does not move.
        #[test]
        fn a_lookup_finds_what_a_scan_of_the_store_finds(changes in proptest::collection::vec(change(), 1..40)) {
            let mut writer = Writer::<ConfigMap>::default();
            let store = writer.as_reader();
            let index = Index::new(group_label);
            feed(&index, &mut writer, watcher::Event::Init);
            feed(&index, &mut writer, watcher::Event::InitDone);
            let mut truth: BTreeMap<u8, Option<u8>> = BTreeMap::new();
            let keys: Vec<Key> = (0..3).map(|g| ("ns".to_string(), format!("g{g}"))).collect();
            for change in changes {
                let events = match change {
                    Change::Apply(n, g) => {
                        truth.insert(n, g);
                        vec![watcher::Event::Apply(cm(n, g))]
                    }
                    Change::Delete(n) => match truth.remove(&n) {
                        Some(g) => vec![watcher::Event::Delete(cm(n, g))],
                        None => vec![],
                    },
                    Change::Relist(missed) => {
                        for n in missed {
                            truth.remove(&n);
                        }
                        let mut events = vec![watcher::Event::Init];
                        events.extend(truth.iter().map(|(n, g)| watcher::Event::InitApply(cm(*n, *g))));
                        events.push(watcher::Event::InitDone);
                        events
                    }
                };
                for event in events {
                    let moved: Option<String> = match &event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => Some(o.name_any()),
                        _ => None,
                    };
                    let before: Vec<BTreeSet<String>> = keys.iter().map(|k| by_scan(&store, k)).collect();
                    index.before_store(&event);
                    for (key, held) in keys.iter().zip(&before) {
                        let found = names(index.lookup(key, &store));
                        for name in held {
                            prop_assert!(
                                found.contains(name) || moved.as_ref() == Some(name),
                                "{name} under {key:?} is missed while {event:?} is on its way"
                            );
                        }
                    }
                    writer.apply_watcher_event(&event);
                    index.after_store(&event, &store);
                    for key in &keys {
                        prop_assert_eq!(names(index.lookup(key, &store)), by_scan(&store, key));
                    }
                }
            }
            // Nothing is kept of objects that are gone.
            let entries = index.entries.read().unwrap();
            let indexed: usize = entries.by_key.values().map(HashSet::len).sum();
            prop_assert_eq!(indexed, truth.values().filter(|g| g.is_some()).count());
            prop_assert_eq!(entries.key_by_ref.len(), indexed);
            for object in entries.key_by_ref.keys().chain(entries.by_key.values().flatten()) {
                prop_assert!(object.extra.uid.is_none() && object.extra.resource_version.is_none());
            }
        }
    }

    fn instance_in(state: Option<LifecycleState>) -> Instance {
        let template: k8s_openapi::api::core::v1::PodTemplateSpec =
            serde_json::from_value(serde_json::json!({
                "metadata": { "labels": { "app": "web" } },
                "spec": { "containers": [{ "name": "web", "image": "nginx" }] }
            }))
            .unwrap();
        let mut inst = Instance::new(
            "web-abcde",
            crate::api::InstanceSpec {
                group_name: "web".into(),
                protected_from_scale_in: false,
                pod_template: PodTemplate::new(template),
            },
        );
        inst.status = state.map(|s| crate::api::InstanceStatus {
            lifecycle_state: Some(s),
            ..Default::default()
        });
        inst
    }

    #[test]
    fn an_instance_keeps_its_template_until_its_pod_is_created() {
        use LifecycleState::*;
        for state in [None, Some(Pending), Some(PendingWait)] {
            let mut inst = instance_in(state);
            trim_instance(&mut inst);
            assert_eq!(
                serde_json::to_value(&inst).unwrap(),
                serde_json::to_value(instance_in(state)).unwrap(),
                "{state:?}"
            );
        }
        for state in [
            InService,
            Standby,
            Terminating,
            TerminatingWait,
            TerminatingProceed,
            Terminated,
        ] {
            let mut inst = instance_in(Some(state));
            trim_instance(&mut inst);
            assert_eq!(inst.spec.pod_template, PodTemplate::default(), "{state:?}");
            let mut whole = instance_in(Some(state));
            whole.spec.pod_template = PodTemplate::default();
            assert_eq!(
                serde_json::to_value(&inst).unwrap(),
                serde_json::to_value(&whole).unwrap(),
                "{state:?}: only the template goes"
            );
        }
    }

    #[test]
    fn an_instance_without_its_template_is_small_in_memory() {
        // The store holds one Instance per Pod; most of them have had their template dropped.
        // Inline, a PodTemplateSpec alone is 1.8 KB (see `PodTemplate`); left out, it takes
        // nothing besides a null pointer.
        assert!(
            std::mem::size_of::<Instance>() <= 1024,
            "an Instance is {} bytes inline",
            std::mem::size_of::<Instance>()
        );
        let mut inst = instance_in(Some(LifecycleState::InService));
        trim_instance(&mut inst);
        assert!(inst.spec.pod_template.is_left_out());
        assert!(inst.spec.pod_template.spec.is_none(), "reads as empty");
    }
}
