//! The `autoheal` operator binary.

use clap::{Parser, Subcommand};

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
    Run,
    /// Print both CRDs (ScalingGroup, Instance) as YAML.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<std::path::PathBuf>,
    },
    /// Print the version.
    Version,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run => anyhow::bail!("`autoheal run` is not implemented yet"),
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
