//! The ScalingGroup reconciler: the only writer of ScalingGroup status.
//!
//! Each reconcile takes the group's Instances from the store, asks the pure group step
//! ([`crate::plan::group::plan`]) what the status should be and what to launch and
//! terminate, records the status if it differs, publishes the step's Events, then carries out
//! the actions (create Instances; terminate = annotate the reason, then delete the Instance,
//! whose finalizer lets the Instance reconciler walk the graceful path).
//!
//! Launches and terminations are remembered as [`Expectations`](super::context::Expectations)
//! until the Instance store shows them; until then the group plans nothing, so a lagging
//! store never causes a second launch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;

use futures::StreamExt;

use crate::api::{
    ANNOTATION_REPLACES, ANNOTATION_RESTART, ANNOTATION_TEMPLATE_HASH,
    ANNOTATION_TERMINATION_REASON, FINALIZER_GROUP, FINALIZER_INSTANCE, Instance, InstanceSpec,
    InstanceTemplate, LABEL_GROUP, LABEL_INSTANCE, LABEL_REVISION, ScalingGroup, group_selector,
};
use crate::plan::InstanceView;
use crate::plan::capacity::GroupAction;
use crate::plan::group::{self as group_plan, GroupInputs, template_hash};
use crate::plan::lifecycle;
use crate::plan::replacement::{EventType, ReplacementPlan};
use crate::plan::revision::{RevisionPlan, RevisionView, hash_of, revision_name};

use super::context::{Context, Key, RESYNC, apply_status, store_lags_or_gone};
use super::error::{Error, is_status, kube_err};
use super::instance::finalizer_patch;

/// The controller name in metrics and logs.
pub const CONTROLLER: &str = "scalinggroup";

/// The least time between two status writes of a group that only carry observations (see
/// [`group_plan::observations_only`]); a write with a decision in it is never held back.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// The most [`observation_interval`] stretches to.
pub const MAX_STATUS_INTERVAL: Duration = Duration::from_secs(30);

/// How many times its own duration a group's status write holds the next observation-only
/// write back.
const SLOWNESS_FACTOR: u32 = 20;

/// The least time between two observation-only status writes of a group after a write that
/// took `took`: [`STATUS_INTERVAL`], stretched to [`SLOWNESS_FACTOR`] times the write's
/// duration (at most [`MAX_STATUS_INTERVAL`]) when the API server answers slowly. When 100
/// groups come up at once a status with a 100-entry `instances[]` is costly to apply, and a
/// fixed pace would keep the API server as busy as it already is; decisions still go out at
/// once.
pub fn observation_interval(took: Duration) -> Duration {
    took.saturating_mul(SLOWNESS_FACTOR)
        .clamp(STATUS_INTERVAL, MAX_STATUS_INTERVAL)
}

/// Reconciles one ScalingGroup.
pub async fn reconcile(obj: Arc<ScalingGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let key: Key = (obj.namespace().unwrap_or_default(), obj.name_any());
    let now = ctx.clock.now();
    ctx.timed::<ScalingGroup>(CONTROLLER, &key, reconcile_inner(&obj, &ctx, now))
        .await
}

/// Retries a failed reconcile after the object's error backoff.
pub fn error_policy(obj: Arc<ScalingGroup>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.retry_after_error(CONTROLLER, &obj, err)
}

async fn reconcile_inner(
    obj: &ScalingGroup,
    ctx: &Context,
    now: Timestamp,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let key: Key = (ns.clone(), name.clone());
    let Some(group) = ctx.group(&ns, &name) else {
        // Hidden by this process's own deletion while the store lags: look again soon, so
        // nothing the store still holds is left without a last word.
        return Ok(store_lags_or_gone(
            ctx.groups.get(&ObjectRef::new(&name).within(&ns)).is_some(),
        ));
    };
    let group_uid = group.uid().unwrap_or_default();
    let api: Api<ScalingGroup> = Api::namespaced(ctx.client.clone(), &ns);
    let deleting = group.metadata.deletion_timestamp.is_some();
    let has_finalizer = group.finalizers().iter().any(|f| f == FINALIZER_GROUP);
    if deleting && !has_finalizer {
        return Ok(Action::await_change());
    }
    if !has_finalizer {
        let mut finalizers = group.finalizers().to_vec();
        finalizers.push(FINALIZER_GROUP.into());
        let written = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(finalizer_patch(group.as_ref(), &finalizers)),
            )
            .await
            .map_err(kube_err(format!(
                "adding the finalizer to ScalingGroup {ns}/{name}"
            )))?;
        ctx.fresh_groups
            .remember(written, group.metadata.resource_version.as_deref());
        return Ok(Action::requeue(Duration::ZERO));
    }

    let members = ctx.members(&group);
    if !ctx.expectations.satisfied(&group_uid, &members) {
        // Our own launches or terminations have not reached the store yet.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let views: Vec<InstanceView> = members
        .iter()
        .map(|i| InstanceView::from_instance(i))
        .collect();
    let revisions: Vec<RevisionView> = ctx
        .revisions_of(&group)
        .iter()
        .map(|r| revision_view(r))
        .collect();
    let nodes = ctx.nodes_around(&views);
    let plan = group_plan::plan(&GroupInputs {
        group: &group,
        instances: &views,
        revisions: &revisions,
        nodes: &nodes,
        replacement_backoff: ctx.settings.replacement_backoff,
        now,
    });

    if let Some(r) = plan
        .status
        .refresh
        .as_ref()
        .filter(|r| r.status.is_running())
    {
        tracing::debug!(
            namespace = %ns, group = %name, status = r.status.as_str(),
            actions = plan.actions.len(), message = %r.message,
            "refresh step"
        );
    }
    let reference = group.object_ref(&());
    for warning in ctx.reported.fresh(&key, &plan.warnings) {
        ctx.events
            .warning(&reference, "InvalidAnnotation", "Reconcile", warning)
            .await;
    }
    if let Some(note) = &plan.limit_event {
        ctx.events
            .warning(&reference, "ScalingLimited", "Scale", note.clone())
            .await;
    }
    // Record first (the replacement memory and the conditions; counts come from the store's
    // view and catch up on the next reconcile)...
    let mut paced = None;
    if plan.status_changed {
        // A change that only carries observations (counts, `instances[]`, condition messages)
        // while nothing is decided waits for the pace of `observation_interval`: a scale-up of
        // 300 would otherwise rewrite a 300-entry list on every Instance step. The requeue
        // below writes it once the interval is over (or a change with a decision writes it
        // sooner).
        let stored = group.status.clone().unwrap_or_default();
        let decides = !plan.actions.is_empty()
            || plan.deleting
            || plan
                .replacement
                .as_ref()
                .is_some_and(|r| !r.events.is_empty())
            || !plan.refresh_events.is_empty()
            || plan.limit_event.is_some()
            || !group_plan::observations_only(&stored, &plan.status);
        paced = if decides {
            None
        } else {
            ctx.group_writes
                .wait(&key, observation_interval, std::time::Instant::now())
        };
        match paced {
            None => {
                let started = std::time::Instant::now();
                apply_status(&ctx.client, &ctx.fresh_groups, group.as_ref(), &plan.status).await?;
                let written = std::time::Instant::now();
                ctx.group_writes
                    .record(&key, written, written.duration_since(started));
            }
            Some(wait) => {
                tracing::debug!(namespace = %ns, group = %name, ?wait, "status write paced");
            }
        }
    }
    for seconds in &plan.repair_seconds {
        ctx.metrics.observe_repair(*seconds);
    }
    // ...then announce (replacement Events go out before the actions they announce)...
    emit_replacement_events(ctx, &group, &members, plan.replacement.as_ref()).await;
    for event in &plan.refresh_events {
        match event.type_ {
            EventType::Normal => {
                ctx.events
                    .normal(&reference, event.reason, "Refresh", event.message.clone())
                    .await
            }
            EventType::Warning => {
                ctx.events
                    .warning(&reference, event.reason, "Refresh", event.message.clone())
                    .await
            }
        }
    }
    // ...then keep the revisions (the current template's exists before Instances run it)...
    apply_revisions(ctx, &group, &plan.revisions).await?;
    let launches = plan
        .actions
        .iter()
        .any(|a| matches!(a, GroupAction::Launch { .. }));
    let launch = if launches {
        launch_template(ctx, &group, &plan.launch_hash)?
    } else {
        LaunchTemplate::of_spec(&group)
    };
    // ...then act: terminations first, then launches (so the API server never shows a
    // launch before the termination it replaces: a refresh within maxHealthyPercentage stays
    // within it at every moment, and a replacement launched in the same pass as its old
    // Instance's termination never adds to the group); the requests of each kind are sent
    // together. The planner counted every Instance it terminates as leaving: when a
    // termination is refused, the launch that took its place is held back (the retry plans
    // again), and the other launches and the restarts still go.
    let (group_ref, launch_ref, members_ref, uid_ref) = (&group, &launch, &members, &group_uid);
    let terminations: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            GroupAction::Terminate { name, .. } => Some(async move {
                let result =
                    apply_action(ctx, group_ref, launch_ref, members_ref, uid_ref, a).await;
                (name.clone(), result)
            }),
            GroupAction::Launch { .. } => None,
        })
        .collect();
    let terminated: Vec<(String, Result<(), Error>)> = concurrently(terminations).await;
    let refused: Vec<String> = terminated
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(name, _)| name.clone())
        .collect();
    let mut results: Vec<Result<(), Error>> = terminated.into_iter().map(|(_, r)| r).collect();
    let launches: Vec<_> = group_plan::launches_despite_refused(&plan.actions, &refused)
        .into_iter()
        .map(|action| apply_action(ctx, &group, &launch, &members, &group_uid, action))
        .collect();
    let launched = launches.len();
    results.extend(concurrently(launches).await);
    if launched > 0 {
        tracing::info!(namespace = %ns, group = %name, launched, desired = plan.desired, "launched instances");
    }
    // Restarts (repair action Restart), recorded in the group status above.
    if let Some(replacement) = &plan.replacement {
        let requests: Vec<_> = replacement
            .restart
            .iter()
            .map(|(instance, token)| request_restart(ctx, &ns, instance, token))
            .collect();
        results.extend(concurrently(requests).await);
    }
    if let Some(err) = results.into_iter().find_map(Result::err) {
        return Err(err);
    }

    if plan.deleting {
        return finish_deletion(ctx, &api, &group, &members).await;
    }
    // The store's view of this reconcile's launches and terminations wakes the next one;
    // otherwise look again when a replacement backoff or grace period ends.
    Ok(Action::requeue(
        [plan.requeue_after, paced]
            .into_iter()
            .flatten()
            .min()
            .map_or(RESYNC, |d| d.min(RESYNC)),
    ))
}

/// The planner's view of a ControllerRevision: its name, the template hash it stores (its
/// `autoheal.dev/template-hash` annotation, else the end of its name) and its number.
pub fn revision_view(r: &ControllerRevision) -> RevisionView {
    let name = r.name_any();
    RevisionView {
        hash: r
            .annotations()
            .get(ANNOTATION_TEMPLATE_HASH)
            .cloned()
            .unwrap_or_else(|| hash_of(&name).to_string()),
        name,
        revision: r.revision,
    }
}

/// The ControllerRevision of the group's current template, numbered `revision`.
pub fn build_revision(group: &ScalingGroup, revision: i64) -> ControllerRevision {
    let hash = template_hash(group);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(revision_name(&group.name_any(), &hash)),
            namespace: group.namespace(),
            labels: Some([(LABEL_GROUP.to_string(), group.name_any())].into()),
            annotations: Some([(ANNOTATION_TEMPLATE_HASH.to_string(), hash)].into()),
            owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(
            serde_json::to_value(&group.spec.template).unwrap_or_default(),
        )),
        revision,
    }
}

/// Creates, renumbers and deletes the group's ControllerRevisions as planned. A revision
/// already there (the store lags) or already gone is fine.
async fn apply_revisions(
    ctx: &Context,
    group: &ScalingGroup,
    plan: &RevisionPlan,
) -> Result<(), Error> {
    let ns = group.namespace().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(n) = plan.create {
        let revision = build_revision(group, n);
        let name = revision.name_any();
        match api.create(&PostParams::default(), &revision).await {
            Ok(_) => {
                ctx.events
                    .normal(
                        &group.object_ref(&()),
                        "RevisionCreated",
                        "Revision",
                        format!("template revision {n} is ControllerRevision {name}"),
                    )
                    .await;
            }
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(kube_err(format!("creating ControllerRevision {ns}/{name}"))(e)),
        }
    }
    if let Some((name, n)) = &plan.renumber {
        let patch = json!({ "revision": n });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(kube_err(format!(
                    "renumbering ControllerRevision {ns}/{name}"
                ))(e));
            }
        }
    }
    for name in &plan.delete {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(kube_err(format!("deleting ControllerRevision {ns}/{name}"))(e)),
        }
    }
    Ok(())
}

/// Carries out one launch or termination of the group step.
async fn apply_action(
    ctx: &Context,
    group: &ScalingGroup,
    template: &LaunchTemplate,
    members: &[Arc<Instance>],
    group_uid: &str,
    action: &GroupAction,
) -> Result<(), Error> {
    match action {
        GroupAction::Launch { replaces } => {
            launch(ctx, group, template, replaces.as_deref(), group_uid).await
        }
        GroupAction::Terminate {
            name: victim,
            reason,
        } => match members.iter().find(|i| i.name_any() == *victim) {
            Some(inst) => terminate(ctx, group, inst, *reason, group_uid).await,
            None => Ok(()),
        },
    }
}

/// How many launches and terminations of one reconcile are in flight at once.
const MAX_CONCURRENT_ACTIONS: usize = 32;

/// Runs `requests` with at most [`MAX_CONCURRENT_ACTIONS`] in flight; their outcomes, in the
/// order they finish.
async fn concurrently<F: std::future::Future>(requests: Vec<F>) -> Vec<F::Output> {
    futures::stream::iter(requests)
        .buffer_unordered(MAX_CONCURRENT_ACTIONS)
        .collect()
        .await
}

/// Publishes the replacement Events: on the group, and also on the Instance an Event is
/// about.
async fn emit_replacement_events(
    ctx: &Context,
    group: &ScalingGroup,
    members: &[Arc<Instance>],
    plan: Option<&ReplacementPlan>,
) {
    let Some(plan) = plan else { return };
    let group_ref = group.object_ref(&());
    for event in &plan.events {
        let instance = event
            .instance
            .as_deref()
            .and_then(|n| members.iter().find(|i| i.name_any() == n));
        let mut regarding = vec![group_ref.clone()];
        if let Some(instance) = instance {
            regarding.push(instance.object_ref(&()));
        }
        for r in &regarding {
            match event.type_ {
                EventType::Normal => {
                    ctx.events
                        .normal(r, event.reason, "Replace", event.message.clone())
                        .await
                }
                EventType::Warning => {
                    ctx.events
                        .warning(r, event.reason, "Replace", event.message.clone())
                        .await
                }
            }
        }
    }
}

/// Removes the group finalizer once every Instance is gone (confirmed with a LIST, once).
async fn finish_deletion(
    ctx: &Context,
    api: &Api<ScalingGroup>,
    group: &ScalingGroup,
    members: &[Arc<Instance>],
) -> Result<Action, Error> {
    if !members.is_empty() {
        // Instance deletions are not always delivered as events to the group: look again.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let ns = group.namespace().unwrap_or_default();
    let name = group.name_any();
    let instances: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let left = instances
        .list(&ListParams::default().labels(&group_selector(&name)))
        .await
        .map_err(kube_err(format!(
            "listing the Instances of ScalingGroup {ns}/{name}"
        )))?;
    let uid = group.uid();
    if left
        .items
        .iter()
        .any(|i| super::context::controlled_by(i, uid.as_deref()))
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let finalizers: Vec<String> = group
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER_GROUP)
        .cloned()
        .collect();
    match api
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(finalizer_patch(group, &finalizers)),
        )
        .await
    {
        Ok(_) => {}
        Err(e) if is_status(&e, 404) => {}
        Err(e) => {
            return Err(kube_err(format!(
                "removing the finalizer of ScalingGroup {ns}/{name}"
            ))(e));
        }
    }
    ctx.fresh_groups.deleted(&ns, &name, group.uid());
    ctx.group_writes.forget(&(ns.clone(), name.clone()));
    ctx.expectations
        .forget_group(&group.uid().unwrap_or_default());
    tracing::info!(namespace = %ns, group = %name, "group drained and deleted");
    Ok(Action::await_change())
}

/// Creates one Instance of the group.
async fn launch(
    ctx: &Context,
    group: &ScalingGroup,
    template: &LaunchTemplate,
    replaces: Option<&str>,
    group_uid: &str,
) -> Result<(), Error> {
    let ns = group.namespace().unwrap_or_default();
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let mut last_err = None;
    for _ in 0..3 {
        let inst = build_instance(group, template, &instance_name(&group.name_any()), replaces);
        let name = inst.name_any();
        ctx.expectations.expect_create(group_uid, &name);
        match api.create(&PostParams::default(), &inst).await {
            Ok(created) => {
                ctx.fresh_instances.remember_created(created);
                let note = match replaces {
                    Some(old) => format!("launched Instance {name} to replace {old}"),
                    None => format!("launched Instance {name}"),
                };
                ctx.events
                    .normal(&group.object_ref(&()), "Launched", "Launch", note)
                    .await;
                return Ok(());
            }
            Err(e) => {
                ctx.expectations.forget(group_uid, &name);
                if is_status(&e, 409) {
                    last_err = Some(e);
                    continue; // name taken: draw another
                }
                return Err(kube_err(format!("creating Instance {ns}/{name}"))(e));
            }
        }
    }
    Err(kube_err(format!(
        "creating an Instance of ScalingGroup {ns}/{}",
        group.name_any()
    ))(last_err.expect("three conflicts")))
}

/// Asks an Instance to restart its Pod: `autoheal.dev/restart=<token>` (the Instance records
/// the token in its status before it touches the Pod, so a repeated request is harmless).
async fn request_restart(ctx: &Context, ns: &str, name: &str, token: &str) -> Result<(), Error> {
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_RESTART: token } } });
    let base = ctx
        .instance(ns, name)
        .and_then(|i| i.metadata.resource_version.clone());
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(written) => {
            ctx.fresh_instances.remember(written, base.as_deref());
            Ok(())
        }
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(kube_err(format!(
            "requesting a restart of Instance {ns}/{name}"
        ))(e)),
    }
}

/// Terminates an Instance through the graceful path: records the reason on it, then deletes
/// it (its finalizer holds it while the Instance reconciler drains it).
async fn terminate(
    ctx: &Context,
    group: &ScalingGroup,
    inst: &Instance,
    reason: lifecycle::TerminationReason,
    group_uid: &str,
) -> Result<(), Error> {
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let api: Api<Instance> = Api::namespaced(ctx.client.clone(), &ns);
    let mut base = inst.metadata.resource_version.clone();
    if inst
        .annotations()
        .get(ANNOTATION_TERMINATION_REASON)
        .map(String::as_str)
        != Some(reason.as_str())
    {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_TERMINATION_REASON: reason.as_str() } } });
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(written) => {
                let version = written.metadata.resource_version.clone();
                ctx.fresh_instances.remember(written, base.as_deref());
                base = version;
            }
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(kube_err(format!("annotating Instance {ns}/{name}"))(e)),
        }
    }
    ctx.expectations.expect_delete(group_uid, &name);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(outcome) => {
            if let Some(obj) = outcome.left() {
                ctx.fresh_instances.remember(obj, base.as_deref());
            }
        }
        Err(e) if is_status(&e, 404) => {
            ctx.expectations.forget(group_uid, &name);
            return Ok(());
        }
        Err(e) => {
            ctx.expectations.forget(group_uid, &name);
            return Err(kube_err(format!("deleting Instance {ns}/{name}"))(e));
        }
    }
    ctx.events
        .normal(
            &group.object_ref(&()),
            "TerminatingInstance",
            "Terminate",
            format!("terminating Instance {name} ({reason})"),
        )
        .await;
    Ok(())
}

/// The template new Instances are launched from, with its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchTemplate {
    /// The template.
    pub template: InstanceTemplate,
    /// Its hash (its revision is `<group>-<hash>`).
    pub hash: String,
}

impl LaunchTemplate {
    /// The group's own `spec.template`.
    pub fn of_spec(group: &ScalingGroup) -> Self {
        Self {
            template: group.spec.template.clone(),
            hash: template_hash(group),
        }
    }
}

/// The template of revision `hash`: the group's `spec.template` when it is that one, else the
/// template stored in the group's ControllerRevision of that hash (after a rollback).
pub fn launch_template(
    ctx: &Context,
    group: &ScalingGroup,
    hash: &str,
) -> Result<LaunchTemplate, Error> {
    if hash == template_hash(group) {
        return Ok(LaunchTemplate::of_spec(group));
    }
    let revision = ctx
        .revisions_of(group)
        .into_iter()
        .find(|r| revision_view(r).hash == hash);
    let template = revision
        .as_ref()
        .and_then(|r| r.data.as_ref())
        .and_then(|d| serde_json::from_value::<InstanceTemplate>(d.0.clone()).ok());
    match template {
        Some(template) => Ok(LaunchTemplate {
            template,
            hash: hash.to_string(),
        }),
        None => Err(Error::Invalid(format!(
            "ScalingGroup {}/{} launches from revision {} but its ControllerRevision is missing or unreadable",
            group.namespace().unwrap_or_default(),
            group.name_any(),
            revision_name(&group.name_any(), hash)
        ))),
    }
}

/// `<group>-<5 random lowercase alphanumerics>`; the group part is cut so that the name fits
/// a label value (63 characters).
pub fn instance_name(group: &str) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let prefix: String = group.chars().take(57).collect();
    let prefix = prefix.trim_end_matches(['-', '.']);
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{suffix}")
}

/// A new Instance of the group: template labels and annotations, the group and Instance
/// labels, the template hash, the finalizer, and a controller owner reference to the group.
pub fn build_instance(
    group: &ScalingGroup,
    launch: &LaunchTemplate,
    name: &str,
    replaces: Option<&str>,
) -> Instance {
    let template = &launch.template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels: BTreeMap<String, String> = meta.labels;
    labels.insert(LABEL_GROUP.into(), group.name_any());
    labels.insert(LABEL_INSTANCE.into(), name.into());
    let hash = launch.hash.clone();
    labels.insert(
        LABEL_REVISION.into(),
        revision_name(&group.name_any(), &hash),
    );
    let mut annotations: BTreeMap<String, String> = meta.annotations;
    annotations.insert(ANNOTATION_TEMPLATE_HASH.into(), hash);
    annotations.remove(ANNOTATION_TERMINATION_REASON);
    match replaces {
        Some(old) => annotations.insert(ANNOTATION_REPLACES.into(), old.into()),
        None => annotations.remove(ANNOTATION_REPLACES),
    };
    let mut inst = Instance::new(
        name,
        InstanceSpec {
            group_name: group.name_any(),
            protected_from_scale_in: false,
            pod_template: template.spec.pod_template.clone(),
        },
    );
    inst.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: group.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        finalizers: Some(vec![FINALIZER_INSTANCE.into()]),
        owner_references: group.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    inst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::context::WritePace;

    #[test]
    fn observation_writes_slow_down_with_the_api_server_within_bounds() {
        let ms = Duration::from_millis;
        // A quick answer: the base pace.
        assert_eq!(observation_interval(ms(0)), STATUS_INTERVAL);
        assert_eq!(observation_interval(ms(10)), STATUS_INTERVAL);
        // A slow one: 20 times as long.
        assert_eq!(observation_interval(ms(100)), ms(2000));
        assert_eq!(observation_interval(ms(900)), ms(18_000));
        // Never past the bound, however slow.
        assert_eq!(observation_interval(ms(5000)), MAX_STATUS_INTERVAL);
        assert_eq!(observation_interval(Duration::MAX), MAX_STATUS_INTERVAL);
        // Monotonic in between.
        let mut last = Duration::ZERO;
        for t in (0..3000).step_by(7) {
            let i = observation_interval(ms(t));
            assert!(i >= last && (STATUS_INTERVAL..=MAX_STATUS_INTERVAL).contains(&i));
            last = i;
        }
    }

    #[test]
    fn a_group_write_paces_by_how_long_it_took() {
        let pace = WritePace::default();
        let key: Key = ("ns".into(), "web".into());
        let t0 = std::time::Instant::now();
        assert_eq!(
            pace.wait(&key, observation_interval, t0),
            None,
            "nothing written yet"
        );
        pace.record(&key, t0, Duration::from_millis(500));
        assert_eq!(
            pace.wait(&key, observation_interval, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            pace.wait(&key, observation_interval, t0 + Duration::from_secs(10)),
            None
        );
        pace.forget(&key);
        assert_eq!(pace.wait(&key, observation_interval, t0), None);
    }

    fn group() -> ScalingGroup {
        let mut g: ScalingGroup = serde_json::from_value(json!({
            "apiVersion": "autoheal.dev/v1alpha1",
            "kind": "ScalingGroup",
            "metadata": { "name": "web", "namespace": "ns", "uid": "g-uid" },
            "spec": {
                "minSize": 0, "maxSize": 3,
                "template": {
                    "metadata": { "labels": { "tier": "front" }, "annotations": { "note": "x" } },
                    "spec": { "podTemplate": { "spec": { "containers": [ { "name": "app" } ] } } }
                }
            }
        }))
        .unwrap();
        g.metadata.uid = Some("g-uid".into());
        g
    }

    #[test]
    fn instance_names_have_the_contract_shape() {
        let n = instance_name("web");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
        assert!(
            n[4..]
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        let long = "a".repeat(80);
        assert!(instance_name(&long).len() <= 63);
    }

    #[test]
    fn built_instance_carries_labels_owner_finalizer_and_hash() {
        let g = group();
        let inst = build_instance(
            &g,
            &LaunchTemplate::of_spec(&g),
            "web-abcde",
            Some("web-old00"),
        );
        let labels = inst.labels();
        assert_eq!(labels.get(LABEL_GROUP).map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(LABEL_INSTANCE).map(String::as_str),
            Some("web-abcde")
        );
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        let ann = inst.annotations();
        assert_eq!(ann.get(ANNOTATION_TEMPLATE_HASH), Some(&template_hash(&g)));
        assert_eq!(
            labels.get(LABEL_REVISION),
            Some(&format!("web-{}", template_hash(&g)))
        );
        assert_eq!(
            ann.get(ANNOTATION_REPLACES).map(String::as_str),
            Some("web-old00")
        );
        assert_eq!(ann.get("note").map(String::as_str), Some("x"));
        assert_eq!(inst.finalizers(), &[FINALIZER_INSTANCE.to_string()]);
        let owner = &inst.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, "g-uid");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(inst.spec.group_name, "web");
    }

    #[test]
    fn template_hash_is_stable_and_changes_with_the_template() {
        let g = group();
        assert_eq!(template_hash(&g), template_hash(&g.clone()));
        assert_eq!(template_hash(&g).len(), 10);
        let mut h = g.clone();
        h.spec.template.metadata = None;
        assert_ne!(template_hash(&g), template_hash(&h));
        // Capacity changes do not change it.
        let mut c = g.clone();
        c.spec.desired_capacity = Some(3);
        assert_eq!(template_hash(&g), template_hash(&c));
    }

    #[test]
    fn built_pod_is_owned_and_labelled() {
        let g = group();
        let mut inst = build_instance(&g, &LaunchTemplate::of_spec(&g), "web-abcde", None);
        inst.metadata.uid = Some("i-uid".into());
        let pod = super::super::instance::build_pod(&inst, false);
        assert_eq!(pod.name_any(), "web-abcde");
        let labels = pod.labels();
        assert_eq!(labels.get(LABEL_GROUP).map(String::as_str), Some("web"));
        assert_eq!(
            labels.get(LABEL_INSTANCE).map(String::as_str),
            Some("web-abcde")
        );
        assert!(!labels.contains_key(crate::api::LABEL_IN_SERVICE));
        let in_service = super::super::instance::build_pod(&inst, true);
        assert_eq!(
            in_service
                .labels()
                .get(crate::api::LABEL_IN_SERVICE)
                .map(String::as_str),
            Some("true")
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("Instance", "i-uid")
        );
        assert_eq!(pod.spec.unwrap().containers[0].name, "app");
    }
}
