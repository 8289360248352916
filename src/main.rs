//! The `autoheal` operator binary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::SignedDuration;

use autoheal::controller::context::Settings;
use autoheal::controller::error::BackoffConfig;
use autoheal::controller::{RunConfig, leader::LeaderConfig};
use autoheal::plan::replacement::Backoff;

/// autoheal: auto scaling groups with health checking and automatic repair for Kubernetes.
#[derive(Parser)]
#[command(name = "autoheal", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (ScalingGroup and Instance controllers).
    Run(RunArgs),
    /// Print both CRDs (ScalingGroup, Instance) as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Print the version.
    Version,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Flags of `autoheal run`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "AUTOHEAL_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the admin endpoints (/metrics, /healthz, /readyz); port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8080", env = "AUTOHEAL_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Leader election: only the holder of the Lease runs the controllers.
    #[arg(long, value_enum, default_value_t = Switch::On, env = "AUTOHEAL_LEADER_ELECTION")]
    leader_election: Switch,
    /// Namespace of the leader Lease (default: POD_NAMESPACE, else --namespace, else default).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, default_value = "autoheal-leader")]
    lease_name: String,
    /// Seconds the Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
    /// This process's identity in the election (default: POD_NAME, which survives container
    /// restarts, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    leader_identity: Option<String>,
    /// Wait before the next replacement after the first failed one; doubles per failure.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    replacement_backoff_base: Duration,
    /// Longest wait between replacements after failures.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    replacement_backoff_cap: Duration,
    /// Wait before retrying an object whose reconcile failed; doubles per failure.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    error_backoff_base: Duration,
    /// Longest wait before retrying an object whose reconcile keeps failing.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    error_backoff_cap: Duration,
}

/// Parses a duration such as `500ms`, `10s`, `5m` or `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let parsed: SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration such as 500ms, 10s or 5m: {e}"))?;
    Duration::try_from(parsed).map_err(|_| format!("{text:?} is negative"))
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "autoheal".into());
    format!("{host}-{}", std::process::id())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    autoheal::telemetry::init_tracing();
    let leader = (args.leader_election == Switch::On).then(|| LeaderConfig {
        namespace: args
            .lease_namespace
            .clone()
            .or_else(|| {
                std::env::var("POD_NAMESPACE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into()),
        name: args.lease_name.clone(),
        identity: args
            .leader_identity
            .clone()
            .unwrap_or_else(default_identity),
        duration_seconds: args.lease_duration_seconds,
    });
    let config = RunConfig {
        namespace: args.namespace,
        admin_addr: args.admin_addr,
        leader,
        settings: Settings {
            replacement_backoff: Backoff {
                base: args.replacement_backoff_base,
                cap: args.replacement_backoff_cap,
            },
            error_backoff: BackoffConfig {
                base: args.error_backoff_base,
                cap: args.error_backoff_cap,
            },
        },
    };
    raise_open_files_limit();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        "autoheal starting"
    );
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(autoheal::controller::run(config))
}

/// Raises the soft open-files limit to the hard limit: each probed Instance holds a
/// kept-alive connection.
fn raise_open_files_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => run(args)?,
        Command::Crds { output_dir: None } => print!("{}", autoheal::api::crds_yaml()?),
        Command::Crds {
            output_dir: Some(dir),
        } => {
            for (file, yaml) in autoheal::api::crd_files()? {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
        Command::Version => println!("autoheal {}", env!("CARGO_PKG_VERSION")),
    }
    Ok(())
}
