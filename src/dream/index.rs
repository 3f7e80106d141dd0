//! Interned token sets of the memory entries, built once per dream and
//! shared by the analyses that ask "which entries hold these words".
//!
//! Several analyses used to tokenise every entry of the store into a
//! `BTreeSet<String>` of their own (stale, errors, preferences): at a
//! million entries that was tens of millions of small allocations per
//! analysis and most of the dream's time and peak memory. Here every
//! entry's tokens (exactly [`text::raw_tokens`]) are interned once into
//! `u32` ids and kept as one sorted, deduplicated slice per entry in a flat
//! vector. Ids are deterministic (order of first appearance in corpus
//! order), but nothing may depend on their order for output: they are only
//! compared for equality and set membership.

use super::text;
use super::Corpus;
use rayon::prelude::*;
use std::collections::HashMap;
use xxhash_rust::xxh3::Xxh3DefaultBuilder;

/// Entries per parallel tokenising task: large enough that the per-task
/// interner pays off, small enough to share the work between cores.
const CHUNK: usize = 4096;

/// Words ↔ ids. Lookup only; never iterated in hash order.
#[derive(Debug, Default)]
pub struct Vocab {
    ids: HashMap<String, u32, Xxh3DefaultBuilder>,
    words: Vec<String>,
}

impl Vocab {
    /// The id of `word`, when some text holds it.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The word of `id`.
    pub fn word(&self, id: u32) -> &str {
        self.words.get(id as usize).map_or("", String::as_str)
    }

    /// Number of distinct words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when no text holds a word.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The id of `word`, adding it when new.
    pub fn intern(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.to_string());
        self.ids.insert(word.to_string(), id);
        id
    }

    /// A flag per word: `f(word)`, indexed by id.
    pub fn flags(&self, f: impl Fn(&str) -> bool + Sync) -> Vec<bool> {
        self.words.par_iter().map(|w| f(w)).collect()
    }
}

/// Calls `f` with every token of `text` as [`text::raw_tokens`] yields it
/// (trimmed, lower-cased), without allocating for tokens that are already
/// lower-case ASCII.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    for seg in text.split(text::is_token_separator) {
        let Some((_, t)) = text::trim_token(seg) else {
            continue;
        };
        if t.is_ascii() && !t.bytes().any(|b| b.is_ascii_uppercase()) {
            f(t);
        } else {
            f(&t.to_lowercase());
        }
    }
}

/// The raw-token set of each of a list of texts (memory entries, session
/// clauses), interned.
#[derive(Debug, Default)]
pub struct TokenSets {
    pub vocab: Vocab,
    /// `ids[offsets[i]..offsets[i + 1]]` are text `i`'s token ids, sorted
    /// and unique.
    offsets: Vec<usize>,
    ids: Vec<u32>,
}

/// One parallel task's result: its own words, and per entry the count and
/// the (task-local) ids.
struct Chunk {
    words: Vec<String>,
    lens: Vec<usize>,
    ids: Vec<u32>,
}

/// The token sets of the memory entries, in corpus order.
pub type EntryWords = TokenSets;

impl TokenSets {
    /// Tokenises every entry of `corpus`.
    pub fn build(corpus: &Corpus) -> Self {
        Self::of_texts(&corpus.memories, |m| &m.entry.text)
    }

    /// Tokenises `text(item)` for every item (in parallel, chunk by chunk,
    /// each chunk with its own interner; the chunks are then merged in
    /// order, so ids do not depend on scheduling).
    pub fn of_texts<'t, T: Sync>(items: &'t [T], text: impl Fn(&'t T) -> &'t str + Sync) -> Self {
        let chunks: Vec<Chunk> = items
            .par_chunks(CHUNK)
            .map(|chunk| {
                let mut local: HashMap<String, u32, Xxh3DefaultBuilder> = HashMap::default();
                let mut out = Chunk {
                    words: Vec::new(),
                    lens: Vec::with_capacity(chunk.len()),
                    ids: Vec::new(),
                };
                let mut buf: Vec<u32> = Vec::new();
                for item in chunk {
                    buf.clear();
                    for_each_token(text(item), |t| {
                        let id = match local.get(t) {
                            Some(&id) => id,
                            None => {
                                let id = out.words.len() as u32;
                                out.words.push(t.to_string());
                                local.insert(t.to_string(), id);
                                id
                            }
                        };
                        buf.push(id);
                    });
                    buf.sort_unstable();
                    buf.dedup();
                    out.lens.push(buf.len());
                    out.ids.extend_from_slice(&buf);
                }
                out
            })
            .collect();
        let mut vocab = Vocab::default();
        let total: usize = chunks.iter().map(|c| c.ids.len()).sum();
        let mut offsets = Vec::with_capacity(items.len() + 1);
        let mut ids = Vec::with_capacity(total);
        offsets.push(0);
        for c in chunks {
            let global: Vec<u32> = c.words.iter().map(|w| vocab.intern(w)).collect();
            let mut at = 0;
            for len in c.lens {
                let start = ids.len();
                ids.extend(c.ids[at..at + len].iter().map(|&l| global[l as usize]));
                ids[start..].sort_unstable();
                at += len;
                offsets.push(ids.len());
            }
        }
        TokenSets {
            vocab,
            offsets,
            ids,
        }
    }

    /// Text `i`'s token ids (sorted, unique); empty past the end.
    pub fn of(&self, i: usize) -> &[u32] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.ids[a..b],
            _ => &[],
        }
    }

    /// Number of texts.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// True when there are no texts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Text `i` holds token `id`.
    pub fn contains(&self, i: usize, id: u32) -> bool {
        self.of(i).binary_search(&id).is_ok()
    }
}

/// What the analyses of one dream share. Each part is built on first use,
/// so an analysis run alone pays only for what it reads.
#[derive(Debug, Default)]
pub struct Shared {
    entry_words: std::sync::OnceLock<EntryWords>,
}

impl Shared {
    /// The interned token sets of `corpus`'s entries (built on first call;
    /// every call must pass the same corpus).
    pub fn entry_words(&self, corpus: &Corpus) -> &EntryWords {
        self.entry_words.get_or_init(|| EntryWords::build(corpus))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn entry_words_match_raw_tokens() {
        let body = "- Use **UTC** for timestamps.\n- The API listens on port 8080.\n- ÉTÉ Straße ǅemal, db.Example.com\n- \n";
        let c = crate::dream::testutil::corpus(&[("a.md", body)], Vec::new());
        let mut chunks = c.memories.clone();
        // More entries than one chunk, so ids are merged across tasks.
        for _ in 0..3 {
            chunks.extend(chunks.clone());
        }
        let big = Corpus {
            memories: (0..CHUNK + 7)
                .map(|i| chunks[i % chunks.len()].clone())
                .collect(),
            sessions: Vec::new(),
        };
        for corpus in [&c, &big] {
            let w = EntryWords::build(corpus);
            assert_eq!(w.len(), corpus.memories.len());
            for (i, m) in corpus.memories.iter().enumerate() {
                let want: BTreeSet<String> = text::raw_tokens(&m.entry.text).collect();
                let got: BTreeSet<String> = w
                    .of(i)
                    .iter()
                    .map(|&id| w.vocab.word(id).to_string())
                    .collect();
                assert_eq!(got, want, "entry {i}");
                assert!(w.of(i).windows(2).all(|p| p[0] < p[1]));
            }
        }
        let w = EntryWords::build(&c);
        let id = w.vocab.id("8080").unwrap();
        assert!(w.contains(1, id) && !w.contains(0, id));
        assert!(w.vocab.id("utc").is_some() && w.vocab.id("UTC").is_none());
        assert!(w.of(99).is_empty());
    }

    #[test]
    fn ids_do_not_depend_on_scheduling() {
        let body: String = (0..3 * CHUNK)
            .map(|i| format!("- word{} shared w{}\n", i % 97, i % 13))
            .collect();
        let c = crate::dream::testutil::corpus(&[("a.md", &body)], Vec::new());
        let a = EntryWords::build(&c);
        let b = EntryWords::build(&c);
        assert_eq!(a.ids, b.ids);
        assert_eq!(a.vocab.words, b.vocab.words);
        assert_eq!(a.vocab.word(0), "word0");
    }
}
