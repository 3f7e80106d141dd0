//! Quality of near-duplicate detection on a seeded synthetic store:
//! planted paraphrase groups (case, punctuation, reordering, an added word),
//! hard negatives (the same sentence with another port, number, environment,
//! flag or host) and unrelated entries. Runs the full pipeline
//! (`load_corpus` + `analyse`) from disk.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reverie::api::OpKind;
use reverie::dream::{emit, ingest, DreamOptions};
use std::collections::{BTreeMap, BTreeSet};

const VERBS: &[&str] = &[
    "restart",
    "rebuild",
    "rotate",
    "drain",
    "snapshot",
    "validate",
    "compress",
    "archive",
    "profile",
    "benchmark",
    "reindex",
    "vacuum",
    "throttle",
    "pin",
    "cordon",
    "label",
    "annotate",
    "patch",
    "scale",
    "migrate",
    "audit",
    "lint",
    "sign",
    "verify",
    "mirror",
    "prune",
    "cache",
    "warm",
    "replay",
    "trace",
    "quarantine",
    "redeploy",
    "refresh",
    "flush",
    "seed",
    "tag",
];
const ADJS: &[&str] = &[
    "nightly",
    "flaky",
    "regional",
    "primary",
    "secondary",
    "legacy",
    "internal",
    "public",
    "shared",
    "ephemeral",
    "durable",
    "encrypted",
    "signed",
    "cached",
    "sharded",
    "replicated",
    "idle",
    "stuck",
    "orphaned",
    "noisy",
    "partial",
    "stale",
    "hot",
    "cold",
    "large",
    "tiny",
    "slow",
    "fast",
    "batch",
    "streaming",
    "manual",
    "scheduled",
];
const OBJECTS: &[&str] = &[
    "workers",
    "queues",
    "indexes",
    "certificates",
    "volumes",
    "images",
    "buckets",
    "tables",
    "topics",
    "consumers",
    "webhooks",
    "secrets",
    "tokens",
    "manifests",
    "charts",
    "pipelines",
    "artifacts",
    "runners",
    "replicas",
    "partitions",
    "dashboards",
    "alerts",
    "schedules",
    "exports",
    "backups",
    "logs",
    "metrics",
    "sessions",
    "tenants",
    "migrations",
    "fixtures",
    "snapshots",
    "releases",
    "branches",
];
const SERVICES: &[&str] = &[
    "billing",
    "checkout",
    "search",
    "ledger",
    "gateway",
    "notifier",
    "scheduler",
    "inventory",
    "payments",
    "catalog",
    "identity",
    "reporting",
    "ingest",
    "mailer",
    "thumbnailer",
    "auditor",
    "exporter",
    "crawler",
    "router",
    "recommender",
    "profiler",
    "uploader",
    "archiver",
    "translator",
    "geocoder",
    "pricing",
    "shipping",
    "loyalty",
    "support",
    "analytics",
];
const WHENS: &[&str] = &["before", "after", "during", "whenever", "until", "once"];
const EVENTS: &[&str] = &[
    "deploys",
    "upgrades",
    "outages",
    "rollbacks",
    "incidents",
    "failovers",
    "releases",
    "audits",
    "backfills",
    "reboots",
    "resizes",
    "cutovers",
    "freezes",
    "drills",
    "launches",
    "holidays",
    "maintenance",
    "reviews",
    "retros",
    "onboarding",
];
const WHO: &[&str] = &[
    "oncall",
    "reviewers",
    "owners",
    "operators",
    "maintainers",
    "auditors",
    "leads",
    "admins",
    "contractors",
    "interns",
    "managers",
    "testers",
    "designers",
    "analysts",
    "architects",
];
const FILLERS: &[&str] = &[
    "carefully",
    "also",
    "first",
    "really",
    "quickly",
    "manually",
];

/// A critical detail and a different value of the same kind.
fn critical(rng: &mut ChaCha8Rng) -> (String, String) {
    match rng.random_range(0..5) {
        0 => {
            let p = rng.random_range(1024..9999);
            (
                format!("on port {p}"),
                format!("on port {}", p + rng.random_range(1..50)),
            )
        }
        1 => {
            let n = rng.random_range(2..40);
            (
                format!("with {n} retries"),
                format!("with {} retries", n + rng.random_range(1..9)),
            )
        }
        2 => {
            let envs = ["staging", "prod", "dev", "canary", "qa", "sandbox"];
            let a = rng.random_range(0..envs.len());
            let b = (a + rng.random_range(1..envs.len())) % envs.len();
            (format!("in {}", envs[a]), format!("in {}", envs[b]))
        }
        3 => {
            let flags = [
                "--force",
                "--dry-run",
                "--wait",
                "--atomic",
                "--no-cache",
                "--prune",
            ];
            let a = rng.random_range(0..flags.len());
            let b = (a + rng.random_range(1..flags.len())) % flags.len();
            (
                format!("passing {}", flags[a]),
                format!("passing {}", flags[b]),
            )
        }
        _ => {
            let h = rng.random_range(1..90);
            (
                format!("via db{h}.internal.example.com"),
                format!("via db{}.internal.example.com", h + rng.random_range(1..9)),
            )
        }
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len())]
}

/// A base fact as two clauses, so a paraphrase can swap them.
fn fact(rng: &mut ChaCha8Rng, detail: &str) -> (String, String) {
    let main = format!(
        "{} the {} {} of the {} service {}",
        pick(rng, VERBS),
        pick(rng, ADJS),
        pick(rng, OBJECTS),
        pick(rng, SERVICES),
        detail
    );
    let when = format!(
        "{} {} announced by {}",
        pick(rng, WHENS),
        pick(rng, EVENTS),
        pick(rng, WHO)
    );
    (main.trim().to_string(), when)
}

fn sentence(main: &str, when: &str) -> String {
    let mut s = format!("{main} {when}.");
    if let Some(f) = s.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    s
}

/// A paraphrase: one or two of case, punctuation, clause order, an added word.
fn paraphrase(rng: &mut ChaCha8Rng, main: &str, when: &str) -> String {
    let mut main = main.to_string();
    let mut when = when.to_string();
    let kinds: Vec<u32> = (0..rng.random_range(1..=2))
        .map(|_| rng.random_range(0..4))
        .collect();
    let mut reorder = false;
    let mut shout = false;
    let mut punct = false;
    for k in kinds {
        match k {
            0 => shout = true,
            1 => punct = true,
            2 => reorder = true,
            _ => {
                let w = pick(rng, FILLERS);
                if rng.random_bool(0.5) {
                    main = format!("{w} {main}");
                } else {
                    when = format!("{when} {w}");
                }
            }
        }
    }
    let mut s = if reorder {
        format!("{}, {}", when, main)
    } else {
        format!("{main} {when}")
    };
    if shout {
        s = s
            .split(' ')
            .map(|w| {
                if w.starts_with('-') || w.contains('.') {
                    w.to_string()
                } else {
                    w.to_uppercase()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    }
    if punct {
        s = format!("**{s}**!");
    } else {
        s.push('.');
    }
    s
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Group(usize),
    HardNegative(usize),
    Unrelated,
}

#[test]
fn near_duplicates_f1_and_hard_negatives() {
    let mut rng = ChaCha8Rng::seed_from_u64(0x005e_edd1);
    let mut planted: Vec<(String, Kind)> = Vec::new();
    for g in 0..300 {
        let detail = if rng.random_bool(0.4) {
            critical(&mut rng).0
        } else {
            String::new()
        };
        let (main, when) = fact(&mut rng, &detail);
        planted.push((sentence(&main, &when), Kind::Group(g)));
        for _ in 0..rng.random_range(1..=3) {
            planted.push((paraphrase(&mut rng, &main, &when), Kind::Group(g)));
        }
    }
    for h in 0..200 {
        let (a, b) = critical(&mut rng);
        let (main_a, when) = fact(&mut rng, &a);
        let main_b = main_a.replace(&a, &b);
        planted.push((sentence(&main_a, &when), Kind::HardNegative(h)));
        planted.push((sentence(&main_b, &when), Kind::HardNegative(h)));
    }
    for _ in 0..3000 {
        let detail = if rng.random_bool(0.3) {
            critical(&mut rng).0
        } else {
            String::new()
        };
        let (main, when) = fact(&mut rng, &detail);
        planted.push((sentence(&main, &when), Kind::Unrelated));
    }
    planted.shuffle(&mut rng);

    // Spread over files; remember each entry's kind by its text.
    let d = tempfile::tempdir().unwrap();
    let mem = d.path().join("memories");
    std::fs::create_dir_all(mem.join("team")).unwrap();
    let files = [
        "infra.md",
        "notes.md",
        "team/ops.md",
        "team/dev.md",
        "prefs.md",
    ];
    let mut bodies: BTreeMap<&str, String> = BTreeMap::new();
    let mut kind_of: BTreeMap<String, Kind> = BTreeMap::new();
    for (i, (text, kind)) in planted.iter().enumerate() {
        let f = files[i % files.len()];
        bodies
            .entry(f)
            .or_insert_with(|| "# Facts\n\n".into())
            .push_str(&format!("- {text}\n"));
        kind_of.entry(text.clone()).or_insert(*kind);
    }
    for (f, body) in &bodies {
        std::fs::write(mem.join(f), body).unwrap();
    }
    let opts = DreamOptions::default();
    let (corpus, _) = ingest::load_corpus(d.path(), &opts).unwrap();
    assert_eq!(corpus.memories.len(), planted.len());
    let key_kind: BTreeMap<String, Kind> = corpus
        .memories
        .iter()
        .map(|m| (m.key(), kind_of[&m.entry.text]))
        .collect();

    let ops = emit::analyse(&corpus, &opts);

    // Truth: all pairs inside a planted group (by entry key).
    let mut groups: BTreeMap<usize, Vec<&String>> = BTreeMap::new();
    for (k, kind) in &key_kind {
        if let Kind::Group(g) = kind {
            groups.entry(*g).or_default().push(k);
        }
    }
    let mut truth: BTreeSet<(String, String)> = BTreeSet::new();
    for members in groups.values() {
        for (i, a) in members.iter().enumerate() {
            for b in &members[i + 1..] {
                truth.insert(((*a).clone(), (*b).clone()));
            }
        }
    }
    let mut found: BTreeSet<(String, String)> = BTreeSet::new();
    let mut touched_unique = 0;
    let mut hard_negative_merges = 0;
    for op in &ops {
        let keys = emit::touched(op);
        for k in &keys {
            if matches!(
                key_kind.get(k),
                Some(Kind::Unrelated) | Some(Kind::HardNegative(_))
            ) {
                touched_unique += 1;
            }
        }
        if op.op != OpKind::Merge {
            continue;
        }
        let mut keys = keys.clone();
        keys.sort();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                if matches!(
                    (key_kind.get(a), key_kind.get(b)),
                    (Some(Kind::HardNegative(x)), Some(Kind::HardNegative(y))) if x == y
                ) {
                    hard_negative_merges += 1;
                }
                found.insert((a.clone(), b.clone()));
            }
        }
    }
    let tp = found.intersection(&truth).count() as f64;
    let precision = if found.is_empty() {
        0.0
    } else {
        tp / found.len() as f64
    };
    let recall = tp / truth.len() as f64;
    let f1 = if tp == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    println!(
        "duplicates: entries {} | groups {} | true pairs {} | found pairs {} | precision {:.3} recall {:.3} F1 {:.3} | hard-negative merges {} | unique entries touched {}",
        corpus.memories.len(),
        groups.len(),
        truth.len(),
        found.len(),
        precision,
        recall,
        f1,
        hard_negative_merges,
        touched_unique
    );
    assert!(f1 >= 0.9, "F1 {f1:.3} < 0.9");
    assert_eq!(hard_negative_merges, 0);
    assert_eq!(touched_unique, 0);
    // Deterministic: a second run gives the same ops.
    assert_eq!(emit::analyse(&corpus, &opts), ops);
}
