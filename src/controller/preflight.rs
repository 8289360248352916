//! Checks at start, before competing for the Lease or watching anything: the API server
//! answers, RBAC grants what the operator needs, and the CRDs are installed (in that order:
//! access reviews do not need the CRDs, so a fresh cluster first hears about RBAC, which
//! `kubectl apply -k deploy/` grants, then about the CRDs). Each failure is
//! one line that says what to do, and the process exits non-zero instead of retrying a
//! watch forever.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use crate::api::{Instance, ScalingGroup};

/// How long the API server has to answer the first request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What the operator will touch: the namespace it watches (`None`: all) and the leader Lease's
/// namespace (`None`: no leader election).
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The watched namespace, or all.
    pub namespace: Option<&'a str>,
    /// The leader Lease's namespace, when leader election is on.
    pub lease_namespace: Option<&'a str>,
}

/// Runs every check; the error is one line saying what is wrong and what to do.
pub async fn check(client: &Client, server: &str, scope: Scope<'_>) -> anyhow::Result<()> {
    reachable(client, server).await?;
    permitted(client, scope).await?;
    crds_installed(client).await
}

/// The innermost error's text (hyper and io errors nest the cause that says what happened).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(next) = inner.source() {
        inner = next;
    }
    inner.to_string()
}

async fn reachable(client: &Client, server: &str) -> anyhow::Result<()> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Err(_) => anyhow::bail!(
            "the Kubernetes API server at {server} did not answer within {}s: check that the cluster is running and that KUBECONFIG (or the in-cluster config) points at it",
            CONNECT_TIMEOUT.as_secs()
        ),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(kube::Error::Api(status))) if status.code == 401 => anyhow::bail!(
            "the Kubernetes API server at {server} refused the credentials (401 Unauthorized): check the user in KUBECONFIG (an expired token?)"
        ),
        Ok(Err(kube::Error::Api(status))) => anyhow::bail!(
            "the Kubernetes API server at {server} answered {} to GET /version: {}",
            status.code,
            status.message
        ),
        Ok(Err(e)) => anyhow::bail!(
            "cannot reach the Kubernetes API server at {server} ({}): check that the cluster is running and that KUBECONFIG (or the in-cluster config) points at it",
            root_cause(&e)
        ),
    }
}

async fn crds_installed(client: &Client) -> anyhow::Result<()> {
    let api_version = ScalingGroup::api_version(&());
    let served: Vec<String> = match client.list_api_group_resources(&api_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(e) => anyhow::bail!("cannot discover the API {api_version}: {}", root_cause(&e)),
    };
    let missing: Vec<String> = [
        (ScalingGroup::kind(&()), ScalingGroup::plural(&())),
        (Instance::kind(&()), Instance::plural(&())),
    ]
    .into_iter()
    .filter(|(_, plural)| !served.iter().any(|s| s == plural))
    .map(|(kind, _)| kind.into_owned())
    .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [one] => anyhow::bail!(
            "the {one} CRD ({api_version}) is not installed: run `kubectl apply -f crds/` (or `autoheal crds | kubectl apply -f -`)"
        ),
        _ => anyhow::bail!(
            "the {} CRDs ({api_version}) are not installed: run `kubectl apply -f crds/` (or `autoheal crds | kubectl apply -f -`)",
            missing.join(" and ")
        ),
    }
}

/// One permission the operator needs.
struct Need {
    group: &'static str,
    resource: &'static str,
    subresource: &'static str,
    verbs: &'static [&'static str],
    /// `Some(ns)`: in that namespace (`""`: all namespaces); `None`: cluster-scoped.
    namespace: Option<String>,
}

/// What the operator needs: the verbs of the chart's RBAC (`charts/autoheal`, `deploy/`),
/// where each one's use is written down; `tests/deploy.rs` runs the operator with exactly
/// that RBAC, so a need here that the chart does not grant fails it.
fn needs(scope: Scope<'_>) -> Vec<Need> {
    let watched = Some(scope.namespace.unwrap_or_default().to_string());
    let group = "autoheal.dev";
    let mut needs = vec![
        Need {
            group,
            resource: "scalinggroups",
            subresource: "",
            verbs: &["list", "watch", "patch"],
            namespace: watched.clone(),
        },
        Need {
            group,
            resource: "scalinggroups",
            subresource: "status",
            verbs: &["patch"],
            namespace: watched.clone(),
        },
        Need {
            group,
            resource: "instances",
            subresource: "",
            verbs: &["list", "watch", "get", "create", "patch", "delete"],
            namespace: watched.clone(),
        },
        Need {
            group,
            resource: "instances",
            subresource: "status",
            verbs: &["patch"],
            namespace: watched.clone(),
        },
        Need {
            group: "",
            resource: "pods",
            subresource: "",
            verbs: &["list", "watch", "get", "create", "patch", "delete"],
            namespace: watched.clone(),
        },
        Need {
            group: "apps",
            resource: "controllerrevisions",
            subresource: "",
            verbs: &["list", "watch", "create", "delete"],
            namespace: watched.clone(),
        },
        Need {
            group: "",
            resource: "nodes",
            subresource: "",
            verbs: &["list", "watch"],
            namespace: None,
        },
        Need {
            group: "events.k8s.io",
            resource: "events",
            subresource: "",
            verbs: &["create", "patch"],
            namespace: watched,
        },
    ];
    if let Some(ns) = scope.lease_namespace {
        needs.push(Need {
            group: "coordination.k8s.io",
            resource: "leases",
            subresource: "",
            // kube-lease-manager reads, creates and patches it; a follower also reads it
            // every second to see a release (controller/leader.rs).
            verbs: &["get", "create", "patch"],
            namespace: Some(ns.to_string()),
        });
    }
    needs
}

async fn allowed(client: &Client, need: &Need, verb: &str) -> Result<bool, kube::Error> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(need.group.into()),
                resource: Some(need.resource.into()),
                subresource: (!need.subresource.is_empty()).then(|| need.subresource.into()),
                verb: Some(verb.into()),
                namespace: need.namespace.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// Who the API server says we are (for the message), when it says.
async fn username(client: &Client) -> Option<String> {
    let review = SelfSubjectReview::default();
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .ok()?
        .status?
        .user_info?
        .username
}

async fn permitted(client: &Client, scope: Scope<'_>) -> anyhow::Result<()> {
    let needs = needs(scope);
    let asks: Vec<_> = needs
        .iter()
        .flat_map(|need| need.verbs.iter().map(move |verb| (need, *verb)))
        .collect();
    let answers =
        futures::future::join_all(asks.iter().map(|(need, verb)| allowed(client, need, verb)))
            .await;
    // "where" → "resource" → verbs refused.
    let mut refused: BTreeMap<String, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
    for ((need, verb), answer) in asks.iter().zip(answers) {
        match answer {
            Ok(true) => {}
            Ok(false) => {
                let place = match need.namespace.as_deref() {
                    None => "cluster-wide".to_string(),
                    Some("") => "in all namespaces".to_string(),
                    Some(ns) => format!("in namespace {ns}"),
                };
                let mut resource = need.resource.to_string();
                if !need.subresource.is_empty() {
                    resource = format!("{resource}/{}", need.subresource);
                }
                if !need.group.is_empty() {
                    resource = format!("{resource}.{}", need.group);
                }
                refused
                    .entry(place)
                    .or_default()
                    .entry(resource)
                    .or_default()
                    .push(verb);
            }
            Err(e) => {
                // Access reviews are open to every authenticated user by default; where they
                // are not, the watches and writes will say what is refused.
                tracing::warn!(error = %e, "cannot check RBAC with a SelfSubjectAccessReview; going on");
                return Ok(());
            }
        }
    }
    if refused.is_empty() {
        return Ok(());
    }
    let what = refused
        .iter()
        .map(|(place, resources)| {
            let list = resources
                .iter()
                .map(|(resource, verbs)| format!("{} {resource}", verbs.join("/")))
                .collect::<Vec<_>>()
                .join(", ");
            format!("{list} {place}")
        })
        .collect::<Vec<_>>()
        .join("; ");
    let who = username(client)
        .await
        .unwrap_or_else(|| "this identity".into());
    anyhow::bail!(
        "RBAC does not let {who} {what}: install the operator's RBAC (`kubectl apply -k deploy/` grants it to the ServiceAccount autoheal-system/autoheal) or bind the ClusterRole autoheal to {who}"
    )
}
