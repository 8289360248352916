//! Objects deleted and re-created under the same name, as a user does it with kubectl:
//! - `kubectl delete -f web.yaml --wait` followed at once by `kubectl apply -f web.yaml`;
//! - the namespace deleted while its group launches, then the namespace and the group
//!   re-created.
//!
//! Each new group must be served at once: status and Instances without anything else
//! touching it. The bound (30 s) is far below the 60 s a stale read-your-writes entry or an
//! expectation of the old group would hold the new one.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use support::*;
use testkit::wait_for;

/// How long a re-created group may take to be served (a fresh group takes a few seconds).
const SERVED: Duration = Duration::from_secs(30);

/// Waits until the group `name` with a UID other than `old_uid` has a status for its
/// generation and `n` InService Instances owned by it.
async fn wait_served(env: &Env, name: &str, old_uid: &str, n: usize) {
    wait_for(
        &format!("the re-created group {name} served with {n} InService instances"),
        SERVED,
        || async {
            let g = env.groups().get_opt(name).await.ok().flatten()?;
            let uid = g.uid()?;
            if uid == old_uid {
                return None;
            }
            let observed = g.status.as_ref()?.observed_generation == g.metadata.generation;
            let members: Vec<_> = env
                .group_instances(name)
                .await
                .into_iter()
                .filter(|i| {
                    i.owner_references().iter().any(|o| o.uid == uid)
                        && state_of(i) == Some(autoheal::api::LifecycleState::InService)
                })
                .collect();
            (observed && members.len() == n).then_some(())
        },
    )
    .await;
}

fn write_manifest(env: &Env, yaml: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("autoheal-recreate-{}.yaml", env.ns));
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_deleted_and_applied_again_at_once_is_served() {
    let env = Env::new("recreate").await;
    let op = env.operator();
    op.wait_ready().await;
    let manifest = write_manifest(&env, &GroupBuilder::new("web").desired(2).yaml());
    let file = manifest.to_str().unwrap();
    env.kubectl(&["apply", "-n", &env.ns, "-f", file]);
    env.wait_in_service("web", 2).await;
    // Twice: a group re-created once must be re-creatable again the same way.
    for _ in 0..2 {
        let old_uid = env.group("web").await.uid().unwrap();
        env.kubectl(&[
            "delete",
            "-n",
            &env.ns,
            "-f",
            file,
            "--wait",
            "--timeout=120s",
        ]);
        env.kubectl(&["apply", "-n", &env.ns, "-f", file]);
        wait_served(&env, "web", &old_uid, 2).await;
    }
    let _ = std::fs::remove_file(manifest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deleted_while_launching_then_recreated_is_served() {
    let env = Env::new("recreate-ns").await;
    // The Lease would go with the namespace: no election for this one.
    let op = Operator::start_as(
        env.cp.kubeconfig_path(),
        &env.ns,
        &["--leader-election", "off"],
    );
    op.wait_ready().await;
    let group = GroupBuilder::new("web").desired(3).build();
    env.apply_group(&group).await;
    // Launching: the first Instance exists, not every one is InService yet.
    wait_for("the group to start launching", TIMEOUT, || async {
        (!env.group_instances("web").await.is_empty()).then_some(())
    })
    .await;
    let old_uid = env.group("web").await.uid().unwrap();

    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(&env.ns, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the namespace to be gone", TIMEOUT, || async {
        matches!(namespaces.get_opt(&env.ns).await, Ok(None)).then_some(())
    })
    .await;
    let mut ns = Namespace::default();
    ns.metadata.name = Some(env.ns.clone());
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    wait_for("the default ServiceAccount", TIMEOUT, || async {
        let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(env.client.clone(), &env.ns);
        sas.get_opt("default").await.ok().flatten().map(|_| ())
    })
    .await;
    env.apply_group(&group).await;
    wait_served(&env, "web", &old_uid, 3).await;
}
