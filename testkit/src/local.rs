//! `cluster up` / `cluster down`: a control plane in a given directory that
//! outlives the command starting it (its processes run in their own session, and
//! their pids are recorded in the directory so `down` can stop them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::launch::{self, COMPONENTS, Layout};
use crate::process::{self, Lifetime};

/// The outcome of [`up`].
#[derive(Debug, Clone)]
pub struct Up {
    /// The control plane's directory (absolute).
    pub dir: PathBuf,
    /// The admin kubeconfig, `<dir>/kubeconfig`.
    pub kubeconfig: PathBuf,
    /// The audit log, `<dir>/audit.log`.
    pub audit_log: PathBuf,
    /// The apiserver's URL.
    pub server: String,
    /// Where kubectl and the other binaries are.
    pub bin_dir: PathBuf,
    /// True when the control plane was already running (nothing was started).
    pub already_running: bool,
}

fn lock(dir: &Path) -> Result<std::fs::File> {
    process::lock_file(&dir.join(".cluster.lock"))
}

/// The recorded (component, pid) pairs.
fn recorded_pids(layout: &Layout) -> Vec<(i32, &'static str)> {
    let Ok(text) = std::fs::read_to_string(layout.pids()) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (name, pid) = line.split_once(' ')?;
            let name = COMPONENTS.into_iter().find(|c| *c == name)?;
            Some((pid.trim().parse().ok()?, name))
        })
        .collect()
}

/// The server URL of the control plane recorded in `layout`, when all its
/// processes run and its apiserver answers `/readyz`.
async fn running_server(layout: &Layout) -> Option<String> {
    let pids = recorded_pids(layout);
    if pids.len() != COMPONENTS.len()
        || !pids.iter().all(|(pid, name)| process::pid_runs(*pid, name))
    {
        return None;
    }
    let kubeconfig = kube::config::Kubeconfig::read_from(layout.kubeconfig()).ok()?;
    let server = kubeconfig
        .clusters
        .first()?
        .cluster
        .as_ref()?
        .server
        .clone()?;
    let client = launch::client_for(&layout.kubeconfig(), true).await.ok()?;
    for _ in 0..10 {
        if launch::readyz(&client).await.is_ok() {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    None
}

/// Stops the recorded processes and removes everything the control plane wrote.
fn stop_and_clean(layout: &Layout) -> bool {
    let pids = recorded_pids(layout);
    let was_running = pids.iter().any(|(pid, name)| process::pid_runs(*pid, name));
    // Controller manager first, etcd last.
    let ordered: Vec<(i32, &str)> = pids.into_iter().rev().collect();
    // The data is removed next, so a graceful shutdown is of little use.
    process::stop_pids(&ordered, Duration::from_secs(3));
    for entry in layout.entries() {
        if entry.is_dir() {
            let _ = std::fs::remove_dir_all(&entry);
        } else {
            let _ = std::fs::remove_file(&entry);
        }
    }
    was_running
}

/// Brings up a control plane in `dir` (created if needed) whose processes outlive
/// this process, and returns once it is ready. Idempotent: when the control plane
/// recorded in `dir` is running and ready, nothing is started; leftovers of a dead
/// one are cleaned up first. On failure the components' logs stay in `dir`.
pub async fn up(dir: &Path) -> Result<Up> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let layout = Layout { dir: dir.clone() };
    let _lock = lock(&dir)?;
    let bin_dir = tokio::task::spawn_blocking(crate::locate_binaries).await??;
    let result = |server: String, already_running: bool| Up {
        kubeconfig: layout.kubeconfig(),
        audit_log: layout.audit_log(),
        dir: dir.clone(),
        server,
        bin_dir: bin_dir.clone(),
        already_running,
    };
    if let Some(server) = running_server(&layout).await {
        return Ok(result(server, true));
    }
    stop_and_clean(&layout);
    let launched = launch::start_in(&layout, &bin_dir, Lifetime::Detached).await?;
    Ok(result(launched.server, false))
}

/// Stops the control plane recorded in `dir` and removes its data (everything it
/// wrote in `dir`; `dir` itself too when that leaves it empty). Idempotent: returns
/// whether something was running.
pub fn down(dir: &Path) -> Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    let layout = Layout {
        dir: dir.to_path_buf(),
    };
    let lock_path = dir.join(".cluster.lock");
    let lock = lock(dir)?;
    let was_running = stop_and_clean(&layout);
    let _ = std::fs::remove_file(&lock_path);
    drop(lock);
    let _ = std::fs::remove_dir(dir); // only when empty
    Ok(was_running)
}
