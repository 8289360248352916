//! podsim against a real API server (testkit's local control plane): every test runs
//! its own podsim in-process, restricted to its own namespace, with its own Node names
//! and Pod IP prefix.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use podsim::{Answers, BEHAVIOR_ANNOTATION, Config, ModeLog, NOT_READY_REASON, SIMULATED_LABEL};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(60);
const PORT: u16 = 8080;

/// A podsim running in this test; stopped when dropped.
struct Podsim(JoinHandle<anyhow::Result<()>>);

impl Podsim {
    fn start(client: kube::Client, config: Config) -> Podsim {
        Podsim(tokio::spawn(podsim::run(client, config)))
    }
}

impl Drop for Podsim {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Env {
    client: kube::Client,
    pods: Api<Pod>,
    config: Config,
    sim: Option<Podsim>,
}

/// A namespace of its own and a podsim for it. The second octets used by these tests
/// (1..=9 and 251) are never picked at random by podsim (10..=250).
async fn env(test: &str, octet: u8, nodes: usize) -> Env {
    env_with_resync(test, octet, nodes, podsim::RESYNC_INTERVAL).await
}

/// [`env`] with podsim re-evaluating every Pod only every `resync`.
async fn env_with_resync(test: &str, octet: u8, nodes: usize, resync: Duration) -> Env {
    let cp = testkit::ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = testkit::test_namespace(&client, &format!("podsim-{test}")).await;
    let config = Config {
        namespace: Some(ns.clone()),
        selector: None,
        nodes,
        node_prefix: ns.clone(),
        ip_prefix: Some([127, octet]),
        zones: Vec::new(),
        mode_log: Some(ModeLog::new()),
        resync_interval: resync,
    };
    let sim = Podsim::start(client.clone(), config.clone());
    Env {
        pods: Api::namespaced(client.clone(), &ns),
        client,
        config,
        sim: Some(sim),
    }
}

impl Env {
    fn node_names(&self) -> Vec<String> {
        (0..self.config.nodes)
            .map(|i| format!("{}-{i}", self.config.node_prefix))
            .collect()
    }

    async fn create_pod(&self, name: &str, behavior: Option<&str>, grace: Option<i64>) -> Pod {
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "name": "web",
                    "image": "registry.example/web:1",
                    "ports": [{"containerPort": PORT}],
                }],
            },
        });
        if let Some(b) = behavior {
            pod["metadata"]["annotations"] = json!({ BEHAVIOR_ANNOTATION: b });
        }
        if let Some(g) = grace {
            pod["spec"]["terminationGracePeriodSeconds"] = json!(g);
        }
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    async fn set_behavior(&self, name: &str, behavior: Option<&str>) {
        let patch = json!({"metadata": {"annotations": { BEHAVIOR_ANNOTATION: behavior }}});
        self.pods
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// Waits until the Pod is Running with an IP; returns the Pod and its IP.
    /// Waits until the Pod `name` is gone; returns how long since `deleted`.
    async fn wait_gone(&self, name: &str, deleted: Instant) -> Duration {
        testkit::wait_for(&format!("Pod {name} gone"), TIMEOUT, || async {
            self.pods.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
        deleted.elapsed()
    }

    async fn wait_running(&self, name: &str) -> (Pod, Ipv4Addr) {
        testkit::wait_for(
            &format!("Pod {name} Running with an IP"),
            TIMEOUT,
            || async {
                let pod = self.pods.get_opt(name).await.ok()??;
                let status = pod.status.as_ref()?;
                if status.phase.as_deref() != Some("Running") {
                    return None;
                }
                let ip = status.pod_ip.as_deref()?.parse().ok()?;
                Some((pod, ip))
            },
        )
        .await
    }

    async fn wait_phase(&self, name: &str, phase: &str) -> Pod {
        testkit::wait_for(&format!("Pod {name} in phase {phase}"), TIMEOUT, || async {
            let pod = self.pods.get_opt(name).await.ok()??;
            (pod.status.as_ref()?.phase.as_deref() == Some(phase)).then_some(pod)
        })
        .await
    }
}

fn condition<'a>(pod: &'a Pod, type_: &str) -> Option<&'a str> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

/// What a client sees when it sends `GET /healthz` to a Pod.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    Refused,
    /// Connected, but no response within 2 s.
    NoResponse,
    Other(String),
}

async fn get(ip: Ipv4Addr, port: u16) -> Answer {
    let limit = Duration::from_secs(2);
    let mut stream = match tokio::time::timeout(limit, TcpStream::connect((ip, port))).await {
        Err(_) => return Answer::Other("connect timed out".into()),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Answer::Refused,
        Ok(Err(e)) => return Answer::Other(format!("connect: {e}")),
        Ok(Ok(s)) => s,
    };
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return Answer::Other(format!("write: {e}"));
    }
    let mut response = Vec::new();
    match tokio::time::timeout(limit, stream.read_to_end(&mut response)).await {
        Err(_) if response.is_empty() => Answer::NoResponse,
        Ok(Err(e)) if response.is_empty() => Answer::Other(format!("read: {e}")),
        _ => {
            let text = String::from_utf8_lossy(&response);
            match text.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                Some(code) if text.starts_with("HTTP/1.1 ") => Answer::Status(code),
                _ => Answer::Other(format!("unexpected response {text:?}")),
            }
        }
    }
}

async fn wait_answer(ip: Ipv4Addr, expected: Answer) {
    let mut last = None;
    let what = format!("{ip}:{PORT} to answer {expected:?}");
    let result = tokio::time::timeout(TIMEOUT, async {
        loop {
            let answer = get(ip, PORT).await;
            if answer == expected {
                return;
            }
            last = Some(answer);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "timed out waiting for {what}; last answer {last:?}"
    );
}

#[tokio::test]
async fn pods_run_with_unique_ips_spread_over_ready_nodes() {
    let env = env("run", 2, 2).await;
    env.create_pod("a", None, None).await;
    env.create_pod("b", None, None).await;
    let (a, ip_a) = env.wait_running("a").await;
    let (b, ip_b) = env.wait_running("b").await;

    for ip in [ip_a, ip_b] {
        assert_eq!(&ip.octets()[..2], &[127, 2], "{ip}");
        assert_ne!(ip, Ipv4Addr::LOCALHOST);
    }
    assert_ne!(ip_a, ip_b);
    assert_eq!(get(ip_a, PORT).await, Answer::Status(200));
    assert_eq!(get(ip_b, PORT).await, Answer::Status(200));

    // spread over both nodes
    let node_of = |p: &Pod| p.spec.as_ref().unwrap().node_name.clone().unwrap();
    let mut nodes = vec![node_of(&a), node_of(&b)];
    nodes.sort();
    assert_eq!(nodes, env.node_names());

    // a kubelet-like status
    for pod in [&a, &b] {
        for c in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
            assert_eq!(condition(pod, c), Some("True"), "{c}");
        }
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(status.pod_ips.as_ref().unwrap().len(), 1);
        assert!(status.start_time.is_some());
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.name, "web");
        assert_eq!(cs.image, "registry.example/web:1");
        assert!(cs.ready);
        assert_eq!(cs.started, Some(true));
        assert_eq!(cs.restart_count, 0);
        assert!(cs.state.as_ref().unwrap().running.is_some());
    }

    // the simulated Nodes: labelled, Ready, heartbeating through a Lease
    let nodes: Api<Node> = Api::all(env.client.clone());
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    for name in env.node_names() {
        let node = nodes.get(&name).await.unwrap();
        assert_eq!(
            node.metadata
                .labels
                .as_ref()
                .unwrap()
                .get(SIMULATED_LABEL)
                .map(String::as_str),
            Some("true")
        );
        let ready = node.status.as_ref().unwrap().conditions.as_ref().unwrap();
        assert!(
            ready
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        );
        assert!(
            node.status
                .as_ref()
                .unwrap()
                .capacity
                .as_ref()
                .unwrap()
                .contains_key("pods")
        );
        let lease = leases.get(&name).await.unwrap();
        assert!(lease.spec.unwrap().renew_time.is_some());
    }
}

#[tokio::test]
async fn behaviors_are_observable_over_the_network() {
    let env = env("behave", 3, 1).await;
    env.create_pod("web", None, None).await;
    let (_, ip) = env.wait_running("web").await;
    wait_answer(ip, Answer::Status(200)).await;

    env.set_behavior("web", Some("fail")).await;
    wait_answer(ip, Answer::Status(503)).await;

    env.set_behavior("web", Some("hang")).await;
    wait_answer(ip, Answer::NoResponse).await;

    env.set_behavior("web", Some("refuse")).await;
    wait_answer(ip, Answer::Refused).await;

    env.set_behavior("web", Some("healthy")).await;
    wait_answer(ip, Answer::Status(200)).await;

    env.set_behavior("web", Some("fail")).await;
    wait_answer(ip, Answer::Status(503)).await;
    // an unknown value is treated as healthy
    env.set_behavior("web", Some("explode")).await;
    wait_answer(ip, Answer::Status(200)).await;
    env.set_behavior("web", Some("fail")).await;
    wait_answer(ip, Answer::Status(503)).await;
    // removing the annotation means healthy
    env.set_behavior("web", None).await;
    wait_answer(ip, Answer::Status(200)).await;

    // every change of the answers was recorded, in order, once each
    let pod = format!("{}/web", env.config.namespace.as_deref().unwrap());
    let log = env.config.mode_log.as_ref().unwrap();
    let changes: Vec<_> = (log.changes().into_iter())
        .filter(|c| c.pod == pod)
        .collect();
    let answers: Vec<Answers> = changes.iter().map(|c| c.answers).collect();
    let (ok, fail) = (Answers::Ok, Answers::Fail);
    let expected = [
        fail,
        Answers::Hang,
        Answers::Refused,
        ok,
        fail,
        ok,
        fail,
        ok,
    ];
    assert_eq!(answers, expected);
    assert!(changes.windows(2).all(|w| w[0].at <= w[1].at));

    // through all of it the Pod stayed Running and Ready, with the same IP
    let pod = env.pods.get("web").await.unwrap();
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some(ip.to_string().as_str()));
    assert_eq!(condition(&pod, "Ready"), Some("True"));
}

/// Asserts that podsim wrote the Pod's status exactly `n` times, and no more during a
/// few of its resync periods.
async fn assert_status_writes(env: &Env, pod: &str, n: usize) {
    let cp = testkit::ControlPlane::shared().await;
    let ns = env.config.namespace.clone().unwrap();
    let count = || {
        testkit::audit_writes(cp.audit_log_path())
            .into_iter()
            .filter(|w| w.resource == "pods" && w.subresource == "status")
            .filter(|w| w.namespace == ns && w.name == pod)
            .count()
    };
    testkit::wait_for(&format!("{n} status writes of {pod}"), TIMEOUT, || async {
        (count() >= n).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(), n, "status writes of Pod {pod}");
}

#[tokio::test]
async fn crash_fails_the_pod() {
    let env = env("crash", 4, 1).await;
    env.create_pod("web", None, None).await;
    let (_, ip) = env.wait_running("web").await;
    wait_answer(ip, Answer::Status(200)).await;
    // behaviors that do not change the status do not write it
    env.set_behavior("web", Some("fail")).await;
    wait_answer(ip, Answer::Status(503)).await;
    assert_status_writes(&env, "web", 1).await;

    env.set_behavior("web", Some("crash")).await;
    let pod = env.wait_phase("web", "Failed").await;
    assert_status_writes(&env, "web", 2).await;
    assert_eq!(condition(&pod, "Ready"), Some("False"));
    assert_eq!(condition(&pod, "ContainersReady"), Some("False"));
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(!cs.ready);
    let terminated = cs.state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(terminated.exit_code, 1);
    wait_answer(ip, Answer::Refused).await;

    // a Pod created crashing never runs
    env.create_pod("born-crashing", Some("crash"), None).await;
    let pod = env.wait_phase("born-crashing", "Failed").await;
    assert_eq!(condition(&pod, "Ready"), Some("False"));
}

#[tokio::test]
async fn slow_start_stays_pending_then_runs() {
    let env = env("slow", 5, 1).await;
    let created = Instant::now();
    env.create_pod("slow", Some("slow-start=3"), None).await;

    // bound and reported Pending (by podsim: containers waiting), without an IP
    let pending = testkit::wait_for("Pod slow reported Pending by podsim", TIMEOUT, || async {
        let pod = env.pods.get("slow").await.ok()?;
        let status = pod.status.as_ref()?;
        let waiting = status
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .waiting
            .is_some();
        (status.phase.as_deref() == Some("Pending") && waiting).then_some(pod)
    })
    .await;
    assert!(pending.spec.as_ref().unwrap().node_name.is_some());
    assert!(pending.status.as_ref().unwrap().pod_ip.is_none());
    assert_eq!(condition(&pending, "Ready"), Some("False"));

    let (_, ip) = env.wait_running("slow").await;
    assert!(
        created.elapsed() >= Duration::from_secs(3),
        "Running after {:?}",
        created.elapsed()
    );
    wait_answer(ip, Answer::Status(200)).await;
}

#[tokio::test]
async fn deletion_honours_the_grace_period() {
    let env = env("delete", 6, 1).await;
    env.create_pod("web", None, Some(3)).await;
    let (_, ip) = env.wait_running("web").await;
    wait_answer(ip, Answer::Status(200)).await;

    let deleted = Instant::now();
    env.pods
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pod = env.pods.get_opt("web").await.unwrap();
    assert!(
        pod.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
        "the Pod should still be terminating ~1s after the delete"
    );
    assert_eq!(
        get(ip, PORT).await,
        Answer::Status(200),
        "still serving while terminating"
    );

    let took = env.wait_gone("web", deleted).await;
    assert!(
        took >= Duration::from_millis(2500),
        "gone after {took:?}, before the grace period"
    );
    wait_answer(ip, Answer::Refused).await;
}

/// A grace period's end and a slow start's end are moments podsim knows in advance: it acts
/// at them, not at its next resync (here an hour away, longer than the test's timeout).
#[tokio::test]
async fn known_moments_do_not_wait_for_the_resync() {
    let env = env_with_resync("moments", 1, 1, Duration::from_secs(3600)).await;
    let created = Instant::now();
    env.create_pod("web", Some("slow-start=2"), Some(2)).await;
    let (_, ip) = env.wait_running("web").await;
    assert!(
        created.elapsed() >= Duration::from_secs(2),
        "Running after {:?}, before its slow start ended",
        created.elapsed()
    );
    wait_answer(ip, Answer::Status(200)).await;

    let deleted = Instant::now();
    env.pods
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let took = env.wait_gone("web", deleted).await;
    assert!(
        took >= Duration::from_millis(1500),
        "gone after {took:?}, before the grace period"
    );
}

#[tokio::test]
async fn node_notready_annotation() {
    let env = env("node", 7, 1).await;
    let name = env.node_names().remove(0);
    let nodes: Api<Node> = Api::all(env.client.clone());
    let ready = |node: &Node| -> Option<(String, Option<String>)> {
        let c = node
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?;
        Some((c.status.clone(), c.reason.clone()))
    };
    let wait_ready = |status: &'static str| {
        let nodes = nodes.clone();
        let name = name.clone();
        async move {
            testkit::wait_for(&format!("Node {name} Ready={status}"), TIMEOUT, || async {
                let node = nodes.get_opt(&name).await.ok()??;
                let (s, reason) = ready(&node)?;
                (s == status).then_some(reason)
            })
            .await
        }
    };
    wait_ready("True").await;

    let annotate = |value: Option<&str>| {
        Patch::Merge(json!({"metadata": {"annotations": { BEHAVIOR_ANNOTATION: value }}}))
    };
    nodes
        .patch(&name, &PatchParams::default(), &annotate(Some("notready")))
        .await
        .unwrap();
    let reason = wait_ready("False").await;
    assert_eq!(reason.as_deref(), Some(NOT_READY_REASON));

    // no heartbeats while not ready: neither the Lease nor the Ready condition's
    // lastHeartbeatTime moves for longer than a heartbeat period
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let heartbeats = || async {
        let lease = leases.get(&name).await.unwrap().spec.unwrap().renew_time;
        let node = nodes.get(&name).await.unwrap();
        let conditions = node.status.unwrap().conditions.unwrap();
        let ready = conditions.into_iter().find(|c| c.type_ == "Ready").unwrap();
        (lease, ready.last_heartbeat_time)
    };
    let stopped = heartbeats().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        heartbeats().await,
        stopped,
        "heartbeats continued while not ready"
    );

    nodes
        .patch(&name, &PatchParams::default(), &annotate(None))
        .await
        .unwrap();
    wait_ready("True").await;
    // The Node's Ready condition and its Lease are written separately: wait for both.
    testkit::wait_for(
        "Lease renewed and heartbeat posted again",
        TIMEOUT,
        || async {
            let resumed = heartbeats().await;
            (resumed.0 > stopped.0 && resumed.1 > stopped.1).then_some(())
        },
    )
    .await;

    // Pods still run there
    env.create_pod("web", None, None).await;
    let (_, ip) = env.wait_running("web").await;
    wait_answer(ip, Answer::Status(200)).await;
}

#[tokio::test]
async fn restart_readopts_running_pods() {
    let mut env = env("restart", 8, 1).await;
    env.create_pod("web", None, None).await;
    let (before, ip) = env.wait_running("web").await;
    wait_answer(ip, Answer::Status(200)).await;

    // podsim goes away: nothing serves the Pod any more
    drop(env.sim.take());
    wait_answer(ip, Answer::Refused).await;

    // a new podsim takes the Pod over, on the same IP
    env.sim = Some(Podsim::start(env.client.clone(), env.config.clone()));
    wait_answer(ip, Answer::Status(200)).await;
    let (after, ip_after) = env.wait_running("web").await;
    assert_eq!(ip_after, ip);
    assert_eq!(
        after.status.as_ref().unwrap().start_time,
        before.status.as_ref().unwrap().start_time
    );

    // and does not hand that IP to anyone else
    env.create_pod("other", None, None).await;
    let (_, other_ip) = env.wait_running("other").await;
    assert_ne!(other_ip, ip);
    wait_answer(other_ip, Answer::Status(200)).await;
}

/// The `podsim` binary, killed when dropped.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_runs_pods() {
    let cp = testkit::ControlPlane::shared().await;
    let client = cp.client().await;
    let ns = testkit::test_namespace(&client, "podsim-binary").await;
    let _podsim = Binary(
        std::process::Command::new(env!("CARGO_BIN_EXE_podsim"))
            .args(["--namespace", &ns, "--node-prefix", &ns, "--nodes", "2"])
            .args(["--ip-prefix", "127.9"])
            .env("KUBECONFIG", cp.kubeconfig_path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting the podsim binary"),
    );
    let env = Env {
        pods: Api::namespaced(client.clone(), &ns),
        client,
        config: Config {
            namespace: Some(ns.clone()),
            nodes: 2,
            node_prefix: ns.clone(),
            ip_prefix: Some([127, 9]),
            selector: None,
            zones: Vec::new(),
            mode_log: None,
            resync_interval: podsim::RESYNC_INTERVAL,
        },
        sim: None,
    };
    env.create_pod("web", Some("fail"), None).await;
    let (pod, ip) = env.wait_running("web").await;
    assert_eq!(&ip.octets()[..2], &[127, 9]);
    assert!(
        env.node_names()
            .contains(pod.spec.as_ref().unwrap().node_name.as_ref().unwrap())
    );
    wait_answer(ip, Answer::Status(503)).await;
}

/// Pods deleted and created again under the same names while podsim is still binding and
/// starting them (its writes for the first Pods in flight or queued): none is left stuck;
/// every Pod of the last round is bound, Running and Ready with an address of its own.
#[tokio::test]
async fn pods_recreated_under_their_names_mid_write_all_run() {
    let env = env("recreate", 251, 2).await;
    let names: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for round in 0..3 {
        // No wait between the rounds: the earlier Pods' bindings and status writes race
        // with their deletion and their namesakes' creation.
        for name in &names {
            if round > 0 {
                env.pods.delete(name, &now).await.unwrap();
                testkit::wait_for(&format!("Pod {name} deleted"), TIMEOUT, || async {
                    env.pods.get_opt(name).await.ok()?.is_none().then_some(())
                })
                .await;
            }
            env.create_pod(name, None, Some(0)).await;
        }
    }
    let mut ips = std::collections::BTreeSet::new();
    for name in &names {
        let (pod, ip) = env.wait_running(name).await;
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_ref())
                .is_some(),
            "{name} bound"
        );
        assert_eq!(condition(&pod, "Ready"), Some("True"), "{name} Ready");
        assert!(ips.insert(ip), "{name}: address {ip} given twice");
    }
}
