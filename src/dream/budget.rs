//! Analysis: the size budget of a store (`limits.maxEntryBytes`,
//! `limits.maxBytes`), run last, after every other analysis.
//!
//! **Oversized entries** (`max_entry_bytes`) are *trimmed*, not deleted: an
//! `update` with reason `budget` whose content is the entry cut at the last
//! sentence (or line, or word) that fits, ending in `…`. The usual cause of
//! an oversized entry is a log or stack trace pasted after a useful first
//! sentence; deleting it would lose that sentence too. The op's `before`
//! holds the full text, so the reviewer sees exactly what is cut and a
//! rollback restores it. Entries holding a fenced code block are left alone
//! (cutting one would leave an unclosed fence that swallows the rest of the
//! file) and logged instead.
//!
//! **The whole store** (`max_bytes`): when the memory files, after the other
//! ops, are estimated to exceed the budget, the least-used entries are
//! `delete`d with reason `budget` until it fits. Least used: fewest `hits`
//! (entry metadata) plus session mentions (how many session lines contain
//! the entry's rarest word, an upper bound of how often the entry's fact
//! comes up); ties go to the oldest (`lastSeen`, else `firstSeen`; entries
//! without dates count as oldest), then the earlier in file order. Entries
//! another op already touches (merged, updated, moved, deleted) are never
//! chosen.

use super::{emit, text, Corpus, DreamOptions, Event, MemoryEntry};
use crate::api::{Evidence, OpKind, PatchOp, Reason};
use chrono::{DateTime, NaiveDate, Utc};
use std::collections::{BTreeSet, HashMap};

/// The budget ops for a corpus with no other ops.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    enforce(corpus, opts, &[])
}

/// The budget ops given the ops other analyses already propose (`prior`,
/// which it accounts for and never contradicts).
pub fn enforce(corpus: &Corpus, opts: &DreamOptions, prior: &[PatchOp]) -> Vec<PatchOp> {
    if opts.max_bytes.is_none() && opts.max_entry_bytes.is_none() {
        return Vec::new();
    }
    let mut protected: BTreeSet<String> = prior.iter().flat_map(emit::touched).collect();
    let mut ops = Vec::new();
    let index: HashMap<(&str, &str), &MemoryEntry> = if prior.is_empty() {
        HashMap::new()
    } else {
        corpus
            .memories
            .iter()
            .map(|m| ((m.path.as_str(), m.entry.id.as_str()), m))
            .collect()
    };
    let mut delta: i64 = prior.iter().map(|op| size_delta(&index, op)).sum();
    if let Some(max) = opts.max_entry_bytes {
        for m in &corpus.memories {
            if (m.entry.text.len() as u64) <= max || protected.contains(&m.key()) {
                continue;
            }
            if m.entry.text.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with("```") || l.starts_with("~~~")
            }) {
                tracing::warn!(entry = %m.key(), bytes = m.entry.text.len(), max, "entry over max-entry-bytes holds a code block; not trimmed");
                continue;
            }
            let content = trim_to(&m.entry.text, max as usize);
            delta += content.len() as i64 - m.entry.text.len() as i64;
            protected.insert(m.key());
            ops.push(m.op(
                Some(content),
                Reason::Budget,
                None,
                vec![Evidence {
                    entry: Some(m.key()),
                    quote: Some(format!(
                        "entry is {} bytes, over max-entry-bytes {max}",
                        m.entry.text.len()
                    )),
                    ..Evidence::default()
                }],
            ));
        }
    }
    let Some(max) = opts.max_bytes else {
        return ops;
    };
    let current = store_bytes(corpus) as i64;
    let mut size = current + delta;
    if size <= max as i64 {
        return ops;
    }
    let usage = usage(corpus);
    let mut order: Vec<usize> = (0..corpus.memories.len())
        .filter(|&i| !protected.contains(&corpus.memories[i].key()))
        .collect();
    order.sort_by(|&a, &b| {
        (usage[a], seen(&corpus.memories[a]), a).cmp(&(usage[b], seen(&corpus.memories[b]), b))
    });
    let start = size;
    for i in order {
        if size <= max as i64 {
            break;
        }
        let m = &corpus.memories[i];
        size -= raw_len(m) as i64 + 1;
        let last = seen(m).map_or_else(
            || "unknown".to_string(),
            |t| t.format("%Y-%m-%d").to_string(),
        );
        let quote = format!(
            "least used: {} hits and session mentions, last seen {last}; memory ~{start} bytes over max-bytes {max}",
            usage[i]
        );
        ops.push(m.op(
            None,
            Reason::Budget,
            None,
            vec![Evidence {
                entry: Some(m.key()),
                quote: Some(quote),
                ..Evidence::default()
            }],
        ));
    }
    if size > max as i64 {
        tracing::warn!(
            estimated = size,
            max,
            "memory still over max-bytes: every remaining entry is changed by another op"
        );
    }
    ops
}

/// Bytes an entry takes in its file (marker, continuation indent and
/// metadata included; the trailing newline not).
fn raw_len(m: &MemoryEntry) -> usize {
    m.entry.span.end.saturating_sub(m.entry.span.start)
}

/// Estimated size of all memory files: per file, the end of its last entry
/// plus a newline (headings and blank lines before it included; text after
/// the last entry is not known to the corpus and not counted).
pub fn store_bytes(corpus: &Corpus) -> u64 {
    let mut total = 0u64;
    let mut i = 0;
    let mems = &corpus.memories;
    while i < mems.len() {
        let mut end = 0usize;
        let path = &mems[i].path;
        while i < mems.len() && &mems[i].path == path {
            end = end.max(mems[i].entry.span.end);
            i += 1;
        }
        total += end as u64 + 1;
    }
    total
}

/// How much an op changes the store's size, estimated.
fn size_delta(index: &HashMap<(&str, &str), &MemoryEntry>, op: &PatchOp) -> i64 {
    let find = |key: &str| {
        let (path, id) = key.split_once('#').unwrap_or((op.path.as_str(), key));
        index.get(&(path, id)).copied()
    };
    let content = op.content.as_deref().map_or(0, str::len) as i64;
    match op.op {
        OpKind::Add => content + 3,
        OpKind::Update => op
            .id
            .as_deref()
            .and_then(find)
            .map_or(0, |m| content - m.entry.text.len() as i64),
        OpKind::Delete => op
            .id
            .as_deref()
            .and_then(find)
            .map_or(0, |m| -(raw_len(m) as i64) - 1),
        OpKind::Merge => {
            let mut d = content;
            for (n, key) in op.ids.iter().flatten().enumerate() {
                if let Some(m) = find(key) {
                    if n == 0 {
                        d -= m.entry.text.len() as i64;
                    } else {
                        d -= raw_len(m) as i64 + 1;
                    }
                }
            }
            d
        }
        OpKind::Move => 0,
    }
}

/// Per entry: `hits` plus session mentions (the number of session text
/// lines holding the entry's rarest content word).
fn usage(corpus: &Corpus) -> Vec<u64> {
    let mut df: HashMap<String, u64> = HashMap::new();
    for s in &corpus.sessions {
        for ev in &s.events {
            if let Event::UserText { text: t, .. } | Event::AssistantText { text: t, .. } = ev {
                let words: BTreeSet<String> = text::words(t).into_iter().collect();
                for w in words {
                    *df.entry(w).or_default() += 1;
                }
            }
        }
    }
    corpus
        .memories
        .iter()
        .map(|m| {
            let hits = m.entry.meta.as_ref().and_then(|x| x.hits).unwrap_or(0);
            let mentions = text::words(&m.entry.text)
                .iter()
                .map(|w| df.get(w).copied().unwrap_or(0))
                .min()
                .unwrap_or(0);
            hits + mentions
        })
        .collect()
}

/// When an entry was last seen (`lastSeen`, else `firstSeen`), RFC 3339 or a date.
fn seen(m: &MemoryEntry) -> Option<DateTime<Utc>> {
    let meta = m.entry.meta.as_ref()?;
    let raw = meta.last_seen.as_deref().or(meta.first_seen.as_deref())?;
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// Cuts `text` to at most `max` bytes: at the last sentence end that fits,
/// else the last line end, else the last space, else a char boundary; a
/// cut inside a sentence ends in `…`.
pub fn trim_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    const ELLIPSIS: &str = "…";
    let room = max.saturating_sub(ELLIPSIS.len());
    let mut cut = room;
    while cut > 0 && !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = &text[..cut];
    let sentence_end = head
        .char_indices()
        .filter(|&(i, c)| {
            matches!(c, '.' | '!' | '?')
                && text[i + c.len_utf8()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_whitespace)
        })
        .map(|(i, c)| i + c.len_utf8())
        .next_back();
    if let Some(end) = sentence_end.filter(|&e| e * 2 >= room) {
        // A whole sentence that fits needs no ellipsis, but the cut must
        // still be visible: the ellipsis marks that text followed.
        let s = text[..end].trim_end();
        return format!("{s} {ELLIPSIS}");
    }
    let at = head
        .rfind('\n')
        .filter(|&e| e * 2 >= room)
        .or_else(|| head.rfind(' ').filter(|&e| e > 0))
        .unwrap_or(cut);
    let s = text[..at].trim_end();
    if s.is_empty() {
        return ELLIPSIS.to_string();
    }
    format!("{s}{ELLIPSIS}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(files: &[(&str, &str)]) -> Corpus {
        crate::dream::testutil::corpus(files, Vec::new())
    }

    #[test]
    fn trim_keeps_whole_sentences_or_words() {
        let t = "Restart the worker after a deploy. Log follows: aaaa bbbb cccc dddd eeee";
        let r = trim_to(t, 45);
        assert_eq!(r, "Restart the worker after a deploy. …");
        assert!(r.len() <= 45);
        let r = trim_to("alpha beta gamma delta epsilon", 16);
        assert_eq!(r, "alpha beta…");
        assert!(trim_to("ééééééééé", 7).len() <= 7);
        assert_eq!(trim_to("short", 100), "short");
    }

    #[test]
    fn oversized_entries_are_trimmed_not_deleted() {
        let long = format!("Check the queue depth first. {}", "trace ".repeat(40));
        let c = corpus(&[("a.md", &format!("- ok\n- {long}\n- ```\n  {long}\n  ```\n"))]);
        let opts = DreamOptions {
            max_entry_bytes: Some(50),
            ..DreamOptions::default()
        };
        let ops = find(&c, &opts);
        assert_eq!(ops.len(), 1, "{ops:#?}");
        assert_eq!(ops[0].op, OpKind::Update);
        assert_eq!(
            ops[0].content.as_deref(),
            Some("Check the queue depth first. …")
        );
        assert_eq!(ops[0].before.as_deref(), Some(long.trim()));
    }

    #[test]
    fn over_budget_drops_least_used_oldest_and_spares_touched() {
        let body = concat!(
            "- alpha is used a lot <!-- reverie: {\"hits\":9} -->\n",
            "- beta never used, old <!-- reverie: {\"lastSeen\":\"2026-01-01\"} -->\n",
            "- gamma never used, newer <!-- reverie: {\"lastSeen\":\"2026-06-01\"} -->\n",
            "- delta never used, no date\n",
        );
        let c = corpus(&[("a.md", body)]);
        let total = store_bytes(&c);
        assert_eq!(total as usize, body.len());
        // Room for all but about two entries.
        let opts = DreamOptions {
            max_bytes: Some(total - 60),
            ..DreamOptions::default()
        };
        let ops = find(&c, &opts);
        let gone: Vec<_> = ops.iter().filter_map(|o| o.before.as_deref()).collect();
        assert_eq!(
            gone,
            vec!["delta never used, no date", "beta never used, old"]
        );
        assert!(ops
            .iter()
            .all(|o| o.op == OpKind::Delete && o.reason == Reason::Budget));
        // The same budget, but delta is already merged by another op.
        let prior = PatchOp {
            op: OpKind::Delete,
            path: "a.md".into(),
            section: None,
            id: Some(c.memories[3].entry.id.clone()),
            ids: None,
            content: None,
            to: None,
            before: None,
            reason: Reason::Duplicate,
            superseded_by: None,
            evidence: vec![],
        };
        let ops = enforce(&c, &opts, &[prior]);
        let gone: Vec<_> = ops.iter().filter_map(|o| o.before.as_deref()).collect();
        assert_eq!(gone, vec!["beta never used, old"]);
        let within = DreamOptions {
            max_bytes: Some(total),
            ..DreamOptions::default()
        };
        assert!(find(&c, &within).is_empty());
    }
}
