//! Test tooling: a real local Kubernetes control plane — etcd, kube-apiserver and
//! kube-controller-manager on loopback, no kubelet — for integration tests and
//! for `make cluster-up`.
//!
//! * [`ControlPlane::shared`] gives every test in a test binary the same control
//!   plane, started on first use; [`ControlPlane::start`] starts a private one.
//!   Their processes die with the test process, even when it panics or is killed.
//! * [`test_namespace`] makes a fresh namespace per test, [`wait_for`] polls a
//!   condition, [`audit_writes`] reads the audit log of write requests.
//! * [`local`] is the `cluster up` / `cluster down` tool, whose control plane
//!   outlives the command.
//!
//! The binaries come from `hack/build-k8s.sh` (see [`locate_binaries`]).
//!
//! Identities: the admin kubeconfig authenticates as user `admin` in group
//! `system:masters`; kube-controller-manager as `system:kube-controller-manager`
//! (also in `system:masters`), so the two are told apart in the audit log.

#![warn(missing_docs)]

mod audit;
mod bins;
mod launch;
pub mod local;
mod pki;
mod process;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

pub use audit::{AUDITED_VERBS, AuditWrite, audit_log_end, audit_writes, audit_writes_after};
pub use bins::{K8S_VERSION, locate_binaries};
pub use launch::KCM_CONTROLLERS;

use launch::Layout;
use process::{Component, Lifetime};

/// One process of the control plane, for [`ControlPlane::pause`], [`ControlPlane::resume`]
/// and [`ControlPlane::restart`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    ApiServer,
    /// kube-controller-manager.
    ControllerManager,
}

impl Part {
    /// The executable's name.
    pub fn name(self) -> &'static str {
        match self {
            Part::Etcd => "etcd",
            Part::ApiServer => "kube-apiserver",
            Part::ControllerManager => "kube-controller-manager",
        }
    }
}

/// Set (to anything non-empty) to serve kube-apiserver's `/debug/pprof` (to admin only), e.g.
/// `kubectl get --raw '/debug/pprof/profile?seconds=20' > cpu.pprof` during a benchmark.
pub const PROFILING_ENV: &str = "AUTOHEAL_TESTKIT_PROFILING";

/// Set (to anything non-empty) to keep a test control plane's directory (logs,
/// audit log, etcd data) after it stops; its path is printed to stderr.
pub const KEEP_ENV: &str = "AUTOHEAL_TESTKIT_KEEP";

/// A running local control plane.
///
/// Its processes are killed, and its directory removed, when it is dropped and,
/// failing that, when the process exits.
pub struct ControlPlane {
    dir: PathBuf,
    kubeconfig: PathBuf,
    audit_log: PathBuf,
    bin_dir: PathBuf,
    server: String,
    /// `None` once shut down.
    components: Mutex<Option<Vec<Component>>>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("dir", &self.dir)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

const TEMP_PREFIX: &str = "autoheal-testkit-";

/// Removes the directories of test control planes whose process is gone (killed
/// before it could clean up).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !process::pid_exists(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn random_suffix(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl ControlPlane {
    /// Starts a fresh control plane in a new temp dir (children die with this process).
    ///
    /// Returns once kube-apiserver's `/readyz` is ok and kube-controller-manager has
    /// created the `default` ServiceAccount; gives up after 180 s, with the tail of
    /// the failing component's log in the error. Builds the binaries first if they
    /// are missing (see [`locate_binaries`]), which can take a long time.
    pub async fn start() -> Result<ControlPlane> {
        let bin_dir = tokio::task::spawn_blocking(locate_binaries)
            .await
            .context("locating binaries")??;
        sweep_stale_dirs();
        let dir = std::env::temp_dir().join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            random_suffix(8)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let layout = Layout { dir: dir.clone() };
        let started = Instant::now();
        match launch::start_in(&layout, &bin_dir, Lifetime::TiedToProcess).await {
            Ok(launched) => {
                tracing::info!(
                    "control plane {} ready in {:.1?} (dir {})",
                    launched.server,
                    started.elapsed(),
                    dir.display()
                );
                Ok(ControlPlane {
                    kubeconfig: layout.kubeconfig(),
                    audit_log: layout.audit_log(),
                    dir,
                    bin_dir,
                    server: launched.server,
                    components: Mutex::new(Some(launched.components)),
                })
            }
            Err(e) => {
                remove_or_keep(&dir);
                Err(e)
            }
        }
    }

    /// One control plane per test process, started on first use and shared by all tests in it.
    ///
    /// Works from any number of `#[tokio::test]`s (each with its own runtime): the
    /// control plane belongs to no runtime, and [`ControlPlane::client`] makes a
    /// client in the caller's. Tests sharing it should work in their own
    /// namespaces ([`test_namespace`]). Its processes are stopped and its directory
    /// removed when the process exits.
    ///
    /// # Panics
    /// When the control plane cannot be started (in this and every later call),
    /// with the reason and the failing component's log tail.
    pub async fn shared() -> &'static ControlPlane {
        static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
        extern "C" fn stop_shared() {
            if let Some(Ok(cp)) = SHARED.get() {
                cp.shutdown();
            }
        }
        let result = match SHARED.get() {
            Some(r) => r,
            None => tokio::task::spawn_blocking(|| {
                SHARED.get_or_init(|| {
                    // A runtime of its own, on a thread of its own: nothing of the
                    // control plane is tied to the first caller's runtime.
                    let started = std::thread::Builder::new()
                        .name("testkit-shared-control-plane".into())
                        .spawn(|| {
                            tokio::runtime::Builder::new_current_thread()
                                .enable_all()
                                .build()
                                .map_err(|e| format!("building a tokio runtime: {e}"))?
                                .block_on(ControlPlane::start())
                                .map_err(|e| format!("{e:#}"))
                        })
                        .map_err(|e| format!("spawning a thread: {e}"))
                        .and_then(|t| {
                            t.join()
                                .unwrap_or_else(|_| Err("the start panicked".into()))
                        });
                    if started.is_ok() {
                        // SAFETY: registering a plain extern "C" fn.
                        unsafe { libc::atexit(stop_shared) };
                    }
                    started
                })
            })
            .await
            .expect("testkit: starting the shared control plane panicked"),
        };
        match result {
            Ok(cp) => cp,
            Err(e) => panic!("testkit: the shared control plane could not be started: {e}"),
        }
    }

    /// The admin kubeconfig (`<dir>/kubeconfig`; user `admin`, group `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The audit log (`<dir>/audit.log`, JSON lines; write requests only, at
    /// Metadata level). Read it with [`audit_writes`].
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log
    }

    /// The directory holding etcd, kube-apiserver, kube-controller-manager and kubectl.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The control plane's directory: kubeconfig, audit log, components' logs
    /// (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`), etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's URL, `https://127.0.0.1:PORT`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An admin client, made afresh in the caller's tokio runtime.
    ///
    /// # Panics
    /// When the kubeconfig cannot be loaded (not expected to happen).
    pub async fn client(&self) -> kube::Client {
        launch::client_for(&self.kubeconfig, false)
            .await
            .unwrap_or_else(|e| panic!("testkit: admin client for {}: {e:#}", self.server))
    }

    /// `kubectl` with --kubeconfig set (std::process::Command).
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.bin_dir.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// Runs `f` on the running component named `name`.
    fn with_component<T>(
        &self,
        part: Part,
        f: impl FnOnce(&mut process::Component) -> Result<T>,
    ) -> Result<T> {
        let mut guard = self.components.lock().unwrap_or_else(|e| e.into_inner());
        let component = guard
            .as_mut()
            .and_then(|cs| cs.iter_mut().find(|c| c.name == part.name()))
            .with_context(|| format!("{} is not running", part.name()))?;
        f(component)
    }

    /// Stops a component with SIGSTOP (it keeps its connections but answers nothing) until
    /// [`ControlPlane::resume`].
    pub fn pause(&self, part: Part) -> Result<()> {
        self.with_component(part, |c| c.signal(libc::SIGSTOP))
    }

    /// Lets a component paused by [`ControlPlane::pause`] go on (SIGCONT).
    pub fn resume(&self, part: Part) -> Result<()> {
        self.with_component(part, |c| c.signal(libc::SIGCONT))
    }

    /// SIGKILLs a component and starts it again with the same arguments, except `overrides`
    /// (`--flag=value`, replacing that flag's argument or appended), e.g.
    /// `["--kube-api-qps=20", "--kube-api-burst=30"]` for kube-controller-manager. Etcd keeps
    /// its data directory, the API server its port. Returns once the API server's `/readyz`
    /// answers ok again (within 120 s).
    pub async fn restart(&self, part: Part, overrides: &[&str]) -> Result<()> {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        self.with_component(part, |c| c.restart(&overrides))?;
        let client = launch::client_for(&self.kubeconfig, true).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.with_component(part, |c| c.check_alive())?;
            match launch::readyz(&client).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(
                        e.context(format!("the API server after restarting {}", part.name()))
                    );
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Kills the processes and removes the directory (idempotent).
    fn shutdown(&self) {
        let components = self
            .components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut components) = components {
            for c in components.iter_mut().rev() {
                c.kill();
            }
            remove_or_keep(&self.dir);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn remove_or_keep(dir: &Path) {
    if std::env::var_os(KEEP_ENV).is_some_and(|v| !v.is_empty()) {
        eprintln!("testkit: kept control plane directory {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Creates a uniquely named namespace (prefix + random suffix) for one test and returns its name.
///
/// The prefix is lowercased and stripped of characters a namespace name cannot
/// hold. Returns once the namespace's `default` ServiceAccount exists, so Pods can
/// be created in it right away.
///
/// # Panics
/// When the namespace cannot be created, or its ServiceAccount does not appear
/// within 60 s.
pub async fn test_namespace(client: &kube::Client, prefix: &str) -> String {
    let mut clean: String = prefix
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(50);
    let clean = clean.trim_matches('-');
    let name = if clean.is_empty() {
        format!("test-{}", random_suffix(6))
    } else {
        format!("{clean}-{}", random_suffix(6))
    };
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some([("testkit.autoheal.dev/test".to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("testkit: creating namespace {name}: {e}"));
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(
        &format!("ServiceAccount default in namespace {name}"),
        Duration::from_secs(60),
        || async { sas.get_opt("default").await.ok().flatten().map(|_| ()) },
    )
    .await;
    name
}

/// Polls `check` every 100ms until it returns Some(T) or `timeout` passes; panics with `what` on timeout.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
