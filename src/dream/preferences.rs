//! Shared preferences (DESIGN §6): what users told two or more agents.
//!
//! User texts are split into sentences; a sentence that states a preference
//! or standing instruction ("always …", "never …", "please use …", "I prefer
//! …", "don't …", "we use …") becomes a statement. Statements are matched
//! across paraphrases by content-word Jaccard (light stemming, filler words
//! dropped), equal polarity (`always X` never matches `never X`) and equal
//! critical tokens (port 8080 is not port 3000). A group given to at least
//! two distinct agents becomes one entry under `Shared` in `preferences.md`.

use super::index::{EntryWords, Shared, Vocab};
use super::text::{clip, critical_tokens, is_critical, is_stopword, jaccard, raw_tokens, words};
use super::{Corpus, DreamOptions, Event, LineRef};
use crate::api::{Evidence, OpKind, PatchOp, Reason};
use std::collections::{BTreeMap, BTreeSet};

/// The memory file shared preferences are added to.
pub const PREFERENCES_PATH: &str = "preferences.md";
/// The section they go under.
pub const SHARED_SECTION: &str = "Shared";
/// Words before a `.` that does not end a sentence.
const ABBREVIATIONS: &[&str] = &["e.g", "i.e", "etc", "vs", "cf", "approx", "incl"];
/// Distinct wordings compared when choosing the one to write.
const MAX_WORDINGS: usize = 50;
/// Word Jaccard at or above which two statements say the same.
const SIMILARITY: f64 = 0.5;

/// Openings (lower-case, after fillers) that make a sentence a preference.
const OPENINGS: &[&str] = &[
    "always ",
    "never ",
    "please use ",
    "please always ",
    "please never ",
    "please don't ",
    "please do not ",
    "please keep ",
    "please avoid ",
    "please make sure ",
    "please prefer ",
    "please stick ",
    "i prefer ",
    "i'd prefer ",
    "i would prefer ",
    "i want you to always ",
    "i want you to never ",
    "we prefer ",
    "prefer ",
    "don't ",
    "dont ",
    "do not ",
    "we use ",
    "we always ",
    "we never ",
    "we don't ",
    "we do not ",
    "make sure to ",
    "make sure you ",
    "avoid ",
    "you should always ",
    "you must always ",
    "you should never ",
    "you must never ",
    "stick to ",
];
/// Words that make a "please …" or "use …" sentence a standing instruction.
const HABIT_MARKERS: &[&str] = &[
    "before",
    "after",
    "every",
    "each",
    "whenever",
    "always",
    "never",
    "only",
    "instead",
    "anymore",
    "default",
    "all",
    "rather",
    "explicitly",
    "everywhere",
];
/// Words that may come before the preference itself.
const FILLERS: &[&str] = &[
    "also",
    "and",
    "but",
    "oh",
    "btw",
    "ps",
    "note",
    "remember",
    "reminder",
    "important",
    "from now on",
    "going forward",
    "in future",
    "in the future",
    "for future reference",
    "one more thing",
    "as a rule",
    "by the way",
];
/// Words that make a statement a prohibition.
const NEGATIONS: &[&str] = &[
    "never",
    "don't",
    "dont",
    "not",
    "avoid",
    "shouldn't",
    "mustn't",
    "won't",
    "cannot",
    "can't",
    "no",
];
/// Words that carry no meaning for matching preferences (beyond the
/// general stopwords of `text`).
const PREFERENCE_FILLER: &[&str] = &[
    "rather",
    "over",
    "explicitly",
    "i",
    "i'd",
    "prefer",
    "prefers",
    "preferred",
    "want",
    "like",
    "would",
    "make",
    "sure",
    "never",
    "don't",
    "dont",
    "avoid",
    "all",
    "every",
    "any",
    "just",
    "really",
    "also",
    "remember",
    "note",
    "directly",
    "straight",
    "instead",
    "they",
    "them",
    "me",
    "my",
    "us",
    "each",
    "one",
    "keep",
    "stick",
    "only",
    "ever",
    "everything",
    "anything",
    "no",
    "shouldn't",
    "mustn't",
    "won't",
    "cannot",
    "can't",
    "from",
    "now",
    "on",
    "going",
    "forward",
    "future",
    "btw",
    "oh",
];

/// One preference statement found in a user text.
#[derive(Clone, Debug)]
struct Statement {
    /// Who it was given to: the agent, or the session when no agent is known.
    audience: String,
    session: usize,
    at: LineRef,
    /// The sentence as written (fillers dropped).
    text: String,
    key: PreferenceKey,
}

/// What two statements must share to say the same.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceKey {
    /// True for "never …"/"don't …".
    pub negative: bool,
    /// Stemmed content words.
    pub words: BTreeSet<String>,
    /// Numbers, ports, flags, hosts, environments.
    pub critical: BTreeSet<String>,
}

/// A crude suffix stemmer: enough for "commits/committing/committed" and
/// "timestamps/timestamp" to meet; both sides of a comparison get the same.
fn stem(word: &str) -> String {
    let mut w = word.to_string();
    if w.len() > 4 && w.ends_with("ies") {
        w.truncate(w.len() - 3);
        w.push('y');
    } else if w.len() > 4
        && (w.ends_with("ches") || w.ends_with("shes") || w.ends_with("sses") || w.ends_with("xes"))
    {
        w.truncate(w.len() - 2);
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
        w.truncate(w.len() - 1);
    }
    if w.len() > 5 && w.ends_with("ing") {
        w.truncate(w.len() - 3);
    } else if w.len() > 4 && w.ends_with("ed") {
        w.truncate(w.len() - 2);
    }
    let b = w.as_bytes();
    if b.len() > 3 && b[b.len() - 1] == b[b.len() - 2] && !b"aeiouls".contains(&b[b.len() - 1]) {
        w.truncate(w.len() - 1);
    }
    w
}

/// The matching key of a preference text.
pub fn preference_key(text: &str) -> PreferenceKey {
    let negative = raw_tokens(text).any(|t| NEGATIONS.contains(&t.as_str()));
    let words = words(text)
        .into_iter()
        .filter(|w| !PREFERENCE_FILLER.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect();
    PreferenceKey {
        negative,
        words,
        critical: critical_tokens(text),
    }
}

/// True when two preference keys say the same thing.
pub fn same_preference(a: &PreferenceKey, b: &PreferenceKey) -> bool {
    a.negative == b.negative
        && a.critical == b.critical
        && !a.words.is_empty()
        && jaccard(&a.words, &b.words) >= SIMILARITY
}

/// Splits a user text into sentences: by line (list markers dropped), then
/// at `.`, `!`, `?` followed by whitespace or the end.
fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line
            .strip_prefix("- ")
            .or_else(|| line.strip_prefix("* "))
            .unwrap_or(line);
        let mut start = 0;
        for (i, c) in line.char_indices() {
            let after = i + c.len_utf8();
            // "e.g. logs" does not end a sentence.
            let abbreviation = c == '.' && {
                let word = line[start..i]
                    .rsplit(char::is_whitespace)
                    .next()
                    .unwrap_or("");
                ABBREVIATIONS.contains(&word.to_lowercase().as_str())
            };
            let ends = matches!(c, '.' | '!' | '?')
                && !abbreviation
                && line[after..].chars().next().is_none_or(char::is_whitespace);
            if ends {
                out.push(line[start..after].trim().to_string());
                start = after;
            }
        }
        if !line[start..].trim().is_empty() {
            out.push(line[start..].trim().to_string());
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The preference a sentence states, with leading fillers removed, if it
/// states one.
pub fn as_preference(sentence: &str) -> Option<String> {
    let mut s = sentence.trim();
    loop {
        // Compared on `s` itself (ASCII case-insensitively) so that the cut
        // is always on a char boundary of `s`.
        let rest = FILLERS.iter().find_map(|f| {
            let head = s.get(..f.len())?;
            let rest = s.get(f.len()..)?;
            let sep = rest
                .chars()
                .next()
                .is_some_and(|c| matches!(c, ',' | ':' | ' ' | '-' | '!'));
            (head.eq_ignore_ascii_case(f) && sep).then_some(rest)
        });
        match rest {
            Some(rest) => s = rest.trim_start_matches([',', ':', ' ', '-', '!']),
            None => break,
        }
    }
    let lower = s.to_lowercase().replace('’', "'");
    // "Please <verb> …" is usually the task itself; it is a standing
    // instruction only when it says when or how often.
    let habitual = (lower.starts_with("please ") || lower.starts_with("use "))
        && raw_tokens(&lower).any(|t| HABIT_MARKERS.contains(&t.as_str()));
    if !habitual && !OPENINGS.iter().any(|o| lower.starts_with(o)) {
        return None;
    }
    // A question ("Do not …?") or a bare opening says nothing to keep.
    if s.ends_with('?') || words(s).len() < 2 {
        return None;
    }
    let mut chars = s.chars();
    let first = chars.next()?;
    let mut out: String = first.to_uppercase().chain(chars).collect();
    if !out.ends_with(['.', '!']) {
        out.push('.');
    }
    Some(out)
}

fn find_root(parent: &mut [usize], i: usize) -> usize {
    let mut r = i;
    while parent[r] != r {
        r = parent[r];
    }
    let mut c = i;
    while parent[c] != r {
        let next = parent[c];
        parent[c] = r;
        c = next;
    }
    r
}

/// Finds preferences given to two or more agents; deterministic.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    find_with(corpus, opts, &Shared::default())
}

/// The [`PreferenceKey`] parts of every memory entry, derived per word of
/// the shared vocabulary rather than per entry: stems, critical tokens and
/// negations are computed once for each distinct word.
struct MemoryKeys<'w> {
    words: &'w EntryWords,
    negation: Vec<bool>,
    critical: Vec<bool>,
    /// The stem id of a content word (not a stopword or filler).
    stem: Vec<Option<u32>>,
    stems: Vocab,
}

impl<'w> MemoryKeys<'w> {
    fn new(words: &'w EntryWords) -> Self {
        let negation = words.vocab.flags(|w| NEGATIONS.contains(&w));
        let critical = words.vocab.flags(is_critical);
        let mut stems = Vocab::default();
        let stem = (0..words.vocab.len() as u32)
            .map(|id| {
                let w = words.vocab.word(id);
                (!is_stopword(w) && !PREFERENCE_FILLER.contains(&w)).then(|| stems.intern(&stem(w)))
            })
            .collect();
        MemoryKeys {
            words,
            negation,
            critical,
            stem,
            stems,
        }
    }

    /// True when some entry has this key's polarity and critical tokens and
    /// words similar enough (as [`same_preference`] asks of two statements).
    fn holds(&self, negative: bool, critical: &BTreeSet<String>, words: &BTreeSet<String>) -> bool {
        if words.is_empty() {
            return false;
        }
        // An entry's critical tokens must be exactly these: one that no
        // entry holds rules every entry out.
        let mut want_critical = Vec::with_capacity(critical.len());
        for c in critical {
            match self.words.vocab.id(c) {
                Some(id) => want_critical.push(id),
                None => return false,
            }
        }
        want_critical.sort_unstable();
        let key_stems: BTreeSet<u32> = words.iter().filter_map(|w| self.stems.id(w)).collect();
        if key_stems.is_empty() {
            return false;
        }
        let mut entry_stems: Vec<u32> = Vec::new();
        (0..self.words.len()).any(|i| {
            let ids = self.words.of(i);
            let mut neg = false;
            let mut crit = 0usize;
            let mut shares = false;
            for &id in ids {
                let id = id as usize;
                neg |= self.negation[id];
                if self.critical[id] {
                    if want_critical.binary_search(&(id as u32)).is_err() {
                        return false;
                    }
                    crit += 1;
                }
                shares |= self.stem[id].is_some_and(|s| key_stems.contains(&s));
            }
            if neg != negative || crit != want_critical.len() || !shares {
                return false;
            }
            entry_stems.clear();
            entry_stems.extend(ids.iter().filter_map(|&id| self.stem[id as usize]));
            entry_stems.sort_unstable();
            entry_stems.dedup();
            let inter = entry_stems.iter().filter(|s| key_stems.contains(s)).count();
            let union = words.len() + entry_stems.len() - inter;
            inter as f64 / union as f64 >= SIMILARITY
        })
    }
}

/// [`find`] with the token sets the dream's analyses share.
pub fn find_with(corpus: &Corpus, opts: &DreamOptions, shared: &Shared) -> Vec<PatchOp> {
    let mut statements: Vec<Statement> = Vec::new();
    for (si, session) in corpus.sessions.iter().enumerate() {
        let audience = if session.agent.trim().is_empty() {
            format!("session:{}", session.id)
        } else {
            format!("agent:{}", session.agent.trim())
        };
        for event in &session.events {
            let Event::UserText { text, at } = event else {
                continue;
            };
            for sentence in sentences(text) {
                if let Some(pref) = as_preference(&sentence) {
                    statements.push(Statement {
                        audience: audience.clone(),
                        session: si,
                        at: at.clone(),
                        key: preference_key(&pref),
                        text: pref,
                    });
                }
            }
        }
    }

    // Group paraphrases: single link over the pairs that can match at all
    // (same polarity and critical tokens), so the cost is quadratic only
    // within a bucket — and only over distinct keys: the same preference
    // told in thousands of sessions is one key, linked to its copies
    // directly instead of compared pair by pair.
    let mut parent: Vec<usize> = (0..statements.len()).collect();
    let union = |parent: &mut Vec<usize>, i: usize, j: usize| {
        let (a, b) = (find_root(parent, i), find_root(parent, j));
        if a != b {
            parent[a.max(b)] = a.min(b);
        }
    };
    type KeyRef<'k> = (bool, &'k BTreeSet<String>, &'k BTreeSet<String>);
    let mut first_of_key: BTreeMap<KeyRef<'_>, usize> = BTreeMap::new();
    let mut buckets: BTreeMap<(bool, &BTreeSet<String>), Vec<usize>> = BTreeMap::new();
    for (i, st) in statements.iter().enumerate() {
        let k = &st.key;
        match first_of_key.get(&(k.negative, &k.critical, &k.words)) {
            // An empty word set matches nothing, not even itself.
            Some(&first) if !k.words.is_empty() => union(&mut parent, first, i),
            Some(_) => {}
            None => {
                first_of_key.insert((k.negative, &k.critical, &k.words), i);
                buckets
                    .entry((k.negative, &k.critical))
                    .or_default()
                    .push(i);
            }
        }
    }
    for members in buckets.values() {
        for (x, &i) in members.iter().enumerate() {
            for &j in &members[x + 1..] {
                if same_preference(&statements[i].key, &statements[j].key) {
                    union(&mut parent, i, j);
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..statements.len() {
        let root = find_root(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }

    let min_sessions = opts.min_sessions.max(1);
    // Memory entries are read through the dream's shared token sets, and
    // only once a group qualifies (most dreams have few).
    let memory: std::cell::OnceCell<MemoryKeys<'_>> = std::cell::OnceCell::new();
    let mut ops = Vec::new();
    // Roots are the smallest index of each group, so this is first-seen order.
    for members in groups.values() {
        let audiences: BTreeSet<&str> = members
            .iter()
            .map(|&i| statements[i].audience.as_str())
            .collect();
        let sessions: BTreeSet<usize> = members.iter().map(|&i| statements[i].session).collect();
        if audiences.len() < 2 || sessions.len() < min_sessions {
            continue;
        }
        // The wording closest to all others (each distinct wording scored
        // once, weighted by how often it was given); ties go to the earliest.
        let mut distinct: Vec<(usize, usize)> = Vec::new();
        for &i in members {
            if let Some(entry) = distinct
                .iter_mut()
                .find(|(d, _)| statements[*d].text == statements[i].text)
            {
                entry.1 += 1;
            } else if distinct.len() < MAX_WORDINGS {
                distinct.push((i, 1));
            }
        }
        let mut best: Option<(f64, usize)> = None;
        for &(i, _) in &distinct {
            let score: f64 = distinct
                .iter()
                .map(|&(j, n)| {
                    n as f64 * jaccard(&statements[i].key.words, &statements[j].key.words)
                })
                .sum();
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, i));
            }
        }
        let Some((_, rep)) = best else { continue };
        let content = statements[rep].text.clone();
        let member_keys: BTreeSet<KeyRef<'_>> = members
            .iter()
            .map(|&i| {
                let k = &statements[i].key;
                (k.negative, &k.critical, &k.words)
            })
            .collect();
        let memory = memory.get_or_init(|| MemoryKeys::new(shared.entry_words(corpus)));
        let known = member_keys
            .iter()
            .any(|&(negative, critical, words)| memory.holds(negative, critical, words));
        if known {
            tracing::debug!(preference = %content, "shared preference already in memory");
            continue;
        }
        let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
        let evidence = members
            .iter()
            .filter(|&&i| seen.insert((statements[i].at.session.clone(), statements[i].at.line)))
            .map(|&i| Evidence {
                session: Some(statements[i].at.session.clone()),
                line: Some(statements[i].at.line),
                entry: None,
                quote: Some(clip(&statements[i].text, 120)),
            })
            .collect();
        ops.push(PatchOp {
            op: OpKind::Add,
            path: corpus.file_like(PREFERENCES_PATH, &["prefs.md", "preference.md"]),
            section: Some(SHARED_SECTION.to_string()),
            id: None,
            ids: None,
            content: Some(content),
            to: None,
            before: None,
            reason: Reason::SharedPreference,
            superseded_by: None,
            evidence,
        });
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dream::errors::testkit::SessionBuilder;
    use crate::dream::{MemoryEntry, Outcome, Session};

    fn told(id: &str, agent: &str, text: &str) -> Session {
        SessionBuilder::new(id, agent)
            .user(text)
            .outcome(Outcome::Succeeded, "ok")
    }

    fn contents(ops: &[PatchOp]) -> Vec<&str> {
        ops.iter().filter_map(|o| o.content.as_deref()).collect()
    }

    #[test]
    fn detects_preference_sentences() {
        assert_eq!(
            as_preference("Also, always use UTC timestamps in logs"),
            Some("Always use UTC timestamps in logs.".to_string())
        );
        assert_eq!(
            as_preference("Don't push straight to main."),
            Some("Don't push straight to main.".into())
        );
        assert_eq!(as_preference("Fix the login bug."), None);
        assert_eq!(as_preference("Please fix the login bug."), None);
        assert!(as_preference("Please run the linter before every push.").is_some());
        assert!(as_preference("Use rg instead of grep.").is_some());
        assert_eq!(as_preference("Use the files tool to read it."), None);
        assert_eq!(as_preference("Do not?"), None);
        // The Kelvin sign lower-cases to ASCII `k`: no slicing inside it.
        assert_eq!(as_preference("\u{212A}eep it"), None);
        assert_eq!(
            as_preference("From now on: never deploy on Fridays"),
            Some("Never deploy on Fridays.".into())
        );
        assert_eq!(stem("committing"), "commit");
        assert_eq!(stem("timestamps"), "timestamp");
    }

    #[test]
    fn sentences_split_at_ends_not_abbreviations() {
        assert_eq!(
            sentences("Fix it. Always log in UTC, e.g. in the API.\n- Never push to main!"),
            vec![
                "Fix it.",
                "Always log in UTC, e.g. in the API.",
                "Never push to main!"
            ]
        );
    }

    #[test]
    fn paraphrases_given_to_two_agents_become_one_entry() {
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![
                told(
                    "s1",
                    "coder",
                    "Fix the login bug. Never push directly to main.",
                ),
                told(
                    "s2",
                    "reviewer",
                    "Review PR 12.\nAlso, don't push straight to main!",
                ),
                told("s3", "coder", "Always use tabs in Makefiles."),
                told("s4", "coder", "We use port 8080 for the dev server."),
                told("s5", "ops", "We use port 3000 for the dev server."),
                told("s6", "coder", "Always push directly to main."),
            ],
        };
        let ops = find(&corpus, &DreamOptions::default());
        assert_eq!(contents(&ops), vec!["Never push directly to main."]);
        let op = &ops[0];
        assert_eq!(op.reason, Reason::SharedPreference);
        assert_eq!(op.section.as_deref(), Some(SHARED_SECTION));
        let ev: Vec<_> = op
            .evidence
            .iter()
            .map(|e| (e.session.as_deref(), e.line))
            .collect();
        assert_eq!(ev, vec![(Some("s1"), Some(1)), (Some("s2"), Some(1))]);
        assert_eq!(ops, find(&corpus, &DreamOptions::default()));
    }

    #[test]
    fn unknown_agents_count_by_session() {
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![
                told("s1", "", "Never deploy on Fridays."),
                told("s2", "", "Don't deploy on a Friday."),
            ],
        };
        assert_eq!(
            contents(&find(&corpus, &DreamOptions::default())),
            vec!["Never deploy on Fridays."]
        );
    }

    #[test]
    fn same_agent_twice_or_known_is_not_shared() {
        let sessions = vec![
            told("s1", "coder", "Please run cargo fmt before you commit."),
            told("s2", "coder", "Always run cargo fmt before committing."),
        ];
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: sessions.clone(),
        };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());

        let mut sessions = sessions;
        sessions.push(told(
            "s3",
            "reviewer",
            "Make sure to run cargo fmt before each commit.",
        ));
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: sessions.clone(),
        };
        assert_eq!(find(&corpus, &DreamOptions::default()).len(), 1);

        let memories = crate::memory::entry::parse("- Run `cargo fmt` before every commit.\n")
            .entries()
            .map(|e| MemoryEntry {
                path: "preferences.md".into(),
                entry: e.clone(),
            })
            .collect();
        let corpus = Corpus { memories, sessions };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());
    }
}
