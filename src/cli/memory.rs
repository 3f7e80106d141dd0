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
}

/// `reverie memory apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// The store directory (holds `memories/`).
    #[arg(long)]
    pub store: PathBuf,
    /// The MemoryPatch manifest (YAML or JSON; a whole object or its spec).
    pub patch: PathBuf,
    /// How to print the result (`json` is what the controller reads).
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
    }
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

fn run_apply(a: ApplyArgs) -> anyhow::Result<()> {
    let patch = load(&a.patch)?;
    let store = open(&a.store)?;
    let name = patch.metadata.name.clone().unwrap_or_default();
    let out = apply(&store, &patch).map_err(exit)?;
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
    })
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
            revision: r.revision,
            files_changed: r.files.into_iter().map(|f| f.path).collect(),
            time: r.time,
            action: r.action,
            patch: r.patch,
            spec_hash: r.spec_hash,
            rolled_back_to: r.rolled_back_to,
            ops: r.ops,
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
