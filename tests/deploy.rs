//! `kubectl apply -k deploy/` installs the operator's namespace, ServiceAccount, RBAC and
//! Deployment; the operator, run with that ServiceAccount's token (so with exactly the RBAC of
//! `deploy/`), brings `deploy/examples/web.yaml` to Ready, scales it in, and records Events.

mod support;

use std::path::Path;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use support::*;
use testkit::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_grant_what_the_operator_needs() {
    let env = Env::new("deploy").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    env.kubectl(&["apply", "-k", root.join("deploy").to_str().unwrap()]);
    let deployment = env.kubectl(&[
        "-n",
        "autoheal-system",
        "get",
        "deployment/autoheal",
        "-o",
        "jsonpath={.spec.template.spec.serviceAccountName}",
    ]);
    assert_eq!(deployment.trim(), "autoheal");

    // A kubeconfig with the ServiceAccount's token.
    let token = env.kubectl(&[
        "-n",
        "autoheal-system",
        "create",
        "token",
        "autoheal",
        "--duration=1h",
    ]);
    let admin = env.kubectl(&["config", "view", "--raw", "--minify", "--flatten"]);
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    let user = serde_yaml::Mapping::from_iter([(
        "token".into(),
        serde_yaml::Value::String(token.trim().to_string()),
    )]);
    config["users"][0]["user"] = serde_yaml::Value::Mapping(user);
    let dir = std::env::temp_dir().join(format!("autoheal-deploy-{}", env.ns));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, serde_yaml::to_string(&config).unwrap()).unwrap();

    let op = Operator::start_as(
        &kubeconfig,
        &env.ns,
        &[
            "--lease-namespace",
            "autoheal-system",
            "--lease-name",
            &format!("autoheal-{}", env.ns),
        ],
    );
    env.kubectl(&[
        "-n",
        &env.ns,
        "apply",
        "-f",
        root.join("deploy/examples/web.yaml").to_str().unwrap(),
    ]);
    env.kubectl(&[
        "-n",
        &env.ns,
        "wait",
        "--for=condition=Ready",
        "sg/web",
        "--timeout=120s",
    ]);
    env.wait_in_service("web", 3).await;
    env.wait_pods_in_service("web", 3).await;
    env.kubectl(&["-n", &env.ns, "scale", "sg/web", "--replicas=1"]);
    env.wait_in_service("web", 1).await;

    // Events were recorded (events.k8s.io create is granted).
    let events: Api<Event> = Api::namespaced(env.client.clone(), &env.ns);
    wait_for("Events from autoheal", TIMEOUT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reporting_controller.as_deref() == Some("autoheal")
                    && e.reason.as_deref() == Some("Launched")
            })
            .then_some(())
    })
    .await;
    // Nothing was refused along the way.
    let log = std::fs::read_to_string(op.log_path()).unwrap();
    assert!(
        !log.contains("forbidden"),
        "the operator hit an RBAC refusal:\n{}",
        op.log_tail(60)
    );
    drop(op);
    let _ = std::fs::remove_dir_all(dir);
}
