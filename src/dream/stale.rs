//! Analysis: stale facts (DESIGN §6).
//!
//! Sessions say that something went away: "we removed redis", "the billing
//! cron was decommissioned", "v1 of the API is deprecated", "we no longer
//! use jenkins", "memcached was replaced by valkey", "migrated from mysql to
//! postgres". An entry whose topic is that thing (a critical token of it, or
//! all its distinctive words in the entry's first clause) is stale: it is
//! deleted, or updated when a replacement is named and the entry can be
//! rewritten cleanly. Only sessions later than the entry's `lastSeen` count.
//! An entry that already records the change ("redis was removed in May"),
//! names the replacement, or mentions the thing only in passing is kept.

use super::contradictions::{
    clauses, entry_time, line_evidence, session_lines, tokens, SessionLine, Tok,
};
use super::index::Shared;
use super::text;
use super::{Corpus, DreamOptions, MemoryEntry};
use crate::api::{PatchOp, Reason};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// Words that never name the removed thing.
const NOT_THING: &[&str] = &[
    "a",
    "an",
    "the",
    "our",
    "their",
    "its",
    "this",
    "that",
    "these",
    "those",
    "old",
    "legacy",
    "former",
    "previous",
    "entire",
    "whole",
    "existing",
    "now",
    "finally",
    "it",
    "them",
    "all",
    "some",
    "any",
    "we",
    "i",
    "you",
    "they",
    "has",
    "have",
    "been",
    "was",
    "were",
    "is",
    "are",
    "also",
    "just",
    "completely",
    "entirely",
    "fully",
    "officially",
];

/// Words after which the name of the thing has ended.
const THING_END: &[&str] = &[
    "last",
    "yesterday",
    "today",
    "this",
    "week",
    "month",
    "in",
    "on",
    "at",
    "for",
    "from",
    "to",
    "with",
    "by",
    "because",
    "since",
    "after",
    "before",
    "and",
    "but",
    "so",
    "as",
    "completely",
    "entirely",
    "anymore",
    "now",
    "was",
    "is",
    "has",
    "have",
    "were",
    "are",
    "which",
    "that",
    "when",
    "so",
    "we",
    "everywhere",
    "anywhere",
    "again",
    "any",
    "more",
    "altogether",
    "please",
    "too",
];

/// Words too general to identify a thing on their own.
const GENERIC: &[&str] = &[
    "file",
    "files",
    "thing",
    "things",
    "stuff",
    "code",
    "step",
    "one",
    "service",
    "server",
    "servers",
    "cluster",
    "support",
    "feature",
    "flag",
    "config",
    "job",
    "jobs",
    "test",
    "tests",
    "check",
    "lock",
    "folder",
    "dir",
    "directory",
    "line",
    "lines",
    "setup",
    "part",
    "bit",
    "version",
    "branch",
    "pod",
    "pods",
    "container",
    "image",
    "build",
    "logs",
    "log",
    "data",
    "database",
    "db",
    "cache",
    "queue",
    "api",
    "app",
    "tool",
    "script",
    "workaround",
    "hack",
];

/// Words that show an entry already records a change, so it is history,
/// not a stale fact.
const RECORDS_CHANGE: &[&str] = &[
    "removed",
    "deprecated",
    "decommissioned",
    "replaced",
    "retired",
    "migrated",
    "legacy",
    "formerly",
    "previously",
    "old",
    "instead",
    "unlike",
    "anymore",
    "dropped",
    "renamed",
    "sunset",
    "gone",
    "obsolete",
    "deleted",
];

/// Where the thing stands relative to a trigger phrase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    /// "we removed X"
    After,
    /// "X was removed"
    Before,
}

/// Trigger phrases. `replacement` is the word before the new thing, if the
/// phrase names one ("replaced X with Y").
struct Trigger {
    words: &'static [&'static str],
    slot: Slot,
    /// Needs "we"/"we've"/"team" right before it: plain "removed" is too
    /// common in ordinary work ("removed the lock file").
    needs_we: bool,
    replacement: Option<&'static str>,
}

const fn t(
    words: &'static [&'static str],
    slot: Slot,
    needs_we: bool,
    replacement: Option<&'static str>,
) -> Trigger {
    Trigger {
        words,
        slot,
        needs_we,
        replacement,
    }
}

const TRIGGERS: &[Trigger] = &[
    t(&["migrated", "from"], Slot::After, false, Some("to")),
    t(&["moved", "from"], Slot::After, false, Some("to")),
    t(&["switched", "from"], Slot::After, false, Some("to")),
    t(&["replaced"], Slot::After, false, Some("with")),
    t(&["renamed"], Slot::After, false, Some("to")),
    t(&["was", "replaced", "by"], Slot::Before, false, Some("")),
    t(
        &["has", "been", "replaced", "by"],
        Slot::Before,
        false,
        Some(""),
    ),
    t(&["is", "replaced", "by"], Slot::Before, false, Some("")),
    t(&["was", "renamed", "to"], Slot::Before, false, Some("")),
    t(
        &["has", "been", "renamed", "to"],
        Slot::Before,
        false,
        Some(""),
    ),
    t(&["is", "now", "called"], Slot::Before, false, Some("")),
    t(&["no", "longer", "use"], Slot::After, false, None),
    t(&["no", "longer", "uses"], Slot::After, false, None),
    t(&["stopped", "using"], Slot::After, false, None),
    t(&["nobody", "uses"], Slot::After, false, None),
    t(&["no", "one", "uses"], Slot::After, false, None),
    t(&["got", "rid", "of"], Slot::After, false, None),
    t(&["decommissioned"], Slot::After, false, None),
    t(&["retired"], Slot::After, false, None),
    t(&["deprecated"], Slot::After, false, None),
    t(&["shut", "down"], Slot::After, false, None),
    t(&["sunset"], Slot::After, false, None),
    t(&["was", "sunset"], Slot::Before, false, None),
    t(&["has", "been", "sunset"], Slot::Before, false, None),
    t(&["is", "sunset"], Slot::Before, false, None),
    t(&["removed"], Slot::After, true, None),
    t(&["deleted"], Slot::After, true, None),
    t(&["dropped"], Slot::After, true, None),
    t(&["was", "removed"], Slot::Before, false, None),
    t(&["has", "been", "removed"], Slot::Before, false, None),
    t(&["is", "removed"], Slot::Before, false, None),
    t(&["is", "gone"], Slot::Before, false, None),
    t(&["was", "decommissioned"], Slot::Before, false, None),
    t(
        &["has", "been", "decommissioned"],
        Slot::Before,
        false,
        None,
    ),
    t(&["is", "decommissioned"], Slot::Before, false, None),
    t(&["is", "deprecated"], Slot::Before, false, None),
    t(&["was", "deprecated"], Slot::Before, false, None),
    t(&["has", "been", "deprecated"], Slot::Before, false, None),
    t(&["was", "retired"], Slot::Before, false, None),
    t(&["has", "been", "retired"], Slot::Before, false, None),
    t(&["was", "shut", "down"], Slot::Before, false, None),
    t(&["was", "dropped"], Slot::Before, false, None),
    t(&["is", "no", "longer", "used"], Slot::Before, false, None),
    t(
        &["is", "no", "longer", "in", "use"],
        Slot::Before,
        false,
        None,
    ),
    t(&["is", "not", "used", "anymore"], Slot::Before, false, None),
];

/// "We" words that make a plain "removed" a team decision.
const WE: &[&str] = &["we", "we've", "team"];

/// Places a plain "removed X" can take X out of that make it a change to
/// the team's setup rather than to a file.
const SETUP: &[&str] = &[
    "stack",
    "infra",
    "infrastructure",
    "cluster",
    "clusters",
    "platform",
    "setup",
    "architecture",
    "dependencies",
    "deps",
    "prod",
    "production",
    "staging",
];

/// True when a plain "removed/deleted/dropped" at `toks[i..end]` is a team
/// decision: "we removed X", or "(Dropped|Removed) X from the stack".
fn team_decision(toks: &[Tok], i: usize, end: usize) -> bool {
    let we = (i > 0 && WE.contains(&toks[i - 1].norm.as_str()))
        || (i > 1 && WE.contains(&toks[i - 2].norm.as_str()));
    if we {
        return true;
    }
    let clause_start = i == 0 || toks[i - 1].norm == ":";
    clause_start
        && toks[end..]
            .iter()
            .position(|t| t.norm == "from")
            .is_some_and(|p| {
                toks[end + p + 1..]
                    .iter()
                    .any(|t| SETUP.contains(&t.norm.as_str()))
            })
}

/// A removal a session announced.
#[derive(Clone, Debug)]
struct Removal<'a, 'b> {
    line: &'b SessionLine<'a>,
    clause: Range<usize>,
    /// The removed thing: its tokens (spans into the line's text).
    thing: Vec<Tok>,
    /// What replaced it, if the session says.
    replacement: Option<Vec<Tok>>,
}

impl Removal<'_, '_> {
    fn words(&self) -> BTreeSet<String> {
        self.thing.iter().map(|t| t.norm.clone()).collect()
    }

    fn critical(&self) -> BTreeSet<String> {
        self.thing
            .iter()
            .filter(|t| text::is_critical(&t.norm))
            .map(|t| t.norm.clone())
            .collect()
    }

    /// The replacement as written in the session.
    fn replacement_text(&self) -> Option<&str> {
        let r = self.replacement.as_ref()?;
        let (a, b) = (r.first()?, r.last()?);
        self.line.text.get(a.span.start..b.span.end)
    }
}

/// Reads a thing's name forward from `toks[i..]`.
fn thing_after(toks: &[Tok], mut i: usize) -> Vec<Tok> {
    while i < toks.len() && NOT_THING.contains(&toks[i].norm.as_str()) {
        i += 1;
    }
    let mut out = Vec::new();
    while i < toks.len() && out.len() < 4 {
        let w = toks[i].norm.as_str();
        if THING_END.contains(&w) || w == ":" || w == "=" {
            break;
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// Reads a thing's name backward from just before `toks[end]`.
fn thing_before(toks: &[Tok], end: usize) -> Vec<Tok> {
    let mut start = end;
    while start > 0 && end - start < 4 {
        let w = toks[start - 1].norm.as_str();
        if NOT_THING.contains(&w) || THING_END.contains(&w) || w == ":" || w == "=" {
            break;
        }
        start -= 1;
    }
    toks[start..end].to_vec()
}

/// True when a thing's name is specific enough to act on.
fn distinctive(thing: &[Tok]) -> bool {
    thing.iter().any(|t| {
        text::is_critical(&t.norm)
            || (t.norm.chars().count() >= 3
                && t.norm.chars().any(char::is_alphabetic)
                && !GENERIC.contains(&t.norm.as_str()))
    })
}

fn matches_at(toks: &[Tok], i: usize, words: &[&str]) -> bool {
    i + words.len() <= toks.len()
        && toks[i..i + words.len()]
            .iter()
            .zip(words)
            .all(|(t, w)| t.norm == *w)
}

/// The removals announced in one session line.
fn removals<'a, 'b>(line: &'b SessionLine<'a>) -> Vec<Removal<'a, 'b>> {
    let mut out = Vec::new();
    if line.tool_output {
        // Tool output says "deprecated" about APIs of libraries, not about
        // the team's own setup.
        return out;
    }
    for (clause, question) in clauses(line.text) {
        if question {
            continue;
        }
        let toks = tokens(line.text, clause.clone());
        let mut i = 0;
        while i < toks.len() {
            let Some(trig) = TRIGGERS.iter().find(|t| matches_at(&toks, i, t.words)) else {
                i += 1;
                continue;
            };
            let end = i + trig.words.len();
            if trig.needs_we && !team_decision(&toks, i, end) {
                i = end;
                continue;
            }
            let (thing, after_thing) = match trig.slot {
                Slot::After => {
                    let th = thing_after(&toks, end);
                    let next = th
                        .last()
                        .and_then(|l| toks.iter().position(|t| t.span == l.span))
                        .map_or(end, |p| p + 1);
                    (th, next)
                }
                Slot::Before => (thing_before(&toks, i), end),
            };
            let replacement = match trig.replacement {
                Some("") => Some(thing_after(&toks, after_thing)),
                Some(word) if after_thing < toks.len() && toks[after_thing].norm == word => {
                    Some(thing_after(&toks, after_thing + 1))
                }
                _ => None,
            }
            .filter(|r| !r.is_empty());
            // "migrated from X to Y" needs its Y; without it, it is not a removal.
            let needs_y = matches!(
                trig.words,
                ["migrated", "from"] | ["moved", "from"] | ["switched", "from"]
            );
            if !thing.is_empty() && distinctive(&thing) && !(needs_y && replacement.is_none()) {
                out.push(Removal {
                    line,
                    clause: clause.clone(),
                    thing,
                    replacement,
                });
            }
            i = end;
        }
    }
    out
}

/// What `is_about` needs of an entry, computed once per entry.
struct EntryView {
    /// Every normalised token of the entry.
    words: BTreeSet<String>,
    /// The tokens of its first clause (its topic).
    first: BTreeSet<String>,
    /// It already records a change ("redis was removed in May").
    history: bool,
}

impl EntryView {
    fn new(m: &MemoryEntry) -> Self {
        let words: BTreeSet<String> = text::raw_tokens(&m.entry.text).collect();
        let norm = text::normalise(&m.entry.text);
        let history = RECORDS_CHANGE.iter().any(|w| words.contains(*w))
            || norm.contains("no longer")
            || norm.contains("used to");
        let first = clauses(&m.entry.text)
            .into_iter()
            .next()
            .map(|(r, _)| text::raw_tokens(&m.entry.text[r]).collect())
            .unwrap_or_default();
        EntryView {
            words,
            first,
            history,
        }
    }
}

/// True when the entry is about the removed thing: it names it (by its
/// critical tokens, else all its words), does not already record the
/// change or name the replacement, and (for plain words) names it in its
/// first clause rather than in passing.
fn is_about(e: &EntryView, r: &Removal<'_, '_>) -> bool {
    let thing = r.words();
    let critical = r.critical();
    let mentioned = if critical.is_empty() {
        thing.iter().all(|w| e.words.contains(w))
    } else {
        critical.iter().all(|w| e.words.contains(w))
    };
    if !mentioned || e.history {
        return false;
    }
    if let Some(rep) = &r.replacement {
        let rep_words: Vec<&str> = rep
            .iter()
            .map(|t| t.norm.as_str())
            .filter(|w| !NOT_THING.contains(w))
            .collect();
        if !rep_words.is_empty() && rep_words.iter().all(|w| e.words.contains(*w)) {
            return false;
        }
    }
    if !critical.is_empty() {
        return true;
    }
    thing.iter().all(|w| e.first.contains(w))
}

/// The entry with the thing's name replaced by its replacement, when the
/// name is written in one piece and the entry pins nothing else down (a
/// host or port of the old thing would be wrong for the new one).
fn rewrite(m: &MemoryEntry, r: &Removal<'_, '_>) -> Option<String> {
    let rep = r.replacement_text()?;
    let text = &m.entry.text;
    let toks = tokens(text, 0..text.len());
    let n = r.thing.len();
    let pos = (0..toks.len().saturating_sub(n - 1)).find(|&i| {
        toks[i..i + n]
            .iter()
            .zip(&r.thing)
            .all(|(a, b)| a.norm == b.norm)
    })?;
    let span = toks[pos].span.start..toks[pos + n - 1].span.end;
    let thing_crit = r.critical();
    let other_crit = text::critical_tokens(text)
        .into_iter()
        .any(|c| !thing_crit.contains(&c));
    if other_crit {
        return None;
    }
    let mut out = text.clone();
    out.replace_range(span, rep);
    Some(out)
}

/// Finds stale facts; deterministic.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    find_with(corpus, opts, &Shared::default())
}

/// [`find`] with the token sets the dream's analyses share.
pub fn find_with(corpus: &Corpus, _opts: &DreamOptions, shared: &Shared) -> Vec<PatchOp> {
    let lines = session_lines(corpus);
    let all: Vec<Removal<'_, '_>> = lines.iter().flat_map(removals).collect();
    if all.is_empty() {
        return Vec::new();
    }
    // Each removal looks only at the entries that hold its key token (its
    // first critical token, else its first word). Only those keys are
    // indexed, and only the entries found get an `EntryView`: building one
    // for every entry of a large store cost more than the rest together.
    let words = shared.entry_words(corpus);
    let keys: Vec<Option<u32>> = all
        .iter()
        .map(|r| {
            let key = r
                .critical()
                .into_iter()
                .next()
                .or_else(|| r.words().into_iter().next());
            key.and_then(|k| words.vocab.id(&k))
        })
        .collect();
    let mut is_key = vec![false; words.vocab.len()];
    for &k in keys.iter().flatten() {
        is_key[k as usize] = true;
    }
    let mut by_word: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for idx in 0..words.len() {
        for &w in words.of(idx) {
            if is_key[w as usize] {
                by_word.entry(w).or_default().push(idx);
            }
        }
    }
    let mut views: BTreeMap<usize, EntryView> = BTreeMap::new();
    // Per entry, the newest removal that makes it stale.
    let mut chosen: BTreeMap<usize, &Removal<'_, '_>> = BTreeMap::new();
    for (r, key) in all.iter().zip(&keys) {
        let Some(candidates) = key.and_then(|k| by_word.get(&k)) else {
            continue;
        };
        for &idx in candidates {
            let m = &corpus.memories[idx];
            if let Some(seen) = entry_time(m) {
                // The session must be later than the entry was last confirmed.
                match r.line.stamp.time {
                    Some(t) if t > seen => {}
                    _ => continue,
                }
            }
            let view = views.entry(idx).or_insert_with(|| EntryView::new(m));
            if is_about(view, r) {
                let newer = chosen.get(&idx).is_none_or(|c| c.line.stamp < r.line.stamp);
                if newer {
                    chosen.insert(idx, r);
                }
            }
        }
    }
    chosen
        .into_iter()
        .map(|(idx, r)| {
            let m = &corpus.memories[idx];
            let evidence = vec![line_evidence(r.line, r.clause.clone())];
            let content = rewrite(m, r).filter(|c| *c != m.entry.text);
            m.op(content, Reason::Stale, None, evidence)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OpKind;
    use crate::dream::{Event, Session};
    use chrono::{TimeZone, Utc};

    fn corpus(text: &str, sessions: Vec<Session>) -> Corpus {
        crate::dream::testutil::corpus(&[("infra.md", text)], sessions)
    }

    fn session(id: &str, day: u32, lines: &[&str]) -> Session {
        let t = Utc.with_ymd_and_hms(2026, 11, day, 9, 0, 0).single();
        crate::dream::testutil::session(id, "ops", t, lines, |text, at| Event::AssistantText {
            text,
            at,
        })
    }

    fn ids(ops: &[PatchOp]) -> Vec<String> {
        ops.iter().filter_map(|o| o.before.clone()).collect()
    }

    #[test]
    fn removal_deletes_entries_about_the_thing() {
        let c = corpus(
            "- Sessions are cached in Redis at redis.internal:6379.\n- Postgres replaced Redis for sessions in May.\n- Run the API tests before merging, then check the redis dashboards.\n- Use UTC in logs.\n",
            vec![session("s-20", 24, &["Quick update: we removed redis last week."])],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(
            ids(&ops),
            vec!["Sessions are cached in Redis at redis.internal:6379."]
        );
        assert_eq!(ops[0].op, OpKind::Delete);
        assert_eq!(ops[0].reason, Reason::Stale);
        assert_eq!(ops[0].evidence[0].session.as_deref(), Some("s-20"));
        assert_eq!(ops[0].evidence[0].line, Some(1));
    }

    #[test]
    fn passive_forms_and_critical_tokens() {
        let c = corpus(
            "- Nightly reports run on cron-old.internal.\n- The billing cron emails finance at 06:00.\n- Never deploy on Fridays.\n",
            vec![session(
                "s-21",
                25,
                &["cron-old.internal was decommissioned yesterday", "The billing cron has been retired."],
            )],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(
            ids(&ops),
            vec![
                "Nightly reports run on cron-old.internal.",
                "The billing cron emails finance at 06:00."
            ]
        );
    }

    #[test]
    fn replacement_updates_when_clean_and_deletes_otherwise() {
        let c = corpus(
            "- Jenkins runs the nightly integration suite.\n- Jenkins lives at ci.internal:8080.\n",
            vec![session(
                "s-22",
                26,
                &["We migrated from Jenkins to GitHub Actions on Monday."],
            )],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].op, OpKind::Update);
        assert_eq!(
            ops[0].content.as_deref(),
            Some("GitHub Actions runs the nightly integration suite.")
        );
        assert_eq!(ops[1].op, OpKind::Delete);
    }

    #[test]
    fn only_sessions_after_last_seen_count() {
        let c = corpus(
            "- Sessions are cached in Redis. <!-- reverie: {\"lastSeen\":\"2026-11-28\"} -->\n",
            vec![session("s-20", 24, &["we removed redis"])],
        );
        assert!(find(&c, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn ordinary_removals_and_generic_things_are_ignored() {
        let c = corpus(
            "- If a deploy hangs, delete the lock file in /tmp.\n- The cache is warm after 5 minutes.\n- Redis holds the sessions.\n",
            vec![session(
                "s-20",
                24,
                &["I removed the lock file and retried.", "The cache was dropped.", "Should we removed redis?"],
            )],
        );
        assert!(find(&c, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn clause_initial_removal_needs_the_setup() {
        let c = corpus(
            "- Memcached holds the rendered pages.\n- The deploy lock file lives in the repo root.\n",
            vec![session(
                "s-20",
                24,
                &["Dropped memcached from the stack.", "Removed the deploy lock file from the repo root."],
            )],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ids(&ops), vec!["Memcached holds the rendered pages."]);
    }

    #[test]
    fn deterministic() {
        let mk = || {
            corpus(
                "- Sessions are cached in Redis.\n- Jenkins runs CI.\n",
                vec![
                    session("s-1", 20, &["we removed redis"]),
                    session("s-2", 21, &["jenkins was replaced by buildkite"]),
                ],
            )
        };
        let a = find(&mk(), &DreamOptions::default());
        assert_eq!(a.len(), 2);
        assert_eq!(a, find(&mk(), &DreamOptions::default()));
        assert_eq!(a[1].content.as_deref(), Some("buildkite runs CI."));
    }
}
