//! `kubectl reverie`: the reviewer's interface to a cluster (DESIGN §1, §2
//! "Approval").
//!
//! The same binary serves it as `kubectl-reverie` on `PATH` (argv\[0\]
//! decides, see [`is_plugin_name`]) and as `reverie plugin …` for users who
//! do not link it. One file per command:
//! - [`decide`]: `approve` and `reject` (who am I, then the annotations);
//! - [`diff`]: `diff`, the patch as a reviewable diff from the resource alone;
//! - [`dream_now`]: `dream-now`, the annotation the controller turns into a Job;
//! - [`status`]: `status` of a store, a session's delegation tree, or all stores;
//! - [`schedule`]: `status dreamschedule/NAME`, a schedule's cycle and next runs.
//!
//! Everything that decides what to send or print is a pure function of the
//! objects read ([`decision_patch`], [`render_diff`], [`store_report`],
//! [`session_tree`], …), so it is tested without a cluster; the async
//! functions only read, call them and write.

pub mod decide;
pub mod diff;
pub mod dream_now;
#[cfg(test)]
mod fixtures;
pub mod schedule;
pub mod status;

pub use decide::{decision_patch, existing_decision, Decision};
pub use diff::render_diff;
pub use dream_now::{dream_now_job_name, dream_now_patch, DREAM_NOW_ANNOTATION};
pub use status::{
    render_session_tree, render_store_report, render_store_rows, session_tree, store_report,
    store_rows, table, ConditionRow, PatchRow, SessionNode, StoreReport, StoreRow,
};

use super::{Exit, Output};
use crate::api::MemoryPatch;
use anyhow::Context as _;
use chrono::Utc;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// The executable name under which the binary acts as the kubectl plugin.
pub const PLUGIN_NAME: &str = "kubectl-reverie";

/// Whether argv\[0\] names the kubectl plugin (`kubectl-reverie`, with any
/// directory and an optional extension such as `.exe`).
pub fn is_plugin_name(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_stem()
        .is_some_and(|stem| stem == OsStr::new(PLUGIN_NAME))
}

/// `kubectl reverie`, when the binary runs as `kubectl-reverie`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "kubectl reverie",
    bin_name = "kubectl reverie",
    version,
    about = "Review, approve and trigger reverie memory changes on a cluster."
)]
pub struct PluginCli {
    /// Log filter (also RUST_LOG), e.g. `info` or `reverie=debug`.
    #[arg(long, global = true, env = "REVERIE_LOG", default_value = "warn")]
    pub log: String,
    #[command(flatten)]
    pub args: PluginArgs,
}

/// The plugin's flags and subcommand (shared by `kubectl reverie` and
/// `reverie plugin`).
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(flatten)]
    pub kube: KubeFlags,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Connection flags, named like kubectl's.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct KubeFlags {
    /// Namespace; the kubeconfig context's namespace when absent, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; the current context when absent.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file; `KUBECONFIG` (or `~/.kube/config`) when absent.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Act as this user (impersonation, like `kubectl --as`).
    #[arg(long = "as", value_name = "USER", global = true)]
    pub as_user: Option<String>,
    /// Act in this group too (impersonation, like `kubectl --as-group`); repeatable.
    #[arg(long = "as-group", value_name = "GROUP", global = true)]
    pub as_group: Vec<String>,
}

/// What `kubectl reverie` does.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Approve a MemoryPatch (needs the verb `approve` on its MemoryStore).
    Approve(DecideArgs),
    /// Reject a MemoryPatch (needs the verb `approve` on its MemoryStore).
    Reject(DecideArgs),
    /// Show a MemoryPatch as a reviewable diff, from the resource alone.
    Diff(DiffArgs),
    /// Ask the controller to run a DreamSchedule's dream now.
    DreamNow(DreamNowArgs),
    /// A MemoryStore (revision, patches) or an AgentSession (delegation
    /// tree); without a name, every store of the namespace.
    Status(StatusArgs),
}

/// `approve` / `reject`.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    /// The MemoryPatch (`NAME` or `memorypatch/NAME`).
    pub patch: String,
    /// Why; recorded in the annotation `reverie.dev/approval-reason`.
    #[arg(long)]
    pub reason: Option<String>,
}

/// When `diff` colours its output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorMode {
    /// Only when stdout is a terminal (and `NO_COLOR` is not set).
    #[default]
    Auto,
    Always,
    Never,
}

/// `diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The MemoryPatch (`NAME` or `memorypatch/NAME`).
    pub patch: String,
    /// Colour the diff.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
}

/// `dream-now`.
#[derive(clap::Args, Debug)]
pub struct DreamNowArgs {
    /// The DreamSchedule (`NAME` or `dreamschedule/NAME`).
    pub schedule: String,
}

/// `status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A MemoryStore or AgentSession name; `memorystore/NAME` or
    /// `agentsession/NAME` when both kinds have it; `dreamschedule/NAME` for
    /// a schedule's last cycle and each selected store's next run.
    pub target: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs a plugin command (blocking: starts its own tokio runtime).
pub fn run(args: PluginArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: PluginArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.kube).await?;
    let mut out = std::io::stdout().lock();
    let text = match args.command {
        PluginCommand::Approve(a) => {
            decide::run(&client, &namespace, &a, Decision::Approved).await?
        }
        PluginCommand::Reject(a) => {
            decide::run(&client, &namespace, &a, Decision::Rejected).await?
        }
        PluginCommand::Diff(a) => {
            let name = strip_kind(&a.patch, PATCH_KINDS)?;
            let patch = get_patch(&client, &namespace, name).await?;
            let color = match a.color {
                ColorMode::Always => true,
                ColorMode::Never => false,
                ColorMode::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            render_diff(&patch, color)
        }
        PluginCommand::DreamNow(a) => dream_now::run(&client, &namespace, &a, Utc::now()).await?,
        PluginCommand::Status(a) => status::run(&client, &namespace, &a).await?,
    };
    use std::io::Write;
    out.write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

/// Builds a client from the kubeconfig and the flags; returns it with the
/// namespace to work in.
async fn connect(flags: &KubeFlags) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        cluster: None,
        user: None,
    };
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .context("cannot load the kubeconfig (from KUBECONFIG or ~/.kube/config)")?,
    };
    if let Some(user) = &flags.as_user {
        config.auth_info.impersonate = Some(user.clone());
        if !flags.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(flags.as_group.clone());
        }
    } else if !flags.as_group.is_empty() {
        return Err(Exit::new(2, "--as-group needs --as (like kubectl)").into());
    }
    let namespace = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    Ok((client, namespace))
}

const PATCH_KINDS: &[&str] = &[
    "memorypatch",
    "memorypatches",
    "mpatch",
    "memorypatch.reverie.dev",
    "memorypatches.reverie.dev",
];
const SCHEDULE_KINDS: &[&str] = &[
    "dreamschedule",
    "dreamschedules",
    "dsched",
    "dreamschedule.reverie.dev",
    "dreamschedules.reverie.dev",
];
const STORE_KINDS: &[&str] = &[
    "memorystore",
    "memorystores",
    "mstore",
    "memorystore.reverie.dev",
    "memorystores.reverie.dev",
];
const SESSION_KINDS: &[&str] = &[
    "agentsession",
    "agentsessions",
    "asess",
    "agentsession.reverie.dev",
    "agentsessions.reverie.dev",
];

/// `NAME` or `KIND/NAME` (kind one of `kinds`, case-insensitive) → `NAME`.
fn strip_kind<'a>(arg: &'a str, kinds: &[&str]) -> Result<&'a str, Exit> {
    match arg.split_once('/') {
        None if !arg.is_empty() => Ok(arg),
        None => Err(Exit::new(2, "an empty name was given")),
        Some((kind, name)) => {
            if name.is_empty() || name.contains('/') {
                return Err(Exit::new(2, format!("'{arg}' is not NAME or KIND/NAME")));
            }
            if kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
                Ok(name)
            } else {
                Err(Exit::new(
                    2,
                    format!(
                        "'{arg}': expected a {} name, not a {kind}",
                        kinds.first().copied().unwrap_or("resource")
                    ),
                ))
            }
        }
    }
}

/// The apiserver's answer inside a client error, if it is one.
fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

fn is_not_found(err: &kube::Error) -> bool {
    api_status(err).is_some_and(|s| s.code == 404)
}

async fn get_patch(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<MemoryPatch> {
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
    match api.get(name).await {
        Ok(p) => Ok(p),
        Err(e) if is_not_found(&e) => {
            Err(Exit::new(1, format!("MemoryPatch {name} not found in namespace {ns}")).into())
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot read MemoryPatch {name} in namespace {ns}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn plugin_name_is_recognised_by_file_stem() {
        assert!(is_plugin_name(OsStr::new("kubectl-reverie")));
        assert!(is_plugin_name(OsStr::new("/usr/local/bin/kubectl-reverie")));
        assert!(is_plugin_name(OsStr::new("C:/bin/kubectl-reverie.exe")));
        assert!(!is_plugin_name(OsStr::new("/usr/bin/reverie")));
        assert!(!is_plugin_name(OsStr::new("kubectl-reverie-old")));
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let cli = PluginCli::try_parse_from([
            "kubectl-reverie",
            "approve",
            "memorypatch/p1",
            "--reason",
            "ok",
            "-n",
            "team",
            "--as",
            "alice",
            "--context",
            "c1",
        ])
        .expect("valid command line");
        assert_eq!(cli.args.kube.namespace.as_deref(), Some("team"));
        assert_eq!(cli.args.kube.as_user.as_deref(), Some("alice"));
        assert_eq!(cli.args.kube.context.as_deref(), Some("c1"));
        match cli.args.command {
            PluginCommand::Approve(a) => {
                assert_eq!(a.patch, "memorypatch/p1");
                assert_eq!(a.reason.as_deref(), Some("ok"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = PluginCli::try_parse_from(["kubectl-reverie", "status", "-o", "json"])
            .expect("valid command line");
        assert!(matches!(
            cli.args.command,
            PluginCommand::Status(StatusArgs {
                target: None,
                output: Output::Json
            })
        ));
        assert!(PluginCli::try_parse_from(["kubectl-reverie", "dream-now"]).is_err());
    }

    #[test]
    fn kinds_are_stripped_and_wrong_kinds_refused() {
        assert_eq!(strip_kind("p1", PATCH_KINDS).ok(), Some("p1"));
        assert_eq!(strip_kind("mpatch/p1", PATCH_KINDS).ok(), Some("p1"));
        assert_eq!(
            strip_kind("MemoryPatches.reverie.dev/p1", PATCH_KINDS).ok(),
            Some("p1")
        );
        let err = strip_kind("dreamschedule/p1", PATCH_KINDS).expect_err("wrong kind");
        assert_eq!(err.code, 2);
        assert!(
            err.message.contains("not a dreamschedule"),
            "{}",
            err.message
        );
        assert!(strip_kind("", PATCH_KINDS).is_err());
        assert!(strip_kind("mpatch/", PATCH_KINDS).is_err());
    }
}
