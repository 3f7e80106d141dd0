//! Analysis: near-duplicate entries → one `merge` op per cluster.
//!
//! Pipeline, chosen so a million entries take seconds, not hours:
//!
//! 1. **Features.** Each entry's content words (`text::words`: case,
//!    punctuation, Markdown marks and stopwords folded away) hashed with
//!    xxh3 into a sorted set. Word sets rather than longer shingles, because
//!    memory entries are short and a paraphrase that reorders two clauses
//!    keeps its words but loses most of its bigrams.
//! 2. **Guard.** A hash of the entry's critical tokens (`text::critical_tokens`:
//!    numbers, ports, versions, flags, hosts, environments) and of whether it
//!    is negated ("never", "don't" …). Two entries with different guards are
//!    hard negatives — "the API listens on 8080" is not a duplicate of "… on
//!    8081", and "always X" is not "never X" — so the guard is part of every
//!    LSH bucket key and such a pair is never even a candidate.
//! 3. **MinHash + LSH.** 64 min-hashes per entry (one xxh3 per word, then a
//!    cheap bijective mix per permutation with fixed seeds) cut into bands;
//!    entries sharing a band bucket are candidates. Never all pairs.
//! 4. **Verify** each candidate by exact Jaccard of the word sets
//!    ≥ `opts.duplicate_threshold`.
//! 5. **Cluster** verified pairs with union-find; one `merge` per cluster.

use super::{text, Corpus, DreamOptions, Event, MemoryEntry};
use crate::api::{Evidence, OpKind, PatchOp, Reason};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use xxhash_rust::xxh3::xxh3_64;

/// Number of min-hash permutations per entry.
const PERMS: usize = 64;
/// Buckets larger than this are not expanded into all their pairs: each
/// member is paired with the next `BUCKET_WINDOW` members only. Real
/// duplicates are still chained together (every member meets its
/// neighbours), while a pathological bucket cannot make the work quadratic.
const BUCKET_WINDOW: usize = 64;
/// Session lines quoted as evidence per cluster, at most.
const MAX_SESSION_EVIDENCE: usize = 3;
/// Share of a cluster's words a session line must contain to count as
/// mentioning the fact.
const MENTION_CONTAINMENT: f64 = 0.8;

/// Words that flip a statement's meaning; entries that differ in whether
/// they hold one are never duplicates.
const NEGATIONS: &[&str] = &[
    "not",
    "never",
    "no",
    "don't",
    "dont",
    "cannot",
    "avoid",
    "without",
    "nor",
    "disable",
    "disabled",
    "forbidden",
    "stop",
];

/// The comparable form of one text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Features {
    /// Sorted, de-duplicated xxh3 hashes of the content words.
    pub words: Vec<u64>,
    /// Hash of the critical tokens and the negation flag.
    pub guard: u64,
}

/// Computes the features of a text: one pass over its tokens, hashing
/// each content word in place (no `String` per word: this runs on every
/// entry of the store).
pub fn features(t: &str) -> Features {
    let mut words: Vec<u64> = Vec::new();
    let mut critical = BTreeSet::new();
    let mut negated = false;
    super::index::for_each_token(t, |tok| {
        if !text::is_stopword(tok) {
            words.push(xxh3_64(tok.as_bytes()));
        }
        negated |= is_negation(tok);
        if text::is_critical(tok) {
            critical.insert(tok.to_string());
        }
    });
    words.sort_unstable();
    words.dedup();
    let mut guard_src = String::new();
    for c in critical {
        guard_src.push_str(&c);
        guard_src.push('\0');
    }
    guard_src.push(if negated { '!' } else { '=' });
    Features {
        words,
        guard: xxh3_64(guard_src.as_bytes()),
    }
}

fn is_negation(tok: &str) -> bool {
    NEGATIONS.contains(&tok) || tok.ends_with("n't")
}

/// Exact Jaccard of two sorted, de-duplicated hash sets.
fn jaccard_sorted(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// Whether two featured texts are near-duplicates at `threshold`.
pub fn is_duplicate(a: &Features, b: &Features, threshold: f64) -> bool {
    a.guard == b.guard
        && !a.words.is_empty()
        && !b.words.is_empty()
        && jaccard_sorted(&a.words, &b.words) >= threshold
}

/// splitmix64's finaliser: a bijection on u64 with full avalanche, so
/// `mix(h ^ seed)` behaves as an independent hash per seed.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fixed per-permutation seeds, so signatures are the same on every run.
fn seeds() -> [u64; PERMS] {
    let mut s = [0u64; PERMS];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for v in s.iter_mut() {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        *v = mix(x);
    }
    s
}

/// Rows per LSH band for a threshold: 4 rows × 16 bands puts the S-curve's
/// midpoint near 0.5, so pairs at 0.7 are candidates with p ≈ 0.99; lower
/// thresholds get 2 rows × 32 bands.
fn rows_per_band(threshold: f64) -> usize {
    if threshold >= 0.6 {
        4
    } else {
        2
    }
}

/// Near-duplicate pairs `(i, j)`, `i < j`, sorted, found with MinHash/LSH and
/// verified by exact Jaccard. Texts with no content words never pair.
pub fn near_duplicate_pairs(feats: &[Features], threshold: f64) -> Vec<(u32, u32)> {
    let n = feats.len();
    let rows = rows_per_band(threshold);
    let bands = PERMS / rows;
    let seeds = seeds();
    // Band keys, entry-major: keys[i * bands + b]. u32 keys: a collision
    // only adds a candidate that verification then rejects.
    let keys: Vec<u32> = feats
        .par_iter()
        .flat_map_iter(|f| {
            let mut sig = [u64::MAX; PERMS];
            for &w in &f.words {
                for (s, seed) in sig.iter_mut().zip(seeds.iter()) {
                    let h = mix(w ^ seed);
                    if h < *s {
                        *s = h;
                    }
                }
            }
            let empty = f.words.is_empty();
            (0..bands).map(move |b| {
                if empty {
                    return u32::MAX;
                }
                let mut buf = [0u8; 8 * (PERMS + 2)];
                buf[..8].copy_from_slice(&(b as u64).to_le_bytes());
                buf[8..16].copy_from_slice(&f.guard.to_le_bytes());
                for (k, v) in sig[b * rows..(b + 1) * rows].iter().enumerate() {
                    buf[16 + 8 * k..24 + 8 * k].copy_from_slice(&v.to_le_bytes());
                }
                xxh3_64(&buf[..16 + 8 * rows]) as u32
            })
        })
        .collect();
    // Candidates are verified bucket by bucket, in parallel, as they are
    // found: only verified pairs (few) are kept, never the candidate list.
    let mut found: Vec<(u32, u32)> = Vec::new();
    let mut candidates = 0usize;
    let mut bucket: Vec<(u32, u32)> = Vec::with_capacity(n);
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for b in 0..bands {
        bucket.clear();
        bucket.extend(
            (0..n)
                .filter(|&i| !feats[i].words.is_empty())
                .map(|i| (keys[i * bands + b], i as u32)),
        );
        bucket.par_sort_unstable();
        runs.clear();
        let mut start = 0;
        while start < bucket.len() {
            let key = bucket[start].0;
            let mut end = start + 1;
            while end < bucket.len() && bucket[end].0 == key {
                end += 1;
            }
            if end - start >= 2 {
                runs.push((start, end));
                let m = end - start;
                candidates += (m - 1).min(BUCKET_WINDOW) * m;
            }
            start = end;
        }
        let bucket = &bucket;
        let verified: Vec<(u32, u32)> = runs
            .par_iter()
            .flat_map_iter(|&(start, end)| {
                let run = &bucket[start..end];
                run.iter().enumerate().flat_map(move |(x, &(_, i))| {
                    run.iter()
                        .skip(x + 1)
                        .take(BUCKET_WINDOW)
                        .filter(move |&&(_, j)| {
                            is_duplicate(&feats[i as usize], &feats[j as usize], threshold)
                        })
                        .map(move |&(_, j)| (i, j))
                })
            })
            .collect();
        found.extend(verified);
    }
    found.par_sort_unstable();
    found.dedup();
    tracing::debug!(
        entries = n,
        candidates,
        pairs = found.len(),
        "near-duplicate candidates verified"
    );
    found
}

/// The all-pairs baseline (quadratic): every pair verified exactly. For
/// benchmarks and tests of the LSH recall only.
pub fn near_duplicate_pairs_exhaustive(feats: &[Features], threshold: f64) -> Vec<(u32, u32)> {
    let n = feats.len();
    (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            (i + 1..n)
                .filter(move |&j| is_duplicate(&feats[i], &feats[j], threshold))
                .map(move |j| (i as u32, j as u32))
        })
        .collect()
}

/// Union-find with path halving; the smaller index becomes the root so the
/// result does not depend on the order pairs are joined in.
struct UnionFind(Vec<u32>);

impl UnionFind {
    fn find(&mut self, mut x: u32) -> u32 {
        while self.0[x as usize] != x {
            let p = self.0[self.0[x as usize] as usize];
            self.0[x as usize] = p;
            x = p;
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi as usize] = lo;
        }
    }
}

/// Clusters of near-duplicate entries as indices into `corpus.memories`,
/// each sorted, clusters ordered by their first member. Two entries with the
/// same `path#id` (the same text twice in one file) are not paired: a patch
/// cannot tell them apart.
pub fn clusters(corpus: &Corpus, opts: &DreamOptions) -> Vec<Vec<usize>> {
    let feats: Vec<Features> = corpus
        .memories
        .par_iter()
        .map(|m| features(&m.entry.text))
        .collect();
    let pairs = near_duplicate_pairs(&feats, opts.duplicate_threshold);
    let mut uf = UnionFind((0..corpus.memories.len() as u32).collect());
    for (i, j) in pairs {
        let (a, b) = (&corpus.memories[i as usize], &corpus.memories[j as usize]);
        if a.path == b.path && a.entry.id == b.entry.id {
            continue;
        }
        uf.union(i, j);
    }
    // Group by root with plain vectors: a map over a million singletons
    // would cost more than the rest of the clustering.
    let n = corpus.memories.len();
    let roots: Vec<u32> = (0..n as u32).map(|i| uf.find(i)).collect();
    let mut size = vec![0u32; n];
    for &r in &roots {
        size[r as usize] += 1;
    }
    let mut slot = vec![u32::MAX; n];
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, &r) in roots.iter().enumerate() {
        if size[r as usize] < 2 {
            continue;
        }
        if slot[r as usize] == u32::MAX {
            slot[r as usize] = groups.len() as u32;
            groups.push(Vec::new());
        }
        groups[slot[r as usize] as usize].push(i);
    }
    // Roots are the smallest member, so groups are already ordered by
    // their first member.
    groups
        .into_iter()
        .filter_map(|members| {
            // The same text twice in one file joined through a third entry:
            // keep the first occurrence only.
            let mut seen = BTreeSet::new();
            let members: Vec<usize> = members
                .into_iter()
                .filter(|&i| {
                    let m = &corpus.memories[i];
                    seen.insert((m.path.as_str(), m.entry.id.as_str()))
                })
                .collect();
            (members.len() >= 2).then_some(members)
        })
        .collect()
}

/// Finds near-duplicate clusters and proposes one `merge` per cluster:
/// `path` is the first member's file, `ids` the members in corpus order
/// (`path#id` for members in other files), `content` the most complete
/// member (the longest; ties go to the earlier), `before` the member texts
/// in `ids` order joined by blank lines, evidence the member entries and up
/// to three session lines that state the fact.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    let clusters = clusters(corpus, opts);
    let mentions = session_mentions(corpus, &clusters);
    clusters
        .iter()
        .zip(mentions)
        .map(|(members, lines)| merge_op(&corpus.memories, members, lines))
        .collect()
}

fn merge_op(memories: &[MemoryEntry], members: &[usize], sessions: Vec<Evidence>) -> PatchOp {
    let first = &memories[members[0]];
    let path = first.path.clone();
    let ids: Vec<String> = members
        .iter()
        .map(|&i| {
            let m = &memories[i];
            if m.path == path {
                m.entry.id.clone()
            } else {
                m.key()
            }
        })
        .collect();
    let mut best = members[0];
    for &i in members {
        if memories[i].entry.text.len() > memories[best].entry.text.len() {
            best = i;
        }
    }
    let before = members
        .iter()
        .map(|&i| memories[i].entry.text.as_str())
        .collect::<Vec<_>>()
        .join("\n\n");
    let mut evidence: Vec<Evidence> = members
        .iter()
        .map(|&i| Evidence {
            entry: Some(memories[i].key()),
            ..Evidence::default()
        })
        .collect();
    evidence.extend(sessions);
    PatchOp {
        op: OpKind::Merge,
        path,
        section: None,
        id: None,
        ids: Some(ids),
        content: Some(memories[best].entry.text.clone()),
        to: None,
        before: Some(before),
        reason: Reason::Duplicate,
        superseded_by: None,
        evidence,
    }
}

/// For each cluster, up to [`MAX_SESSION_EVIDENCE`] session text lines (in
/// session order) that contain the cluster's critical tokens and at least
/// [`MENTION_CONTAINMENT`] of its words. Each cluster is indexed under its
/// rarest word only, so a line is checked against few clusters and the scan
/// stays linear in the size of the sessions.
fn session_mentions(corpus: &Corpus, clusters: &[Vec<usize>]) -> Vec<Vec<Evidence>> {
    let mut out = vec![Vec::new(); clusters.len()];
    if clusters.is_empty() || corpus.sessions.is_empty() {
        return out;
    }
    // The cluster's fact: the words and critical tokens of its longest member.
    let facts: Vec<(BTreeSet<String>, BTreeSet<String>)> = clusters
        .iter()
        .map(|members| {
            let t = members
                .iter()
                .map(|&i| corpus.memories[i].entry.text.as_str())
                .max_by_key(|t| t.len())
                .unwrap_or("");
            (
                text::words(t).into_iter().collect(),
                text::critical_tokens(t),
            )
        })
        .collect();
    let mut df: BTreeMap<&str, usize> = BTreeMap::new();
    for (words, _) in &facts {
        for w in words {
            *df.entry(w.as_str()).or_default() += 1;
        }
    }
    let mut index: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (c, (words, _)) in facts.iter().enumerate() {
        if let Some(rarest) = words.iter().min_by_key(|w| (df[w.as_str()], w.as_str())) {
            index.entry(rarest.as_str()).or_default().push(c);
        }
    }
    let hits: Vec<Vec<(usize, Evidence)>> = corpus
        .sessions
        .par_iter()
        .map(|s| {
            let mut found = Vec::new();
            for ev in &s.events {
                let (t, at) = match ev {
                    Event::UserText { text, at } | Event::AssistantText { text, at } => (text, at),
                    Event::Tool(_) => continue,
                };
                let words: BTreeSet<String> = text::words(t).into_iter().collect();
                let mut tried = BTreeSet::new();
                // Computed once per line, and only when a fact's words are
                // in it: common words make many facts candidates per line.
                let mut crit: Option<BTreeSet<String>> = None;
                for w in &words {
                    let Some(cs) = index.get(w.as_str()) else {
                        continue;
                    };
                    for &c in cs {
                        if !tried.insert(c) {
                            continue;
                        }
                        let (fw, fc) = &facts[c];
                        // Containment below MENTION_CONTAINMENT: stop at the
                        // first missing word that makes it unreachable (most
                        // candidates share only the indexed word).
                        let need = MENTION_CONTAINMENT * fw.len() as f64;
                        let mut missing = 0usize;
                        let short = fw.iter().any(|x| {
                            if !words.contains(x) {
                                missing += 1;
                            }
                            ((fw.len() - missing) as f64) < need
                        });
                        if short {
                            continue;
                        }
                        let crit = crit.get_or_insert_with(|| text::critical_tokens(t));
                        if !fc.is_subset(crit) {
                            continue;
                        }
                        found.push((
                            c,
                            Evidence {
                                session: Some(at.session.clone()),
                                line: Some(at.line),
                                entry: None,
                                quote: Some(text::clip(t, 120)),
                            },
                        ));
                    }
                }
            }
            found
        })
        .collect();
    for (c, ev) in hits.into_iter().flatten() {
        if out[c].len() < MAX_SESSION_EVIDENCE && !out[c].contains(&ev) {
            out[c].push(ev);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dream::session::{LineRef, Outcome, Session};

    fn corpus(files: &[(&str, &str)]) -> Corpus {
        crate::dream::testutil::corpus(files, Vec::new())
    }

    #[test]
    fn paraphrases_merge_across_files() {
        let c = corpus(&[
            (
                "a.md",
                "- Run the database migrations before deploying the API.\n- Unrelated: the office closes at six.\n",
            ),
            (
                "b.md",
                "- Before deploying the API, run the database migrations!\n- before deploying the api run the DB database migrations\n",
            ),
        ]);
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:#?}");
        let op = &ops[0];
        assert_eq!(op.op, OpKind::Merge);
        assert_eq!(op.path, "a.md");
        let ids = op.ids.as_ref().unwrap();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[0], c.memories[0].entry.id);
        assert_eq!(ids[1], c.memories[2].key());
        assert_eq!(
            op.content.as_deref(),
            Some("before deploying the api run the DB database migrations")
        );
        assert_eq!(
            op.before.as_deref().map(|b| b.split("\n\n").count()),
            Some(3)
        );
        assert_eq!(op.evidence.len(), 3);
        assert_eq!(op.reason, Reason::Duplicate);
    }

    #[test]
    fn hard_negatives_never_merge() {
        let c = corpus(&[(
            "infra.md",
            "- The API listens on port 8080.\n- The API listens on port 8081.\n- Deploy to staging with helm.\n- Deploy to prod with helm.\n- Always squash commits before merging.\n- Never squash commits before merging.\n- Pass --force to the sync job.\n- Pass --dry-run to the sync job.\n",
        )]);
        assert!(find(&c, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn same_text_in_two_files_merges_but_not_twice_in_one() {
        let c = corpus(&[
            ("a.md", "- Use UTC.\n- Use UTC.\n"),
            ("b.md", "- Use UTC.\n"),
        ]);
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        let id = &c.memories[0].entry.id;
        assert_eq!(
            ops[0].ids.as_ref().unwrap(),
            &vec![id.clone(), format!("b.md#{id}")]
        );
        let only_one_file = corpus(&[("a.md", "- Use UTC.\n- Use UTC.\n")]);
        assert!(find(&only_one_file, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn session_lines_that_state_the_fact_are_evidence() {
        let mut c = corpus(&[(
            "a.md",
            "- Tag images with the git sha.\n- Tag the images with the Git SHA!\n",
        )]);
        let at = |line| LineRef {
            session: "s-1".into(),
            line,
        };
        c.sessions.push(Session {
            id: "s-1".into(),
            agent: "coder".into(),
            started: None,
            ended: None,
            events: vec![
                Event::UserText {
                    text: "Remember: tag images with the git SHA, always.".into(),
                    at: at(3),
                },
                Event::AssistantText {
                    text: "Tagging now.".into(),
                    at: at(4),
                },
            ],
            outcome: Outcome::Succeeded,
            outcome_summary: None,
            outcome_at: None,
        });
        let ops = find(&c, &DreamOptions::default());
        assert_eq!(ops.len(), 1);
        let s: Vec<_> = ops[0]
            .evidence
            .iter()
            .filter(|e| e.session.is_some())
            .collect();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].line, Some(3));
    }

    #[test]
    fn lsh_finds_the_pairs_all_pairs_finds() {
        let texts: Vec<String> = (0..300)
            .map(|i| {
                let base = i / 3;
                match i % 3 {
                    0 => format!("service alpha{base} needs the cache warmed before traffic"),
                    1 => format!("Before traffic, service alpha{base} needs the cache warmed."),
                    _ => format!("unrelated note number word{base} about lunch menus"),
                }
            })
            .collect();
        let feats: Vec<Features> = texts.iter().map(|t| features(t)).collect();
        let lsh = near_duplicate_pairs(&feats, 0.7);
        let all = near_duplicate_pairs_exhaustive(&feats, 0.7);
        assert_eq!(lsh, all);
        assert_eq!(lsh.len(), 100);
    }
}
