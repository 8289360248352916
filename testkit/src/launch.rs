//! Laying out, starting and waiting for a control plane.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;

use crate::process::{Component, Lifetime, log_tail, spawn};

/// kube-controller-manager's controllers (names as of Kubernetes 1.36).
pub const KCM_CONTROLLERS: [&str; 8] = [
    "garbage-collector-controller",
    "namespace-controller",
    "replicaset-controller",
    "deployment-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "disruption-controller",
    "endpointslice-controller",
];

/// The Service IP range.
const SERVICE_CIDR: &str = "10.0.0.0/24";

/// How long a start may take before it is given up.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(180);

/// Where a control plane keeps its files, all directly in one directory.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn kcm_kubeconfig(&self) -> PathBuf {
        self.dir.join("controller-manager.kubeconfig")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }
    pub fn audit_policy(&self) -> PathBuf {
        self.dir.join("audit-policy.yaml")
    }
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.dir.join("etcd-data")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.dir.join(format!("{component}.log"))
    }
    pub fn pids(&self) -> PathBuf {
        self.dir.join("control-plane.pids")
    }
    /// Everything a control plane writes into its directory (what `down` removes).
    pub fn entries(&self) -> Vec<PathBuf> {
        let mut v = vec![
            self.kubeconfig(),
            self.kcm_kubeconfig(),
            self.audit_log(),
            self.audit_policy(),
            self.pki(),
            self.etcd_data(),
            self.pids(),
        ];
        v.extend(COMPONENTS.iter().map(|c| self.log(c)));
        v
    }
}

/// The components, in start order.
pub(crate) const COMPONENTS: [&str; 3] = ["etcd", "kube-apiserver", "kube-controller-manager"];

/// Reserves `n` distinct free loopback ports (released again on return; a
/// component that then loses the race fails with "address already in use" and the
/// start is retried).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reserving a loopback port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

fn kubeconfig_yaml(
    server: &str,
    ca_pem: &str,
    user: &str,
    cert_pem: &str,
    key_pem: &str,
) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: autoheal-local
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: autoheal-local
  context:
    cluster: autoheal-local
    user: {user}
    namespace: default
current-context: autoheal-local
",
        ca = B64.encode(ca_pem),
        cert = B64.encode(cert_pem),
        key = B64.encode(key_pem),
    )
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::File::options()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// A started (not necessarily ready) control plane.
pub(crate) struct Launched {
    pub components: Vec<Component>,
    /// `https://127.0.0.1:PORT`
    pub server: String,
}

impl Launched {
    pub fn kill_all(&mut self) {
        for c in self.components.iter_mut().rev() {
            c.kill();
        }
    }
}

/// Writes certificates, kubeconfigs and the audit policy into `layout.dir` (which
/// must exist) and starts etcd, kube-apiserver and kube-controller-manager.
pub(crate) fn launch(layout: &Layout, bin_dir: &Path, lifetime: Lifetime) -> Result<Launched> {
    let ports = free_ports(3)?;
    let (etcd_client, etcd_peer, apiserver) = (ports[0], ports[1], ports[2]);
    let server = format!("https://127.0.0.1:{apiserver}");

    let pki = crate::pki::generate()?;
    let pki_dir = layout.pki();
    std::fs::create_dir_all(&pki_dir).with_context(|| format!("creating {}", pki_dir.display()))?;
    let ca_crt = pki_dir.join("ca.crt");
    let serving_crt = pki_dir.join("apiserver.crt");
    let serving_key = pki_dir.join("apiserver.key");
    let sa_key = pki_dir.join("sa.key");
    let sa_pub = pki_dir.join("sa.pub");
    write(&ca_crt, &pki.ca.cert)?;
    write_private(&pki_dir.join("ca.key"), &pki.ca.key)?;
    write(&serving_crt, &pki.serving.cert)?;
    write_private(&serving_key, &pki.serving.key)?;
    write_private(&sa_key, &pki.service_account_key)?;
    write(&sa_pub, &pki.service_account_pub)?;
    write_private(
        &layout.kubeconfig(),
        &kubeconfig_yaml(
            &server,
            &pki.ca.cert,
            "admin",
            &pki.admin.cert,
            &pki.admin.key,
        ),
    )?;
    write_private(
        &layout.kcm_kubeconfig(),
        &kubeconfig_yaml(
            &server,
            &pki.ca.cert,
            "system:kube-controller-manager",
            &pki.controller_manager.cert,
            &pki.controller_manager.key,
        ),
    )?;
    write(&layout.audit_policy(), crate::audit::AUDIT_POLICY)?;

    let p = |path: &Path| path.display().to_string();
    let etcd_url = format!("http://127.0.0.1:{etcd_client}");
    let peer_url = format!("http://127.0.0.1:{etcd_peer}");
    let etcd_args = vec![
        "--name=testkit".to_string(),
        format!("--data-dir={}", p(&layout.etcd_data())),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=testkit={peer_url}"),
        "--initial-cluster-state=new".to_string(),
        "--unsafe-no-fsync=true".to_string(),
        "--log-level=warn".to_string(),
    ];
    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        // The `kubernetes` Service's Endpoints may not hold a loopback address; without
        // this the apiserver retries (and fails, and audits) writing them every 10 s.
        "--endpoint-reconciler-type=none".to_string(),
        format!("--secure-port={apiserver}"),
        format!("--cert-dir={}", p(&pki_dir)),
        format!("--tls-cert-file={}", p(&serving_crt)),
        format!("--tls-private-key-file={}", p(&serving_key)),
        format!("--client-ca-file={}", p(&ca_crt)),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_string(),
        format!("--service-account-key-file={}", p(&sa_pub)),
        format!("--service-account-signing-key-file={}", p(&sa_key)),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--authorization-mode=Node,RBAC".to_string(),
        "--allow-privileged=true".to_string(),
        format!("--audit-policy-file={}", p(&layout.audit_policy())),
        format!("--audit-log-path={}", p(&layout.audit_log())),
        "--audit-log-format=json".to_string(),
        "--audit-log-mode=blocking".to_string(),
        "--audit-log-maxsize=0".to_string(),
        // `/debug/pprof` (admin only) when PROFILING_ENV is set: `go tool pprof` of a bench.
        format!(
            "--profiling={}",
            std::env::var_os(crate::PROFILING_ENV).is_some_and(|v| !v.is_empty())
        ),
    ];
    let kcm_args = vec![
        format!("--kubeconfig={}", p(&layout.kcm_kubeconfig())),
        "--leader-elect=false".to_string(),
        "--secure-port=0".to_string(),
        format!("--controllers={}", KCM_CONTROLLERS.join(",")),
        format!("--root-ca-file={}", p(&ca_crt)),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--use-service-account-credentials=false".to_string(),
        "--kube-api-qps=100".to_string(),
        "--kube-api-burst=200".to_string(),
    ];

    let mut launched = Launched {
        components: Vec::new(),
        server,
    };
    let specs: [(&'static str, Vec<String>); 3] = [
        ("etcd", etcd_args),
        ("kube-apiserver", apiserver_args),
        ("kube-controller-manager", kcm_args),
    ];
    for (name, args) in specs {
        match spawn(
            name,
            &bin_dir.join(name),
            &args,
            &layout.log(name),
            lifetime,
        ) {
            Ok(c) => launched.components.push(c),
            Err(e) => {
                launched.kill_all();
                return Err(e);
            }
        }
    }
    if lifetime == Lifetime::Detached {
        let pids: String = launched
            .components
            .iter()
            .map(|c| format!("{} {}\n", c.name, c.child.id()))
            .collect();
        write(&layout.pids(), &pids)?;
    }
    Ok(launched)
}

/// An admin client for `kubeconfig`, never going through a proxy (the apiserver
/// is on loopback), with short timeouts when `probe` is set.
pub(crate) async fn client_for(kubeconfig: &Path, probe: bool) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading {}", kubeconfig.display()))?;
    config.proxy_url = None;
    if probe {
        config.connect_timeout = Some(Duration::from_secs(2));
        config.read_timeout = Some(Duration::from_secs(5));
        config.write_timeout = Some(Duration::from_secs(5));
    }
    kube::Client::try_from(config).context("creating a Kubernetes client")
}

/// `GET /readyz`: Ok when the apiserver answers `ok`.
pub(crate) async fn readyz(client: &kube::Client) -> Result<()> {
    let req = http::Request::get("/readyz").body(Vec::new())?;
    let body = client.request_text(req).await?;
    if body.trim() == "ok" {
        Ok(())
    } else {
        Err(anyhow!("/readyz answered {body:?}"))
    }
}

fn tail_of(components: &[Component], name: &str) -> String {
    components
        .iter()
        .find(|c| c.name == name)
        .map(|c| log_tail(&c.log))
        .unwrap_or_default()
}

/// Waits until kube-apiserver's `/readyz` is ok and the `default` ServiceAccount
/// exists in `default` (kube-controller-manager works), failing early when a
/// component exits, and with the relevant log's tail on timeout.
pub(crate) async fn wait_ready(
    layout: &Layout,
    launched: &mut Launched,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let client = client_for(&layout.kubeconfig(), true).await?;
    let check_alive = |launched: &mut Launched| -> Result<()> {
        for c in launched.components.iter_mut() {
            c.check_alive()?;
        }
        Ok(())
    };

    loop {
        check_alive(launched)?;
        let last = match readyz(&client).await {
            Ok(()) => break,
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver at {} not ready after {timeout:?} (last: {last}); {}\n{}",
                launched.server,
                tail_of(&launched.components, "kube-apiserver"),
                tail_of(&launched.components, "etcd"),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    loop {
        check_alive(launched)?;
        let last = match sas.get_opt("default").await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => "not created yet".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "ServiceAccount default/default missing after {timeout:?} (last: {last}): is kube-controller-manager working? {}",
                tail_of(&launched.components, "kube-controller-manager"),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// True when the error says a port was taken (lost race for a "free" port).
fn port_conflict(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    text.contains("address already in use") && text.contains("exited")
}

/// Launches a control plane in `layout.dir` and waits until it is ready, retrying
/// with fresh ports when a component lost a port race. On failure everything
/// started is killed.
pub(crate) async fn start_in(
    layout: &Layout,
    bin_dir: &Path,
    lifetime: Lifetime,
) -> Result<Launched> {
    const ATTEMPTS: u32 = 3;
    for attempt in 1..=ATTEMPTS {
        let (l, b) = (layout.clone(), bin_dir.to_path_buf());
        let mut launched = tokio::task::spawn_blocking(move || launch(&l, &b, lifetime))
            .await
            .context("launch task")??;
        match wait_ready(layout, &mut launched, START_TIMEOUT).await {
            Ok(()) => return Ok(launched),
            Err(e) => {
                launched.kill_all();
                if attempt < ATTEMPTS && port_conflict(&e) {
                    tracing::warn!("control plane lost a port race, retrying: {e:#}");
                    for entry in layout.entries() {
                        let _ = std::fs::remove_dir_all(&entry)
                            .or_else(|_| std::fs::remove_file(&entry));
                    }
                    continue;
                }
                return Err(e.context(format!(
                    "starting the control plane in {}",
                    layout.dir.display()
                )));
            }
        }
    }
    unreachable!("the last attempt returns")
}
