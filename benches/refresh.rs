//! Refresh benchmark (`make bench-refresh`): Kubernetes' own Deployment controller
//! (kube-controller-manager) rolling 50 replicas to a new template, against autoheal's
//! ScalingGroup refreshing 50 Instances, side by side on one local control plane, with podsim
//! as the kubelet for both. Prints numbers, asserts nothing.
//!
//! The same bounds on both sides: Deployment `maxSurge: 25%`, `maxUnavailable: 25%`,
//! `minReadySeconds: 0` ⇔ ScalingGroup `refresh.maxHealthyPercentage: 125`,
//! `refresh.minHealthyPercentage: 75`, `refresh.instanceWarmupSeconds: 0`; health-check grace
//! period 0, deregistration delay 0, no probe, the same Pod template (termination grace period
//! `REFRESH_BENCH_GRACE`, default 1 s).
//!
//! Timed from the request that changes the image until: Deployment — 50 Pods, all of the new
//! template, Running and Ready, none terminating, and its status says so (updated, ready,
//! available 50, observedGeneration current); ScalingGroup — `status.refresh.status`
//! Successful, 50 Instances InService+Healthy on the new revision with Running Pods, nothing
//! else (no other Instance or Pod).
//!
//! `cargo bench --bench refresh [-- --runs N] [-- --kcm-variants]`; writes `bench/REFRESH.md`.
//! With `--kcm-variants` (`make bench`) the Deployment runs twice: first with
//! kube-controller-manager's own client limits (qps 20, burst 30), then with them raised to
//! autoheal's, alternating with the ScalingGroup; the runs also go to
//! `target/bench-refresh.json` for `bench/RESULTS.md`. With
//! `REFRESH_BENCH_KEEP=1` the operator logs are kept (their directory is printed);
//! `REFRESH_BENCH_LOG` is the operator's `RUST_LOG` (default `info`) and
//! `REFRESH_BENCH_PODSIM_LOG` a log filter for podsim, which then logs to stderr (e.g.
//! `podsim=debug`). `hack/refresh-hops.py` reads both and prints where an Instance's and a
//! Pod's time goes, hop by hop.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use autoheal::api::{
    HealthStatus, Instance, InstanceTemplate, InstanceTemplateSpec, LifecycleState, PodTemplate,
    RefreshState, ScalingGroup, ScalingGroupSpec,
};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, Namespace, Node, Pod, PodSpec, PodTemplateSpec,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use testkit::{ControlPlane, test_namespace};

#[path = "common/mod.rs"]
mod common;

use common::median_secs as median;

const MANAGER: &str = "autoheal-bench";
const N: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(600);
const RECHECK: Duration = Duration::from_millis(25);
const OLD_IMAGE: &str = "registry.example/web:1";
const NEW_IMAGE: &str = "registry.example/web:2";

fn grace_seconds() -> i64 {
    std::env::var("REFRESH_BENCH_GRACE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// A reflector store of one kind in one namespace, woken on every event.
struct Watched<K: Resource + Clone + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: Store<K>,
    changed: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource + Clone + 'static> Drop for Watched<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Watched<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    async fn start(api: Api<K>) -> Self {
        let (store, writer) = reflector::store();
        let changed = Arc::new(tokio::sync::Notify::new());
        let c = changed.clone();
        let task = tokio::spawn(async move {
            let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff();
            futures::pin_mut!(stream);
            while stream.next().await.is_some() {
                c.notify_waiters();
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(30), store.wait_until_ready()).await;
        Self {
            store,
            changed,
            task,
        }
    }

    fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}

/// Waits until `check` holds; returns when it was seen.
async fn until<F>(
    what: &str,
    changed: &[&tokio::sync::Notify],
    mut check: F,
) -> Result<Instant, String>
where
    F: FnMut() -> Result<(), String>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let notified: Vec<_> = changed.iter().map(|n| n.notified()).collect();
        let last = match check() {
            Ok(()) => return Ok(Instant::now()),
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}: {last}"));
        }
        let any = futures::future::select_all(notified.into_iter().map(Box::pin));
        let _ = tokio::time::timeout(RECHECK, any).await;
    }
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

fn pod_image(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.containers.first()?.image.as_deref()
}

fn pod_template(app: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), app.to_string())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(OLD_IMAGE.into()),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    name: Some("http".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }],
            termination_grace_period_seconds: Some(grace_seconds()),
            ..Default::default()
        }),
    }
}

fn deployment(name: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(N as i32),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), name.to_string())].into()),
                ..Default::default()
            },
            template: pod_template(name),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::String("25%".into())),
                    max_unavailable: Some(IntOrString::String("25%".into())),
                }),
            }),
            min_ready_seconds: Some(0),
            ..Default::default()
        }),
        status: None,
    }
}

/// The same bounds as the Deployment: max 125 %, min 75 %, no warm-up.
fn scaling_group(name: &str) -> ScalingGroup {
    let mut spec: ScalingGroupSpec = serde_json::from_value(serde_json::json!({
        "minSize": 0,
        "maxSize": N,
        "desiredCapacity": N,
        "template": { "spec": { "podTemplate": {} } },
    }))
    .unwrap();
    spec.template = InstanceTemplate {
        metadata: None,
        spec: InstanceTemplateSpec {
            pod_template: PodTemplate::new(pod_template(name)),
        },
    };
    spec.health_check.grace_period_seconds = 0;
    spec.replacement.deregistration_delay_seconds = 0;
    spec.refresh.min_healthy_percentage = 75;
    spec.refresh.max_healthy_percentage = 125;
    spec.refresh.instance_warmup_seconds = Some(0);
    ScalingGroup::new(name, spec)
}

/// The operator as a child process (killed on drop), logging to a file.
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(bin: &Path, kubeconfig: &Path, ns: &str, dir: &Path) -> Operator {
        let log = dir.join(format!("operator-{ns}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = Command::new(bin)
            .args([
                "run",
                "--namespace",
                ns,
                "--admin-addr",
                "127.0.0.1:0",
                "--lease-namespace",
                ns,
                "--leader-identity",
                &format!("bench-{ns}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("REFRESH_BENCH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        Operator { child, log }
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains("caches synced") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not sync its caches:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Bench {
    cp: ControlPlane,
    client: Client,
    operator_bin: PathBuf,
    dir: PathBuf,
    next_prefix: u8,
}

struct World {
    ns: String,
    podsim: tokio::task::JoinHandle<anyhow::Result<()>>,
    pods: Watched<Pod>,
}

impl Bench {
    async fn world(&mut self, prefix: &str) -> World {
        let ns = test_namespace(&self.client, prefix).await;
        self.next_prefix = self.next_prefix.wrapping_add(1).max(100);
        let config = podsim::Config {
            namespace: Some(ns.clone()),
            node_prefix: format!("podsim-{ns}"),
            ip_prefix: Some([127, self.next_prefix]),
            ..Default::default()
        };
        let podsim = tokio::spawn(podsim::run(self.client.clone(), config));
        let pods = Watched::start(Api::namespaced(self.client.clone(), &ns)).await;
        World { ns, podsim, pods }
    }

    /// Stops podsim and force-deletes what is left, then lets the control plane settle.
    async fn cleanup(&self, world: World) {
        let ns = world.ns.clone();
        world.podsim.abort();
        drop(world);
        let c = &self.client;
        let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns);
        let groups: Api<ScalingGroup> = Api::namespaced(c.clone(), &ns);
        let instances: Api<Instance> = Api::namespaced(c.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
        let _ = deployments
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let unfinalize = serde_json::json!({ "metadata": { "finalizers": null } });
        if let Ok(list) = groups.list(&ListParams::default()).await {
            for g in list {
                let _ = groups
                    .patch(
                        &g.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&unfinalize),
                    )
                    .await;
            }
        }
        let _ = groups
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        if let Ok(list) = instances.list(&ListParams::default()).await {
            let names: Vec<String> = list.items.iter().map(|i| i.name_any()).collect();
            futures::stream::iter(names)
                .for_each_concurrent(16, |n| {
                    let instances = instances.clone();
                    let unfinalize = unfinalize.clone();
                    async move {
                        let _ = instances
                            .patch(&n, &PatchParams::default(), &Patch::Merge(&unfinalize))
                            .await;
                    }
                })
                .await;
        }
        let _ = instances
            .delete_collection(&DeleteParams::default(), &ListParams::default())
            .await;
        let _ = pods
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await;
        let _ = Api::<Namespace>::all(c.clone())
            .delete(&ns, &DeleteParams::default())
            .await;
        let _ = Api::<Node>::all(c.clone())
            .delete(&format!("podsim-{ns}-0"), &DeleteParams::default())
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

/// `n` Pods, all with `image`, Running and Ready, none terminating, nothing else.
fn pods_all(pods: &[Arc<Pod>], image: &str) -> Result<(), String> {
    let good = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none() && pod_ready(p) && pod_image(p) == Some(image)
        })
        .count();
    if pods.len() == N && good == N {
        Ok(())
    } else {
        Err(format!("{} Pods, {good} Ready on {image}", pods.len()))
    }
}

async fn deployment_run(b: &mut Bench) -> Result<Duration, String> {
    let w = b.world("bench-deploy-refresh").await;
    let api: Api<Deployment> = Api::namespaced(b.client.clone(), &w.ns);
    let deployments = Watched::start(api.clone()).await;
    let result = async {
        api.patch(
            "web",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&deployment("web")),
        )
        .await
        .map_err(|e| e.to_string())?;
        until("Deployment up", &[&*w.pods.changed], || {
            pods_all(&w.pods.state(), OLD_IMAGE)
        })
        .await?;
        let t0 = Instant::now();
        let patch = serde_json::json!({ "spec": { "template": { "spec": { "containers": [
            { "name": "app", "image": NEW_IMAGE }
        ] } } } });
        let written = api
            .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|e| e.to_string())?;
        let generation = written.metadata.generation;
        let t1 = until(
            "Deployment rolled",
            &[&*w.pods.changed, &*deployments.changed],
            || {
                pods_all(&w.pods.state(), NEW_IMAGE)?;
                let d = deployments
                    .state()
                    .into_iter()
                    .next()
                    .ok_or("no Deployment")?;
                let s = d.status.clone().unwrap_or_default();
                let n = Some(N as i32);
                if s.observed_generation == generation
                    && s.updated_replicas == n
                    && s.ready_replicas == n
                    && s.available_replicas == n
                    && s.replicas == n
                {
                    Ok(())
                } else {
                    Err(format!("Deployment status {s:?}"))
                }
            },
        )
        .await?;
        Ok(t1 - t0)
    }
    .await;
    drop(deployments);
    b.cleanup(w).await;
    result
}

async fn group_run(b: &mut Bench) -> Result<Duration, String> {
    let w = b.world("bench-sg-refresh").await;
    let op = Operator::start(&b.operator_bin, b.cp.kubeconfig_path(), &w.ns, &b.dir);
    op.wait_ready().await;
    let insts = Watched::<Instance>::start(Api::namespaced(b.client.clone(), &w.ns)).await;
    let groups: Api<ScalingGroup> = Api::namespaced(b.client.clone(), &w.ns);
    let watched_groups = Watched::start(groups.clone()).await;
    let in_service = |image: &str, revision: Option<&str>| -> Result<(), String> {
        pods_all(&w.pods.state(), image)?;
        let insts = insts.state();
        let ok = insts
            .iter()
            .filter(|i| {
                let s = i.status.clone().unwrap_or_default();
                i.metadata.deletion_timestamp.is_none()
                    && s.lifecycle_state == Some(LifecycleState::InService)
                    && s.health_status == Some(HealthStatus::Healthy)
                    && revision.is_none_or(|r| s.revision.as_deref() == Some(r))
            })
            .count();
        if insts.len() == N && ok == N {
            Ok(())
        } else {
            Err(format!("{} Instances, {ok} InService+Healthy", insts.len()))
        }
    };
    let result = async {
        let mut group = scaling_group("web");
        groups
            .patch(
                "web",
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&group),
            )
            .await
            .map_err(|e| e.to_string())?;
        until("SG up", &[&*w.pods.changed, &*insts.changed], || {
            in_service(OLD_IMAGE, None)
        })
        .await?;
        group
            .spec
            .template
            .spec
            .pod_template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some(NEW_IMAGE.into());
        let t0 = Instant::now();
        groups
            .patch(
                "web",
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&group),
            )
            .await
            .map_err(|e| e.to_string())?;
        let changed = [&*w.pods.changed, &*insts.changed, &*watched_groups.changed];
        let t1 = until("SG refreshed", &changed, || {
            let g = watched_groups
                .state()
                .into_iter()
                .next()
                .ok_or("no group")?;
            let r = g
                .status
                .as_ref()
                .and_then(|s| s.refresh.clone())
                .ok_or("no refresh yet")?;
            if r.status != RefreshState::Successful {
                return Err(format!("refresh {:?}: {}", r.status, r.message));
            }
            in_service(NEW_IMAGE, Some(&r.target_revision))
        })
        .await?;
        Ok(t1 - t0)
    }
    .await;
    drop(op);
    drop(insts);
    drop(watched_groups);
    b.cleanup(w).await;
    result
}

async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()));
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap_or_else(|_| panic!("CRD {name} not Established"))
        .unwrap();
    }
}

fn secs(d: &Result<Duration, String>) -> String {
    match d {
        Ok(d) => format!("{:.3}", d.as_secs_f64()),
        Err(_) => "fail".into(),
    }
}

fn main() {
    if let Ok(filter) = std::env::var("REFRESH_BENCH_PODSIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let mut runs = 3usize;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(3);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(runs.max(1), args.iter().any(|a| a == "--kcm-variants")));
}

async fn run(runs: usize, kcm_variants: bool) {
    let operator_bin = PathBuf::from(env!("CARGO_BIN_EXE_autoheal"));
    eprintln!("bench-refresh: operator {}", operator_bin.display());
    let cp = ControlPlane::start()
        .await
        .expect("starting the control plane");
    let client = cp.client().await;
    install_crds(&client).await;
    let dir = std::env::temp_dir().join(format!("autoheal-bench-refresh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut b = Bench {
        cp,
        client,
        operator_bin,
        dir: dir.clone(),
        next_prefix: 99,
    };
    let mut deploy = Vec::new();
    let mut sg = Vec::new();
    let mut deploy_defaults = Vec::new();
    if kcm_variants {
        b.cp.restart(testkit::Part::ControllerManager, &common::KCM_DEFAULTS)
            .await
            .expect("restarting kube-controller-manager");
        tokio::time::sleep(Duration::from_secs(3)).await;
        for run in 1..=runs {
            let d = deployment_run(&mut b).await;
            eprintln!(
                "refresh {N}, run {run}: Deployment (kcm defaults) {}",
                secs(&d)
            );
            deploy_defaults.push(d);
        }
        let raised = common::kcm_raised();
        let raised: Vec<&str> = raised.iter().map(String::as_str).collect();
        b.cp.restart(testkit::Part::ControllerManager, &raised)
            .await
            .expect("restarting kube-controller-manager");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    for run in 1..=runs {
        let d = deployment_run(&mut b).await;
        eprintln!("refresh {N}, run {run}: Deployment {}", secs(&d));
        if let Err(e) = &d {
            eprintln!("  {e}");
        }
        deploy.push(d);
        let s = group_run(&mut b).await;
        eprintln!("refresh {N}, run {run}: ScalingGroup {}", secs(&s));
        if let Err(e) = &s {
            eprintln!("  {e}");
        }
        sg.push(s);
    }
    let (commit, nproc, date) = common::stamp();
    let (md_d, md_s) = (median(&deploy), median(&sg));
    let ratio = match (md_d, md_s) {
        (Some(d), Some(s)) if d > 0.0 => format!("{:.2}x", s / d),
        _ => "n/a".into(),
    };
    let fmt = |m: Option<f64>| m.map_or("fail".to_string(), |m| format!("{m:.3}"));
    let runs_of =
        |v: &[Result<Duration, String>]| v.iter().map(secs).collect::<Vec<_>>().join(", ");
    let mut md = String::new();
    md.push_str("# Refresh benchmark: Deployment vs ScalingGroup\n\n");
    let _ = writeln!(
        md,
        "Generated by `make bench-refresh` (`benches/refresh.rs`). Seconds, lower is better; {runs} runs each, Deployment and ScalingGroup alternating, on one local control plane (kube-apiserver, kube-controller-manager {}), podsim as the kubelet.\n",
        testkit::K8S_VERSION
    );
    let _ = writeln!(
        md,
        "- machine: {nproc} CPUs, {}\n- date: {date}\n- commit: {commit}\n- {N} replicas / Instances; the image changes; Pods: terminationGracePeriodSeconds {}\n- Deployment: RollingUpdate maxSurge 25%, maxUnavailable 25%, minReadySeconds 0; timed until 50 Ready Pods of the new template, none terminating, status updated/ready/available 50\n- ScalingGroup: refresh.maxHealthyPercentage 125, minHealthyPercentage 75, instanceWarmupSeconds 0, healthCheck.gracePeriodSeconds 0, deregistrationDelaySeconds 0, no probe; timed until status.refresh Successful and 50 Instances InService+Healthy on the new revision with Ready Pods, nothing else\n",
        std::env::consts::ARCH,
        grace_seconds()
    );
    md.push_str("| scenario | Deployment (median) | ScalingGroup (median) | SG / Deployment | Deployment runs | SG runs |\n|---|---|---|---|---|---|\n");
    let _ = writeln!(
        md,
        "| refresh {N} | {} | {} | {ratio} | {} | {} |",
        fmt(md_d),
        fmt(md_s),
        runs_of(&deploy),
        runs_of(&sg)
    );
    if kcm_variants {
        let _ = writeln!(
            md,
            "| refresh {N}, Deployment with kube-controller-manager's defaults ({}) | {} | {} | {} | {} | {} |",
            common::KCM_DEFAULTS.join(" "),
            fmt(median(&deploy_defaults)),
            fmt(md_s),
            match (median(&deploy_defaults), md_s) {
                (Some(d), Some(s)) if d > 0.0 => format!("{:.2}x", s / d),
                _ => "n/a".into(),
            },
            runs_of(&deploy_defaults),
            runs_of(&sg)
        );
        let _ = writeln!(
            md,
            "\nThe first row's Deployment ran with kube-controller-manager's client limits raised to autoheal's ({}).",
            common::kcm_raised().join(" ")
        );
        let json_runs = |v: &[Result<Duration, String>]| -> Vec<serde_json::Value> {
            v.iter()
                .map(|r| {
                    r.as_ref()
                        .map_or(serde_json::Value::Null, |d| d.as_secs_f64().into())
                })
                .collect()
        };
        let json = serde_json::json!({
            "date": date,
            "commit": commit,
            "deployment_kcm_defaults": json_runs(&deploy_defaults),
            "deployment_kcm_raised": json_runs(&deploy),
            "scalinggroup": json_runs(&sg),
        });
        let path = common::refresh_results_path();
        let _ = std::fs::create_dir_all(path.parent().unwrap());
        std::fs::write(&path, json.to_string()).unwrap();
    }
    println!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/REFRESH.md");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, &md).unwrap();
    eprintln!("written to {}", out.display());
    if std::env::var_os("REFRESH_BENCH_KEEP").is_some() {
        eprintln!("operator logs kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
