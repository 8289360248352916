//! Graceful shutdown with two replicas, against the real API server: SIGTERM to the leader in
//! the middle of a replacement lets its in-flight reconciles finish and releases the Lease, so
//! the follower takes over at once (well before the Lease would expire) and finishes the
//! replacement, repeating and skipping nothing.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use autoheal::api::{ANNOTATION_HEALTH, LifecycleState};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use support::*;
use testkit::wait_for;

/// Seconds the Lease stays valid without renewal (the operator's default).
const LEASE_SECONDS: u64 = 15;

/// One operator replica: `autoheal run` with leader election, its own identity and admin port.
struct Replica {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Replica {
    fn start(env: &Env, identity: &str) -> Replica {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("autoheal-shutdown-{}-{identity}.log", env.ns));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_autoheal"))
            .args([
                "run",
                "--namespace",
                &env.ns,
                "--lease-namespace",
                &env.ns,
                "--leader-identity",
                identity,
                "--admin-addr",
                &format!("127.0.0.1:{port}"),
            ])
            .env("KUBECONFIG", env.cp.kubeconfig_path())
            .env("RUST_LOG", "info,autoheal=debug")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Replica { child, port, log }
    }

    /// Whether `/readyz` answers 200 (this replica leads and its caches are synced).
    async fn ready(&self) -> bool {
        matches!(
            http_get(("127.0.0.1", self.port), "/readyz").await,
            Some((200, _))
        )
    }

    fn sigterm(&self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- {} ----\n{}",
                self.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The operator's writes on `resource` named `name` (any verb in `verbs`) since `since`.
fn writes(env: &Env, since: Timestamp, resource: &str, name: &str, verbs: &[&str]) -> usize {
    testkit::audit_writes(env.cp.audit_log_path())
        .into_iter()
        .filter(|w| {
            w.user_agent.starts_with("autoheal/")
                && w.namespace == env.ns
                && w.resource == resource
                && w.subresource.is_empty()
                && (name.is_empty() || w.name == name)
                && verbs.contains(&w.verb.as_str())
                && w.request_received_timestamp.parse::<Timestamp>().unwrap() >= since
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_replacement_hands_over_at_once_and_repeats_nothing() {
    let env = Env::new("shutdown").await;
    let mut leader = Replica::start(&env, "replica-a");
    wait_for("replica-a to lead", TIMEOUT, || async {
        leader.ready().await.then_some(())
    })
    .await;
    let follower = Replica::start(&env, "replica-b");
    // A deregistration delay keeps the victim in Terminating:Proceed long enough to stop
    // the leader in the middle of its replacement.
    env.apply_group(
        &GroupBuilder::new("web")
            .desired(2)
            .max(3)
            .deregistration_delay(4)
            .build(),
    )
    .await;
    let before = env.wait_in_service("web", 2).await;
    assert!(
        !follower.ready().await,
        "the follower does not run controllers"
    );
    let victim = before[0].name_any();
    let marked = Timestamp::now();
    env.annotate_instance(&victim, ANNOTATION_HEALTH, Some("Unhealthy"))
        .await;
    wait_for(&format!("{victim} leaving"), TIMEOUT, || async {
        let i = env.instance(&victim).await?;
        state_of(&i)
            .is_some_and(|s| s.is_terminating())
            .then_some(())
    })
    .await;

    let stopped = Instant::now();
    leader.sigterm();
    let exit_by = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = leader.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < exit_by,
            "replica-a did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "a graceful shutdown exits 0: {status:?}");
    assert!(
        leader.log().contains("in-flight reconciles finished"),
        "the leader drained its reconciles"
    );
    wait_for("replica-b to take over", TIMEOUT, || async {
        follower.ready().await.then_some(())
    })
    .await;
    let handover = stopped.elapsed();
    eprintln!("handover after SIGTERM: {handover:?}");
    assert!(
        handover < Duration::from_secs(LEASE_SECONDS),
        "the follower led {handover:?} after SIGTERM: the Lease was released, not left to expire"
    );
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let holder = leases
        .get("autoheal-leader")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("replica-b"));

    // The follower finishes the replacement: one replacement, each step once.
    let after = wait_for("the group healed without the victim", TIMEOUT, || async {
        let all = env.group_instances("web").await;
        let ok = all.len() == 2
            && all.iter().all(|i| {
                i.name_any() != victim
                    && state_of(i) == Some(LifecycleState::InService)
                    && is_healthy(i)
            });
        ok.then_some(all)
    })
    .await;
    env.wait_instance_gone(&victim).await;
    let replacements: Vec<_> = after
        .iter()
        .filter(|i| i.annotations().get("autoheal.dev/replaces") == Some(&victim))
        .collect();
    assert_eq!(replacements.len(), 1, "one replacement of {victim}");
    // Let the audit log catch up with the last writes, then count.
    env.flush_audit().await;
    assert_eq!(
        writes(&env, marked, "instances", "", &["create"]),
        1,
        "exactly one Instance launched after the mark"
    );
    assert_eq!(
        writes(&env, marked, "pods", &victim, &["delete"]),
        1,
        "the victim's Pod deleted once"
    );
    assert_eq!(
        writes(&env, marked, "instances", &victim, &["delete"]),
        1,
        "the victim deleted once"
    );
    // Its recorded history went through each leaving state once, in order.
    let events: Vec<String> = {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(env.client.clone(), &env.ns);
        api.list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(victim.as_str())
            })
            // A repeated Event with the same note is folded into the first one's series:
            // a series would be a repeat as much as a second Event is.
            .filter(|e| {
                e.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("EnteredTerminating") || r == "Terminated")
            })
            .inspect(|e| assert!(e.series.is_none(), "repeated Event: {e:?}"))
            .filter_map(|e| e.reason)
            .collect()
    };
    for reason in [
        "EnteredTerminating",
        "EnteredTerminatingProceed",
        "Terminated",
    ] {
        assert_eq!(
            events.iter().filter(|r| *r == reason).count(),
            1,
            "{reason} once: {events:?}"
        );
    }
}
