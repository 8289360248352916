//! `cluster up --dir DIR` / `cluster down --dir DIR`: a local control plane
//! (etcd, kube-apiserver, kube-controller-manager on loopback, no kubelet) that
//! outlives the command; the admin kubeconfig is `DIR/kubeconfig`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A local Kubernetes control plane for development and demos.
#[derive(Parser)]
#[command(name = "cluster")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Starts the control plane (or finds it running) and prints how to use it.
    Up {
        /// Directory for its kubeconfig, logs, audit log and data.
        #[arg(long, default_value = ".local")]
        dir: PathBuf,
    },
    /// Stops the control plane and removes its data.
    Down {
        /// The directory given to `up`.
        #[arg(long, default_value = ".local")]
        dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Up { dir } => match testkit::local::up(&dir).await {
            Ok(up) => {
                let state = if up.already_running {
                    "already running"
                } else {
                    "started"
                };
                println!(
                    "control plane {state}: {} (Kubernetes {})",
                    up.server,
                    testkit::K8S_VERSION
                );
                println!("kubeconfig: {}", up.kubeconfig.display());
                println!("  export KUBECONFIG={}", up.kubeconfig.display());
                println!("  export PATH={}:$PATH   # kubectl", up.bin_dir.display());
                println!("logs and audit log: {}", up.dir.display());
                println!("stop it with: cluster down --dir {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cluster up: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Down { dir } => match testkit::local::down(&dir) {
            Ok(true) => {
                println!("control plane in {} stopped and removed", dir.display());
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!("no control plane running in {}", dir.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cluster down: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}
