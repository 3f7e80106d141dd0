//! The patch emitter: runs the analyses in a fixed order, validates their
//! ops, resolves overlaps, and builds the `MemoryPatch` (DESIGN §4).
//!
//! Order matters because the first op to touch an entry wins: facts that
//! are wrong (stale, contradicted) are settled before duplicates are merged
//! (merging a stale entry would keep it alive), then new entries from the
//! sessions, then the budget, which sees every op before it.

use super::index::Shared;
use super::{
    budget, contradictions, duplicates, errors, methods, preferences, stale, Corpus, DreamError,
    DreamOptions, IngestReport,
};
use crate::api::{LocalRef, MemoryPatch, MemoryPatchSpec, OpKind, PatchOp, Reason};
use crate::memory::{entry_id, layout};
use chrono::{DateTime, Utc};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// Label that names the store a patch belongs to.
pub const STORE_LABEL: &str = "reverie.dev/store";

/// An op that was proposed but left out of the patch, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropped {
    pub op: PatchOp,
    pub why: String,
}

/// Everything the human summary reports besides the ops.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DreamReport {
    pub ingest: IngestReport,
    /// Memory files and entries read.
    pub files: usize,
    pub entries: usize,
    /// Sessions read (after `--since`).
    pub sessions: usize,
    /// Ops proposed but dropped (invalid, no evidence, overlapping).
    pub dropped: Vec<Dropped>,
}

/// The entries (`path#id`) an op names: the ones it changes or removes.
pub fn touched(op: &PatchOp) -> Vec<String> {
    match op.op {
        OpKind::Add => Vec::new(),
        OpKind::Update | OpKind::Delete | OpKind::Move => {
            op.id.iter().map(|id| format!("{}#{id}", op.path)).collect()
        }
        OpKind::Merge => op
            .ids
            .iter()
            .flatten()
            .map(|k| {
                if k.contains('#') {
                    k.clone()
                } else {
                    format!("{}#{k}", op.path)
                }
            })
            .collect(),
    }
}

/// Checks ops against a corpus and each other, in order: op shape, paths,
/// evidence, that every named entry exists (filling `before` when absent),
/// and that no entry is touched by two ops (the first wins).
pub struct Resolver<'c> {
    corpus: &'c Corpus,
    entries: HashMap<(&'c str, &'c str), usize>,
    sessions: BTreeSet<&'c str>,
    touched: BTreeSet<String>,
    added: BTreeSet<(String, String)>,
}

impl<'c> Resolver<'c> {
    pub fn new(corpus: &'c Corpus) -> Self {
        Resolver {
            corpus,
            entries: corpus
                .memories
                .iter()
                .enumerate()
                .map(|(i, m)| ((m.path.as_str(), m.entry.id.as_str()), i))
                .collect(),
            sessions: corpus.sessions.iter().map(|s| s.id.as_str()).collect(),
            touched: BTreeSet::new(),
            added: BTreeSet::new(),
        }
    }

    fn lookup(&self, path: &str, key: &str) -> Option<usize> {
        let (p, id) = key.split_once('#').unwrap_or((path, key));
        self.entries.get(&(p, id)).copied()
    }

    /// Validates one op; on success it is returned (with `before` filled)
    /// and its entries are marked as touched.
    pub fn accept(&mut self, mut op: PatchOp) -> Result<PatchOp, Box<Dropped>> {
        match self.check(&mut op) {
            Ok(()) => {
                for k in touched(&op) {
                    self.touched.insert(k);
                }
                if op.op == OpKind::Add {
                    if let Some(c) = &op.content {
                        self.added.insert((op.path.clone(), entry_id(c)));
                    }
                }
                Ok(op)
            }
            Err(why) => Err(Box::new(Dropped { op, why })),
        }
    }

    fn check(&self, op: &mut PatchOp) -> Result<(), String> {
        layout::check_memory_path(&op.path).map_err(|e| e.to_string())?;
        if op.evidence.is_empty() {
            return Err("no evidence".into());
        }
        for e in &op.evidence {
            match (&e.session, e.line, &e.entry) {
                (Some(s), Some(_), _) if !self.sessions.contains(s.as_str()) => {
                    return Err(format!("evidence names session {s:?}, which was not read"));
                }
                (_, _, Some(k)) if self.lookup(&op.path, k).is_none() => {
                    return Err(format!("evidence names entry {k}, which does not exist"));
                }
                (Some(_), Some(_), _) | (_, _, Some(_)) => {}
                _ => return Err("evidence names neither a session line nor an entry".into()),
            }
        }
        let content_ok = op.content.as_deref().is_some_and(|c| !c.trim().is_empty());
        let need = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(format!("{} op needs {what}", kind_name(op.op)))
            }
        };
        match op.op {
            OpKind::Add => need(content_ok, "content")?,
            OpKind::Update => need(op.id.is_some() && content_ok, "id and content")?,
            OpKind::Delete => need(op.id.is_some(), "id")?,
            OpKind::Move => {
                need(op.id.is_some() && op.to.is_some(), "id and to")?;
                if let Some(to) = &op.to {
                    layout::check_memory_path(to).map_err(|e| format!("to: {e}"))?;
                }
            }
            OpKind::Merge => need(
                op.ids.as_ref().is_some_and(|ids| ids.len() >= 2) && content_ok,
                "two or more ids and content",
            )?,
        }
        let keys = touched(op);
        let unique: BTreeSet<&String> = keys.iter().collect();
        if unique.len() != keys.len() {
            return Err("names the same entry twice".into());
        }
        let mut befores = Vec::with_capacity(keys.len());
        for k in &keys {
            let Some(i) = self.lookup(&op.path, k) else {
                return Err(format!("entry {k} does not exist"));
            };
            if self.touched.contains(k) {
                return Err(format!("entry {k} is already changed by an earlier op"));
            }
            befores.push(self.corpus.memories[i].entry.text.as_str());
        }
        if op.op == OpKind::Add {
            let c = op.content.as_deref().unwrap_or("");
            let id = entry_id(c);
            if self.entries.contains_key(&(op.path.as_str(), id.as_str())) {
                return Err(format!("{}#{id} already holds this text", op.path));
            }
            if self.added.contains(&(op.path.clone(), id)) {
                return Err("an earlier op adds the same text".into());
            }
        }
        if !befores.is_empty() {
            let current = befores.join("\n\n");
            match &op.before {
                None => op.before = Some(current),
                // A stale `before` would make the patch conflict at apply
                // time; better to drop the op now and say why.
                Some(b) if b.trim() != current.trim() => {
                    return Err("`before` does not match the entry's current text".into());
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

fn kind_name(k: OpKind) -> &'static str {
    match k {
        OpKind::Add => "add",
        OpKind::Update => "update",
        OpKind::Merge => "merge",
        OpKind::Delete => "delete",
        OpKind::Move => "move",
    }
}

fn reason_name(r: Reason) -> &'static str {
    match r {
        Reason::Duplicate => "duplicate",
        Reason::Contradiction => "contradiction",
        Reason::Stale => "stale",
        Reason::RecurringError => "recurring-error",
        Reason::WorkingMethod => "working-method",
        Reason::SharedPreference => "shared-preference",
        Reason::Budget => "budget",
        Reason::Instruction => "instruction",
    }
}

/// Runs every analysis in order and returns the valid, non-overlapping ops.
pub fn analyse(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    analyse_with_report(corpus, opts).0
}

/// An analysis: a pure function from the corpus to proposed ops. `Shared`
/// holds what several analyses derive from the corpus (built on first
/// use); pass a fresh one to run an analysis alone.
pub type Analysis = fn(&Corpus, &DreamOptions, &Shared) -> Vec<PatchOp>;

/// The analyses in the order [`analyse`] runs them (earlier ones win
/// overlaps); the bench times them one by one from this list.
pub const STAGES: [(&str, Analysis); 6] = [
    ("stale", stale::find_with),
    ("contradictions", |c, o, _| contradictions::find(c, o)),
    ("duplicates", |c, o, _| duplicates::find(c, o)),
    ("errors", errors::find_with),
    ("methods", |c, o, _| methods::find(c, o)),
    ("preferences", preferences::find_with),
];

/// [`analyse`], also returning the ops that were dropped and why.
pub fn analyse_with_report(corpus: &Corpus, opts: &DreamOptions) -> (Vec<PatchOp>, Vec<Dropped>) {
    let mut resolver = Resolver::new(corpus);
    let mut ops = Vec::new();
    let mut dropped = Vec::new();
    let mut take = |found: Vec<PatchOp>, ops: &mut Vec<PatchOp>, resolver: &mut Resolver| {
        for op in found {
            match resolver.accept(op) {
                Ok(op) => ops.push(op),
                Err(d) => {
                    tracing::info!(op = kind_name(d.op.op), path = %d.op.path, why = %d.why, "op dropped");
                    dropped.push(*d);
                }
            }
        }
    };
    // The analyses share the interned token sets of the entries. They are
    // built here, before the analyses run side by side: built lazily from
    // inside one of them, a rayon worker waiting in that build could pick
    // up another analysis that waits on the same `OnceLock` (a deadlock).
    // Only the analyses that read sessions use them.
    let shared = Shared::default();
    if !corpus.sessions.is_empty() {
        shared.entry_words(corpus);
    }
    // The analyses are independent pure functions of the corpus: they run
    // in parallel, and their ops are resolved in `STAGES` order, so the
    // result is the same as running them one after the other.
    let found: Vec<Vec<PatchOp>> = STAGES
        .par_iter()
        .map(|(_, analysis)| analysis(corpus, opts, &shared))
        .collect();
    drop(shared);
    for ((name, _), found) in STAGES.iter().zip(found) {
        tracing::debug!(analysis = name, ops = found.len(), "analysis done");
        take(found, &mut ops, &mut resolver);
    }
    let found = budget::enforce(corpus, opts, &ops);
    take(found, &mut ops, &mut resolver);
    (ops, dropped)
}

/// One line for reviewers: "merged 3 duplicates, resolved 1 contradiction, added 2 lessons".
pub fn summary_line(ops: &[PatchOp]) -> String {
    let mut by: BTreeMap<Reason, usize> = BTreeMap::new();
    for op in ops {
        *by.entry(op.reason).or_default() += 1;
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(&r, &n)| {
            let (verb, one, many) = match r {
                Reason::Duplicate => ("merged", "duplicate", "duplicates"),
                Reason::Contradiction => ("resolved", "contradiction", "contradictions"),
                Reason::Stale => ("retired", "stale fact", "stale facts"),
                Reason::RecurringError => ("added", "lesson", "lessons"),
                Reason::WorkingMethod => ("added", "procedure", "procedures"),
                Reason::SharedPreference => ("added", "shared preference", "shared preferences"),
                Reason::Budget => ("trimmed", "entry for the budget", "entries for the budget"),
                Reason::Instruction => ("applied", "instruction", "instructions"),
            };
            format!("{verb} {n} {}", if n == 1 { one } else { many })
        })
        .collect();
    if parts.is_empty() {
        "no changes".to_string()
    } else {
        parts.join(", ")
    }
}

/// A Kubernetes object name from any text: lower-case alphanumerics and
/// `-`, at most `max` bytes, never empty.
pub fn dns_name(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.truncate(max);
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "store".to_string()
    } else {
        out
    }
}

/// Evidence items an op may carry (the CRD's `maxItems`).
pub const MAX_EVIDENCE: usize = 64;

/// Builds the MemoryPatch: name `<store>-<yyyymmdd-hhmm>-<4 hex of the
/// spec's hash>`, label `reverie.dev/store`, summary from the ops.
pub fn build_patch(
    store_name: &str,
    base_revision: u64,
    ops: Vec<PatchOp>,
    now: DateTime<Utc>,
) -> MemoryPatch {
    let store = dns_name(store_name, 63);
    let mut ops = ops;
    for op in &mut ops {
        // The CRD admits 64 evidence items per op; the first ones (earliest
        // sessions) are kept.
        op.evidence.truncate(MAX_EVIDENCE);
    }
    let spec = MemoryPatchSpec {
        store_ref: LocalRef {
            name: store.clone(),
        },
        base_revision,
        summary: summary_line(&ops),
        ops,
    };
    // The spec serialises deterministically (structs, vectors): same ops,
    // same hash.
    let digest = Sha256::digest(serde_json::to_vec(&spec).unwrap_or_default());
    let name = format!(
        "{}-{}-{}",
        dns_name(&store, 253 - 19),
        now.format("%Y%m%d-%H%M"),
        hex::encode(&digest[..2])
    );
    let mut patch = MemoryPatch::new(&name, spec);
    patch.metadata.labels = Some(BTreeMap::from([(STORE_LABEL.to_string(), store)]));
    patch
}

/// The store's current revision: `.reverie/revision` if present (a
/// number), else 0.
pub fn base_revision(store: &Path) -> Result<u64, DreamError> {
    let path = store.join(layout::STATE).join("revision");
    match std::fs::read_to_string(&path) {
        Ok(s) => s.trim().parse().map_err(|e| DreamError::Io {
            path: path.clone(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a revision number ({e}): {:?}", text_head(&s)),
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(DreamError::Io { path, source }),
    }
}

fn text_head(s: &str) -> String {
    super::text::clip(s, 40)
}

/// Op lines the summary shows before it only counts the rest: a patch of
/// thousands of ops is read in the manifest, not on a terminal.
const MAX_TABLE_OPS: usize = 200;

/// A readable summary for stderr: what was read, ops per reason, one line
/// per op, and what was dropped.
pub fn summary_table(report: &DreamReport, ops: &[PatchOp]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let r = &report.ingest;
    let _ = writeln!(
        o,
        "read {} memory files ({} entries), {} sessions from {} transcripts ({} lines)",
        report.files, report.entries, report.sessions, r.files, r.lines
    );
    let bad = r.bad_json + r.bad_utf8 + r.unknown_shape;
    if bad > 0 || r.skipped_sessions > 0 {
        let _ = writeln!(
            o,
            "skipped: {} bad JSON, {} bad UTF-8, {} unknown shape lines; {} sessions before --since",
            r.bad_json, r.bad_utf8, r.unknown_shape, r.skipped_sessions
        );
        for s in &r.samples {
            let _ = writeln!(o, "  {s}");
        }
    }
    let _ = writeln!(o, "proposed {} ops: {}", ops.len(), summary_line(ops));
    if !ops.is_empty() {
        let mut by: BTreeMap<Reason, usize> = BTreeMap::new();
        for op in ops {
            *by.entry(op.reason).or_default() += 1;
        }
        let _ = writeln!(o, "\n  {:<18} {:>5}", "REASON", "OPS");
        for (r, n) in by {
            let _ = writeln!(o, "  {:<18} {:>5}", reason_name(r), n);
        }
        let w = ops
            .iter()
            .map(|op| op.path.len())
            .max()
            .unwrap_or(4)
            .clamp(4, 40);
        let _ = writeln!(o, "\n  {:<6} {:<w$} {:<17} TEXT", "OP", "PATH", "REASON");
        for op in ops.iter().take(MAX_TABLE_OPS) {
            let text = op.content.as_deref().or(op.before.as_deref()).unwrap_or("");
            let _ = writeln!(
                o,
                "  {:<6} {:<w$} {:<17} {}",
                kind_name(op.op),
                op.path,
                reason_name(op.reason),
                super::text::clip(text, 60)
            );
        }
    }
    if ops.len() > MAX_TABLE_OPS {
        let _ = writeln!(
            o,
            "  … and {} more (see the manifest)",
            ops.len() - MAX_TABLE_OPS
        );
    }
    if !report.dropped.is_empty() {
        let _ = writeln!(o, "\ndropped {} ops:", report.dropped.len());
        for d in report.dropped.iter().take(MAX_TABLE_OPS) {
            let _ = writeln!(
                o,
                "  {} {} ({}): {}",
                kind_name(d.op.op),
                d.op.path,
                reason_name(d.op.reason),
                d.why
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Evidence;
    use crate::dream::MemoryEntry;
    use crate::memory::parse;

    fn corpus(body: &str) -> Corpus {
        Corpus {
            memories: parse(body)
                .entries()
                .map(|e| MemoryEntry {
                    path: "a.md".into(),
                    entry: e.clone(),
                })
                .collect(),
            sessions: Vec::new(),
        }
    }

    fn op(kind: OpKind, id: Option<&str>, reason: Reason, evidence: Vec<Evidence>) -> PatchOp {
        PatchOp {
            op: kind,
            path: "a.md".into(),
            section: None,
            id: id.map(str::to_string),
            ids: None,
            content: Some("new text".into()),
            to: None,
            before: None,
            reason,
            superseded_by: None,
            evidence,
        }
    }

    #[test]
    fn resolver_drops_overlaps_missing_ids_and_ops_without_evidence() {
        let c = corpus("- one\n- two\n");
        let id = c.memories[0].entry.id.clone();
        let ev = vec![Evidence {
            entry: Some(c.memories[1].key()),
            ..Evidence::default()
        }];
        let mut r = Resolver::new(&c);
        let first = r
            .accept(op(OpKind::Delete, Some(&id), Reason::Stale, ev.clone()))
            .unwrap();
        assert_eq!(first.before.as_deref(), Some("one"));
        let again = r.accept(op(
            OpKind::Update,
            Some(&id),
            Reason::Contradiction,
            ev.clone(),
        ));
        assert!(again.unwrap_err().why.contains("already changed"));
        let missing = r.accept(op(
            OpKind::Delete,
            Some("000000000000"),
            Reason::Stale,
            ev.clone(),
        ));
        assert!(missing.unwrap_err().why.contains("does not exist"));
        let bare = r.accept(op(OpKind::Add, None, Reason::RecurringError, vec![]));
        assert_eq!(bare.unwrap_err().why, "no evidence");
        let ghost = r.accept(op(
            OpKind::Add,
            None,
            Reason::RecurringError,
            vec![Evidence {
                session: Some("s-9".into()),
                line: Some(1),
                ..Evidence::default()
            }],
        ));
        assert!(ghost.unwrap_err().why.contains("not read"));
        assert!(r
            .accept(op(OpKind::Add, None, Reason::RecurringError, ev.clone()))
            .is_ok());
        let twice = r.accept(op(OpKind::Add, None, Reason::WorkingMethod, ev));
        assert!(twice.unwrap_err().why.contains("same text"));
        let mut wrong = op(
            OpKind::Delete,
            Some(&c.memories[1].entry.id),
            Reason::Stale,
            vec![],
        );
        wrong.evidence = vec![Evidence {
            entry: Some(c.memories[1].key()),
            ..Evidence::default()
        }];
        wrong.before = Some("not what it says".into());
        assert!(r.accept(wrong).unwrap_err().why.contains("before"));
    }

    #[test]
    fn patch_name_label_and_summary() {
        let c = corpus("- one\n- two\n");
        let ev = vec![Evidence {
            entry: Some(c.memories[0].key()),
            ..Evidence::default()
        }];
        let ops = vec![
            op(OpKind::Add, None, Reason::RecurringError, ev.clone()),
            op(OpKind::Add, None, Reason::RecurringError, ev.clone()),
            op(OpKind::Delete, Some("x"), Reason::Contradiction, ev),
        ];
        let now = DateTime::parse_from_rfc3339("2026-11-24T03:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let p = build_patch("Team Memory", 41, ops.clone(), now);
        let name = p.metadata.name.clone().unwrap();
        assert!(name.starts_with("team-memory-20261124-0300-"), "{name}");
        assert_eq!(name.len(), "team-memory-20261124-0300-".len() + 4);
        assert_eq!(p.spec.summary, "resolved 1 contradiction, added 2 lessons");
        assert_eq!(p.spec.base_revision, 41);
        assert_eq!(
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(STORE_LABEL))
                .map(String::as_str),
            Some("team-memory")
        );
        let again = build_patch("Team Memory", 41, ops, now);
        assert_eq!(again.metadata, p.metadata);
        assert_eq!(again.spec, p.spec);
        assert_eq!(build_patch("x", 0, vec![], now).spec.summary, "no changes");
    }

    #[test]
    fn summary_table_counts_reasons_and_caps_op_lines() {
        let ev = vec![Evidence {
            entry: Some("a.md#x".into()),
            ..Evidence::default()
        }];
        let mut ops = vec![op(OpKind::Delete, Some("x"), Reason::Stale, ev.clone()); MAX_TABLE_OPS];
        ops.push(op(OpKind::Add, None, Reason::RecurringError, ev));
        let report = DreamReport {
            ingest: IngestReport {
                files: 2,
                lines: 10,
                bad_json: 1,
                samples: vec!["s-1.jsonl:3: not valid JSON".into()],
                ..IngestReport::default()
            },
            files: 1,
            entries: 2,
            sessions: 2,
            dropped: vec![],
        };
        let t = summary_table(&report, &ops);
        assert!(t.contains("retired 200 stale facts, added 1 lesson"), "{t}");
        assert!(t.contains("s-1.jsonl:3: not valid JSON"), "{t}");
        assert!(t.contains("recurring-error        1"), "{t}");
        assert!(t.contains("… and 1 more"), "{t}");
        assert_eq!(
            t.lines().filter(|l| l.starts_with("  delete")).count(),
            MAX_TABLE_OPS
        );
    }

    #[test]
    fn base_revision_reads_the_state_file() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(base_revision(d.path()).unwrap(), 0);
        std::fs::create_dir_all(d.path().join(".reverie")).unwrap();
        std::fs::write(d.path().join(".reverie/revision"), "41\n").unwrap();
        assert_eq!(base_revision(d.path()).unwrap(), 41);
        std::fs::write(d.path().join(".reverie/revision"), "forty").unwrap();
        let e = base_revision(d.path()).unwrap_err().to_string();
        assert!(e.contains("revision") && e.contains("forty"), "{e}");
    }
}
