//! Quality of the contradiction and stale-fact analyses on a seeded,
//! generated store: planted contradictions (entry against entry, and entry
//! against a newer session) and planted stale facts hidden among many valid
//! entries, including hard negatives (same attribute in another environment,
//! removed things mentioned only in passing, entries that record a removal).
//! Recall must be at least 0.9 and no valid entry may be changed.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reverie::api::{OpKind, PatchOp, Reason};
use reverie::dream::{
    contradictions, stale, Corpus, DreamOptions, Event, LineRef, MemoryEntry, Outcome, Session,
};
use reverie::memory::parse;
use std::collections::{BTreeMap, BTreeSet};

const ENVS: &[&str] = &["staging", "prod", "dev", "canary"];
const SERVICES: &[&str] = &[
    "api",
    "billing",
    "search",
    "auth",
    "gateway",
    "worker",
    "scheduler",
    "notifier",
    "ledger",
    "reporting",
    "checkout",
    "inventory",
];
const COMPONENTS: &[&str] = &[
    "memcached",
    "rabbitmq",
    "consul",
    "jenkins",
    "nagios",
    "zookeeper",
    "graphite",
    "fluentd",
    "haproxy",
    "vault",
    "minio",
    "kafka",
    "logstash",
    "traefik",
    "cassandra",
    "elasticsearch",
    "airflow",
    "sentry",
    "pgbouncer",
    "varnish",
    "nomad",
    "spinnaker",
    "kibana",
    "telegraf",
    "prometheus",
    "thanos",
    "loki",
    "jaeger",
    "keycloak",
    "harbor",
];
const PURPOSES: &[&str] = &[
    "rate limiting",
    "job queueing",
    "service discovery",
    "secret storage",
    "log shipping",
    "tracing",
    "object storage",
    "metrics",
    "search indexing",
    "connection pooling",
];
const REPLACEMENTS: &[&str] = &["valkey", "nats", "buildkite", "opentelemetry", "envoy"];

/// An attribute template: (attribute words, sentence form, value generator).
#[derive(Clone, Copy)]
enum Attr {
    Port,
    Host,
    Version,
    Replicas,
    Timeout,
}

const ATTRS: &[Attr] = &[
    Attr::Port,
    Attr::Host,
    Attr::Version,
    Attr::Replicas,
    Attr::Timeout,
];

impl Attr {
    fn words(self) -> &'static str {
        match self {
            Attr::Port => "port",
            Attr::Host => "database host",
            Attr::Version => "chart version",
            Attr::Replicas => "replica count",
            Attr::Timeout => "request timeout",
        }
    }

    fn value(self, rng: &mut ChaCha8Rng, env: &str, svc: &str) -> String {
        match self {
            Attr::Port => rng.random_range(1025..65000u32).to_string(),
            Attr::Host => format!("{svc}-db-{}.{env}.internal", rng.random_range(1..99u32)),
            Attr::Version => format!(
                "v{}.{}.{}",
                rng.random_range(1..5u32),
                rng.random_range(0..20u32),
                rng.random_range(0..10u32)
            ),
            Attr::Replicas => rng.random_range(2..40u32).to_string(),
            Attr::Timeout => format!("{}s", rng.random_range(2..120u32)),
        }
    }
}

/// A sentence stating `subject attr = value` in one of several forms.
fn fact(rng: &mut ChaCha8Rng, env: &str, svc: &str, attr: Attr, value: &str) -> String {
    let a = attr.words();
    match rng.random_range(0..5u32) {
        4 => format!("{} for {env} {svc}: {value}", capitalise(a)),
        0 => format!("The {env} {svc} {a} is {value}."),
        1 => format!("{} {svc} {a}: {value}", capitalise(env)),
        2 => format!("The {svc} {a} in {env} is {value}, per the runbook."),
        _ => format!(
            "{} {svc} {a} is set to {value} (see the helm values).",
            capitalise(env)
        ),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

fn meta(day: u32) -> String {
    format!(" <!-- reverie: {{\"lastSeen\":\"2026-10-{day:02}\",\"hits\":2}} -->")
}

/// What the generator planted, by entry text.
#[derive(Default)]
struct Truth {
    /// Entry text → the reason an op on it must carry.
    planted: BTreeMap<String, Reason>,
    /// Entries that must not be touched.
    valid: BTreeSet<String>,
}

struct Generated {
    corpus: Corpus,
    truth: Truth,
}

fn session(id: &str, day: u32, lines: Vec<String>) -> Session {
    let t = chrono::DateTime::parse_from_rfc3339(&format!("2026-11-{day:02}T09:00:00Z"))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc));
    Session {
        id: id.into(),
        agent: "ops".into(),
        started: t,
        ended: t,
        events: lines
            .into_iter()
            .enumerate()
            .map(|(i, text)| {
                let at = LineRef {
                    session: id.into(),
                    line: i as u64 + 1,
                };
                if i % 2 == 0 {
                    Event::UserText { text, at }
                } else {
                    Event::AssistantText { text, at }
                }
            })
            .collect(),
        outcome: Outcome::Succeeded,
        outcome_summary: None,
        outcome_at: None,
    }
}

fn generate(seed: u64, contradictions: usize, stale_facts: usize) -> Generated {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut truth = Truth::default();
    // Files as lists of lines, so planted pairs land in different files.
    let mut files: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let names = ["infra.md", "notes.md", "runbook.md", "services.md"];
    let mut session_lines: Vec<String> = Vec::new();

    // Every (env, service, attribute) subject once, shuffled: the first ones
    // become plants, the rest valid facts.
    let mut subjects: Vec<(&str, &str, Attr)> = Vec::new();
    for env in ENVS {
        for svc in SERVICES {
            for attr in ATTRS {
                subjects.push((env, svc, *attr));
            }
        }
    }
    subjects.shuffle(&mut rng);
    let mut subjects = subjects.into_iter();

    // Contradictions: half entry against entry (metadata decides), half an
    // entry against a newer session statement.
    for i in 0..contradictions {
        let Some((env, svc, attr)) = subjects.next() else {
            break;
        };
        let old_v = attr.value(&mut rng, env, svc);
        let mut new_v = attr.value(&mut rng, env, svc);
        while new_v == old_v {
            new_v = attr.value(&mut rng, env, svc);
        }
        let old_text = fact(&mut rng, env, svc, attr, &old_v);
        if i % 2 == 0 {
            let new_text = fact(&mut rng, env, svc, attr, &new_v);
            let (fa, fb) = (names[rng.random_range(0..4)], names[rng.random_range(0..4)]);
            let old_day = rng.random_range(1..14u32);
            let new_day = rng.random_range(15..28u32);
            files
                .entry(fa)
                .or_default()
                .push(format!("- {old_text}{}", meta(old_day)));
            files
                .entry(fb)
                .or_default()
                .push(format!("- {new_text}{}", meta(new_day)));
            truth.planted.insert(old_text, Reason::Contradiction);
            truth.valid.insert(new_text);
        } else {
            files
                .entry(names[rng.random_range(0..4)])
                .or_default()
                .push(format!("- {old_text}{}", meta(rng.random_range(1..28u32))));
            let a = attr.words();
            let said = match rng.random_range(0..9u32) {
                7 => format!("Note that {env} {svc}'s {a} is {new_v} these days"),
                8 => format!("Reminder - {a} of the {env} {svc} is {new_v}"),
                0 => format!("Heads up: the {env} {svc} {a} is now {new_v} after the migration."),
                1 => format!("FYI {env} {svc} {a} changed to {new_v} today"),
                2 => format!("ok so I checked and the {env} {svc} {a} is {new_v}"),
                3 => format!("We bumped the {env} {svc} {a} to {new_v} and redeployed."),
                4 => format!("The {env} {svc} {a} has changed to {new_v}."),
                5 => format!(
                    "{} {svc} {a} went from {old_v} to {new_v} after the resize",
                    capitalise(env)
                ),
                _ => format!("{env}/{svc} {a} = {new_v} per the new helm values"),
            };
            session_lines.push(said);
            truth.planted.insert(old_text, Reason::Contradiction);
        }
    }

    // Stale facts: an entry about a component a session says went away.
    let mut components: Vec<&str> = COMPONENTS.to_vec();
    components.shuffle(&mut rng);
    let (removed, kept) = components.split_at(stale_facts.min(components.len()));
    for thing in removed {
        let svc = SERVICES.choose(&mut rng).copied().unwrap_or("api");
        let purpose = PURPOSES.choose(&mut rng).copied().unwrap_or("metrics");
        let text = match rng.random_range(0..3u32) {
            0 => format!(
                "{} handles {purpose} for the {svc} service.",
                capitalise(thing)
            ),
            1 => format!("We run {thing} for {purpose} next to {svc}."),
            _ => format!("The {svc} team relies on {thing} for {purpose}."),
        };
        files
            .entry(names[rng.random_range(0..4)])
            .or_default()
            .push(format!("- {text}"));
        truth.planted.insert(text, Reason::Stale);
        let rep = REPLACEMENTS.choose(&mut rng).copied().unwrap_or("nats");
        session_lines.push(match rng.random_range(0..13u32) {
            10 => format!("{}? Gone since the migration.", capitalise(thing)),
            11 => format!("Nobody uses {thing} anymore"),
            12 => format!("We're off {thing} now, it was replaced by {rep}."),
            6 => format!("{} is gone, we use {rep} for that now", capitalise(thing)),
            7 => format!("We got rid of {thing} in the cleanup"),
            8 => format!("{} has been sunset.", capitalise(thing)),
            9 => format!("Dropped {thing} from the stack."),
            0 => format!("Quick note: we removed {thing} last week."),
            1 => format!("{} was decommissioned on Monday.", capitalise(thing)),
            2 => format!("We no longer use {thing} anywhere"),
            3 => format!(
                "{} was replaced by {rep} in the last sprint.",
                capitalise(thing)
            ),
            4 => format!("We migrated from {thing} to {rep} over the weekend"),
            _ => format!(
                "{} has been retired, please update your notes.",
                capitalise(thing)
            ),
        });
        // Hard negatives about the same thing: a passing mention, and an
        // entry that already records the removal.
        if rng.random_bool(0.5) {
            let svc2 = SERVICES.choose(&mut rng).copied().unwrap_or("api");
            let t = format!("After a {svc2} deploy, glance at the {thing} panel too.");
            files
                .entry(names[rng.random_range(0..4)])
                .or_default()
                .push(format!("- {t}"));
            truth.valid.insert(t);
        } else {
            let t = format!(
                "{} was removed from staging first; keep the runbook until prod follows.",
                capitalise(thing)
            );
            files
                .entry(names[rng.random_range(0..4)])
                .or_default()
                .push(format!("- {t}"));
            truth.valid.insert(t);
        }
    }

    // Valid facts, some confirmed by sessions with the same value.
    for (n, (env, svc, attr)) in subjects.by_ref().take(160).enumerate() {
        let v = attr.value(&mut rng, env, svc);
        let text = fact(&mut rng, env, svc, attr, &v);
        let m = if rng.random_bool(0.5) {
            meta(rng.random_range(1..28u32))
        } else {
            String::new()
        };
        files
            .entry(names[rng.random_range(0..4)])
            .or_default()
            .push(format!("- {text}{m}"));
        truth.valid.insert(text);
        if n % 9 == 0 {
            // The same fact said again elsewhere, in other words: not a contradiction.
            let again = fact(&mut rng, env, svc, attr, &v);
            files
                .entry(names[rng.random_range(0..4)])
                .or_default()
                .push(format!("- {again}"));
            truth.valid.insert(again);
        }
        if n % 7 == 0 {
            session_lines.push(format!("checked: the {env} {svc} {} is {v}", attr.words()));
        }
    }
    // Valid entries about components nobody removed, and plain advice.
    for thing in kept.iter().take(8) {
        let purpose = PURPOSES.choose(&mut rng).copied().unwrap_or("metrics");
        let t = format!("{} handles {purpose} for every service.", capitalise(thing));
        files
            .entry(names[rng.random_range(0..4)])
            .or_default()
            .push(format!("- {t}"));
        truth.valid.insert(t);
    }
    for (i, svc) in SERVICES.iter().enumerate() {
        for t in [
            format!("Run the {svc} smoke tests before every release."),
            format!(
                "Page the {svc} on-call when the error rate stays above {}% for 10 minutes.",
                i + 2
            ),
            format!("Prefer small pull requests for {svc}; reviewers skim large ones."),
        ] {
            files
                .entry(names[rng.random_range(0..4)])
                .or_default()
                .push(format!("- {t}"));
            truth.valid.insert(t);
        }
    }

    // Chatter around the statements, spread over sessions in late November.
    session_lines.shuffle(&mut rng);
    let chatter = [
        "Starting on the ticket now.",
        "Tests pass locally, pushing.",
        "Can you double-check the dashboards?",
        "The deploy finished without errors.",
    ];
    let mut sessions = Vec::new();
    for (i, chunk) in session_lines.chunks(6).enumerate() {
        let mut lines = Vec::new();
        for l in chunk {
            lines.push(
                chatter
                    .choose(&mut rng)
                    .copied()
                    .unwrap_or("ok")
                    .to_string(),
            );
            lines.push(l.clone());
        }
        sessions.push(session(
            &format!("s-{:03}", i + 1),
            2 + i as u32 % 27,
            lines,
        ));
    }
    // Sessions must be sorted by start time, as the reader delivers them.
    sessions.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));

    let mut memories = Vec::new();
    for (path, mut lines) in files {
        lines.shuffle(&mut rng);
        let text = format!("# Notes\n\n{}\n", lines.join("\n"));
        for e in parse(&text).entries() {
            memories.push(MemoryEntry {
                path: path.to_string(),
                entry: e.clone(),
            });
        }
    }
    // Session days must be after every entry's lastSeen (October): they are.
    Generated {
        corpus: Corpus { memories, sessions },
        truth,
    }
}

struct Score {
    planted: usize,
    found: usize,
    wrong_reason: usize,
    valid_changed: Vec<String>,
    ops: usize,
}

fn score(g: &Generated, ops: &[PatchOp]) -> Score {
    let mut found = 0;
    let mut wrong_reason = 0;
    let mut valid_changed = Vec::new();
    let mut hit: BTreeSet<String> = BTreeSet::new();
    for op in ops {
        assert!(matches!(op.op, OpKind::Delete | OpKind::Update), "{op:?}");
        assert!(!op.evidence.is_empty(), "op without evidence: {op:?}");
        let before = op.before.clone().unwrap_or_default();
        match g.truth.planted.get(&before) {
            Some(reason) => {
                if *reason == op.reason {
                    if hit.insert(before) {
                        found += 1;
                    }
                } else {
                    wrong_reason += 1;
                }
            }
            None => valid_changed.push(before),
        }
    }
    for missed in g.truth.planted.keys().filter(|k| !hit.contains(*k)) {
        println!("  missed: {missed}");
    }
    Score {
        planted: g.truth.planted.len(),
        found,
        wrong_reason,
        valid_changed,
        ops: ops.len(),
    }
}

#[test]
fn planted_contradictions_and_stale_facts_are_found_and_nothing_else() {
    let opts = DreamOptions::default();
    let mut total_planted = 0;
    let mut total_found = 0;
    for seed in [1u64, 7, 42, 99, 2026] {
        let g = generate(seed, 20, 20);
        let started = std::time::Instant::now();
        let mut ops = contradictions::find(&g.corpus, &opts);
        let c_ops = ops.len();
        ops.extend(stale::find(&g.corpus, &opts));
        let elapsed = started.elapsed();
        let s = score(&g, &ops);
        println!(
            "seed {seed}: {} entries, {} sessions; planted {} (20 contradictions, 20 stale), found {}, recall {:.3}, ops {} ({} contradiction, {} stale), wrong reason {}, valid entries changed {}, {:?}",
            g.corpus.memories.len(),
            g.corpus.sessions.len(),
            s.planted,
            s.found,
            s.found as f64 / s.planted as f64,
            s.ops,
            c_ops,
            s.ops - c_ops,
            s.wrong_reason,
            s.valid_changed.len(),
            elapsed
        );
        assert!(
            s.valid_changed.is_empty(),
            "seed {seed}: valid entries changed: {:#?}",
            s.valid_changed
        );
        assert_eq!(s.wrong_reason, 0, "seed {seed}");
        let recall = s.found as f64 / s.planted as f64;
        assert!(recall >= 0.8, "seed {seed}: recall {recall:.3}");
        total_planted += s.planted;
        total_found += s.found;
        // Same corpus, same ops, byte for byte.
        let mut again = contradictions::find(&g.corpus, &opts);
        again.extend(stale::find(&g.corpus, &opts));
        assert_eq!(
            serde_json::to_string(&ops).ok(),
            serde_json::to_string(&again).ok()
        );
    }
    let recall = total_found as f64 / total_planted as f64;
    println!("overall recall {recall:.3} ({total_found}/{total_planted})");
    assert!(recall >= 0.9, "overall recall {recall:.3}");
}

#[test]
fn scales_to_thousands_of_entries() {
    // Ten generated stores side by side: ~3,000 entries, ~90 sessions. The
    // copies share subjects, so they also contradict each other; this test
    // measures time and determinism, not quality.
    let mut corpus = Corpus::default();
    for k in 0..10u64 {
        let g = generate(100 + k, 20, 20);
        corpus
            .memories
            .extend(g.corpus.memories.into_iter().map(|mut m| {
                m.path = format!("c{k}/{}", m.path);
                m
            }));
        corpus
            .sessions
            .extend(g.corpus.sessions.into_iter().map(|mut s| {
                s.id = format!("c{k}-{}", s.id);
                s
            }));
    }
    corpus
        .sessions
        .sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    let opts = DreamOptions::default();
    let started = std::time::Instant::now();
    let c = contradictions::find(&corpus, &opts);
    let c_time = started.elapsed();
    let s = stale::find(&corpus, &opts);
    let total = started.elapsed();
    println!(
        "{} entries, {} sessions: {} contradiction ops in {:?}, {} stale ops in {:?}",
        corpus.memories.len(),
        corpus.sessions.len(),
        c.len(),
        c_time,
        s.len(),
        total - c_time
    );
    assert!(total < std::time::Duration::from_secs(60), "{total:?}");
    assert_eq!(c, contradictions::find(&corpus, &opts));
    assert_eq!(s, stale::find(&corpus, &opts));
}
