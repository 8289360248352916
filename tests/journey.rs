//! The kubectl journey of a new user, end to end, with the real `kubectl` only: install the
//! CRDs, apply the example group, wait for it, read the columns, mark an Instance unhealthy and
//! see it replaced (with the evidence in `kubectl describe` and `kubectl events`), scale, read
//! the group as `aws autoscaling describe-auto-scaling-groups` would show it, and delete the
//! group, which drains and removes everything.

mod support;

use std::path::Path;

use support::*;
use testkit::wait_for;

/// The column headers `kubectl get` prints for a kind (the first line, split on blanks).
fn headers(table: &str) -> Vec<String> {
    table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubectl_journey_from_install_to_delete() {
    let env = Env::new("journey").await;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ns = env.ns.as_str();
    let _op = env.operator();

    // Install: the CRDs as a user applies them (again: applying is idempotent).
    env.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        root.join("crds").to_str().unwrap(),
    ]);
    env.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/scalinggroups.autoheal.dev",
        "crd/instances.autoheal.dev",
    ]);

    // The example group, Ready.
    env.kubectl(&[
        "-n",
        ns,
        "apply",
        "-f",
        root.join("deploy/examples/web.yaml").to_str().unwrap(),
    ]);
    env.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "sg/web",
        "--timeout=180s",
    ]);

    // kstatus, as GitOps tools read it: settled, not stalled.
    for settled in ["Reconciling=False", "Stalled=False"] {
        env.kubectl(&[
            "-n",
            ns,
            "wait",
            &format!("--for=condition={settled}"),
            "sg/web",
            "--timeout=60s",
        ]);
    }

    // The columns of `kubectl get`.
    let groups = env.kubectl(&["-n", ns, "get", "sg"]);
    for column in [
        "NAME",
        "DESIRED",
        "CURRENT",
        "INSERVICE",
        "HEALTHY",
        "UNHEALTHY",
        "AGE",
    ] {
        assert!(
            headers(&groups).iter().any(|h| h == column),
            "kubectl get sg has {column}: {groups}"
        );
    }
    let web_row = groups.lines().find(|l| l.starts_with("web ")).unwrap();
    assert_eq!(
        web_row.split_whitespace().nth(1),
        Some("3"),
        "DESIRED 3: {groups}"
    );
    let instances = env.kubectl(&["-n", ns, "get", "inst"]);
    for column in [
        "NAME", "GROUP", "STATE", "HEALTH", "DETAIL", "ADDRESS", "AGE",
    ] {
        assert!(
            headers(&instances).iter().any(|h| h == column),
            "kubectl get inst has {column}: {instances}"
        );
    }
    let in_service = env.wait_in_service("web", 3).await;

    // Mark one Unhealthy with kubectl annotate: it is replaced.
    let victim = in_service[0].metadata.name.clone().unwrap();
    env.kubectl(&[
        "-n",
        ns,
        "annotate",
        &format!("inst/{victim}"),
        "autoheal.dev/health=Unhealthy",
        "autoheal.dev/respect-grace-period=false",
        "autoheal.dev/health-reason=disk full",
    ]);
    // The evidence is on the Instance while it drains (deregistration delay 5 s).
    let described = wait_for(
        "kubectl describe inst shows the verdict and its evidence",
        TIMEOUT,
        || async {
            let out = kubectl(env.cp, &["-n", ns, "describe", &format!("inst/{victim}")]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("MarkedUnhealthy") && text.contains("Events:")).then_some(text)
        },
    )
    .await;
    assert!(described.contains("Conditions"), "{described}");
    assert!(
        described.contains("marked Unhealthy (autoheal.dev/health): disk full"),
        "the evidence names the annotation and the reason given: {described}"
    );
    env.wait_instance_gone(&victim).await;
    let replaced = env.wait_in_service("web", 3).await;
    assert!(
        replaced
            .iter()
            .all(|i| i.metadata.name.as_deref() != Some(victim.as_str()))
    );

    // `kubectl events --for` tells the story of the replaced Instance, after it is gone.
    let story = wait_for(
        "kubectl events --for the replaced Instance",
        TIMEOUT,
        || async {
            let out = kubectl(
                env.cp,
                &["-n", ns, "events", "--for", &format!("instance/{victim}")],
            );
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains("Unhealthy") && text.contains("Terminated")).then_some(text)
        },
    )
    .await;
    assert!(story.contains("EnteredTerminating"), "{story}");
    // The group's Events name the replacement.
    let group_story = env.kubectl(&["-n", ns, "events", "--for", "scalinggroup/web"]);
    assert!(
        group_story.contains(&format!("to replace {victim}")),
        "{group_story}"
    );

    // Scale with kubectl scale (the scale subresource).
    env.kubectl(&["-n", ns, "scale", "sg/web", "--replicas=5"]);
    env.wait_in_service("web", 5).await;
    env.kubectl(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "sg/web",
        "--timeout=180s",
    ]);

    // `kubectl get sg web -o yaml` lists the Instances, as describe-auto-scaling-groups does.
    let yaml = env.kubectl(&["-n", ns, "get", "sg", "web", "-o", "yaml"]);
    let group: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    let listed = group["status"]["instances"]
        .as_sequence()
        .expect("status.instances");
    assert_eq!(listed.len(), 5, "{yaml}");
    for entry in listed {
        for field in [
            "name",
            "lifecycleState",
            "healthStatus",
            "protectedFromScaleIn",
            "nodeName",
            "revision",
        ] {
            assert!(
                !entry[field].is_null(),
                "each listed Instance has {field}: {entry:?}"
            );
        }
        assert_eq!(entry["lifecycleState"].as_str(), Some("InService"));
        assert_eq!(entry["healthStatus"].as_str(), Some("Healthy"));
    }

    // Delete the group: it drains and removes every Instance and Pod, then goes.
    env.kubectl(&[
        "-n",
        ns,
        "delete",
        "sg",
        "web",
        "--wait=true",
        "--timeout=180s",
    ]);
    let left = env.kubectl(&["-n", ns, "get", "inst,pods", "-o", "name"]);
    assert!(left.trim().is_empty(), "nothing left: {left}");
}
