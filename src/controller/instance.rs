//! The Instance reconciler: the only writer of Instance status.
//!
//! Each reconcile reads the Instance, its group, Pod and Node from the stores, asks the pure
//! lifecycle state machine ([`crate::plan::lifecycle::next`]) and the health evaluator
//! ([`crate::health::assess`]) what the status should be, writes the status if it differs
//! (server-side apply), publishes the Events of the change ([`crate::health::events`], the
//! lifecycle notes), and only then takes the step's action on the Pod or the Instance.

use crate::api::WatchedPod;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::conditions::settle;
use crate::api::{
    ANNOTATION_RESTART, ANNOTATION_TERMINATION_REASON, FINALIZER_INSTANCE, HealthCheck,
    HealthStatus, Instance, InstanceStatus, LABEL_GROUP, LABEL_IN_SERVICE, LABEL_INSTANCE,
    LABEL_ZONE, LifecycleState, Process, ScalingGroup,
};
use crate::health::{self, HealthEvent, HealthInputs, ProbeTarget, assess};
use crate::plan::lifecycle::{self, Facts, Note, PodAction, PodFacts, Record, TerminationReason};

use super::context::{Context, Key, RESYNC, apply_status, controlled_by, store_lags_or_gone};
use super::error::{Error, is_status, kube_err};

/// The controller name in metrics and logs.
pub const CONTROLLER: &str = "instance";

/// Reconciles one Instance.
pub async fn reconcile(obj: Arc<Instance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key: Key = (obj.namespace().unwrap_or_default(), obj.name_any());
    let now = ctx.clock.now();
    ctx.timed::<Instance>(CONTROLLER, &key, reconcile_inner(&obj, &ctx, now))
        .await
}

/// Retries a failed reconcile after the object's error backoff.
pub fn error_policy(obj: Arc<Instance>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_error(CONTROLLER, &obj, err)
}

async fn reconcile_inner(obj: &Instance, ctx: &Context, now: Timestamp) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key: Key = (ns.clone(), name.clone());
    let Some(inst) = ctx.instance(&ns, &name) else {
        ctx.probes.set_target(&key, None);
        ctx.reported.forget(&key);
        ctx.instance_observations.forget(&key);
        ctx.metrics.forget_evaluated(&key);
        return Ok(store_lags_or_gone(
            ctx.instances
                .get(&ObjectRef::new(&name).within(&ns))
                .is_some(),
        ));
    };
    let deleting = inst.metadata.deletion_timestamp.is_some();
    let has_finalizer = inst.finalizers().iter().any(|f| f == FINALIZER_INSTANCE);
    if deleting && !has_finalizer {
        // Nothing holds it: it is going away whatever we do.
        ctx.probes.set_target(&key, None);
        return Ok(Action::await_change());
    }
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    if !has_finalizer {
        add_finalizer(&api, &inst, ctx).await?;
    }

    let group = ctx
        .group(&ns, &inst.spec.group_name)
        .filter(|g| owner_uid(&inst).is_none_or(|uid| g.uid().as_deref() == Some(uid)));
    let pod = ctx
        .pod(&ns, &name)
        .filter(|p| controlled_by(p.as_ref(), inst.uid().as_deref()));
    let node = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.node_name.clone())
        .and_then(|n| ctx.nodes.get(&ObjectRef::new(&n)));

    let stored = inst.status.clone().unwrap_or_default();
    let record = Record::from_status(&stored);
    let annotations = inst.annotations().clone();
    let group_gone = group
        .as_ref()
        .is_none_or(|g| g.metadata.deletion_timestamp.is_some());
    let requested = deleting.then(|| {
        TerminationReason::for_deletion(
            annotations
                .get(ANNOTATION_TERMINATION_REASON)
                .map(String::as_str),
            group_gone,
            stored.health_status == Some(HealthStatus::Unhealthy),
        )
    });
    let spec = group.as_ref().map(|g| &g.spec);
    let facts = Facts {
        record: &record,
        annotations: &annotations,
        termination_requested: requested,
        hooks: spec.map_or(&[], |s| &s.lifecycle_hooks[..]),
        deregistration_delay_seconds: spec
            .map_or(0, |s| s.replacement.deregistration_delay_seconds.into()),
        add_to_service_suspended: spec.is_some_and(|s| s.is_suspended(Process::AddToService)),
        pod: pod_facts(pod.as_deref()),
        pod_uid: pod.as_ref().and_then(|p| p.metadata.uid.as_deref()),
        restart_request: annotations.get(ANNOTATION_RESTART).map(String::as_str),
    };
    let step = lifecycle::next(&facts, now);

    // The status to store: the lifecycle record, the Pod's address, then health.
    let mut status = stored.clone();
    step.record.apply_to(&mut status);
    status.observed_generation = inst.metadata.generation;
    status.revision = instance_revision(&inst);
    if let Some(p) = &pod {
        let pod_status = p.status.as_ref();
        if let Some(ip) = pod_status.and_then(|s| s.pod_ip.clone()) {
            status.address = Some(ip);
        }
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            status.node_name = Some(node);
        }
        if let Some(zone) = node
            .as_ref()
            .and_then(|n| n.labels().get(LABEL_ZONE).cloned())
        {
            status.zone = Some(zone);
        }
    }
    let default_check = HealthCheck::default();
    let health_check = spec.map_or(&default_check, |s| &s.health_check);
    let health_check_suspended = spec.is_some_and(|s| s.is_suspended(Process::HealthCheck));
    let mut candidate = (*inst).clone();
    candidate.status = Some(status.clone());
    let probe_verdict = ctx.probes.verdict(&key);
    let verdict = assess(
        &HealthInputs {
            instance: &candidate,
            pod: pod.as_deref(),
            node: node.as_deref(),
            probe: probe_verdict.as_ref(),
            config: health_check,
            health_check_suspended,
        },
        now,
    );
    status.health_status = Some(verdict.status);
    status.health_detail = Some(verdict.detail);
    status.conditions = settle(
        &stored.conditions,
        verdict.conditions.clone(),
        inst.metadata.generation,
        lifecycle::ceil_to_second(now),
    );

    // The health Events compare the verdict with the status as stored: before it is replaced.
    let health_events = health::events(&inst, &verdict);

    // Record first (conditions other managers set on the Instance are theirs: they are neither
    // compared nor applied, and server-side apply leaves them in place)...
    let mut stored_own = stored.clone();
    stored_own
        .conditions
        .retain(|c| crate::api::INSTANCE_HEALTH_CONDITIONS.contains(&c.type_.as_str()));
    // A starting Instance's observations alone (its Pod appearing, being bound to a Node,
    // the address) wait up to OBSERVATION_DELAY for the write that comes next anyway (the
    // Pod running: InService), so a launch writes twice, not four times; they are written
    // at the end of the delay if nothing else came.
    let mut paced = None;
    if status != stored_own {
        let observation = step.action.is_none()
            && step.notes.is_empty()
            && health_events.is_empty()
            && observations_only(&stored_own, &status);
        if observation {
            let seen = ctx
                .instance_observations
                .get_or_set(&key, std::time::Instant::now());
            paced = OBSERVATION_DELAY
                .checked_sub(seen.elapsed())
                .filter(|d| !d.is_zero());
        }
        if paced.is_none() {
            apply_status(&ctx.client, &ctx.fresh_instances, inst.as_ref(), &status).await?;
        }
    }
    if paced.is_none() {
        ctx.instance_observations.forget(&key);
    }
    ctx.metrics.mark_evaluated(&key);
    // MTTD: counted once, when the Unhealthy verdict is recorded.
    if verdict.status == HealthStatus::Unhealthy
        && stored.health_status != Some(HealthStatus::Unhealthy)
    {
        ctx.metrics.observe_detection(detection_seconds(
            &verdict.reason,
            probe_verdict.as_ref(),
            health_check,
        ));
    }
    let reference = inst.object_ref(&());
    // A state entry names the Pod action it brings (one Event, not two).
    let enters = step.notes.iter().any(|n| matches!(n, Note::Entered { .. }));
    let announced = step.action.filter(|_| enters);
    // ...and the health change that comes with it, when it is a plain Normal one (a launch
    // going in service: Initializing → OK); Healthy, Unhealthy and warnings stay their own.
    let (told, health_events): (Vec<HealthEvent>, Vec<HealthEvent>) = health_events
        .into_iter()
        .partition(|e| enters && !e.warning && e.reason == "HealthChanged");
    let health_phrase = told
        .iter()
        .map(|e| format!("health {}", e.note))
        .collect::<Vec<_>>()
        .join("; ");
    report_notes(
        ctx,
        &key,
        &reference,
        &step.notes,
        announced,
        &health_phrase,
    )
    .await;
    report_health(ctx, &reference, &health_events).await;

    // ...then act.
    if let Some(action) = step.action
        && let Some(done) = act(
            ctx,
            &inst,
            pod.as_deref(),
            action,
            &status,
            announced.is_some(),
        )
        .await?
    {
        return Ok(done);
    }

    // Probe target: InService (or Standby: health still shown) with an address.
    let target = match (
        status.lifecycle_state,
        status
            .address
            .as_deref()
            .and_then(|a| a.parse::<IpAddr>().ok()),
        health_check.probe.as_ref(),
    ) {
        (Some(LifecycleState::InService | LifecycleState::Standby), Some(address), Some(probe))
            if pod
                .as_ref()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none()) =>
        {
            Some(ProbeTarget {
                address,
                probe: probe.clone(),
            })
        }
        _ => None,
    };
    ctx.probes.set_target(&key, target);

    let paced_until = paced.and_then(|d| {
        now.checked_add(SignedDuration::try_from(d).unwrap_or_default())
            .ok()
    });
    Ok(requeue(
        status.lifecycle_state,
        step.wake_at,
        verdict.recheck_at.into_iter().chain(paced_until).min(),
        now,
    ))
}

/// The seconds from an Instance's first failing signal to its Unhealthy verdict (MTTD): for a
/// probe verdict, the probe intervals between the first failure of the streak and the one that
/// reached the threshold; for a signal acted on as it is seen (a Pod phase, a Node, an
/// annotation), 0.
pub fn detection_seconds(
    reason: &str,
    probe: Option<&crate::health::probe::ProbeVerdict>,
    config: &HealthCheck,
) -> f64 {
    match (reason, probe, config.probe.as_ref()) {
        ("ProbeFailed", Some(v), Some(p)) => {
            f64::from(v.consecutive_failures.saturating_sub(1))
                * f64::from(p.interval_seconds.max(0))
        }
        _ => 0.0,
    }
}

/// How long a starting Instance's observation-only status change may wait for the next
/// write (see [`observations_only`]). Under load a Pod takes seconds from its creation to
/// running (5 s on average when 150 launch at once on the test machine): with 3 s, most
/// launches wrote their Node and address on their own, a third status write each; 10 s
/// covers the launches of a busy API server, and a Pod stuck Pending still shows where
/// and why within 10 s. Decisions (state, health, condition status) never wait.
pub const OBSERVATION_DELAY: Duration = Duration::from_secs(10);

/// Whether `status` differs from `stored` only in what is observed of a starting Instance
/// (Pending or Pending:Wait, staying there): its Pod's Node, zone and address, and the
/// reasons and messages of its conditions (none changes status, and the health verdict is
/// the same). Nothing acts on these while the Instance starts; its state and health are
/// never held back.
pub fn observations_only(stored: &InstanceStatus, status: &InstanceStatus) -> bool {
    let starting = matches!(
        stored.lifecycle_state,
        Some(LifecycleState::Pending | LifecycleState::PendingWait)
    );
    let decisions = |s: &InstanceStatus| {
        let mut d = s.clone();
        d.node_name = None;
        d.zone = None;
        d.address = None;
        for c in &mut d.conditions {
            c.reason = String::new();
            c.message = String::new();
        }
        d
    };
    starting && decisions(stored) == decisions(status)
}

/// When to look again, the earliest of: a lifecycle deadline (`wake_at`), the next time the
/// passage of time alone may change the health verdict (`recheck_at`: end of the grace period,
/// startup timeout, an `unhealthyConditions` rule reaching `forSeconds`), or the resync period.
fn requeue(
    state: Option<LifecycleState>,
    wake_at: Option<Timestamp>,
    recheck_at: Option<Timestamp>,
    now: Timestamp,
) -> Action {
    let mut candidates: Vec<Timestamp> = wake_at.into_iter().chain(recheck_at).collect();
    if state == Some(LifecycleState::TerminatingProceed) {
        // Waiting for the Pod to go: its deletion event wakes us; look again anyway.
        candidates.extend(now.checked_add(SignedDuration::from_secs(5)).ok());
    }
    let next = candidates.into_iter().filter(|t| *t > now).min();
    match next {
        Some(t) => {
            let wait = now.duration_until(t).unsigned_abs();
            // A little past the deadline: recorded times are whole seconds.
            Action::requeue((wait + Duration::from_millis(50)).min(RESYNC))
        }
        None if wake_at.is_some() => Action::requeue(Duration::from_millis(50)),
        None => Action::requeue(RESYNC),
    }
}

/// The revision an Instance runs: its `autoheal.dev/revision` label, else (an Instance
/// launched before revisions were recorded) the revision name of its template hash.
pub fn instance_revision(inst: &Instance) -> Option<String> {
    inst.labels()
        .get(crate::api::LABEL_REVISION)
        .cloned()
        .or_else(|| {
            inst.annotations()
                .get(crate::api::ANNOTATION_TEMPLATE_HASH)
                .map(|h| crate::plan::revision::revision_name(&inst.spec.group_name, h))
        })
}

fn owner_uid(inst: &Instance) -> Option<&str> {
    inst.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true) && r.kind == "ScalingGroup")
        .map(|r| r.uid.as_str())
}

/// What the state machine needs to know of the Pod.
pub fn pod_facts(pod: Option<&WatchedPod>) -> PodFacts {
    let Some(pod) = pod else {
        return PodFacts::default();
    };
    PodFacts {
        exists: true,
        running: pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        in_service_label: pod
            .labels()
            .get(LABEL_IN_SERVICE)
            .is_some_and(|v| v == "true"),
        being_deleted: pod.metadata.deletion_timestamp.is_some(),
    }
}

async fn add_finalizer(api: &Api<Instance>, inst: &Instance, ctx: &Context) -> Result<(), Error> {
    let name = inst.name_any();
    let mut finalizers = inst.finalizers().to_vec();
    finalizers.push(FINALIZER_INSTANCE.into());
    let written = api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(finalizer_patch(inst, &finalizers)),
        )
        .await;
    match written {
        Ok(written) => {
            ctx.fresh_instances
                .remember(written, inst.metadata.resource_version.as_deref());
            Ok(())
        }
        Err(e) => {
            if is_status(&e, 409) {
                // The copy it was made over is stale: read the store's next time.
                let ns = inst.namespace().unwrap_or_default();
                ctx.fresh_instances.forget(&ns, &name);
            }
            Err(kube_err(format!("adding the finalizer to Instance {name}"))(e))
        }
    }
}

/// A merge patch setting the finalizers, guarded by the resourceVersion (a concurrent change
/// makes it fail with 409 and the reconcile retries).
pub fn finalizer_patch<K: Resource>(obj: &K, finalizers: &[String]) -> serde_json::Value {
    json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": obj.meta().resource_version,
        }
    })
}

/// Carries out a step's action (idempotent). `Some(action)` ends the reconcile there: the
/// Instance is finished, or the step waits for something. `announced`: the state-entry Event
/// of this step already names the action, so its success is not published again.
async fn act(
    ctx: &Context,
    inst: &Instance,
    pod: Option<&WatchedPod>,
    action: PodAction,
    status: &InstanceStatus,
    announced: bool,
) -> Result<Option<Action>, Error> {
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Labels and deletes answer with the Pod: read as the store keeps it.
    let watched_pods: Api<WatchedPod> = Api::namespaced(ctx.client.clone(), &ns);
    let reference = inst.object_ref(&());
    match action {
        PodAction::CreatePod { in_service } => {
            // The store drops the template of Instances past Pending (`trim_instance`); a
            // restart takes such a copy back to Pending and creates the Pod in the same step.
            let whole;
            let inst = if inst.spec.pod_template.spec.is_some() {
                inst
            } else {
                let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
                whole = instances
                    .get(&name)
                    .await
                    .map_err(kube_err(format!("reading Instance {ns}/{name}")))?;
                if whole.uid() != inst.uid() {
                    // Deleted and re-created under the same name meanwhile: its own reconcile
                    // launches it.
                    return Ok(Some(Action::await_change()));
                }
                &whole
            };
            let pod = build_pod(inst, in_service);
            match pods.create(&PostParams::default(), &pod).await {
                Ok(created) => {
                    ctx.fresh_pods.remember_created(created.into());
                    if !announced {
                        ctx.events
                            .normal(
                                &reference,
                                "PodCreated",
                                "Launch",
                                format!("created Pod {name}"),
                            )
                            .await;
                    }
                }
                Err(e) if is_status(&e, 409) => {
                    // Ours, and the store has yet to show it; or someone else's Pod under
                    // this name, which this Instance never adopts: say so.
                    match ctx.pod(&ns, &name) {
                        Some(other) if !controlled_by(other.as_ref(), inst.uid().as_deref()) => {
                            tracing::warn!(namespace = %ns, instance = %name, "a Pod of this name exists and is not controlled by this Instance: it is never adopted; delete it or the Instance");
                        }
                        _ => {
                            tracing::debug!(namespace = %ns, instance = %name, "Pod already exists");
                        }
                    }
                }
                Err(e) => {
                    ctx.events
                        .warning(
                            &reference,
                            "PodCreateFailed",
                            "Launch",
                            format!("creating Pod {name} failed: {e}"),
                        )
                        .await;
                    return Err(kube_err(format!("creating Pod {ns}/{name}"))(e));
                }
            }
        }
        PodAction::AddToService | PodAction::RemoveFromService => {
            let add = action == PodAction::AddToService;
            let value = if add {
                json!("true")
            } else {
                serde_json::Value::Null
            };
            let patch = json!({ "metadata": { "labels": { LABEL_IN_SERVICE: value } } });
            match watched_pods
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    ctx.fresh_pods.remember(
                        written,
                        pod.and_then(|p| p.metadata.resource_version.as_deref()),
                    );
                    let (reason, note) = if add {
                        (
                            "AddedToService",
                            format!("Pod {name} labelled {LABEL_IN_SERVICE}=true"),
                        )
                    } else {
                        (
                            "RemovedFromService",
                            format!("label {LABEL_IN_SERVICE} removed from Pod {name}"),
                        )
                    };
                    if !announced {
                        ctx.events
                            .normal(&reference, reason, "ServiceMembership", note)
                            .await;
                    }
                }
                Err(e) if is_status(&e, 404) => {}
                Err(e) => return Err(kube_err(format!("labelling Pod {ns}/{name}"))(e)),
            }
        }
        PodAction::DeletePod => {
            let Some(pod) = pod else { return Ok(None) };
            match watched_pods.delete(&name, &delete_only(pod.uid())).await {
                Ok(outcome) => {
                    match outcome.left() {
                        Some(p) => ctx
                            .fresh_pods
                            .remember(p, pod.metadata.resource_version.as_deref()),
                        None => ctx.fresh_pods.deleted(&ns, &name, pod.uid()),
                    }
                    let grace = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds)
                        .unwrap_or(30);
                    if !announced {
                        ctx.events
                            .normal(
                                &reference,
                                "PodDeleted",
                                "Terminate",
                                format!("deleting Pod {name} (grace period {grace}s)"),
                            )
                            .await;
                    }
                }
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(kube_err(format!("deleting Pod {ns}/{name}"))(e)),
            }
        }
        PodAction::Finish => return finish(ctx, inst, status).await.map(Some),
    }
    Ok(None)
}

/// A delete of the object with this uid only (a namesake created meanwhile answers 409).
fn delete_only(uid: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    }
}

/// Terminated: makes sure the Pod is really gone, deletes the Instance if nobody did, and
/// removes the finalizer. Waits (a requeue, not an error) while the Pod still exists.
async fn finish(ctx: &Context, inst: &Instance, status: &InstanceStatus) -> Result<Action, Error> {
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let key: Key = (ns.clone(), name.clone());
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // The store said the Pod is gone; confirm with the API server before letting go (a Pod
    // created moments ago may not have reached the store).
    if let Some(p) = pods
        .get_opt(&name)
        .await
        .map_err(kube_err(format!("reading Pod {ns}/{name}")))?
        && controlled_by(&p, inst.uid().as_deref())
    {
        tracing::debug!(namespace = %ns, instance = %name, "waiting for the Pod to go");
        // Its deletion event wakes this reconcile; look again anyway.
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    ctx.probes.set_target(&key, None);
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    // The copy the delete answers with: the Instance as the finalizer holds it.
    let mut held = None;
    if inst.metadata.deletion_timestamp.is_none() {
        // Only this Instance: not a namesake created since this reconcile read it.
        match api.delete(&name, &delete_only(inst.uid())).await {
            Ok(answer) => held = answer.left(),
            Err(e) if is_status(&e, 409) => return Ok(Action::await_change()),
            Err(e) if is_status(&e, 404) => return Ok(Action::await_change()),
            Err(e) => return Err(kube_err(format!("deleting Instance {ns}/{name}"))(e)),
        }
    }
    if inst.finalizers().iter().any(|f| f == FINALIZER_INSTANCE) {
        // The delete above changed the object: patch the copy it answered with (no read).
        // Already deleted, the freshest copy this operator knows (its own status write
        // included) is current enough: the patch is guarded by its resourceVersion, so a
        // stale one gets 409 and the reconcile retries.
        let known = held
            .map(Arc::new)
            .or_else(|| ctx.instance(&ns, &name))
            .filter(|i| i.uid() == inst.uid() && i.metadata.deletion_timestamp.is_some());
        let latest = if let Some(known) = known {
            Arc::unwrap_or_clone(known)
        } else {
            match api.get_opt(&name).await {
                Ok(Some(latest)) if latest.uid() == inst.uid() => latest,
                Ok(Some(_)) => return Ok(Action::await_change()),
                Ok(None) => return Ok(Action::await_change()),
                Err(e) => return Err(kube_err(format!("reading Instance {ns}/{name}"))(e)),
            }
        };
        let finalizers: Vec<String> = latest
            .finalizers()
            .iter()
            .filter(|f| *f != FINALIZER_INSTANCE)
            .cloned()
            .collect();
        match api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(finalizer_patch(&latest, &finalizers)),
            )
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(kube_err(format!(
                    "removing the finalizer of Instance {ns}/{name}"
                ))(e));
            }
        }
    }
    ctx.fresh_instances.deleted(&ns, &name, inst.uid());
    ctx.reported.forget(&key);
    ctx.metrics.forget_evaluated(&key);
    let reason = status.termination_reason.as_deref().unwrap_or("Deleted");
    ctx.events
        .normal(
            &inst.object_ref(&()),
            "Terminated",
            "Terminate",
            format!("Instance {name} terminated ({reason})"),
        )
        .await;
    tracing::info!(namespace = %ns, instance = %name, reason, "instance terminated");
    Ok(Action::await_change())
}

/// Whether entering `state` for `reason` goes without an Event of the Instance's own: a
/// launch (Pending, `Launched`) is announced by the group's `Launched` Event, which a burst of
/// launches aggregates into one series (as a ReplicaSet's `SuccessfulCreate`); an Event per
/// launched Instance was a quarter of a scale-up's API writes. Every other entry (InService,
/// a restart's Pending, hooks, termination) has its Event.
pub fn announced_by_the_group(state: LifecycleState, reason: &str) -> bool {
    state == LifecycleState::Pending && reason == crate::plan::lifecycle::REASON_LAUNCHED
}

/// What a state entry's Event says of the Pod action it brings.
fn action_phrase(action: PodAction, pod: &str) -> Option<String> {
    match action {
        PodAction::CreatePod { in_service: false } => Some(format!("creating Pod {pod}")),
        PodAction::CreatePod { in_service: true } => Some(format!(
            "creating Pod {pod} (labelled {LABEL_IN_SERVICE}=true: in service once Ready)"
        )),
        PodAction::AddToService => Some(format!(
            "adding Pod {pod} to service (label {LABEL_IN_SERVICE}=true)"
        )),
        PodAction::RemoveFromService => Some(format!(
            "removing Pod {pod} from service (label {LABEL_IN_SERVICE})"
        )),
        PodAction::DeletePod => Some(format!("deleting Pod {pod}")),
        PodAction::Finish => None,
    }
}

/// Publishes the health evaluator's Events: transitions with their evidence, and annotation
/// values not understood (each once: [`health::events`] leaves out those already recorded).
async fn report_health(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    events: &[HealthEvent],
) {
    for e in events {
        if e.warning {
            ctx.events
                .warning(reference, e.reason, "Evaluate", e.note.clone())
                .await;
        } else {
            ctx.events
                .normal(reference, e.reason, "Evaluate", e.note.clone())
                .await;
        }
    }
}

/// Reports the state machine's notes as Events (a state entry with the Pod action it brings,
/// `announced`, and the health change that came with it, `health`); its annotation warnings
/// (hook completions the health evaluator does not read) once per value.
async fn report_notes(
    ctx: &Context,
    key: &Key,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    notes: &[Note],
    announced: Option<PodAction>,
    health: &str,
) {
    let mut warnings: Vec<String> = Vec::new();
    let mut action = announced.and_then(|a| action_phrase(a, &key.1));
    let mut health = Some(health).filter(|h| !h.is_empty());
    for note in notes {
        match note {
            Note::Entered { state, reason } => {
                tracing::info!(namespace = %key.0, instance = %key.1, %state, reason, "state entered");
                if announced_by_the_group(*state, reason) {
                    // Its Pod action goes unannounced with it: the launch says it all.
                    action = None;
                    continue;
                }
                let r = format!("Entered{}", state.as_str().replace(':', ""));
                let mut text = format!("entered {state} ({reason})");
                if let Some(phrase) = action.take() {
                    text = format!("{text}; {phrase}");
                }
                if let Some(phrase) = health.take() {
                    text = format!("{text}; {phrase}");
                }
                ctx.events.normal(reference, &r, "Lifecycle", text).await;
            }
            Note::Deregistered { delay_ends } => {
                let note = match delay_ends {
                    Some(t) => format!("out of service; deregistration delay until {t}"),
                    None => "out of service; no deregistration delay applies".to_string(),
                };
                ctx.events
                    .normal(reference, "Deregistered", "Lifecycle", note)
                    .await;
            }
            Note::HookCompleted { hook, result } => {
                ctx.events
                    .normal(
                        reference,
                        "LifecycleHookCompleted",
                        "LifecycleHook",
                        format!("lifecycle hook {hook} completed with {result:?}"),
                    )
                    .await;
            }
            Note::HookTimedOut { hook, result } => {
                ctx.events
                    .warning(
                        reference,
                        "LifecycleHookTimedOut",
                        "LifecycleHook",
                        format!(
                            "lifecycle hook {hook} timed out; default result {result:?} applied"
                        ),
                    )
                    .await;
            }
            Note::HookRemoved { hook } => {
                ctx.events
                    .normal(
                        reference,
                        "LifecycleHookRemoved",
                        "LifecycleHook",
                        format!("lifecycle hook {hook} is no longer in the group; continuing"),
                    )
                    .await;
            }
            Note::HookHeartbeat { hook, deadline } => {
                ctx.events
                    .normal(
                        reference,
                        "LifecycleHookHeartbeat",
                        "LifecycleHook",
                        format!(
                            "heartbeat for lifecycle hook {hook}; it now times out at {deadline}"
                        ),
                    )
                    .await;
            }
            Note::InvalidAnnotation(e) => warnings.push(e.to_string()),
        }
    }
    for warning in ctx.reported.fresh(key, &warnings) {
        ctx.events
            .warning(reference, "InvalidAnnotation", "Evaluate", warning)
            .await;
    }
}

/// The Pod of an Instance: its template, named after the Instance, owned by it, labelled with
/// the group and Instance labels (and the Instance's own labels); with `in_service`, also
/// `autoheal.dev/in-service: "true"` (the lifecycle decides: `PodAction::CreatePod`).
pub fn build_pod(inst: &Instance, in_service: bool) -> Pod {
    let template = (*inst.spec.pod_template).clone();
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels: BTreeMap<String, String> = inst.labels().clone();
    labels.extend(template_meta.labels.unwrap_or_default());
    labels.remove(LABEL_IN_SERVICE);
    if in_service {
        labels.insert(LABEL_IN_SERVICE.into(), "true".into());
    }
    labels.insert(LABEL_GROUP.into(), inst.spec.group_name.clone());
    labels.insert(LABEL_INSTANCE.into(), inst.name_any());
    Pod {
        metadata: ObjectMeta {
            name: Some(inst.name_any()),
            namespace: inst.namespace(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            owner_references: inst.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Triggers for Instances whose group changed (hooks, delays, suspended processes).
pub fn instances_of_group(ctx: &Context, group: &ScalingGroup) -> Vec<ObjectRef<Instance>> {
    ctx.members(group)
        .iter()
        .map(|i| ObjectRef::from_obj(i.as_ref()))
        .collect()
}

/// Triggers for Instances whose Pods run on `node`.
pub fn instances_on_node(ctx: &Context, node: &Node) -> Vec<ObjectRef<Instance>> {
    let name = node.name_any();
    ctx.pods
        .state()
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        .filter_map(|p| {
            let instance = p.labels().get(LABEL_INSTANCE)?;
            Some(ObjectRef::new(instance).within(&p.namespace()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn after(action: &Action) -> Option<Duration> {
        // `Action` only exposes its delay through Debug/PartialEq: compare with candidates.
        [50u64, 1_050, 5_050, 10_050]
            .into_iter()
            .map(Duration::from_millis)
            .chain([RESYNC])
            .find(|d| *action == Action::requeue(*d))
    }

    #[test]
    fn requeue_at_the_earliest_of_lifecycle_and_health_deadlines() {
        let now = at("2026-01-01T00:00:00Z");
        let lifecycle = Some(at("2026-01-01T00:00:10Z"));
        let health = Some(at("2026-01-01T00:00:01Z"));
        let state = Some(LifecycleState::InService);
        assert_eq!(
            after(&requeue(state, lifecycle, health, now)),
            Some(Duration::from_millis(1_050))
        );
        assert_eq!(
            after(&requeue(state, lifecycle, None, now)),
            Some(Duration::from_millis(10_050))
        );
        assert_eq!(
            after(&requeue(state, None, health, now)),
            Some(Duration::from_millis(1_050))
        );
        assert_eq!(
            after(&requeue(
                Some(LifecycleState::TerminatingProceed),
                lifecycle,
                None,
                now
            )),
            Some(Duration::from_millis(5_050))
        );
    }

    #[test]
    fn a_starting_instance_s_node_address_and_messages_are_observations() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        let condition = |status: &str, reason: &str, message: &str| Condition {
            type_: "WorkloadHealthy".into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(1),
            last_transition_time: Time(at("2026-01-01T00:00:00Z")),
        };
        let stored = InstanceStatus {
            lifecycle_state: Some(LifecycleState::Pending),
            health_status: Some(HealthStatus::Healthy),
            conditions: vec![condition(
                "Unknown",
                "PodNotCreated",
                "Pod x not created yet",
            )],
            ..InstanceStatus::default()
        };
        let mut bound = stored.clone();
        bound.node_name = Some("n1".into());
        bound.zone = Some("z1".into());
        bound.address = Some("10.0.0.7".into());
        bound.conditions = vec![condition("Unknown", "PodStarting", "Pod x phase Pending")];
        assert!(observations_only(&stored, &bound));
        let mut running = bound.clone();
        running.lifecycle_state = Some(LifecycleState::InService);
        assert!(!observations_only(&stored, &running), "a state change");
        let mut unhealthy = bound.clone();
        unhealthy.health_status = Some(HealthStatus::Unhealthy);
        assert!(!observations_only(&stored, &unhealthy), "a health change");
        let mut flipped = bound.clone();
        flipped.conditions = vec![condition("False", "StartupTimeout", "too slow")];
        assert!(!observations_only(&stored, &flipped), "a condition status");
        // Once in service, every change is written at once.
        let mut in_service = stored.clone();
        in_service.lifecycle_state = Some(LifecycleState::InService);
        let mut moved = in_service.clone();
        moved.address = Some("10.0.0.8".into());
        assert!(!observations_only(&in_service, &moved));
    }

    #[test]
    fn only_a_launch_goes_without_an_instance_event() {
        use crate::plan::lifecycle::REASON_LAUNCHED;
        assert!(announced_by_the_group(
            LifecycleState::Pending,
            REASON_LAUNCHED
        ));
        assert!(!announced_by_the_group(
            LifecycleState::Pending,
            crate::api::REASON_RESTART
        ));
        assert!(!announced_by_the_group(
            LifecycleState::PendingWait,
            REASON_LAUNCHED
        ));
        assert!(!announced_by_the_group(
            LifecycleState::InService,
            "PodRunning"
        ));
    }

    #[test]
    fn requeue_soon_for_a_passed_lifecycle_deadline_else_resync() {
        let now = at("2026-01-01T00:00:00Z");
        let past = Some(at("2025-12-31T23:59:59Z"));
        let state = Some(LifecycleState::InService);
        assert_eq!(
            after(&requeue(state, past, None, now)),
            Some(Duration::from_millis(50))
        );
        assert_eq!(after(&requeue(state, None, None, now)), Some(RESYNC));
        // A health deadline in the past is not one (assess only gives future ones).
        assert_eq!(after(&requeue(state, None, past, now)), Some(RESYNC));
        // Far away: capped at the resync period.
        let far = Some(at("2026-02-01T00:00:00Z"));
        assert_eq!(after(&requeue(state, None, far, now)), Some(RESYNC));
    }

    #[test]
    fn detection_counts_the_probe_intervals_of_the_failing_streak() {
        use crate::api::{HttpProbe, Probe};
        use crate::health::probe::ProbeVerdict;
        let config = HealthCheck {
            probe: Some(Probe {
                http: Some(HttpProbe {
                    port: 8080,
                    path: "/".into(),
                    scheme: Default::default(),
                    expected_statuses: "200-399".into(),
                }),
                tcp: None,
                interval_seconds: 5,
                timeout_seconds: 1,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            }),
            ..HealthCheck::default()
        };
        let verdict = ProbeVerdict {
            healthy: Some(false),
            consecutive_failures: 3,
            consecutive_successes: 0,
            message: String::new(),
            failure: None,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
        };
        assert_eq!(
            detection_seconds("ProbeFailed", Some(&verdict), &config),
            10.0
        );
        // A signal acted on as it is seen.
        assert_eq!(detection_seconds("PodFailed", Some(&verdict), &config), 0.0);
        assert_eq!(detection_seconds("ProbeFailed", None, &config), 0.0);
    }
}
