//! Leader election with a coordination.k8s.io Lease (kube-lease-manager): only the holder
//! runs the controllers.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
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
    /// The task keeping the lease; when `changes` is dropped it releases the lease (if held)
    /// and ends.
    pub task: JoinHandle<()>,
}

fn manager(client: &Client, config: &LeaderConfig) -> LeaseManagerBuilder {
    let duration = config.duration_seconds.max(2);
    LeaseManagerBuilder::new(client.clone(), &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(duration)
        .with_grace(renewal_margin(duration))
}

/// How many seconds before its Lease expires the leader renews it: two thirds of the
/// duration (for the default 15 s: a renewal every 5 s, 10 s before expiry). kube-lease-manager
/// renews once at that moment and retries only after an error; a renewal still unanswered
/// when the Lease expires lets a follower take it over (and this process then exits), so the
/// margin is what a loaded API server is given to answer.
pub fn renewal_margin(duration_seconds: u64) -> u64 {
    (duration_seconds * 2 / 3).clamp(1, duration_seconds.saturating_sub(1).max(1))
}

/// How often a follower reads the Lease to see whether it was released.
pub const FOLLOWER_POLL: Duration = Duration::from_secs(1);

/// Starts competing for the lease (created if missing).
///
/// kube-lease-manager's follower sleeps until the lease it last read expires, so on its own
/// it would notice a released lease only then. While following, this also reads the Lease
/// every [`FOLLOWER_POLL`] (a `get`, as client-go's followers poll every retry period; no
/// list/watch permission needed): once its holder has released it (a graceful shutdown),
/// the follower starts competing afresh at once instead of waiting out the released lease's
/// duration.
pub async fn elect(client: Client, config: &LeaderConfig) -> anyhow::Result<Election> {
    let first = manager(&client, config).build().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot use the leader Lease {}/{}: {e}",
            config.namespace,
            config.name
        )
    })?;
    let (sender, changes) = watch::channel(false);
    let task = tokio::spawn(keep(client, config.clone(), first, sender));
    Ok(Election { changes, task })
}

/// Whether the Lease exists with no holder (released). Errors count as "no": the lease
/// manager's own schedule still applies.
async fn released(leases: &Api<Lease>, name: &str) -> bool {
    match leases.get_opt(name).await {
        Ok(Some(lease)) => lease.spec.is_none_or(|s| s.holder_identity.is_none()),
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "reading the leader Lease");
            false
        }
    }
}

/// Runs lease managers one after another (a new one when the lease is released while this
/// process follows), passing on whether this process leads, until `sender` has no receiver.
async fn keep(
    client: Client,
    config: LeaderConfig,
    mut current: LeaseManager,
    sender: watch::Sender<bool>,
) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &config.namespace);
    let mut poll =
        tokio::time::interval_at(tokio::time::Instant::now() + FOLLOWER_POLL, FOLLOWER_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (mut inner, task) = current.watch().await;
        loop {
            tokio::select! {
                _ = sender.closed() => {
                    // Dropping the manager's receiver makes it release the lease and end.
                    drop(inner);
                    let _ = task.await;
                    return;
                }
                changed = inner.changed() => {
                    if changed.is_err() {
                        // The manager ended on its own (it only does when it cannot go on).
                        let result = task.await;
                        tracing::error!(?result, "the leader election stopped");
                        let _ = sender.send(false);
                        return;
                    }
                    let leads = *inner.borrow_and_update();
                    let _ = sender.send(leads);
                }
                _ = poll.tick(), if !*inner.borrow() => {
                    if released(&leases, &config.name).await {
                        break;
                    }
                }
            }
        }
        tracing::info!(lease = %format!("{}/{}", config.namespace, config.name), "the Lease is free (released by its holder): competing for it now");
        task.abort();
        let _ = task.await;
        current = loop {
            match manager(&client, &config).build().await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot use the leader Lease; retrying");
                    tokio::select! {
                        _ = sender.closed() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_renews_with_two_thirds_of_the_lease_to_spare() {
        assert_eq!(renewal_margin(15), 10);
        assert_eq!(renewal_margin(6), 4);
        assert_eq!(renewal_margin(3), 2);
        // Never the whole duration (it would renew without pause), never nothing.
        assert_eq!(renewal_margin(2), 1);
        for d in 2..=120 {
            let m = renewal_margin(d);
            assert!(m >= 1 && m < d, "duration {d}: margin {m}");
        }
    }
}
