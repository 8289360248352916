//! The operator's thin I/O shell: watches feeding reflector stores, the ScalingGroup and
//! Instance controllers (kube-runtime `Controller`), status writes, Events, gated by a leader
//! Lease. Decisions are made by the pure planners in [`crate::plan`] and [`crate::health`].
//!
//! - [`group`]: keeps capacity (launches Instances, terminates on scale-in by deleting the
//!   Instance) and writes ScalingGroup status. Only it writes ScalingGroup status.
//! - [`instance`]: walks each Instance's lifecycle, creates and drains its Pod, evaluates its
//!   health, and writes Instance status. Only it writes Instance status.

pub mod client;
pub mod context;
pub mod error;
pub mod events;
pub mod group;
pub mod instance;
pub mod leader;
pub mod preflight;
pub mod streams;

pub use context::{FIELD_MANAGER, RESYNC};

#[cfg(test)]
mod tests;

use crate::api::WatchedPod;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::admin::{AdminServer, AdminState};
use crate::api::{HealthStatus, Instance, LABEL_GROUP, LifecycleState, ScalingGroup};
use crate::clock::{Clock, SystemClock};
use crate::health::ProbeEngine;
use crate::telemetry::{GroupCondition, GroupGauges, Metrics};

use client::ClientOptions;
use context::{Context, Settings};
use events::EventSink;
use leader::LeaderConfig;

/// The User-Agent of the operator's requests (tells its writes apart in audit logs).
pub const USER_AGENT: &str = concat!("autoheal/", env!("CARGO_PKG_VERSION"));

/// Settings of `autoheal run`.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Watch only this namespace (`None`: all namespaces).
    pub namespace: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub admin_addr: SocketAddr,
    /// Leader election, or `None` to run unconditionally.
    pub leader: Option<LeaderConfig>,
    /// Tunables of the reconcilers.
    pub settings: Settings,
    /// The client-side rate limit of requests to the API server.
    pub client: ClientOptions,
}

/// A client from the usual kubeconfig resolution, with the operator's User-Agent and the
/// rate limit of `options`, checked before use (see [`preflight`]): the API server answers,
/// RBAC grants what the operator needs in `scope`, the CRDs are installed.
pub async fn checked_client(
    options: ClientOptions,
    scope: preflight::Scope<'_>,
) -> anyhow::Result<Client> {
    let config = client::config().await?;
    let server = config.cluster_url.to_string();
    let client = client::build(config, options)?;
    preflight::check(&client, server.trim_end_matches('/'), scope).await?;
    Ok(client)
}

/// How long a graceful shutdown waits for in-flight reconciles before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long a reconcile waits for more changes of the same object before it starts
/// (kube-runtime's trailing debounce): none. Every step of a replacement is one hop through
/// a watch and a reconcile, and each hop paid it: with 20 ms, replacing 1 of 100 on a verdict
/// took 1.26 s, without it 1.12 s (`make bench` scenario 2, medians of 5), with the same
/// writes within a few. Folding a burst of watch events is not needed for writes: a reconcile
/// that finds nothing new writes nothing, an Instance's observation alone waits for
/// [`instance::OBSERVATION_DELAY`] and a group's for [`group::observation_interval`].
/// Requests for an object already queued are still merged, and one object is never
/// reconciled twice at once.
/// Nor is it needed to see a correlated failure whole: probe verdicts and Node failures, and
/// their recoveries, arrive one by one and settle in the breaker (`plan::replacement::breaker`)
/// by rule, not by timing. Failures known the moment they happen (a Pod gone or exited, an
/// `autoheal.dev/health` mark) are counted as they arrive, as before: a debounce only folded
/// the ones that came within 20 ms of each other.
pub const RECONCILE_DEBOUNCE: Duration = Duration::ZERO;

/// How many Instance reconciles run at once (kube-controller-manager runs 5 ReplicaSet syncs
/// at once). Bounded so that a burst (a scale-up of 300) does not put hundreds of requests
/// in the API server's queue at once, in front of the kubelets' and the scheduler's: the
/// Pods the reconciles create are started sooner, and so the Instances go in service sooner.
pub const INSTANCE_WORKERS: u16 = 16;

/// How long a graceful shutdown waits, after the reconciles, for queued Events to be written.
pub const EVENT_FLUSH_GRACE: Duration = Duration::from_secs(5);

/// Runs the operator until SIGINT/SIGTERM (Ok) or until leadership is lost (Err: the process
/// exits and a fresh one competes again).
///
/// On SIGTERM the controllers stop taking new work, the reconciles in flight finish (each
/// step is recorded in status before it is taken, so none is left half done), and only then
/// is the leader Lease released, so a follower takes over at once.
pub async fn run(config: RunConfig) -> anyhow::Result<()> {
    let scope = preflight::Scope {
        namespace: config.namespace.as_deref(),
        lease_namespace: config.leader.as_ref().map(|l| l.namespace.as_str()),
    };
    let client = checked_client(config.client, scope).await?;
    let metrics = Metrics::new();
    let admin = AdminState::new(metrics.clone());
    let server = AdminServer::bind(config.admin_addr, admin.clone()).await?;
    let admin_task = tokio::spawn(server.run());
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let (stop, stopping) = tokio::sync::watch::channel(false);

    let result = match &config.leader {
        None => {
            let controllers =
                run_controllers(client, &config, metrics, admin, "autoheal", stopping);
            tokio::pin!(controllers);
            tokio::select! {
                r = &mut controllers => r,
                _ = &mut shutdown => drain(&stop, controllers).await,
            }
        }
        Some(leader_config) => {
            let mut election = leader::elect(client.clone(), leader_config).await?;
            tracing::info!(
                lease = %format!("{}/{}", leader_config.namespace, leader_config.name),
                identity = %leader_config.identity,
                "waiting for the leader lease"
            );
            let outcome = tokio::select! {
                r = leader::became_leader(&mut election.changes) => r.map(|_| true),
                _ = &mut shutdown => Ok(false),
            };
            if outcome? {
                tracing::info!(identity = %leader_config.identity, "leading: starting controllers");
                let controllers = run_controllers(
                    client,
                    &config,
                    metrics,
                    admin,
                    &leader_config.identity,
                    stopping,
                );
                tokio::pin!(controllers);
                let result = tokio::select! {
                    r = &mut controllers => r,
                    _ = leader::lost_leadership(&mut election.changes) => {
                        Err(anyhow::anyhow!("lost the leader lease; exiting"))
                    }
                    _ = &mut shutdown => drain(&stop, controllers).await,
                };
                // Dropping the receiver releases the lease (when still held).
                drop(election.changes);
                let _ = tokio::time::timeout(Duration::from_secs(5), election.task).await;
                result
            } else {
                Ok(())
            }
        }
    };
    admin_task.abort();
    result
}

/// Asks the controllers to stop and waits (at most [`SHUTDOWN_GRACE`]) for the reconciles in
/// flight to finish.
async fn drain(
    stop: &tokio::sync::watch::Sender<bool>,
    controllers: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let _ = stop.send(true);
    match tokio::time::timeout(SHUTDOWN_GRACE, controllers).await {
        Ok(result) => {
            tracing::info!("in-flight reconciles finished");
            result
        }
        Err(_) => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running at shutdown; leaving them");
            Ok(())
        }
    }
}

/// Resolves once `stopping` turns true (or its sender is gone).
// Not an `async fn`: kube-runtime needs the future to be `Sync`, which the signature states.
#[allow(clippy::manual_async_fn)]
fn stopped(
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    async move {
        let _ = stopping.wait_for(|s| *s).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down");
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn take<K>(triggers: &mut Vec<streams::Trigger<K>>) -> streams::Trigger<K> {
    triggers.pop().expect("one trigger per subscriber")
}

/// What of a ScalingGroup its Instances depend on: identity, the spec fields the Instance
/// reconciler reads (health check, lifecycle hooks, deregistration delay, suspended
/// processes), annotations and deletion. A template, capacity or refresh change alone wakes
/// no Instance (a refresh of 50 would otherwise start behind 50 needless reconciles).
#[derive(Debug, Clone, PartialEq)]
struct GroupSignature {
    uid: Option<String>,
    instance_facing: serde_json::Value,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    deleting: bool,
}

impl GroupSignature {
    fn of(group: &ScalingGroup) -> Self {
        let spec = &group.spec;
        Self {
            uid: group.metadata.uid.clone(),
            instance_facing: serde_json::json!([
                spec.health_check,
                spec.lifecycle_hooks,
                spec.replacement.deregistration_delay_seconds,
                spec.suspended_processes,
            ]),
            annotations: group.metadata.annotations.clone(),
            deleting: group.metadata.deletion_timestamp.is_some(),
        }
    }
}

/// What `/metrics` exports of a ScalingGroup (its status conditions and failure count).
fn group_gauges(group: &ScalingGroup) -> GroupGauges {
    let status = group.status.clone().unwrap_or_default();
    GroupGauges {
        namespace: group.namespace().unwrap_or_default(),
        name: group.name_any(),
        conditions: status
            .conditions
            .iter()
            .map(|c| GroupCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
            })
            .collect(),
        consecutive_replacement_failures: i64::from(status.consecutive_replacement_failures),
        would_repair: status.would_repair.len() as i64,
    }
}

fn node_ready(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

/// Watches, waits for the stores, then runs both controllers until they end.
async fn run_controllers(
    client: Client,
    config: &RunConfig,
    metrics: Metrics,
    admin: AdminState,
    identity: &str,
    stopping: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let ns = config.namespace.as_deref();
    let (groups, mut group_triggers, group_watch) = streams::fan_out(
        api::<ScalingGroup>(&client, ns),
        watcher::Config::default(),
        2,
        Vec::new(),
        streams::keep_all,
    );
    let instances_by_group = streams::Index::new(context::group_of_instance);
    let (instances, mut instance_triggers, instance_watch) = streams::fan_out(
        api::<Instance>(&client, ns),
        watcher::Config::default(),
        2,
        vec![instances_by_group.clone()],
        streams::trim_instance,
    );
    let (pods, mut pod_triggers, pod_watch) = streams::fan_out(
        api::<WatchedPod>(&client, ns),
        watcher::Config::default().labels(LABEL_GROUP),
        1,
        Vec::new(),
        WatchedPod::drop_unread,
    );
    let (nodes, mut node_triggers, node_watch) = streams::fan_out(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        1,
        Vec::new(),
        streams::keep_all,
    );
    let (revisions, _, revision_watch) = streams::fan_out(
        api::<ControllerRevision>(&client, ns),
        watcher::Config::default().labels(LABEL_GROUP),
        0,
        Vec::new(),
        streams::keep_all,
    );
    let mut watches = tokio::task::JoinSet::new();
    for w in [
        group_watch,
        instance_watch,
        pod_watch,
        node_watch,
        revision_watch,
    ] {
        watches.spawn(w);
    }

    let wait_stores = async {
        groups.wait_until_ready().await?;
        instances.wait_until_ready().await?;
        pods.wait_until_ready().await?;
        revisions.wait_until_ready().await?;
        nodes.wait_until_ready().await
    };
    tokio::time::timeout(Duration::from_secs(120), wait_stores)
        .await
        .map_err(|_| anyhow::anyhow!("the watches did not list ScalingGroups, Instances, Pods and Nodes within 120s (are the CRDs installed and RBAC granted?)"))??;
    tracing::info!(
        groups = groups.len(),
        instances = instances.len(),
        pods = pods.len(),
        nodes = nodes.len(),
        "caches synced"
    );
    admin.set_ready(true);
    // Only a leader (or a process without election) gets here.
    metrics.set_leader(true);
    let error_kinds = error::ErrorKind::ALL.map(error::ErrorKind::as_str);
    for controller in [group::CONTROLLER, instance::CONTROLLER] {
        metrics.init_controller(controller, &error_kinds);
    }

    let probes = ProbeEngine::start(metrics.clone());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            groups.clone(),
            instances.clone(),
            instances_by_group,
            pods,
            nodes,
            probes.clone(),
            metrics.clone(),
            EventSink::new(client.clone(), identity, clock.clone()),
            clock,
            config.settings,
        )
        .with_revisions(revisions),
    );

    let controller_config = ControllerConfig::default().debounce(RECONCILE_DEBOUNCE);
    let groups_for_gauges = groups.clone();

    let group_controller = Controller::for_shared_stream(take(&mut group_triggers), groups)
        .with_config(controller_config.clone())
        .owns_shared_stream(take(&mut instance_triggers))
        .graceful_shutdown_on(stopped(stopping.clone()))
        .run(group::reconcile, group::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let group_ctx = ctx.clone();
    let node_ctx = ctx.clone();
    let mut node_ready_seen: HashMap<String, Option<String>> = HashMap::new();
    let node_changes = take(&mut node_triggers).filter(move |node| {
        // Heartbeats update Nodes every few seconds: only a change of readiness matters.
        let ready = node_ready(node);
        let keep = node_ready_seen.insert(node.name_any(), ready.clone()) != Some(ready);
        futures::future::ready(keep)
    });
    // The group writes its status on most Instance changes; Instances depend only on the
    // group's spec, annotations and deletion, so status-only changes are not passed on.
    let mut group_seen: HashMap<(String, String), GroupSignature> = HashMap::new();
    let group_changes = take(&mut group_triggers).filter(move |group| {
        let key = (group.namespace().unwrap_or_default(), group.name_any());
        let signature = GroupSignature::of(group);
        let keep = group_seen.insert(key, signature.clone()) != Some(signature);
        futures::future::ready(keep)
    });
    let probe_changes = probes
        .changes()
        .map(|(ns, name)| ObjectRef::<Instance>::new(&name).within(&ns));
    let instance_controller =
        Controller::for_shared_stream(take(&mut instance_triggers), instances.clone())
            .with_config(controller_config.concurrency(INSTANCE_WORKERS))
            .owns_shared_stream(take(&mut pod_triggers))
            .watches_shared_stream(group_changes, move |g: Arc<ScalingGroup>| {
                instance::instances_of_group(&group_ctx, &g)
            })
            .watches_shared_stream(node_changes, move |n: Arc<Node>| {
                instance::instances_on_node(&node_ctx, &n)
            })
            .reconcile_on(probe_changes)
            .graceful_shutdown_on(stopped(stopping.clone()))
            .run(instance::reconcile, instance::error_policy, ctx.clone())
            .for_each(|_| futures::future::ready(()));

    let gauge_metrics = metrics.clone();
    let group_store = groups_for_gauges;
    let gauge = async move {
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            // Counted by (state, health) without copying any status: this runs over every
            // Instance every tick.
            let mut counts: HashMap<(Option<LifecycleState>, Option<HealthStatus>), i64> =
                HashMap::new();
            for i in instances.state() {
                let status = i.status.as_ref();
                let state = status.and_then(|s| s.lifecycle_state);
                let health = status.and_then(|s| s.health_status);
                *counts.entry((state, health)).or_default() += 1;
            }
            let labelled: Vec<((&str, String), i64)> = counts
                .into_iter()
                .map(|((s, h), n)| {
                    let state = s.map_or("Unknown", LifecycleState::as_str);
                    let health = h.map_or("Unknown".to_string(), |h| format!("{h:?}"));
                    ((state, health), n)
                })
                .collect();
            gauge_metrics.set_instances(labelled.iter().map(|((s, h), n)| ((*s, h.as_str()), *n)));
            gauge_metrics.set_groups(group_store.state().iter().map(|g| group_gauges(g)));
        }
    };

    // Both controllers end together on a graceful shutdown (after their reconciles in flight).
    let controllers = futures::future::join(group_controller, instance_controller);
    tokio::select! {
        _ = controllers => {
            if *stopping.borrow() {
                admin.set_ready(false);
                if !ctx.events.flush(EVENT_FLUSH_GRACE).await {
                    tracing::warn!(grace = ?EVENT_FLUSH_GRACE, "Events still unwritten at shutdown");
                }
                metrics.set_leader(false);
                return Ok(());
            }
            tracing::error!("the controllers stopped");
        }
        _ = gauge => {}
        _ = watches.join_next() => tracing::error!("a watch stopped"),
    }
    Err(anyhow::anyhow!("a controller stopped unexpectedly"))
}
