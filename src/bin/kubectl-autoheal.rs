//! `kubectl autoheal`: the kubectl plugin that explains autoheal's decisions in plain language
//! (`why`, `history`) and mirrors `aws autoscaling set-instance-health` and
//! `describe-auto-scaling-groups`. kubectl finds it on PATH as `kubectl-autoheal`.
//!
//! A thin shell: it fetches the objects and Events with the usual kubeconfig resolution and
//! hands them to the pure core in `autoheal::plugin`.

use std::process::ExitCode;

use anyhow::{Context, Result, anyhow, bail};
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use autoheal::api::{Instance, LABEL_GROUP, ScalingGroup};
use autoheal::plugin::health::SetHealth;
use autoheal::plugin::{EventView, Target, describe, health, history, why};

/// Explain and steer autoheal ScalingGroups and Instances.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl autoheal",
    bin_name = "kubectl autoheal",
    version,
    about = "Explain and steer autoheal ScalingGroups and Instances",
    after_help = "Examples:\n  kubectl autoheal why inst/web-7xk2p\n  kubectl autoheal why sg/web\n  kubectl autoheal history sg/web\n  kubectl autoheal set-instance-health inst/web-7xk2p Unhealthy --reason 'disk full'\n  kubectl autoheal describe-groups web -o json"
)]
struct Cli {
    /// The namespace (default: the kubeconfig context's namespace, else "default").
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// The kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Why an Instance or a group is where it is: the verdict, each signal with its evidence
    /// and threshold, what the group does next and what blocks it.
    Why {
        /// inst/NAME or sg/NAME.
        target: String,
    },
    /// The remediation history of a group, newest first.
    History {
        /// sg/NAME.
        target: String,
    },
    /// Mark an Instance Healthy or Unhealthy (as aws autoscaling set-instance-health).
    SetInstanceHealth {
        /// inst/NAME.
        target: String,
        /// Healthy or Unhealthy.
        health: String,
        /// false: an Unhealthy mark acts even inside the health check grace period.
        #[arg(long, action = ArgAction::Set, default_value_t = true, num_args = 0..=1, default_missing_value = "true")]
        respect_grace_period: bool,
        /// Why (copied into the CustomHealthy condition message).
        #[arg(long)]
        reason: Option<String>,
    },
    /// The groups and their Instances (as aws autoscaling describe-auto-scaling-groups).
    DescribeGroups {
        /// Only this group.
        name: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Json,
    Table,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn client(cli: &Cli) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &options).await?
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer()
            .await
            .context("no cluster to talk to (set KUBECONFIG or --kubeconfig)")?,
    };
    let ns = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((Client::try_from(config)?, ns))
}

async fn get_instance(api: &Api<Instance>, name: &str, ns: &str) -> Result<Instance> {
    api.get_opt(name)
        .await
        .with_context(|| format!("reading instance {name} in namespace {ns}"))?
        .ok_or_else(|| anyhow!("instance {name} not found in namespace {ns}"))
}

async fn get_group(api: &Api<ScalingGroup>, name: &str, ns: &str) -> Result<ScalingGroup> {
    api.get_opt(name)
        .await
        .with_context(|| format!("reading scalinggroup {name} in namespace {ns}"))?
        .ok_or_else(|| anyhow!("scalinggroup {name} not found in namespace {ns}"))
}

async fn group_instances(api: &Api<Instance>, group: &str) -> Result<Vec<Instance>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("{LABEL_GROUP}={group}")))
        .await
        .with_context(|| format!("listing the instances of group {group}"))?
        .items
        .into_iter()
        .filter(|i| i.spec.group_name == group)
        .collect())
}

/// The Events about one object (best effort: a user who may not list Events still gets the
/// rest of the answer).
async fn events(client: &Client, ns: &str, kind: &str, name: &str) -> Vec<EventView> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind={kind},involvedObject.name={name}"
    ));
    match api.list(&lp).await {
        Ok(list) => list.items.iter().map(EventView::from_core).collect(),
        Err(e) => {
            eprintln!("warning: Events of {kind} {name} could not be read: {e}");
            Vec::new()
        }
    }
}

async fn run(cli: Cli) -> Result<String> {
    let (client, ns) = client(&cli).await?;
    let instances: Api<Instance> = Api::namespaced(client.clone(), &ns);
    let groups: Api<ScalingGroup> = Api::namespaced(client.clone(), &ns);
    let now = Timestamp::now();
    match cli.command {
        Command::Why { target } => match Target::parse(&target).map_err(|e| anyhow!(e))? {
            Target::Instance(name) => {
                let instance = get_instance(&instances, &name, &ns).await?;
                let group_name = instance.spec.group_name.clone();
                let group = groups.get_opt(&group_name).await?;
                let siblings = group_instances(&instances, &group_name).await?;
                let events = events(&client, &ns, "Instance", &name).await;
                Ok(why::why_instance(
                    &instance,
                    group.as_ref(),
                    &siblings,
                    &events,
                    now,
                ))
            }
            Target::Group(name) => {
                let group = get_group(&groups, &name, &ns).await?;
                let members = group_instances(&instances, &name).await?;
                let events = events(&client, &ns, "ScalingGroup", &name).await;
                Ok(why::why_group(&group, &members, &events, now))
            }
        },
        Command::History { target } => match Target::parse(&target).map_err(|e| anyhow!(e))? {
            Target::Group(name) => {
                let group = get_group(&groups, &name, &ns).await?;
                let events = events(&client, &ns, "ScalingGroup", &name).await;
                Ok(history::history(&group, &events, now))
            }
            Target::Instance(_) => bail!("history takes a group: kubectl autoheal history sg/NAME"),
        },
        Command::SetInstanceHealth {
            target,
            health: value,
            respect_grace_period,
            reason,
        } => {
            let Target::Instance(name) = Target::parse(&target).map_err(|e| anyhow!(e))? else {
                bail!(
                    "set-instance-health takes an instance: kubectl autoheal set-instance-health inst/NAME Healthy|Unhealthy"
                );
            };
            let Some(mark) = SetHealth::parse(&value) else {
                bail!("health {value:?} is not understood: use Healthy or Unhealthy");
            };
            let instance = get_instance(&instances, &name, &ns).await?;
            if let Some(refusal) = health::refuse(&instance, mark) {
                bail!(refusal);
            }
            let patch = health::patch(mark, respect_grace_period, reason.as_deref());
            let instance = instances
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .with_context(|| format!("annotating instance {name} in namespace {ns}"))?;
            let group = groups.get_opt(&instance.spec.group_name).await?;
            Ok(health::confirmation(
                &instance,
                group.as_ref(),
                mark,
                respect_grace_period,
                reason.as_deref(),
                now,
            ))
        }
        Command::DescribeGroups { name, output } => {
            let selected: Vec<ScalingGroup> = match &name {
                Some(n) => vec![get_group(&groups, n, &ns).await?],
                None => groups.list(&ListParams::default()).await?.items,
            };
            let all = instances.list(&ListParams::default()).await?.items;
            let with: Vec<describe::GroupWithInstances<'_>> = selected
                .iter()
                .map(|g| describe::GroupWithInstances {
                    group: g,
                    instances: all
                        .iter()
                        .filter(|i| Some(&i.spec.group_name) == g.metadata.name.as_ref())
                        .collect(),
                })
                .collect();
            Ok(match output {
                Output::Json => serde_json::to_string_pretty(&describe::json(&with))? + "\n",
                Output::Table => describe::table_text(&with),
            })
        }
    }
}
