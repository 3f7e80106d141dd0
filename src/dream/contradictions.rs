//! Analysis: contradictions (DESIGN §6).
//!
//! A *fact* is a clause of the shape `<subject> <verb> <value>` ("the api
//! listens on 8080", "staging database host: db-stg.internal",
//! `API_PORT=8080`) whose value holds critical tokens or is short. Two facts
//! with the same subject (normalised subject words plus the environment of
//! the entry's section) and the same kind of verb but different values
//! contradict. The newest evidence wins: the latest session line that states
//! or confirms a value, else the entry's `lastSeen`/`firstSeen`, else the
//! later entry in file order. Losing entries are deleted (superseded by the
//! winner); when a session states a value newer than every entry, the most
//! recent conflicting entry is updated to it instead. Both are never kept.

use super::index::TokenSets;
use super::text::{self, clip};
use super::{Corpus, DreamOptions, Event, LineRef, MemoryEntry, Session};
use crate::api::{Evidence, PatchOp, Reason};
use crate::memory::entry_id;
use chrono::{DateTime, NaiveDate, Utc};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// The agents' memory tool (DESIGN §2): its output repeats memory entries.
const MEMORY_TOOL: &str = "memory";

/// Longest quote carried in evidence.
pub(crate) const QUOTE_MAX: usize = 200;

/// Words that never identify a subject or a value. A superset of the
/// comparison stopwords in `text`, plus fillers that a change announcement
/// adds ("the api *now* listens on 9090") without changing its subject.
const STOP: &[&str] = &[
    "a", "an", "the", "and", "or", "of", "to", "in", "on", "for", "is", "are", "be", "it", "its",
    "this", "that", "with", "as", "at", "by", "we", "our", "you", "your", "should", "always",
    "please", "use", "uses", "using", "do", "does", "when", "from", "into", "than", "then", "so",
    "must", "will", "can", "not", "i", "me", "my", "us", "they", "their", "has", "have", "had",
    "was", "were", "been", "just", "also", "ok", "okay", "yes", "fyi", "btw", "note", "heads",
    "up", "hey", "hi", "all", "which", "there", "here",
];

/// Words dropped before matching verbs: "is now 9090" reads as "is 9090".
const FILLER: &[&str] = &[
    "now",
    "currently",
    "actually",
    "still",
    "really",
    "officially",
    "today",
    "finally",
    "new",
    "updated",
];

/// Verbs of "we <verb> <subject> to <value>" ("we moved the api to 9090").
const TRANSITIVE: &[&str] = &[
    "set", "changed", "bumped", "moved", "switched", "updated", "pointed", "raised", "lowered",
];

/// Words that end a value once it has started ("8080 behind the proxy").
const VALUE_END: &[&str] = &[
    "after", "since", "because", "until", "for", "when", "behind", "before", "in", "on", "at",
    "via", "with", "from", "and", "but", "so", "as", "if", "unless", "instead", "which", "that",
    "to", "by",
];

/// First words of a clause that make it a condition, not a fact.
const CONDITIONAL: &[&str] = &[
    "if", "when", "unless", "whenever", "before", "after", "once",
];

/// Subjects that label a note rather than name a thing ("Lesson: …").
const LABELS: &[&str] = &[
    "lesson",
    "tip",
    "todo",
    "warning",
    "important",
    "nb",
    "reminder",
    "rule",
    "why",
    "how",
    "example",
    "e.g",
    "i.e",
    "caveat",
    "gotcha",
    "context",
    "summary",
    "update",
    "result",
    "error",
    "status",
    "answer",
    "question",
    "step",
    "fix",
    "cause",
];

/// How a fact relates its subject and value; only facts of the same kind
/// (or a change announcement) can contradict each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verb {
    /// is, =, :, is set to, defaults to.
    Be,
    /// listens on, binds to.
    Listens,
    /// runs on, is deployed to.
    RunsOn,
    /// lives at, is at, points to, resolves to, is in.
    Location,
    /// uses: many-valued, so only a version change of the same thing conflicts.
    Uses,
    /// changed to, moved to, switched to, bumped to: a new value of whatever kind.
    Change,
}

/// Verb phrases, longest first at each position.
const VERBS: &[(&[&str], Verb)] = &[
    (&["was", "changed", "to"], Verb::Change),
    (&["was", "moved", "to"], Verb::Change),
    (&["was", "bumped", "to"], Verb::Change),
    (&["has", "moved", "to"], Verb::Change),
    (&["has", "changed", "to"], Verb::Change),
    (&["is", "deployed", "to"], Verb::RunsOn),
    (&["is", "deployed", "on"], Verb::RunsOn),
    (&["is", "hosted", "on"], Verb::RunsOn),
    (&["is", "hosted", "at"], Verb::Location),
    (&["is", "served", "from"], Verb::Location),
    (&["is", "reachable", "at"], Verb::Location),
    (&["is", "set", "to"], Verb::Be),
    (&["changed", "from"], Verb::Change),
    (&["moved", "from"], Verb::Change),
    (&["bumped", "from"], Verb::Change),
    (&["went", "from"], Verb::Change),
    (&["changed", "to"], Verb::Change),
    (&["moved", "to"], Verb::Change),
    (&["switched", "to"], Verb::Change),
    (&["bumped", "to"], Verb::Change),
    (&["listens", "on"], Verb::Listens),
    (&["listen", "on"], Verb::Listens),
    (&["listening", "on"], Verb::Listens),
    (&["binds", "to"], Verb::Listens),
    (&["runs", "on"], Verb::RunsOn),
    (&["run", "on"], Verb::RunsOn),
    (&["runs", "in"], Verb::RunsOn),
    (&["deploys", "to"], Verb::RunsOn),
    (&["lives", "at"], Verb::Location),
    (&["lives", "in"], Verb::Location),
    (&["lives", "on"], Verb::Location),
    (&["live", "at"], Verb::Location),
    (&["is", "at"], Verb::Location),
    (&["is", "in"], Verb::Location),
    (&["is", "on"], Verb::Location),
    (&["points", "to"], Verb::Location),
    (&["resolves", "to"], Verb::Location),
    (&["defaults", "to"], Verb::Be),
    (&["should", "be"], Verb::Be),
    (&["must", "be"], Verb::Be),
    (&["is", "using"], Verb::Uses),
    (&["uses"], Verb::Uses),
    (&["equals"], Verb::Be),
    (&["is"], Verb::Be),
    (&["="], Verb::Be),
    (&[":"], Verb::Be),
];

/// A token of a text with its byte range in that text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Tok {
    /// Lower-cased, end punctuation trimmed (as `text::raw_tokens`).
    pub norm: String,
    pub span: Range<usize>,
}

/// Splits `text[range]` into tokens like `text::raw_tokens` does, keeping
/// byte ranges, and keeping `=` and a trailing `:` ("host: x") as tokens of
/// their own because they are verbs of a fact.
pub(crate) fn tokens(text: &str, range: Range<usize>) -> Vec<Tok> {
    let mut out = Vec::new();
    let slice = &text[range.clone()];
    let mut start: Option<usize> = None;
    let push = |s: usize, e: usize, out: &mut Vec<Tok>| {
        let seg = &slice[s..e];
        if seg == "=" {
            out.push(Tok {
                norm: "=".into(),
                span: range.start + s..range.start + e,
            });
            return;
        }
        // A trailing colon after a word is the "key: value" verb.
        let colon = seg.ends_with(':') && seg.len() > 1 && !seg.ends_with("::");
        if let Some((lead, t)) = text::trim_token(seg) {
            let a = range.start + s + lead;
            out.push(Tok {
                norm: t.to_lowercase(),
                span: a..a + t.len(),
            });
        }
        if colon {
            out.push(Tok {
                norm: ":".into(),
                span: range.start + e - 1..range.start + e,
            });
        }
    };
    for (i, c) in slice.char_indices() {
        if text::is_token_separator(c) {
            if let Some(s) = start.take() {
                push(s, i, &mut out);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        push(s, slice.len(), &mut out);
    }
    out
}

/// Byte ranges of the clauses of a text: split at line ends, `;`, `,`, `!`,
/// `(`, `)`, a dash between spaces, and a `.` that ends a sentence. The flag
/// is true for a clause that ends in `?` (a question states nothing).
pub(crate) fn clauses(text: &str) -> Vec<(Range<usize>, bool)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next_ws = bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace());
        let cut = match b {
            b'\n' | b';' | b',' | b'!' | b'?' | b'(' | b')' => true,
            b'.' => next_ws,
            b'-' => i > 0 && bytes[i - 1] == b' ' && bytes.get(i + 1) == Some(&b' '),
            _ => false,
        };
        if cut {
            if start < i {
                out.push((start..i, b == b'?'));
            }
            start = i + 1;
        }
        i += 1;
    }
    if start < bytes.len() {
        out.push((start..bytes.len(), false));
    }
    out
}

fn is_stop(w: &str) -> bool {
    STOP.contains(&w)
}

/// The content words of a token list (no stopwords, no fillers, no verb marks).
fn content(toks: &[Tok]) -> Vec<String> {
    toks.iter()
        // "reporting's port" is the reporting port.
        .map(|t| {
            t.norm
                .strip_suffix("'s")
                .or_else(|| t.norm.strip_suffix("\u{2019}s"))
                .unwrap_or(&t.norm)
        })
        .filter(|w| !is_stop(w) && !FILLER.contains(w) && *w != "=" && *w != ":")
        .map(str::to_string)
        .collect()
}

/// What a fact says its value is, for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Value {
    /// The value pins something down: its critical tokens, and the plain
    /// words beside them (the name of the thing a version belongs to).
    Critical {
        critical: BTreeSet<String>,
        names: BTreeSet<String>,
    },
    /// A short plain value ("main", "postgres").
    Words(BTreeSet<String>),
}

impl Value {
    /// True when a fact with this value and one with `other` (same subject)
    /// cannot both hold.
    fn conflicts(&self, other: &Value, verb: Verb) -> bool {
        match (self, other) {
            (
                Value::Critical {
                    critical: a,
                    names: na,
                },
                Value::Critical {
                    critical: b,
                    names: nb,
                },
            ) => {
                if a == b {
                    return false;
                }
                if verb == Verb::Uses {
                    // "uses postgres 15" vs "uses postgres 16": same thing, other version.
                    return !na.is_empty() && na == nb;
                }
                true
            }
            (Value::Words(a), Value::Words(b)) => verb != Verb::Uses && a != b,
            _ => false,
        }
    }
}

/// One fact found in a clause.
#[derive(Clone, Debug)]
pub(crate) struct Fact {
    /// Normalised subject words (a set, so word order does not matter).
    pub subject: BTreeSet<String>,
    /// The noun phrase right before the verb ("so the *api*"), for
    /// matching the chattier clauses of sessions.
    pub phrase: BTreeSet<String>,
    pub verb: Verb,
    pub value: Value,
    /// The value's tokens (spans index the text the fact came from).
    pub value_toks: Vec<Tok>,
    /// The clause the fact came from.
    pub clause: Range<usize>,
}

impl Fact {
    fn value_span(&self) -> Option<Range<usize>> {
        let first = self.value_toks.first()?;
        let last = self.value_toks.last()?;
        Some(first.span.start..last.span.end)
    }
}

/// The verb phrases of a clause, in order: (token index, length, verb),
/// the longest phrase at each position.
fn find_verbs(toks: &[Tok]) -> Vec<(usize, usize, Verb)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let hit = VERBS.iter().find(|(phrase, _)| {
            let n = phrase.len();
            i + n <= toks.len()
                && toks[i..i + n]
                    .iter()
                    .zip(phrase.iter())
                    .all(|(t, p)| t.norm == *p)
        });
        match hit {
            Some((phrase, verb)) => {
                out.push((i, phrase.len(), *verb));
                i += phrase.len();
            }
            None => i += 1,
        }
    }
    out
}

/// A fact from "<someone> <set|moved|…> <subject> to <value>".
fn transitive_change(toks: &[Tok], clause: Range<usize>) -> Option<Fact> {
    let i = toks
        .iter()
        .position(|t| TRANSITIVE.contains(&t.norm.as_str()))?;
    let j = i + 1 + toks[i + 1..].iter().position(|t| t.norm == "to")?;
    if j == i + 1 {
        return None;
    }
    build_fact(
        toks[i + 1..j].to_vec(),
        toks[j + 1..].to_vec(),
        Verb::Change,
        clause,
    )
}

/// Splits a `KEY=VALUE` token ("API_PORT=8080") into a fact of its own.
fn key_value_token(tok: &Tok, text: &str) -> Option<(Vec<Tok>, Vec<Tok>)> {
    let pos = tok.norm.find('=')?;
    let (k, v) = (&tok.norm[..pos], &tok.norm[pos + 1..]);
    if k.is_empty()
        || v.is_empty()
        || !k
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return None;
    }
    let raw = &text[tok.span.clone()];
    let raw_pos = raw.find('=')?;
    let key = Tok {
        norm: k.to_string(),
        span: tok.span.start..tok.span.start + raw_pos,
    };
    let val = Tok {
        norm: v.to_string(),
        span: tok.span.start + raw_pos + 1..tok.span.end,
    };
    Some((vec![key], vec![val]))
}

/// True when `text` may state a fact: it has a `:` or `=` (key/value
/// forms, the `:` and `=` verbs), or a token that starts a verb phrase or
/// is a transitive change verb. Every fact needs one of these, so the rest
/// of a large store is skipped without building tokens (the first words
/// are `raw_tokens`, which is what `tokens` yields for a text without `:`
/// and `=`).
fn may_state_fact(text: &str) -> bool {
    if text.contains([':', '=']) {
        return true;
    }
    static FIRST: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let first = FIRST.get_or_init(|| {
        let mut v: Vec<&'static str> = VERBS
            .iter()
            .filter_map(|(phrase, _)| phrase.first().copied())
            .chain(TRANSITIVE.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    });
    let mut found = false;
    super::index::for_each_token(text, |t| {
        found = found || first.binary_search(&t).is_ok();
    });
    found
}

/// Extracts the facts of a text (one per clause at most).
pub(crate) fn facts(text: &str) -> Vec<Fact> {
    if !may_state_fact(text) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (range, question) in clauses(text) {
        if question {
            continue;
        }
        let all = tokens(text, range.clone());
        let toks: Vec<Tok> = all
            .into_iter()
            .filter(|t| !FILLER.contains(&t.norm.as_str()))
            .collect();
        if toks.is_empty() || CONDITIONAL.contains(&toks[0].norm.as_str()) {
            continue;
        }
        // The first verb that yields a fact; a label before a colon
        // ("Update: the api listens on 9090") is skipped.
        let mut found = None;
        for (i, n, verb) in find_verbs(&toks) {
            let start = toks[..i]
                .iter()
                .rposition(|t| t.norm == ":")
                .map_or(0, |p| p + 1);
            if start >= i {
                continue;
            }
            // "key: value" is a setting only when the value is short;
            // "Done: we moved the api to 9090" is a label and a sentence.
            if toks[i].norm == ":" && toks.len() - (i + n) > 4 {
                continue;
            }
            // "changed from 8080 to 9090": the value is what follows "to".
            let mut value_start = i + n;
            if toks[i + n - 1].norm == "from" {
                match toks[value_start..].iter().position(|t| t.norm == "to") {
                    Some(p) => value_start += p + 1,
                    None => continue,
                }
            }
            found = build_fact(
                toks[start..i].to_vec(),
                toks[value_start..].to_vec(),
                verb,
                range.clone(),
            );
            if found.is_some() {
                break;
            }
        }
        // "we moved the staging api to port 9090": a change told as an action.
        if found.is_none() {
            found = transitive_change(&toks, range.clone());
        }
        // A bare `KEY=VALUE` clause is a setting; inside a sentence it is
        // usually part of a command (`make deploy ENV=staging`).
        if found.is_none() && toks.len() <= 3 {
            found = toks
                .iter()
                .find_map(|t| key_value_token(t, text))
                .and_then(|(k, v)| build_fact(k, v, Verb::Be, range.clone()));
        }
        out.extend(found);
    }
    out
}

fn build_fact(
    subject_toks: Vec<Tok>,
    value_toks: Vec<Tok>,
    verb: Verb,
    clause: Range<usize>,
) -> Option<Fact> {
    // "staging/api port" names the same subject as "staging api port".
    let subject: Vec<String> = content(&subject_toks)
        .into_iter()
        .flat_map(|w| {
            let parts: Vec<&str> = w.split('/').collect();
            if parts.len() > 1
                && parts
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(char::is_alphabetic))
            {
                parts.into_iter().map(str::to_string).collect()
            } else {
                vec![w]
            }
        })
        .collect();
    if subject.is_empty() || subject.len() > 6 {
        return None;
    }
    if verb == Verb::Be && subject.len() == 1 && LABELS.contains(&subject[0].as_str()) {
        return None;
    }
    // The noun phrase right before the verb: the tokens after the last stopword.
    let last_stop = subject_toks.iter().rposition(|t| is_stop(&t.norm));
    let phrase: BTreeSet<String> = content(&subject_toks[last_stop.map_or(0, |p| p + 1)..])
        .into_iter()
        .collect();
    // The value: leading articles skipped, cut at a word that starts a new
    // thought once the value has begun.
    let mut vt: Vec<Tok> = Vec::new();
    for t in value_toks {
        let w = t.norm.as_str();
        if vt.is_empty() {
            if matches!(w, "the" | "a" | "an" | "our") {
                continue;
            }
            if matches!(w, "not" | "no" | "never" | "none" | "nothing" | "unknown") {
                return None;
            }
        } else if VALUE_END.contains(&w) || w == "=" || w == ":" {
            break;
        }
        vt.push(t);
    }
    if vt.is_empty() {
        return None;
    }
    let critical: BTreeSet<String> = vt
        .iter()
        .filter(|t| text::is_critical(&t.norm))
        .map(|t| t.norm.clone())
        .collect();
    let names: BTreeSet<String> = content(&vt)
        .into_iter()
        .filter(|w| !text::is_critical(w))
        .collect();
    let value = if !critical.is_empty() {
        if vt.len() > 6 {
            return None;
        }
        Value::Critical { critical, names }
    } else {
        let max = if verb == Verb::Uses { 3 } else { 2 };
        if names.is_empty() || names.len() > max || vt.len() > max + 1 {
            return None;
        }
        // "X is <word>" is mostly a description ("the api is stateless",
        // "the cache is shared"), not a setting: only a specific subject
        // of two or more words with a name-like value is a fact.
        if verb == Verb::Be {
            let descriptive = names.iter().any(|w| {
                if w == "enabled" || w == "disabled" {
                    return false;
                }
                [
                    "ed", "en", "ly", "ing", "able", "ible", "less", "ful", "ive", "ous",
                ]
                .iter()
                .any(|s| w.ends_with(s))
            });
            if subject.len() < 2 || descriptive {
                return None;
            }
        }
        Value::Words(names)
    };
    Some(Fact {
        subject: subject.into_iter().collect(),
        phrase,
        verb,
        value,
        value_toks: vt,
        clause,
    })
}

/// When evidence was seen; compared lexicographically, so a dated line beats
/// an undated one, a later session beats an earlier one, and file order
/// breaks the remaining ties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp {
    pub time: Option<DateTime<Utc>>,
    /// 1 + index of the session in the corpus (0: not a session line).
    pub session: usize,
    pub line: u64,
    /// Index of the entry in the corpus (ties between entries only).
    pub file: usize,
}

/// Parses a metadata date: RFC 3339, or a plain `YYYY-MM-DD` (midnight UTC).
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

/// The entry's own last-known time: `lastSeen`, else `firstSeen`.
pub(crate) fn entry_time(m: &MemoryEntry) -> Option<DateTime<Utc>> {
    let meta = m.entry.meta.as_ref()?;
    meta.last_seen
        .as_deref()
        .and_then(parse_time)
        .or_else(|| meta.first_seen.as_deref().and_then(parse_time))
}

/// A line of a session that can state a fact.
#[derive(Clone, Debug)]
pub(crate) struct SessionLine<'a> {
    pub text: &'a str,
    pub at: &'a LineRef,
    pub stamp: Stamp,
    /// True for a tool's output, false for user or assistant text.
    pub tool_output: bool,
}

/// Every text line of every session, in corpus order.
pub(crate) fn session_lines(corpus: &Corpus) -> Vec<SessionLine<'_>> {
    let mut out = Vec::new();
    for (si, s) in corpus.sessions.iter().enumerate() {
        let time = session_time(s);
        let stamp = |at: &LineRef| Stamp {
            time,
            session: si + 1,
            line: at.line,
            file: 0,
        };
        for ev in &s.events {
            match ev {
                Event::UserText { text, at } | Event::AssistantText { text, at } => {
                    out.push(SessionLine {
                        text,
                        at,
                        stamp: stamp(at),
                        tool_output: false,
                    })
                }
                // The memory tool echoes the memory files: reading an
                // entry back is not evidence that it is true.
                Event::Tool(call) if call.name == MEMORY_TOOL => {}
                Event::Tool(call) => {
                    if let (Some(text), Some(at)) =
                        (call.result.as_deref(), call.result_at.as_ref())
                    {
                        out.push(SessionLine {
                            text,
                            at,
                            stamp: stamp(at),
                            tool_output: true,
                        });
                    }
                }
            }
        }
    }
    out
}

fn session_time(s: &Session) -> Option<DateTime<Utc>> {
    s.started.or(s.ended)
}

/// Evidence pointing at a session line, quoting the clause.
pub(crate) fn line_evidence(line: &SessionLine<'_>, clause: Range<usize>) -> Evidence {
    Evidence {
        session: Some(line.at.session.clone()),
        line: Some(line.at.line),
        entry: None,
        quote: Some(clip(&line.text[clause], QUOTE_MAX)),
    }
}

/// Evidence pointing at a memory entry.
pub(crate) fn entry_evidence(m: &MemoryEntry) -> Evidence {
    Evidence {
        session: None,
        line: None,
        entry: Some(m.key()),
        quote: Some(clip(&m.entry.text, QUOTE_MAX)),
    }
}

/// Environment words of a section heading ("Staging" → staging).
fn section_envs(m: &MemoryEntry) -> BTreeSet<String> {
    m.entry
        .section
        .as_deref()
        .map(|s| {
            text::raw_tokens(s)
                .filter(|t| {
                    text::is_critical(t)
                        && !t.chars().any(|c| c.is_ascii_digit())
                        && !t.contains(['.', '/', ':', '='])
                        && !t.starts_with('-')
                })
                .collect()
        })
        .unwrap_or_default()
}

fn has_env(words: &BTreeSet<String>) -> bool {
    words.iter().any(|w| {
        text::is_critical(w)
            && !w.chars().any(|c| c.is_ascii_digit())
            && !w.contains(['.', '/', ':', '='])
            && !w.starts_with('-')
    })
}

/// Session lines and the words of each of their clauses.
struct Said<'a> {
    lines: &'a [SessionLine<'a>],
    /// (index into `lines`, clause range), in line order.
    clauses: Vec<(usize, Range<usize>)>,
    /// The words of each clause, interned (a `BTreeSet<String>` per clause
    /// was most of this analysis's memory on large corpora).
    words: TokenSets,
    /// Critical word id → the clauses (indices into `clauses`, ascending)
    /// that hold it, so a value's confirmations are looked up through its
    /// rarest critical token instead of scanning every clause per entry
    /// (which made this analysis quadratic in the corpus). Only critical
    /// words are asked for, so only they are indexed.
    index: BTreeMap<u32, Vec<u32>>,
}

impl<'a> Said<'a> {
    fn new(lines: &'a [SessionLine<'a>]) -> Self {
        let clauses: Vec<(usize, Range<usize>)> = lines
            .iter()
            .enumerate()
            .flat_map(|(li, line)| clauses(line.text).into_iter().map(move |(r, _)| (li, r)))
            .collect();
        let words = TokenSets::of_texts(&clauses, |(li, r)| &lines[*li].text[r.clone()]);
        let critical = words.vocab.flags(text::is_critical);
        let mut index: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for ci in 0..words.len() {
            for &w in words.of(ci) {
                if critical[w as usize] {
                    index.entry(w).or_default().push(ci as u32);
                }
            }
        }
        Said {
            lines,
            clauses,
            words,
            index,
        }
    }

    /// The clauses that may hold every token of `tokens`, in clause order:
    /// the posting list of the rarest one (none when a token occurs
    /// nowhere); every clause when `tokens` is empty.
    fn candidates(&self, tokens: &BTreeSet<String>) -> Vec<usize> {
        if tokens.is_empty() {
            return (0..self.clauses.len()).collect();
        }
        let mut rarest: Option<Vec<usize>> = None;
        for t in tokens {
            let Some(id) = self.words.vocab.id(t) else {
                return Vec::new();
            };
            let list: Vec<usize> = match self.index.get(&id) {
                Some(list) => list.iter().map(|&c| c as usize).collect(),
                // Not a critical word: not indexed, so found by a scan.
                None => (0..self.clauses.len())
                    .filter(|&c| self.words.contains(c, id))
                    .collect(),
            };
            if rarest.as_ref().is_none_or(|r| list.len() < r.len()) {
                rarest = Some(list);
            }
        }
        rarest.unwrap_or_default()
    }

    /// Clause `ci` holds every word of `words`.
    fn holds_all(&self, ci: usize, words: &BTreeSet<String>) -> bool {
        words.iter().all(|w| {
            self.words
                .vocab
                .id(w)
                .is_some_and(|id| self.words.contains(ci, id))
        })
    }
}

/// A fact of a memory entry.
struct EntryFact {
    idx: usize,
    fact: Fact,
}

/// A fact stated in a session line.
struct LineFact<'a, 'b> {
    line: &'b SessionLine<'a>,
    fact: Fact,
}

/// Finds contradicted facts; deterministic. At most one op per entry:
/// `delete` (reason `contradiction`, `supersededBy` the winning entry's id;
/// when the winner is itself updated, the id of its new content) or
/// `update` to a value a session stated after every entry's evidence.
pub fn find(corpus: &Corpus, _opts: &DreamOptions) -> Vec<PatchOp> {
    // Entry facts, grouped by subject.
    let mut groups: BTreeMap<BTreeSet<String>, Vec<EntryFact>> = BTreeMap::new();
    // Fact extraction is per text and independent: done in parallel, then
    // grouped in corpus order.
    let entry_facts: Vec<Vec<Fact>> = corpus
        .memories
        .par_iter()
        .map(|m| facts(&m.entry.text))
        .collect();
    for (idx, (m, found)) in corpus.memories.iter().zip(entry_facts).enumerate() {
        for fact in found {
            let mut subject = fact.subject.clone();
            if !has_env(&subject) {
                subject.extend(section_envs(m));
            }
            groups
                .entry(subject.clone())
                .or_default()
                .push(EntryFact { idx, fact });
        }
    }
    if groups.is_empty() {
        return Vec::new();
    }
    // Session facts, by the subjects they could be about.
    let lines = session_lines(corpus);
    // The words of every session clause, for confirmations.
    let said = Said::new(&lines);
    let mut stated: BTreeMap<BTreeSet<String>, Vec<LineFact<'_, '_>>> = BTreeMap::new();
    let line_facts: Vec<Vec<Fact>> = lines.par_iter().map(|l| facts(l.text)).collect();
    for (line, found) in lines.iter().zip(line_facts) {
        for fact in found {
            let mut keys = vec![fact.subject.clone()];
            if fact.phrase != fact.subject && !fact.phrase.is_empty() {
                keys.push(fact.phrase.clone());
            }
            for k in keys {
                if groups.contains_key(&k) {
                    stated.entry(k).or_default().push(LineFact {
                        line,
                        fact: fact.clone(),
                    });
                }
            }
        }
    }

    // One op per entry at most: the first decided wins (groups are visited
    // in a fixed order, so this is deterministic).
    let mut ops: BTreeMap<usize, PatchOp> = BTreeMap::new();
    for (subject, efacts) in &groups {
        let sfacts: &[LineFact<'_, '_>] = stated.get(subject).map(Vec::as_slice).unwrap_or(&[]);
        let verbs: BTreeSet<Verb> = efacts
            .iter()
            .map(|f| f.fact.verb)
            .filter(|v| *v != Verb::Change)
            .collect();
        for verb in verbs {
            resolve(corpus, &said, subject, verb, efacts, sfacts, &mut ops);
        }
    }
    ops.into_values().collect()
}

/// Decides one (subject, verb) cluster.
fn resolve(
    corpus: &Corpus,
    said: &Said<'_>,
    subject: &BTreeSet<String>,
    verb: Verb,
    efacts: &[EntryFact],
    sfacts: &[LineFact<'_, '_>],
    ops: &mut BTreeMap<usize, PatchOp>,
) {
    let members: Vec<&EntryFact> = efacts.iter().filter(|f| f.fact.verb == verb).collect();
    let statements: Vec<&LineFact<'_, '_>> = sfacts
        .iter()
        .filter(|s| s.fact.verb == verb || s.fact.verb == Verb::Change)
        .collect();
    // Nothing can conflict with a lone entry and no session statement.
    if members.len() < 2 && statements.is_empty() {
        return;
    }
    // Each entry's newest evidence: metadata, then session lines that state
    // its value or mention the subject together with its critical tokens.
    struct Cand<'e> {
        ef: &'e EntryFact,
        stamp: Stamp,
        evidence: Option<Evidence>,
    }
    // Every session line that confirms each member's value: a statement of
    // the same value, or a clause naming the subject with the value's
    // critical tokens (tool output such as "host: db-2" counts). A line that
    // states a conflicting value ("changed from 8080 to 9090") confirms
    // nothing it contradicts.
    let mut confirms: Vec<Vec<(Stamp, &LineRef, Evidence)>> = Vec::new();
    for ef in &members {
        let mut found = Vec::new();
        for s in &statements {
            if !s.fact.value.conflicts(&ef.fact.value, verb)
                && same_kind(&s.fact.value, &ef.fact.value)
            {
                found.push((
                    s.line.stamp,
                    s.line.at,
                    line_evidence(s.line, s.fact.clause.clone()),
                ));
            }
        }
        if let Value::Critical { critical, .. } = &ef.fact.value {
            for ci in said.candidates(critical) {
                let (li, clause) = &said.clauses[ci];
                let line = &said.lines[*li];
                let contradicted_here = statements
                    .iter()
                    .any(|s| s.line.at == line.at && s.fact.value.conflicts(&ef.fact.value, verb));
                if !contradicted_here && said.holds_all(ci, subject) && said.holds_all(ci, critical)
                {
                    found.push((line.stamp, line.at, line_evidence(line, clause.clone())));
                }
            }
        }
        confirms.push(found);
    }
    // A line that confirms two values that cannot both hold (a listing of
    // both, say) is evidence for neither.
    let mut by_line: BTreeMap<&LineRef, Vec<usize>> = BTreeMap::new();
    for (i, found) in confirms.iter().enumerate() {
        for (_, at, _) in found {
            by_line.entry(at).or_default().push(i);
        }
    }
    let ambiguous: BTreeSet<&LineRef> = by_line
        .into_iter()
        .filter(|(_, ms)| {
            ms.iter().any(|&a| {
                ms.iter().any(|&b| {
                    members[a]
                        .fact
                        .value
                        .conflicts(&members[b].fact.value, verb)
                })
            })
        })
        .map(|(at, _)| at)
        .collect();
    let mut cands: Vec<Cand<'_>> = Vec::new();
    for (ef, found) in members.iter().zip(confirms) {
        let m = &corpus.memories[ef.idx];
        let mut stamp = Stamp {
            time: entry_time(m),
            session: 0,
            line: 0,
            file: ef.idx,
        };
        let mut evidence = None;
        for (st, at, ev) in found {
            if !ambiguous.contains(at) && st > stamp {
                stamp = Stamp { file: ef.idx, ..st };
                evidence = Some(ev);
            }
        }
        cands.push(Cand {
            ef,
            stamp,
            evidence,
        });
    }
    // The newest statement that disagrees with every entry.
    let newest_statement = statements
        .iter()
        .filter(|s| {
            members
                .iter()
                .all(|ef| s.fact.value.conflicts(&ef.fact.value, verb))
        })
        .max_by_key(|s| s.line.stamp);
    let newest_entry = cands.iter().max_by_key(|c| c.stamp);
    let Some(newest_entry) = newest_entry else {
        return;
    };

    match newest_statement {
        Some(st) if st.line.stamp > newest_entry.stamp => {
            // The session is newer than every entry: rewrite the most recent
            // conflicting entry to the stated value, drop the other ones.
            let target = newest_entry;
            let m = &corpus.memories[target.ef.idx];
            let Some(content) = rewrite(&m.entry.text, &target.ef.fact, st.line.text, &st.fact)
            else {
                return;
            };
            if content == m.entry.text {
                return;
            }
            let new_id = entry_id(&content);
            let evidence = line_evidence(st.line, st.fact.clause.clone());
            ops.entry(target.ef.idx).or_insert_with(|| {
                m.op(
                    Some(content),
                    Reason::Contradiction,
                    None,
                    vec![evidence.clone()],
                )
            });
            for c in &cands {
                if c.ef.idx == target.ef.idx || corpus.memories[c.ef.idx].entry.id == m.entry.id {
                    continue;
                }
                let loser = &corpus.memories[c.ef.idx];
                ops.entry(c.ef.idx)
                    .or_insert_with(|| delete_op(loser, &new_id, vec![evidence.clone()]));
            }
        }
        _ => {
            // The newest entry wins; entries that disagree with it go.
            let winner = newest_entry;
            let wm = &corpus.memories[winner.ef.idx];
            for c in &cands {
                if c.ef.idx == winner.ef.idx
                    || !c.ef.fact.value.conflicts(&winner.ef.fact.value, verb)
                {
                    continue;
                }
                let loser = &corpus.memories[c.ef.idx];
                if loser.entry.id == wm.entry.id {
                    continue;
                }
                let mut evidence = vec![entry_evidence(wm)];
                if let Some(e) = &winner.evidence {
                    evidence.insert(0, e.clone());
                }
                ops.entry(c.ef.idx)
                    .or_insert_with(|| delete_op(loser, &wm.entry.id, evidence));
            }
        }
    }
}

/// Both values pin something down, or neither does.
fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Critical { .. }, Value::Critical { .. }) | (Value::Words(_), Value::Words(_))
    )
}

fn delete_op(m: &MemoryEntry, winner: &str, evidence: Vec<Evidence>) -> PatchOp {
    m.op(
        None,
        Reason::Contradiction,
        Some(winner.to_string()),
        evidence,
    )
}

/// The entry text with its value replaced by the stated one: token for token
/// when both name as many critical tokens (so "port 8080 behind the proxy"
/// keeps its wording), else the whole value.
fn rewrite(entry_text: &str, old: &Fact, stated_text: &str, new: &Fact) -> Option<String> {
    let old_crit: Vec<&Tok> = old
        .value_toks
        .iter()
        .filter(|t| text::is_critical(&t.norm))
        .collect();
    let new_crit: Vec<&Tok> = new
        .value_toks
        .iter()
        .filter(|t| text::is_critical(&t.norm))
        .collect();
    let mut replacements: Vec<(Range<usize>, &str)> = Vec::new();
    if !old_crit.is_empty() && old_crit.len() == new_crit.len() {
        for (o, n) in old_crit.iter().zip(new_crit.iter()) {
            replacements.push((o.span.clone(), stated_text.get(n.span.clone())?));
        }
    } else {
        replacements.push((old.value_span()?, stated_text.get(new.value_span()?)?));
    }
    let mut out = entry_text.to_string();
    // Back to front so earlier ranges stay valid.
    replacements.sort_by_key(|(r, _)| std::cmp::Reverse(r.start));
    for (r, s) in replacements {
        out.get(r.clone())?;
        out.replace_range(r, s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::OpKind;
    use chrono::TimeZone;

    use crate::dream::testutil::corpus;

    fn session(id: &str, day: u32, lines: &[&str]) -> Session {
        let t = Utc.with_ymd_and_hms(2026, 11, day, 10, 0, 0).single();
        crate::dream::testutil::session(id, "coder", t, lines, |text, at| Event::UserText {
            text,
            at,
        })
    }

    #[test]
    fn extracts_subject_verb_value() {
        let f = facts("The API listens on port 8080 behind the proxy.");
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].subject, ["api".to_string()].into_iter().collect());
        assert_eq!(f[0].verb, Verb::Listens);
        let text = "The API listens on port 8080 behind the proxy.";
        assert_eq!(&text[f[0].value_span().unwrap()], "port 8080");
        let kv = facts("API_PORT=8080");
        assert_eq!(kv.len(), 1);
        assert!(facts(
            "Deploys to staging go through `make deploy ENV=staging` and need no approval."
        )
        .is_empty());
        assert!(kv[0].subject.contains("api_port"));
        let colon = facts("Staging DB host: db-stg.internal");
        assert_eq!(colon.len(), 1);
        assert_eq!(colon[0].verb, Verb::Be);
        assert!(facts("Is the API on 8080?").is_empty());
        assert_eq!(
            facts("staging/api port = 9090")[0].subject,
            facts("The staging API port is 8080.")[0].subject
        );
        assert!(facts("The API is stateless.").is_empty());
        assert!(facts("The API server is written in Rust.").is_empty());
        assert_eq!(facts("The default branch is main.").len(), 1);
        assert!(facts("If the API is down, page the on-call").is_empty());
    }

    #[test]
    fn newer_entry_wins_by_metadata() {
        let c = corpus(
            &[
                ("infra.md", "- The API listens on port 8080. <!-- reverie: {\"lastSeen\":\"2026-10-01\"} -->\n"),
                ("notes.md", "- The API listens on port 9090. <!-- reverie: {\"lastSeen\":\"2026-11-01\"} -->\n"),
            ],
            vec![],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].op, OpKind::Delete);
        assert_eq!(ops[0].path, "infra.md");
        assert_eq!(ops[0].reason, Reason::Contradiction);
        assert_eq!(
            ops[0].superseded_by.as_deref(),
            Some(c.memories[1].entry.id.as_str())
        );
        assert_eq!(
            ops[0].before.as_deref(),
            Some("The API listens on port 8080.")
        );
        assert!(!ops[0].evidence.is_empty());
    }

    #[test]
    fn session_confirmation_beats_metadata_and_file_order() {
        let c = corpus(
            &[(
                "infra.md",
                "- The API listens on port 8080.\n- The API listens on port 9090. <!-- reverie: {\"lastSeen\":\"2026-11-01\"} -->\n",
            )],
            vec![session("s-1", 20, &["checked: the api listens on 8080 in every pod"])],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].id.as_deref(), Some(c.memories[1].entry.id.as_str()));
        assert_eq!(ops[0].evidence[0].session.as_deref(), Some("s-1"));
        assert_eq!(ops[0].evidence[0].line, Some(1));
    }

    #[test]
    fn without_any_time_the_later_entry_wins() {
        let c = corpus(
            &[(
                "a.md",
                "- Default branch is main.\n- Default branch is trunk.\n",
            )],
            vec![],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].before.as_deref(), Some("Default branch is main."));
    }

    #[test]
    fn newer_session_value_updates_the_entry() {
        let c = corpus(
            &[("infra.md", "- The API listens on port 8080 behind the ingress. <!-- reverie: {\"lastSeen\":\"2026-11-01\"} -->\n")],
            vec![session("s-7", 25, &["hello", "FYI the API now listens on 9090 after the ingress change."])],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].op, OpKind::Update);
        assert_eq!(
            ops[0].content.as_deref(),
            Some("The API listens on port 9090 behind the ingress.")
        );
        assert_eq!(ops[0].evidence[0].session.as_deref(), Some("s-7"));
        assert_eq!(ops[0].evidence[0].line, Some(2));
        assert!(ops[0].evidence[0]
            .quote
            .as_deref()
            .unwrap_or("")
            .contains("9090"));
    }

    #[test]
    fn change_from_to_updates_and_memory_echoes_are_not_evidence() {
        let c = corpus(
            &[(
                "infra.md",
                "- The staging API port is 8080. <!-- reverie: {\"lastSeen\":\"2026-11-01\"} -->\n",
            )],
            vec![session(
                "s-8",
                25,
                &["the staging api port changed from 8080 to 9090 this morning"],
            )],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(
            ops[0].content.as_deref(),
            Some("The staging API port is 9090.")
        );

        // Both values appear in one line (a file listing): neither wins by
        // it, so metadata decides.
        let mut s = session(
            "s-9",
            26,
            &["infra.md says the API port is 8080, notes.md says the API port is 9090"],
        );
        s.events.push(Event::Tool(crate::dream::ToolCall {
            id: "tu_1".into(),
            name: "memory".into(),
            input: serde_json::json!({"op": "read", "path": "infra.md"}),
            at: LineRef {
                session: "s-9".into(),
                line: 2,
            },
            result: Some("- The API port is 8080.".into()),
            is_error: false,
            result_at: Some(LineRef {
                session: "s-9".into(),
                line: 3,
            }),
        }));
        let c = corpus(
            &[
                (
                    "infra.md",
                    "- The API port is 8080. <!-- reverie: {\"lastSeen\":\"2026-10-01\"} -->\n",
                ),
                (
                    "notes.md",
                    "- The API port is 9090. <!-- reverie: {\"lastSeen\":\"2026-11-01\"} -->\n",
                ),
            ],
            vec![s],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(ops[0].path, "infra.md");
        assert_eq!(
            ops[0].evidence[0].entry.as_deref(),
            Some(c.memories[1].key().as_str())
        );
    }

    #[test]
    fn change_told_as_an_action_updates() {
        let c = corpus(
            &[("infra.md", "- The staging API port is 8080.\n")],
            vec![session(
                "s-8",
                25,
                &["Done: we moved the staging API port to 9090 and restarted it."],
            )],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:?}");
        assert_eq!(
            ops[0].content.as_deref(),
            Some("The staging API port is 9090.")
        );
    }

    #[test]
    fn older_session_value_does_not_update() {
        let c = corpus(
            &[(
                "infra.md",
                "- The API listens on port 8080. <!-- reverie: {\"lastSeen\":\"2026-11-28\"} -->\n",
            )],
            vec![session("s-7", 20, &["the api listens on 9090"])],
        );
        assert!(find(&c, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn same_subject_same_value_is_not_a_contradiction() {
        let c = corpus(
            &[
                ("a.md", "- The API listens on port 8080.\n"),
                ("b.md", "- API listens on 8080 in every pod.\n"),
            ],
            vec![session("s-1", 20, &["the api listens on 8080"])],
        );
        assert!(find(&c, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn different_subjects_are_not_contradictions() {
        let c = corpus(
            &[(
                "infra.md",
                "- The staging API listens on 8081.\n- The prod API listens on 8080.\n- The API port is 8080.\n- The metrics port is 9100.\n\n## Staging\n\n- Database host is db-stg.internal.\n\n## Production\n\n- Database host is db-prod.internal.\n",
            )],
            vec![],
        );
        let ops = find(&c, &DreamOptions::default());
        assert!(ops.is_empty(), "{ops:?}");
    }

    #[test]
    fn uses_conflicts_only_on_versions_of_the_same_thing() {
        let c = corpus(
            &[("a.md", "- The frontend uses React.\n- The frontend uses Tailwind.\n- The backend uses postgres 15.\n- The backend uses redis 7.\n")],
            vec![],
        );
        assert!(find(&c, &DreamOptions::default()).is_empty());
        let c = corpus(
            &[(
                "a.md",
                "- The backend uses postgres 15.\n- The backend uses postgres 16.\n",
            )],
            vec![],
        );
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        assert_eq!(
            ops[0].before.as_deref(),
            Some("The backend uses postgres 15.")
        );
    }

    #[test]
    fn output_is_deterministic() {
        let files = [
            (
                "infra.md",
                "- The API listens on port 8080.\n- Default branch is main.\n",
            ),
            (
                "notes.md",
                "- The API listens on port 9090.\n- Default branch is trunk.\n",
            ),
        ];
        let a = find(&corpus(&files, vec![]), &DreamOptions::default());
        let b = find(&corpus(&files, vec![]), &DreamOptions::default());
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
    }
}
