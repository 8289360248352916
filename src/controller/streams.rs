//! One watch per kind, shared: a reflector store plus a fan-out of every changed object
//! (applied or deleted) to several controllers' trigger streams.
//!
//! kube's shared streams (`reflect_shared`) do not pass deletions on; controllers here need
//! them (an Instance deleted → its group reconciles; a Pod gone → its Instance proceeds), so
//! the fan-out is done here, after the reflector has updated the store.

use std::fmt::Debug;
use std::hash::Hash;

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// A trigger stream as the kube `Controller` takes it.
pub type Trigger<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Watches `api`: returns the store, `subscribers` trigger streams that each receive every
/// applied or deleted object, and the future that drives the watch (spawn it).
pub fn fan_out<K>(
    api: Api<K>,
    config: watcher::Config,
    subscribers: usize,
) -> (Store<K>, Vec<Trigger<K>>, BoxFuture<'static, ()>)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..subscribers)
        .map(|_| futures::channel::mpsc::unbounded::<K>())
        .unzip();
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let driver = async move {
        let stream = watcher(api, config)
            .default_backoff()
            .modify(|obj: &mut K| {
                // Nobody here reads managedFields: don't keep them in memory.
                obj.managed_fields_mut().clear();
            })
            .reflect(writer);
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(
                    watcher::Event::Apply(obj)
                    | watcher::Event::InitApply(obj)
                    | watcher::Event::Delete(obj),
                ) => {
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
    let triggers = receivers.into_iter().map(|rx| rx.map(Ok).boxed()).collect();
    (reader, triggers, driver)
}
