//! `reverie dream`: read a store, propose a MemoryPatch.
//!
//! The manifest goes to `--out` (written beside, then renamed, so a reader
//! never sees half a file) or stdout; the human summary goes to stderr.
//! Exit 0 even when there is nothing to change.

use crate::dream::{emit, ingest, DreamOptions};
use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Environment variable that fixes "now" (RFC 3339), so tests and examples
/// produce byte-identical patches.
pub const NOW_ENV: &str = "REVERIE_NOW";

/// Format of the patch manifest.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatchFormat {
    #[default]
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DreamArgs {
    /// The store directory (holds `memories/` and `sessions/`).
    #[arg(long)]
    pub store: PathBuf,
    /// Write the MemoryPatch manifest here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only sessions that started at or after this time: RFC 3339
    /// (`2026-11-20T00:00:00Z`) or a duration back from now (`7d`, `12h`, `30m`, `2w`).
    #[arg(long)]
    pub since: Option<String>,
    /// Instructions for this dream (from the MemoryStore or DreamSchedule).
    #[arg(long)]
    pub instructions: Option<String>,
    /// A pattern must occur in at least this many sessions to become an op.
    #[arg(long, default_value_t = 2)]
    pub min_sessions: usize,
    /// Size budget of all memory files together, in bytes.
    #[arg(long)]
    pub max_bytes: Option<u64>,
    /// Size budget of one entry, in bytes.
    #[arg(long)]
    pub max_entry_bytes: Option<u64>,
    /// Jaccard similarity (0–1) at or above which two entries are near-duplicates.
    #[arg(long, default_value_t = 0.7)]
    pub duplicate_threshold: f64,
    /// The MemoryStore's name for `storeRef` (default: the store directory's name).
    #[arg(long)]
    pub store_name: Option<String>,
    /// Manifest format.
    #[arg(long, value_enum, default_value_t = PatchFormat::Yaml)]
    pub output: PatchFormat,
    /// In a dream pod: create the MemoryPatch through the Kubernetes API
    /// (in-cluster config or KUBECONFIG), owned by the MemoryStore
    /// `--store-name` in `--namespace`; no object when there are no ops.
    /// Without `--since`, reads sessions since the store's `status.lastDream`.
    #[arg(long, requires_all = ["namespace", "store_name"])]
    pub publish: bool,
    /// The namespace of the MemoryStore (with `--publish`).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The DreamSchedule that runs this dream (labels the patch; with `--publish`).
    #[arg(long, requires = "publish")]
    pub schedule: Option<String>,
    /// Write `{"patches":[…],"ops":N,"revision":N,"entries":N,"bytes":N}`
    /// to this file (the pod's termination log, which the operator reads).
    #[arg(long, value_name = "FILE")]
    pub termination_log: Option<PathBuf>,
    /// After the dream (and its publication), remove the oldest transcripts
    /// beyond the newest N from `sessions/` (MemoryStore
    /// `retention.sessions`). Off unless given.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_sessions: Option<u32>,
    /// The optional LLM pass (off unless `--llm-provider` is given).
    #[command(flatten)]
    pub llm: crate::dream::llm::LlmArgs,
}

/// "Now": `REVERIE_NOW` when set (must be RFC 3339), else the clock.
pub fn now() -> anyhow::Result<DateTime<Utc>> {
    match std::env::var(NOW_ENV) {
        Ok(s) => Ok(DateTime::parse_from_rfc3339(s.trim())
            .with_context(|| format!("{NOW_ENV}={s:?} is not an RFC 3339 time"))?
            .with_timezone(&Utc)),
        Err(_) => Ok(Utc::now()),
    }
}

/// Parses `--since`: RFC 3339, or `<n><unit>` with unit s, m, h, d or w,
/// counted back from `now`.
pub fn parse_since(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        anyhow::anyhow!(
            "--since {s:?}: expected an RFC 3339 time (2026-11-20T00:00:00Z) or a duration such as 7d, 12h, 30m"
        )
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        "w" => Duration::try_weeks(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    now.checked_sub_signed(d).ok_or_else(bad)
}

fn store_name(args: &DreamArgs) -> String {
    if let Some(n) = &args.store_name {
        return n.clone();
    }
    let abs = std::fs::canonicalize(&args.store).unwrap_or_else(|_| args.store.clone());
    abs.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("store")
        .to_string()
}

/// Writes `bytes` to `path` through a temporary file beside it and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("--out {}: not a file name", path.display()))?;
    let tmp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

pub fn run(args: DreamArgs) -> anyhow::Result<()> {
    // Bad flag values are invalid input: exit 2, like an invalid patch.
    if !(0.0..=1.0).contains(&args.duplicate_threshold) {
        return Err(super::Exit::new(
            2,
            format!(
                "--duplicate-threshold {}: must be between 0 and 1",
                args.duplicate_threshold
            ),
        )
        .into());
    }
    let now = now()?;
    let mut since = args
        .since
        .as_deref()
        .map(|s| parse_since(s, now).map_err(|e| super::Exit::new(2, e.to_string())))
        .transpose()?;
    let cluster = if args.publish {
        let c = Cluster::connect(&args)?;
        if since.is_none() {
            since = c.last_dream()?;
        }
        Some(c)
    } else {
        None
    };
    let opts = DreamOptions {
        since,
        instructions: args.instructions.clone(),
        min_sessions: args.min_sessions.max(1),
        max_bytes: args.max_bytes,
        max_entry_bytes: args.max_entry_bytes,
        store_name: Some(store_name(&args)),
        duplicate_threshold: args.duplicate_threshold,
        now: Some(now),
    };
    let (corpus, ingest) = ingest::load_corpus(&args.store, &opts)?;
    let base = emit::base_revision(&args.store)?;
    let (ops, dropped) = emit::analyse_with_report(&corpus, &opts);

    // The optional LLM pass: the model returns the complete list of ops it
    // proposes; they are validated again against the store and each other.
    // If the endpoint cannot be used the deterministic ops stand.
    let mut llm_failed = false;
    let (ops, dropped, llm_report) = if args.llm.enabled() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime for the LLM pass")?;
        match runtime.block_on(crate::dream::llm::refine(
            &corpus,
            ops.clone(),
            &opts,
            &args.llm,
        )) {
            Ok((refined, report)) => {
                let mut resolver = emit::Resolver::new(&corpus);
                let mut kept = Vec::with_capacity(refined.len());
                let mut dropped = dropped;
                for op in refined {
                    match resolver.accept(op) {
                        Ok(op) => kept.push(op),
                        Err(d) => dropped.push(*d),
                    }
                }
                (kept, dropped, Some(report))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the LLM pass failed; keeping the deterministic ops");
                eprintln!("warning: {e}; keeping the deterministic ops");
                llm_failed = true;
                (ops, dropped, None)
            }
        }
    } else {
        (ops, dropped, None)
    };
    // For the operator's LLM metrics (termination message).
    let llm_usage = args.llm.llm_provider.map(|p| {
        use clap::ValueEnum;
        crate::controller::publish::LlmUsage {
            provider: p
                .to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default(),
            input_tokens: llm_report.as_ref().map_or(0, |r| r.input_tokens),
            output_tokens: llm_report.as_ref().map_or(0, |r| r.output_tokens),
            errors: u64::from(llm_failed),
        }
    });

    let files: std::collections::BTreeSet<&str> =
        corpus.memories.iter().map(|m| m.path.as_str()).collect();
    let report = emit::DreamReport {
        ingest,
        files: files.len(),
        entries: corpus.memories.len(),
        sessions: corpus.sessions.len(),
        dropped,
    };
    let store = opts.store_name.as_deref().unwrap_or("store");
    let patch = emit::build_patch(store, base, ops, now);
    let text = match args.output {
        PatchFormat::Yaml => serde_yaml::to_string(&patch).context("serialising the patch")?,
        PatchFormat::Json => {
            let mut s = serde_json::to_string_pretty(&patch).context("serialising the patch")?;
            s.push('\n');
            s
        }
    };
    match &args.out {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .context("writing the patch to stdout")?;
        }
    }
    let mut summary = emit::summary_table(&report, &patch.spec.ops);
    if let Some(r) = &llm_report {
        summary.push_str(&format!(
            "LLM pass: {} ops proposed, {} kept, {} dropped; {} input / {} output tokens\n",
            r.proposed,
            r.kept,
            r.dropped.len(),
            r.input_tokens,
            r.output_tokens
        ));
        for (op, why) in r.dropped.iter().take(20) {
            summary.push_str(&format!("  dropped {op}: {why}\n"));
        }
    }
    if let Some(path) = &args.out {
        summary.push_str(&format!(
            "wrote {} ({})\n",
            path.display(),
            patch.metadata.name.as_deref().unwrap_or("")
        ));
    }
    eprint!("{summary}");
    let published = match &cluster {
        Some(c) => c.publish(patch.clone())?,
        None => Vec::new(),
    };
    if let Some(keep) = args.keep_sessions {
        // Only after the patch is out: the removed transcripts were read.
        let store = crate::memory::Store::open(&args.store)
            .with_context(|| format!("opening store {}", args.store.display()))?;
        let report = crate::memory::retention::prune(&store, None, Some(keep))
            .with_context(|| format!("removing old transcripts from {}", args.store.display()))?;
        if !report.sessions_removed.is_empty() {
            eprintln!(
                "retention: removed {} transcript(s) beyond the newest {keep}",
                report.sessions_removed.len()
            );
        }
    }
    if let Some(path) = &args.termination_log {
        let stats = crate::memory::Store::open(&args.store)
            .and_then(|s| s.stats())
            .with_context(|| format!("sizing the store {}", args.store.display()))?;
        let result = crate::controller::publish::PublishResult {
            patches: published,
            ops: patch.spec.ops.len(),
            revision: base,
            entries: stats.entries as u64,
            bytes: stats.bytes,
            llm: llm_usage,
            sessions: report.sessions,
        };
        let real = crate::pathmap::translate(path);
        std::fs::write(&real, serde_json::to_string(&result)?)
            .with_context(|| format!("writing the termination log {}", real.display()))?;
    }
    Ok(())
}

/// The API side of `--publish`: a client on its own small runtime (the
/// dream itself is synchronous).
struct Cluster {
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    namespace: String,
    store: String,
    schedule: Option<String>,
}

impl Cluster {
    fn connect(args: &DreamArgs) -> anyhow::Result<Cluster> {
        let (Some(namespace), Some(store)) = (args.namespace.clone(), args.store_name.clone())
        else {
            bail!("--publish needs --namespace and --store-name");
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let client = rt
            .block_on(kube::Client::try_default())
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
        Ok(Cluster {
            rt,
            client,
            namespace,
            store,
            schedule: args.schedule.clone(),
        })
    }

    /// The store's last dream (`sessions.since: LastDream`).
    fn last_dream(&self) -> anyhow::Result<Option<DateTime<Utc>>> {
        let t = self
            .rt
            .block_on(crate::controller::publish::last_dream(
                &self.client,
                &self.namespace,
                &self.store,
            ))
            .with_context(|| {
                format!(
                    "reading MemoryStore {} in namespace {}",
                    self.store, self.namespace
                )
            })?;
        Ok(
            t.and_then(|t| DateTime::parse_from_rfc3339(&t.0.to_string()).ok())
                .map(|t| t.with_timezone(&Utc)),
        )
    }

    fn publish(&self, patch: crate::api::MemoryPatch) -> anyhow::Result<Vec<String>> {
        let names = self
            .rt
            .block_on(crate::controller::publish::publish(
                &self.client,
                &self.namespace,
                &self.store,
                self.schedule.as_deref(),
                patch,
            ))
            .with_context(|| {
                format!(
                    "publishing the MemoryPatch for store {} in namespace {}",
                    self.store, self.namespace
                )
            })?;
        if names.is_empty() {
            eprintln!("nothing to change: no MemoryPatch created");
        } else {
            eprintln!("created MemoryPatch {}", names.join(", "));
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |s| parse_since(s, now).unwrap().to_rfc3339();
        assert_eq!(t("7d"), "2026-11-23T12:00:00+00:00");
        assert_eq!(t("12h"), "2026-11-30T00:00:00+00:00");
        assert_eq!(t("2w"), "2026-11-16T12:00:00+00:00");
        assert_eq!(t("2026-11-20T00:00:00+01:00"), "2026-11-19T23:00:00+00:00");
        for bad in ["", "7", "d", "7y", "-3d", "yesterday"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
    }
}
