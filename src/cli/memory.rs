//! `reverie memory apply|diff|log|rollback`.
//!
//! Exit codes: 0 ok, 2 invalid patch or arguments, 3 failed precondition
//! (conflict), 1 anything else.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::{Exit, Output};
use crate::memory::apply::{apply, is_applied, rollback, ApplyError, ApplyOutcome};
use crate::memory::journal::{read_heads, Action};
use crate::memory::retention::prune;
use crate::memory::{diff, load_patch, Store};

/// Apply, preview, list and roll back changes to a store.
#[derive(clap::Subcommand, Debug)]
pub enum MemoryCommand {
    /// Apply a MemoryPatch atomically (exit 3 on a conflict, 2 on an invalid patch).
    Apply(ApplyArgs),
    /// Print the unified diff of what applying a MemoryPatch would change.
    Diff(DiffArgs),
    /// List the store's revisions.
    Log(LogArgs),
    /// Restore the memory files of an earlier revision, as a new revision.
    Rollback(RollbackArgs),
    /// Apply retention: compact old journal records, remove old transcripts.
    Prune(PruneArgs),
}

/// `reverie memory apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    /// The MemoryPatch manifest (YAML or JSON; a whole object or its spec).
    #[arg(
        required_unless_present = "from_cluster",
        conflicts_with = "from_cluster"
    )]
    pub patch: Option<PathBuf>,
    /// Read the MemoryPatch `NAMESPACE/NAME` through the Kubernetes API
    /// (in-cluster config or KUBECONFIG) instead of a file.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub from_cluster: Option<String>,
    /// Also write the result as JSON to this file (the pod's termination
    /// log, which the controller reads): the outcome, or
    /// `{"error": …, "exitCode": …}`.
    #[arg(long, value_name = "FILE")]
    pub termination_log: Option<PathBuf>,
    /// How to print the result (`json` is what the controller reads).
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
    /// After a successful apply, compact journal records older than the
    /// newest N revisions (MemoryStore `retention.revisions`).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_revisions: Option<u32>,
}

/// `reverie memory prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    /// Compact journal records older than the newest N revisions: their
    /// ops and previous file contents go, `log` keeps them; rollback can
    /// then reach back N revisions.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_revisions: Option<u32>,
    /// Remove transcripts beyond the newest N in `sessions/`.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_sessions: Option<u32>,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// `reverie memory diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    /// The MemoryPatch manifest (YAML or JSON; a whole object or its spec).
    pub patch: PathBuf,
}

/// `reverie memory log`.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// `reverie memory rollback`.
#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    /// The revision whose memory files to restore (0: before the first apply).
    #[arg(long)]
    pub to: u64,
    #[arg(long, short, value_enum, default_value_t)]
    pub output: Output,
}

/// Runs a `reverie memory` subcommand.
pub fn run(c: MemoryCommand) -> anyhow::Result<()> {
    match c {
        MemoryCommand::Apply(a) => run_apply(a),
        MemoryCommand::Diff(a) => run_diff(a),
        MemoryCommand::Log(a) => run_log(a),
        MemoryCommand::Rollback(a) => run_rollback(a),
        MemoryCommand::Prune(a) => run_prune(a),
    }
}

fn run_prune(a: PruneArgs) -> anyhow::Result<()> {
    if a.keep_revisions.is_none() && a.keep_sessions.is_none() {
        return Err(anyhow::Error::new(Exit::new(
            2,
            "give --keep-revisions N and/or --keep-sessions N",
        )));
    }
    let store = open(&a.store)?;
    let report = prune(&store, a.keep_revisions, a.keep_sessions)
        .with_context(|| format!("pruning store {}", a.store.display()))?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
        Output::Table => println!(
            "compacted {} journal record(s), removed {} transcript(s), freed {} bytes",
            report.revisions_compacted.len(),
            report.sessions_removed.len(),
            report.bytes_freed
        ),
    }
    Ok(())
}

fn open(dir: &std::path::Path) -> anyhow::Result<Store> {
    Store::open(dir).with_context(|| format!("opening store {}", dir.display()))
}

/// Turns a library error into one that carries its exit code.
fn exit(e: ApplyError) -> anyhow::Error {
    anyhow::Error::new(Exit::new(e.exit_code(), e.to_string()))
}

fn load(path: &std::path::Path) -> anyhow::Result<crate::api::memorypatch::MemoryPatch> {
    load_patch(path).map_err(|e| {
        anyhow::Error::new(Exit::new(
            2,
            format!("invalid patch {}: {e}", path.display()),
        ))
    })
}

/// Reads a MemoryPatch `NAMESPACE/NAME` through the API.
fn fetch(reference: &str) -> anyhow::Result<crate::api::memorypatch::MemoryPatch> {
    let Some((ns, name)) = reference
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
    else {
        return Err(anyhow::Error::new(Exit::new(
            2,
            format!("--from-cluster {reference:?}: expected NAMESPACE/NAME"),
        )));
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        let api: kube::Api<crate::api::memorypatch::MemoryPatch> =
            kube::Api::namespaced(client, ns);
        api.get(name)
            .await
            .with_context(|| format!("reading MemoryPatch {name} in namespace {ns}"))
    })
}

/// Writes `value` as JSON to the termination log (through
/// `REVERIE_PATH_MAP`, so it also works where pods are local processes).
fn write_termination_log(path: &std::path::Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let real = crate::pathmap::translate(path);
    std::fs::write(&real, value.to_string())
        .with_context(|| format!("writing the termination log {}", real.display()))
}

fn run_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let log = a.termination_log.clone();
    let result = apply_and_print(a);
    if let Some(path) = log {
        let value = match &result {
            Ok(out) => serde_json::to_value(out)?,
            Err(e) => {
                let code = e.downcast_ref::<Exit>().map_or(1, |x| x.code);
                serde_json::json!({"error": format!("{e:#}"), "exitCode": code})
            }
        };
        write_termination_log(&path, &value)?;
    }
    result.map(|_| ())
}

fn apply_and_print(a: ApplyArgs) -> anyhow::Result<ApplyOutcome> {
    let patch = match (&a.from_cluster, &a.patch) {
        (Some(r), _) => fetch(r)?,
        (None, Some(p)) => load(p)?,
        (None, None) => {
            return Err(anyhow::Error::new(Exit::new(
                2,
                "give a patch file or --from-cluster NAMESPACE/NAME",
            )))
        }
    };
    let store = open(&a.store)?;
    let name = patch.metadata.name.clone().unwrap_or_default();
    let out = apply(&store, &patch).map_err(exit)?;
    if let Some(keep) = a.keep_revisions {
        // The patch is applied and journaled; a failed compaction only
        // leaves more history than asked for, so it warns and goes on.
        match prune(&store, Some(keep), None) {
            Ok(r) if !r.revisions_compacted.is_empty() => tracing::info!(
                compacted = r.revisions_compacted.len(),
                "journal compacted to the retention limit"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not compact the journal"),
        }
    }
    print_outcome(&out, a.output, || {
        if out.already_applied {
            format!(
                "patch {name} was already applied; nothing to do (revision {})",
                out.revision
            )
        } else if out.files_changed.is_empty() {
            format!(
                "patch {name} changes nothing ({} ops had no effect); revision stays {}",
                out.noops, out.revision
            )
        } else {
            format!(
                "applied patch {name} as revision {}: {} file(s) changed ({}); {} entries, {} bytes",
                out.revision,
                out.files_changed.len(),
                out.files_changed.join(", "),
                out.entries,
                out.bytes
            )
        }
    })?;
    Ok(out)
}

fn print_outcome(
    out: &ApplyOutcome,
    format: Output,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Output::Json => serde_json::to_string(out)?,
        Output::Yaml => serde_yaml::to_string(out)?.trim_end().to_string(),
        Output::Table => table(),
    };
    println!("{text}");
    Ok(())
}

fn run_diff(a: DiffArgs) -> anyhow::Result<()> {
    let patch = load(&a.patch)?;
    let store = open(&a.store)?;
    let text = diff(&store, &patch).map_err(exit)?;
    if text.is_empty() {
        let why = if is_applied(&store, &patch.spec)? {
            "the patch is already applied"
        } else {
            "the patch changes nothing"
        };
        eprintln!("no changes: {why}");
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// One line of `reverie memory log`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct LogRow {
    revision: u64,
    time: String,
    action: Action,
    patch: String,
    spec_hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rolled_back_to: Option<u64>,
    ops: usize,
    files_changed: Vec<String>,
}

fn run_log(a: LogArgs) -> anyhow::Result<()> {
    let store = open(&a.store)?;
    let rev = store.revision()?;
    let rows: Vec<LogRow> = read_heads(&store, rev)?
        .into_iter()
        .rev()
        .map(|r| LogRow {
            ops: r.op_count(),
            revision: r.revision,
            files_changed: r.files.into_iter().map(|f| f.path).collect(),
            time: r.time,
            action: r.action,
            patch: r.patch,
            spec_hash: r.spec_hash,
            rolled_back_to: r.rolled_back_to,
        })
        .collect();
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&rows)?),
        Output::Table => {
            println!(
                "{:<8} {:<20} {:<8} {:>6} {:>6}  PATCH",
                "REVISION", "TIME", "ACTION", "OPS", "FILES"
            );
            for r in &rows {
                let action = match r.action {
                    Action::Apply => "apply",
                    Action::Rollback => "rollback",
                };
                println!(
                    "{:<8} {:<20} {:<8} {:>6} {:>6}  {}",
                    r.revision,
                    r.time,
                    action,
                    r.ops,
                    r.files_changed.len(),
                    r.patch
                );
            }
            if rows.is_empty() {
                println!("(no revisions: the store is at revision {rev})");
            }
        }
    }
    Ok(())
}

fn run_rollback(a: RollbackArgs) -> anyhow::Result<()> {
    let store = open(&a.store)?;
    let to = a.to;
    let out = rollback(&store, to).map_err(exit)?;
    print_outcome(&out, a.output, || {
        if out.files_changed.is_empty() {
            format!(
                "the memory files already match revision {to}; revision stays {}",
                out.revision
            )
        } else {
            format!(
                "restored revision {to} as revision {}: {} file(s) changed ({})",
                out.revision,
                out.files_changed.len(),
                out.files_changed.join(", ")
            )
        }
    })
}
