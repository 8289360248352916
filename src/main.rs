//! The `autoheal` operator binary.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use k8s_openapi::jiff::SignedDuration;

use autoheal::controller::client::ClientOptions;
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
    Run(Box<RunArgs>),
    /// Print both CRDs (ScalingGroup, Instance) as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Print the version (and the git commit it was built from, when known).
    Version,
}

/// On or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Switch {
    /// Enabled.
    #[value(alias = "true")]
    On,
    /// Disabled.
    #[value(alias = "false")]
    Off,
}

/// How log lines are written (on stderr).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// One human-readable line per event (colored on a terminal).
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `spans`), for log
    /// pipelines.
    Json,
}

/// The git commit the binary was built from, when the build said (`make image` and the
/// release workflow set `AUTOHEAL_GIT_COMMIT`).
const GIT_COMMIT: Option<&str> = option_env!("AUTOHEAL_GIT_COMMIT");

/// Flags of `autoheal run`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, short = 'n', env = "AUTOHEAL_NAMESPACE")]
    namespace: Option<String>,
    /// Address of the admin endpoints (/metrics, /healthz, /readyz); port 0 picks a free port.
    #[arg(long, default_value = "0.0.0.0:8080", env = "AUTOHEAL_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "AUTOHEAL_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter in tracing's EnvFilter syntax, e.g. `info` or `info,autoheal=debug`
    /// (default: RUST_LOG, else `info`).
    #[arg(long, env = "AUTOHEAL_LOG_LEVEL")]
    log_level: Option<String>,
    /// Client-side limit of requests per second to the API server, sustained (0: no limit).
    /// High enough not to bind in normal work (a scale-up of 300 makes ~300 writes/s); it
    /// stops a runaway loop from flooding the API server.
    #[arg(long, default_value_t = ClientOptions::DEFAULT_QPS, env = "AUTOHEAL_KUBE_API_QPS")]
    kube_api_qps: f64,
    /// Requests that may go to the API server at once above --kube-api-qps.
    #[arg(long, default_value_t = ClientOptions::DEFAULT_BURST, env = "AUTOHEAL_KUBE_API_BURST")]
    kube_api_burst: u32,
    /// Leader election: only the holder of the Lease runs the controllers (`on`/`true`,
    /// `off`/`false`; `--leader-election` alone means on).
    #[arg(
        long,
        value_enum,
        default_value_t = Switch::On,
        num_args = 0..=1,
        default_missing_value = "on",
        env = "AUTOHEAL_LEADER_ELECTION"
    )]
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

/// Installs the global tracing subscriber: `--log-level` (else `RUST_LOG`, else `info`) in
/// `--log-format` on stderr.
fn init_logging(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| {
            anyhow::anyhow!(
                "--log-level {level:?} is not a log filter such as `info` or `info,autoheal=debug`: {e}"
            )
        })?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    Ok(())
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    if !(args.kube_api_qps >= 0.0 && args.kube_api_qps.is_finite()) {
        anyhow::bail!(
            "--kube-api-qps must be a number >= 0 (0: no limit), not {}",
            args.kube_api_qps
        );
    }
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
        client: ClientOptions {
            qps: args.kube_api_qps,
            burst: args.kube_api_burst.max(1),
        },
    };
    raise_open_files_limit();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = GIT_COMMIT.unwrap_or("unknown"),
        namespace = config.namespace.as_deref().unwrap_or("<all>"),
        leader_election = config.leader.is_some(),
        kube_api_qps = config.client.qps,
        kube_api_burst = config.client.burst,
        "autoheal starting"
    );
    limit_allocator_arenas();
    return_free_memory();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(autoheal::controller::run(config))
}

/// How often the allocator's free pages are given back to the system.
const MEMORY_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// glibc's allocator gives each thread that allocates at once an arena of its own (up to
/// 8 per core) and keeps what is freed in them: after the bursts of a relist or a scale-up
/// the operator's RSS stayed far above what it held. Two arenas serve the runtime's workers
/// (measured at 2,000 Instances on 2 cores: RSS 88 MB with glibc's default, 77 MB with two).
/// A `MALLOC_ARENA_MAX` or `GLIBC_TUNABLES` given to the process wins. Other C libraries
/// (the container image is a static musl build) are left as they are.
fn limit_allocator_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && std::env::var_os("GLIBC_TUNABLES").is_none()
    {
        // SAFETY: mallopt only sets an allocator parameter; called before any thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Gives glibc's free pages back to the system every [`MEMORY_TRIM_INTERVAL`] (it returns
/// only the top of its heap by itself), so that what a relist or a burst of launches
/// allocated and freed does not stay in the operator's RSS. On a thread of its own: a trim
/// walks every arena, which must not hold up a runtime worker.
fn return_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("memory-trim".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(MEMORY_TRIM_INTERVAL);
                    // SAFETY: malloc_trim only releases free memory; safe from any thread.
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("free memory is not returned to the system: {e}");
        }
    }
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

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let json = matches!(&cli.command, Command::Run(args) if args.log_format == LogFormat::Json);
    match execute(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line that says what to do (the messages are written for that); in JSON
            // mode as one more JSON log line, so log pipelines keep it.
            let message = format!("{e:#}");
            if json && tracing::dispatcher::has_been_set() {
                tracing::error!(error = %message, "autoheal cannot run");
            } else {
                eprintln!("error: {message}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

fn execute(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            init_logging(args.log_format, args.log_level.as_deref())?;
            run(*args)?
        }
        Command::Crds { output_dir: None } => print!("{}", autoheal::api::crds_yaml()?),
        Command::Crds {
            output_dir: Some(dir),
        } => {
            for (file, yaml) in autoheal::api::crd_files()? {
                std::fs::write(dir.join(file), yaml)?;
            }
        }
        Command::Version => match GIT_COMMIT {
            Some(commit) => println!("autoheal {} (commit {commit})", env!("CARGO_PKG_VERSION")),
            None => println!("autoheal {}", env!("CARGO_PKG_VERSION")),
        },
    }
    Ok(())
}
