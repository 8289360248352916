//! Errors the operator cannot fix by retrying, against the real API server: an admission
//! policy refuses the Pods of a group. The refusal is reported once (a Warning Event
//! `RequestRefused` and `Stalled=True` on the Instance), retried with a growing backoff — not
//! hot-looped — and everything resumes (and `Stalled` goes away) once the policy is removed.

mod support;

use std::time::Duration;

use autoheal::api::{CONDITION_STALLED, LifecycleState, REASON_REQUEST_REFUSED};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::events::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use support::*;
use testkit::wait_for;

fn policy(ns: &str) -> (ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding) {
    let name = format!("deny-pods-{ns}");
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": { "name": name },
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": { "resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["CREATE"], "resources": ["pods"]
            }]},
            "validations": [{
                "expression": "false",
                "message": "pods are frozen in this namespace by the test policy"
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": { "name": name },
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": { "namespaceSelector": { "matchLabels": {
                "kubernetes.io/metadata.name": ns
            }}}
        }
    }))
    .unwrap();
    (policy, binding)
}

/// The operator's Pod create requests in the audit log (any outcome).
fn pod_creates(env: &Env) -> usize {
    testkit::audit_writes(env.cp.audit_log_path())
        .into_iter()
        .filter(|w| {
            w.user_agent.starts_with("autoheal/")
                && w.namespace == env.ns
                && w.resource == "pods"
                && w.verb == "create"
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pod_is_reported_once_backs_off_and_resumes() {
    let env = Env::new("refused").await;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(env.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(env.client.clone());
    let (policy, binding) = policy(&env.ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    // The policy takes effect once its binding is seen by the admission plugin: probe it.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("the test policy to refuse Pods", TIMEOUT, || async {
        let mut probe = k8s_openapi::api::core::v1::Pod::default();
        probe.metadata.name = Some("policy-probe".into());
        probe.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "c".into(),
                image: Some("x".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        match pods.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("frozen") => Some(()),
            Ok(_) => {
                let _ = pods.delete("policy-probe", &DeleteParams::default()).await;
                None
            }
            Err(_) => None,
        }
    })
    .await;

    let op = Operator::start_with(
        env.cp,
        &env.ns,
        &["--error-backoff-base", "1s", "--error-backoff-cap", "8s"],
    );
    op.wait_ready().await;
    env.apply_group(&GroupBuilder::new("web").desired(1).build())
        .await;

    // Reported once: Stalled=True on the Instance, with the API server's message.
    let instance = wait_for("Stalled=True on the Instance", TIMEOUT, || async {
        let i = env.group_instances("web").await.into_iter().next()?;
        let stalled = i
            .status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_STALLED)?
            .clone();
        (stalled.status == "True" && stalled.reason == REASON_REQUEST_REFUSED)
            .then_some((i, stalled))
    })
    .await;
    let (instance, stalled) = instance;
    assert!(
        stalled.message.contains("frozen"),
        "the condition carries the refusal: {}",
        stalled.message
    );
    let name = instance.name_any();
    let first_attempts = pod_creates(&env);

    // Not hot-looped: over the next 20 s a backoff of 1 s doubling to 8 s allows a handful of
    // attempts (1+2+4+8+8 = 23 s for five); a fixed 2 s retry would make ten, a hot loop
    // hundreds.
    let window = Duration::from_secs(20);
    // The window is what is measured (how many attempts fit in it), not a stand-in for a
    // fact; the audit log is then flushed so every attempt in it is counted.
    tokio::time::sleep(window).await;
    env.flush_audit().await;
    let retries = pod_creates(&env) - first_attempts;
    assert!(
        (1..=6).contains(&retries),
        "{retries} Pod creates in {window:?} after the first refusal"
    );
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    let refused: Vec<Event> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.reason.as_deref() == Some(REASON_REQUEST_REFUSED)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
        })
        .collect();
    assert_eq!(refused.len(), 1, "one RequestRefused Event: {refused:#?}");
    assert!(
        refused[0].series.is_none(),
        "reported once, not repeated: {:?}",
        refused[0].series
    );

    // The cause removed: the Instance launches and Stalled is cleared.
    bindings
        .delete(&binding.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    policies
        .delete(&policy.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    env.wait_instance_state(&name, LifecycleState::InService)
        .await;
    wait_for("Stalled cleared", TIMEOUT, || async {
        let i = env.instance(&name).await?;
        let stalled = i
            .status?
            .conditions
            .iter()
            .any(|c| c.type_ == CONDITION_STALLED);
        (!stalled).then_some(())
    })
    .await;
}
