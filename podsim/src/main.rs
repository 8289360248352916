//! `podsim`: the kubelet stand-in for clusters without nodes. See the `podsim` library.

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Runs unscheduled Pods on simulated Nodes: each Pod gets a unique 127.x.y.z IP and
/// its container ports answer HTTP there. The Pod annotation
/// `podsim.autoheal.dev/behavior` (healthy, fail, hang, refuse, crash,
/// slow-start=<seconds>) makes it misbehave; on a simulated Node, the value `notready`
/// stops its heartbeats.
#[derive(Parser, Debug)]
#[command(name = "podsim", version, about, long_about)]
struct Args {
    /// Only run Pods in this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "PODSIM_NAMESPACE")]
    namespace: Option<String>,
    /// Only run Pods matching this label selector (e.g. `app=web`).
    #[arg(long, short = 'l', env = "PODSIM_SELECTOR")]
    selector: Option<String>,
    /// Number of simulated Nodes; Pods are spread over them.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    nodes: u16,
    /// Node names are `<prefix>-<i>`.
    #[arg(long, default_value = "podsim")]
    node_prefix: String,
    /// First two octets of the Pod IPs, e.g. `127.42` (default: 127.<random>).
    #[arg(long, value_parser = podsim::parse_ip_prefix)]
    ip_prefix: Option<[u8; 2]>,
    /// Zones, comma-separated (e.g. `a,b,c`): Nodes are labelled
    /// `topology.kubernetes.io/zone` with them, round-robin (default: no zone label).
    #[arg(long, value_delimiter = ',')]
    zones: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let zones = if args.zones.is_empty() {
        Vec::new()
    } else {
        podsim::parse_zones(&args.zones.join(",")).map_err(anyhow::Error::msg)?
    };
    let client = kube::Client::try_default().await?;
    let config = podsim::Config {
        namespace: args.namespace,
        selector: args.selector,
        nodes: args.nodes.into(),
        node_prefix: args.node_prefix,
        ip_prefix: args.ip_prefix,
        zones,
        mode_log: None,
        resync_interval: podsim::RESYNC_INTERVAL,
    };
    tokio::select! {
        result = podsim::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; stopping");
            Ok(())
        }
    }
}
