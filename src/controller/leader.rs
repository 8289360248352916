//! Leader election with a coordination.k8s.io Lease (kube-lease-manager): only the holder
//! runs the controllers.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This process's identity (stable across container restarts: the Pod name), so a
    /// restarted process takes its own lease back at once.
    pub identity: String,
    /// Seconds a lease stays valid without renewal.
    pub duration_seconds: u64,
}

/// A running election: `changes` says whether this process holds the lease.
pub struct Election {
    /// `true` while this process is the leader.
    pub changes: watch::Receiver<bool>,
    /// The task keeping the lease; it releases it when `changes` is dropped.
    pub task: JoinHandle<kube_lease_manager::Result<kube_lease_manager::LeaseManager>>,
}

/// Starts competing for the lease (created if missing).
pub async fn elect(client: Client, config: &LeaderConfig) -> anyhow::Result<Election> {
    let duration = config.duration_seconds.max(2);
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .build()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot use the leader Lease {}/{}: {e}",
                config.namespace,
                config.name
            )
        })?;
    let (changes, task) = manager.watch().await;
    Ok(Election { changes, task })
}

/// Waits until this process holds the lease.
pub async fn became_leader(changes: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    changes
        .wait_for(|leader| *leader)
        .await
        .map(|_| ())
        .map_err(|_| anyhow::anyhow!("leader election stopped"))
}

/// Resolves when this process no longer holds the lease.
pub async fn lost_leadership(changes: &mut watch::Receiver<bool>) {
    let _ = changes.wait_for(|leader| !*leader).await;
}
