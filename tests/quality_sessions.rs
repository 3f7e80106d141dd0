//! Quality of the session analyses (recurring errors, working methods,
//! shared preferences) on seeded synthetic corpora with planted patterns
//! and decoys. Sessions are built in memory, not read from files.
//!
//! Run with `cargo test --test quality_sessions -- --nocapture` to see the
//! figures.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reverie::api::PatchOp;
use reverie::dream::{
    errors, methods, preferences, Corpus, DreamOptions, Event, LineRef, MemoryEntry, Outcome,
    Session, ToolCall,
};
use serde_json::json;

const AGENTS: &[&str] = &["lead", "coder", "reviewer", "ops", "tester"];
const SEEDS: &[u64] = &[
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20,
];

/// Builds one session line by line.
struct Builder {
    session: Session,
    line: u64,
}

impl Builder {
    fn new(id: &str, agent: &str) -> Self {
        Builder {
            session: Session {
                id: id.to_string(),
                agent: agent.to_string(),
                started: None,
                ended: None,
                events: Vec::new(),
                outcome: Outcome::Unknown,
                outcome_summary: None,
                outcome_at: None,
            },
            line: 0,
        }
    }

    fn next(&mut self) -> LineRef {
        self.line += 1;
        LineRef {
            session: self.session.id.clone(),
            line: self.line,
        }
    }

    fn user(&mut self, text: &str) {
        let at = self.next();
        self.session.events.push(Event::UserText {
            text: text.to_string(),
            at,
        });
    }

    fn tool(&mut self, name: &str, input: serde_json::Value, result: &str, is_error: bool) {
        let at = self.next();
        let result_at = self.next();
        self.session.events.push(Event::Tool(ToolCall {
            id: format!("tu_{}", at.line),
            name: name.to_string(),
            input,
            at,
            result: Some(result.to_string()),
            is_error,
            result_at: Some(result_at),
        }));
    }

    fn bash(&mut self, command: &str, result: &str, is_error: bool) {
        self.tool("bash", json!({ "command": command }), result, is_error);
    }

    fn finish(mut self, outcome: Outcome, summary: &str) -> Session {
        let at = self.next();
        self.session.outcome = outcome;
        self.session.outcome_summary = Some(summary.to_string());
        self.session.outcome_at = Some(at);
        self.session
    }
}

/// A planted recurring error: how to play it in a session, and what its
/// lesson must say.
struct PlantedError {
    /// A phrase of the error the lesson must quote.
    key: &'static str,
    /// A phrase of the fix the lesson must give.
    fix: &'static str,
    play: fn(&mut ChaCha8Rng, &mut Builder),
}

fn planted_errors() -> Vec<PlantedError> {
    vec![
        PlantedError {
            key: "has no upstream branch",
            fix: "add `--set-upstream`",
            play: |rng, b| {
                let branch = format!(
                    "feature/{}-{}",
                    pick(rng, &["login", "cache", "auth"]),
                    rng.random_range(1..500)
                );
                b.bash(
                    &format!("git push origin {branch}"),
                    &format!("fatal: The current branch {branch} has no upstream branch.\nTo push the current branch and set the remote as upstream, use\n\n    git push --set-upstream origin {branch}\n"),
                    true,
                );
                b.bash(
                    &format!("git push --set-upstream origin {branch}"),
                    &format!("branch '{branch}' set up to track 'origin/{branch}'."),
                    false,
                );
            },
        },
        PlantedError {
            key: "namespaces <v> not found",
            fix: "kubectl create namespace",
            play: |rng, b| {
                let ns = format!("team-{}", rng.random_range(1..90));
                let svc = pick(rng, &["api", "web", "worker"]);
                let apply = format!("kubectl apply -n {ns} -f k8s/{svc}.yaml");
                b.bash(&apply, &format!("Error from server (NotFound): error when creating \"k8s/{svc}.yaml\": namespaces \"{ns}\" not found"), true);
                b.bash(
                    &format!("cat k8s/{svc}.yaml"),
                    "apiVersion: apps/v1\nkind: Deployment",
                    false,
                );
                b.bash(
                    &format!("kubectl create namespace {ns}"),
                    &format!("namespace/{ns} created"),
                    false,
                );
                b.bash(&apply, &format!("deployment.apps/{svc} created"), false);
            },
        },
        PlantedError {
            key: "No module named <v>",
            fix: "pip install -r requirements.txt",
            play: |rng, b| {
                let module = pick(rng, &["billing", "users", "search"]);
                let line = rng.random_range(1..40);
                let cmd = format!("pytest tests/test_{module}.py -q");
                b.bash(&cmd, &format!("Traceback (most recent call last):\n  File \"/app/tests/test_{module}.py\", line {line}, in <module>\n    import requests\nModuleNotFoundError: No module named 'requests'\n"), true);
                b.bash(
                    "pip install -r requirements.txt",
                    "Successfully installed requests-2.32.3",
                    false,
                );
                b.bash(
                    &cmd,
                    &format!(
                        "{} passed in 0.{}s",
                        rng.random_range(2..30),
                        rng.random_range(10..99)
                    ),
                    false,
                );
            },
        },
        PlantedError {
            key: "needs to be updated but --locked was passed",
            fix: "cargo generate-lockfile",
            play: |rng, b| {
                let n = rng.random_range(1..20);
                let cmd = format!("cargo build --locked -p svc-{n}");
                b.bash(&cmd, &format!("error: the lock file /work/svc-{n}/Cargo.lock needs to be updated but --locked was passed to prevent this\nIf you want to try to generate the lock file without accessing the network, remove the --locked flag and use --offline instead."), true);
                b.bash(
                    "cargo generate-lockfile",
                    "    Updating crates.io index",
                    false,
                );
                b.bash(
                    &cmd,
                    &format!(
                        "    Finished `dev` profile in {}.{}s",
                        rng.random_range(1..60),
                        rng.random_range(0..9)
                    ),
                    false,
                );
            },
        },
        PlantedError {
            key: "failed to read dockerfile",
            fix: "add `-f docker/Dockerfile`",
            play: |rng, b| {
                let tag = format!(
                    "registry.local/api:{}.{}.{}",
                    rng.random_range(0..3),
                    rng.random_range(0..20),
                    rng.random_range(0..9)
                );
                b.bash(&format!("docker build -t {tag} ."), &format!("ERROR: failed to solve: failed to read dockerfile: open /var/lib/docker/tmp/buildkit-mount{}/Dockerfile: no such file or directory", rng.random_range(100000..999999)), true);
                b.bash(
                    &format!("docker build -t {tag} -f docker/Dockerfile ."),
                    &format!("writing image sha256:{:x} done", rng.random::<u64>()),
                    false,
                );
            },
        },
        PlantedError {
            key: "ERESOLVE",
            fix: "--legacy-peer-deps",
            play: |rng, b| {
                let v = format!(
                    "{}.{}.{}",
                    rng.random_range(1..4),
                    rng.random_range(0..12),
                    rng.random_range(0..9)
                );
                b.bash("npm install", &format!("npm ERR! code ERESOLVE\nnpm ERR! ERESOLVE unable to resolve dependency tree\nnpm ERR! While resolving: web@{v}"), true);
                b.bash(
                    "npm install --legacy-peer-deps",
                    &format!(
                        "added {} packages in {}s",
                        rng.random_range(100..900),
                        rng.random_range(2..40)
                    ),
                    false,
                );
            },
        },
    ]
}

/// Errors seen once, each with a fix: they must not become lessons.
const DECOYS: &[&str] = &[
    "unexpected end of input while parsing manifest",
    "certificate has expired for the mirror",
    "disk quota exceeded on the build volume",
    "invalid api version in chart metadata",
    "too many open files in the watcher",
    "connection reset by peer during upload",
    "database is locked by another writer",
    "schema mismatch on table orders",
];

/// The tool each decoy comes from (one-off errors come from anywhere).
const DECOY_TOOLS: &[&str] = &[
    "./scripts/lint.sh",
    "curl",
    "rsync",
    "helm package",
    "watchexec",
    "aws s3 cp",
    "sqlite3",
    "psql",
];

fn play_decoy(rng: &mut ChaCha8Rng, b: &mut Builder, k: usize) {
    let n = rng.random_range(1..99);
    let tool = DECOY_TOOLS[k % DECOY_TOOLS.len()];
    b.bash(
        &format!("{tool} target-{n}"),
        &format!("error: {} (attempt {n})", DECOYS[k]),
        true,
    );
    b.bash(&format!("{tool} --retry 3 target-{n}"), "done", false);
}

/// Errors that recur but are never fixed: no lesson either.
const UNFIXED: &[(&str, &str)] = &[
    (
        "cargo build --release",
        "error: linker `cc` not found\n  |\n  = note: No such file or directory (os error 2)",
    ),
    (
        "terraform validate",
        "Error: Unsupported block type on main.tf line {} in resource \"aws_s3_bucket\"",
    ),
];

fn play_unfixed(rng: &mut ChaCha8Rng, b: &mut Builder, k: usize) {
    let (cmd, err) = UNFIXED[k];
    b.bash(
        cmd,
        &err.replace("{}", &rng.random_range(1..300).to_string()),
        true,
    );
    noise(rng, b);
}

/// Chance of an edit between two steps of a planted method.
const EDIT_BETWEEN_STEPS: f64 = 0.15;

/// Planted methods (shell commands whose verbs form the sequence).
const METHODS: &[&[&str]] = &[
    &[
        "cargo fmt --all",
        "cargo clippy --all-targets -- -D warnings",
        "cargo test --workspace",
        "git commit -am 'fix: {}'",
    ],
    &[
        "docker build -t web:{} .",
        "docker push web:{}",
        "kubectl apply -f k8s/web.yaml",
        "kubectl rollout status deploy/web",
    ],
    &["npm ci", "npm run lint", "npm test", "npm run build"],
    &[
        "helm lint charts/app",
        "helm template charts/app",
        "kubectl diff -f rendered.yaml",
        "helm upgrade --install app charts/app",
    ],
];
/// Sequences as common in failed sessions as in successful ones.
const LOOKALIKES: &[&[&str]] = &[
    &[
        "terraform init",
        "terraform plan -out tf.plan",
        "terraform apply tf.plan",
    ],
    &["make build", "make deploy ENV={}"],
    &["gh pr create --fill", "gh workflow run ci.yaml"],
];
/// Verbs of a planted sequence (first word, plus subcommand; `npm run x`).
fn verbs(seq: &[&str]) -> Vec<String> {
    seq.iter().map(|c| methods::command_verb(c)).collect()
}

/// Shared preferences: paraphrases, given to two or three agents.
const SHARED: &[&[&str]] = &[
    &[
        "Use rg instead of grep.",
        "Always use rg rather than grep.",
        "Prefer rg over grep.",
    ],
    &[
        "Always use UTC timestamps in logs.",
        "Please use UTC for timestamps in the logs.",
        "We use UTC timestamps in all logs.",
    ],
    &[
        "Never push directly to main.",
        "Don't push straight to main.",
        "Do not push to main directly.",
    ],
    &[
        "Always run cargo fmt before committing.",
        "Please run cargo fmt before you commit.",
        "Make sure to run cargo fmt before each commit.",
    ],
    &[
        "I prefer small pull requests of under 300 lines.",
        "We prefer small pull requests, under 300 lines.",
        "Please keep pull requests small: under 300 lines.",
    ],
    &[
        "We use port 8080 for the dev server.",
        "Always run the dev server on port 8080.",
        "Please use port 8080 for the dev server.",
    ],
];
/// Preferences given to one agent only (maybe twice).
const SOLO: &[&str] = &[
    "Prefer tabs over spaces in Makefiles.",
    "Never log request bodies.",
    "Always add a changelog entry.",
    "Please use snake_case for JSON fields.",
    "We use port 3000 for the dev server.",
    "Always push directly to main.",
];
/// A preference shared by two agents that memory already holds.
const KNOWN_PREF: &[&str] = &[
    "Always write commit messages in English.",
    "Please always write commit messages in English.",
];
const KNOWN_PREF_MEMORY: &str = "Commit messages are written in English.";

const TASKS: &[&str] = &[
    "Fix the flaky login test",
    "Add a health endpoint to the API",
    "Upgrade the web frontend dependencies",
    "Ship the billing export",
    "Deploy the worker to staging",
    "Tidy up the search indexer",
    "Investigate slow checkout requests",
];

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

fn noise(rng: &mut ChaCha8Rng, b: &mut Builder) {
    match rng.random_range(0..4) {
        0 => b.bash(
            &format!("cat src/{}.rs", pick(rng, &["main", "lib", "api"])),
            "fn main() {}",
            false,
        ),
        1 => b.bash("ls -la", "total 8", false),
        2 => b.tool(
            "files",
            json!({"op": "read", "path": format!("docs/{}.md", rng.random_range(1..9))}),
            "# Notes",
            false,
        ),
        _ => b.bash("git status", "On branch main", false),
    }
}

#[derive(Default)]
struct Plan {
    agent: String,
    succeeded: bool,
    sequence: Option<Vec<String>>,
    errors: Vec<usize>,
    decoys: Vec<usize>,
    unfixed: Vec<usize>,
    prefs: Vec<String>,
}

/// What was planted, to score the ops against.
struct Truth {
    errors: Vec<PlantedError>,
    /// Planted error index that memory already knows.
    known_error: usize,
}

fn generate(seed: u64) -> (Corpus, Truth) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut plans: Vec<Plan> = Vec::new();
    let fill = |rng: &mut ChaCha8Rng, seq: &[&str]| -> Vec<String> {
        seq.iter()
            .map(|c| c.replace("{}", &rng.random_range(1..999).to_string()))
            .collect()
    };
    for m in METHODS {
        for _ in 0..rng.random_range(3..=5) {
            plans.push(Plan {
                succeeded: true,
                sequence: Some(fill(&mut rng, m)),
                ..Plan::default()
            });
        }
    }
    for l in LOOKALIKES {
        for _ in 0..rng.random_range(2..=3) {
            plans.push(Plan {
                succeeded: true,
                sequence: Some(fill(&mut rng, l)),
                ..Plan::default()
            });
            plans.push(Plan {
                succeeded: false,
                sequence: Some(fill(&mut rng, l)),
                ..Plan::default()
            });
        }
    }
    for i in 0..10 {
        plans.push(Plan {
            succeeded: i < 6,
            ..Plan::default()
        });
    }
    plans.shuffle(&mut rng);
    // Round-robin agents so every agent has sessions, then shuffle the plans.
    for (i, p) in plans.iter_mut().enumerate() {
        p.agent = AGENTS[i % AGENTS.len()].to_string();
    }
    plans.shuffle(&mut rng);

    let errors = planted_errors();
    let n = plans.len();
    let mut idx: Vec<usize> = (0..n).collect();
    for e in 0..errors.len() {
        idx.shuffle(&mut rng);
        for &p in idx.iter().take(rng.random_range(2..=4)) {
            plans[p].errors.push(e);
        }
    }
    for k in 0..UNFIXED.len() {
        idx.shuffle(&mut rng);
        for &p in idx.iter().take(rng.random_range(2..=3)) {
            plans[p].unfixed.push(k);
        }
    }
    for k in 0..DECOYS.len() {
        let p = rng.random_range(0..n);
        plans[p].decoys.push(k);
    }
    let sessions_of = |plans: &[Plan], agent: &str| -> Vec<usize> {
        plans
            .iter()
            .enumerate()
            .filter(|(_, p)| p.agent == agent)
            .map(|(i, _)| i)
            .collect()
    };
    let give = |rng: &mut ChaCha8Rng, plans: &mut Vec<Plan>, agent: &str, text: &str| {
        let own = sessions_of(plans, agent);
        let p = own[rng.random_range(0..own.len())];
        plans[p].prefs.push(text.to_string());
    };
    for para in SHARED.iter().chain(std::iter::once(&KNOWN_PREF)) {
        let mut agents = AGENTS.to_vec();
        agents.shuffle(&mut rng);
        let mut wordings = para.to_vec();
        wordings.shuffle(&mut rng);
        let k = rng.random_range(2..=wordings.len().min(3));
        for (agent, text) in agents.iter().zip(wordings.iter()).take(k) {
            give(&mut rng, &mut plans, agent, text);
        }
    }
    for text in SOLO {
        let agent = pick(&mut rng, AGENTS);
        for _ in 0..rng.random_range(1..=2) {
            give(&mut rng, &mut plans, agent, text);
        }
    }

    let mut sessions = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let mut b = Builder::new(&format!("s-{:03}", i + 1), &plan.agent);
        let mut first = pick(&mut rng, TASKS).to_string();
        first.push('.');
        for p in &plan.prefs {
            first.push(' ');
            first.push_str(p);
        }
        b.user(&first);
        noise(&mut rng, &mut b);
        let errors_first = rng.random_bool(0.5);
        let play_errors = |rng: &mut ChaCha8Rng, b: &mut Builder| {
            for &e in &plan.errors {
                (errors[e].play)(rng, b);
                noise(rng, b);
            }
            for &k in &plan.decoys {
                play_decoy(rng, b, k);
            }
            for &k in &plan.unfixed {
                play_unfixed(rng, b, k);
            }
        };
        if errors_first {
            play_errors(&mut rng, &mut b);
        }
        if let Some(seq) = &plan.sequence {
            for cmd in seq {
                b.bash(cmd, "ok", false);
                if rng.random_bool(0.3) {
                    noise(&mut rng, &mut b);
                }
                // Now and then an edit lands between two steps: that
                // session no longer shows the method as one run.
                if rng.random_bool(EDIT_BETWEEN_STEPS) {
                    b.tool(
                        "files",
                        json!({"op": "write", "path": "src/lib.rs"}),
                        "ok",
                        false,
                    );
                }
            }
        }
        if !errors_first {
            play_errors(&mut rng, &mut b);
        }
        let (outcome, summary) = if plan.succeeded {
            (Outcome::Succeeded, "done")
        } else {
            (Outcome::Failed, "could not finish")
        };
        sessions.push(b.finish(outcome, summary));
    }

    let known_error = rng.random_range(0..errors.len());
    let known_lessons = [
        "When git push says the current branch has no upstream branch, add --set-upstream.",
        "When kubectl apply fails with Error from server (NotFound): namespaces not found, run kubectl create namespace first.",
        "When pytest fails with ModuleNotFoundError: No module named, run pip install -r requirements.txt first.",
        "When cargo says the lock file needs to be updated but --locked was passed, run cargo generate-lockfile first.",
        "When docker build fails to read dockerfile (no such file or directory), add -f docker/Dockerfile.",
        "When npm install fails with code ERESOLVE unable to resolve dependency tree, add --legacy-peer-deps.",
    ];
    let memory_text = format!(
        "# Lessons\n\n- {}\n\n# Preferences\n\n- {KNOWN_PREF_MEMORY}\n",
        known_lessons[known_error]
    );
    let memories = reverie::memory::parse(&memory_text)
        .entries()
        .map(|e| MemoryEntry {
            path: "notes.md".to_string(),
            entry: e.clone(),
        })
        .collect();
    (
        Corpus { memories, sessions },
        Truth {
            errors,
            known_error,
        },
    )
}

#[derive(Default, Debug)]
struct Score {
    expected: usize,
    found: usize,
    ops: usize,
    false_ops: usize,
}

impl Score {
    fn recall(&self) -> f64 {
        if self.expected == 0 {
            1.0
        } else {
            self.found as f64 / self.expected as f64
        }
    }
    fn precision(&self) -> f64 {
        if self.ops == 0 {
            1.0
        } else {
            (self.ops - self.false_ops) as f64 / self.ops as f64
        }
    }
}

fn content(op: &PatchOp) -> &str {
    op.content.as_deref().unwrap_or("")
}

fn score_lessons(ops: &[PatchOp], truth: &Truth, s: &mut Score) {
    s.ops += ops.len();
    for (i, e) in truth.errors.iter().enumerate() {
        let hits = ops
            .iter()
            .filter(|o| content(o).contains(e.key) && content(o).contains(e.fix))
            .count();
        if i == truth.known_error {
            s.false_ops += hits; // memory already holds it
        } else {
            s.expected += 1;
            s.found += usize::from(hits == 1);
            s.false_ops += hits.saturating_sub(1);
        }
    }
    let unmatched = ops
        .iter()
        .filter(|o| {
            !truth
                .errors
                .iter()
                .any(|e| content(o).contains(e.key) && content(o).contains(e.fix))
        })
        .count();
    s.false_ops += unmatched;
}

/// True when the op's steps contain the planted verbs in order.
fn op_has_sequence(op: &PatchOp, seq: &[&str]) -> bool {
    let text = content(op);
    let mut pos = 0;
    verbs(seq)
        .iter()
        .all(|v| match text[pos..].find(&format!("`{v}")) {
            Some(i) => {
                pos += i + v.len();
                true
            }
            None => false,
        })
}

fn score_methods(ops: &[PatchOp], s: &mut Score) {
    s.ops += ops.len();
    for m in METHODS {
        s.expected += 1;
        s.found += usize::from(ops.iter().any(|o| op_has_sequence(o, m)));
    }
    s.false_ops += ops
        .iter()
        .filter(|o| !METHODS.iter().any(|m| op_has_sequence(o, m)))
        .count();
}

fn score_preferences(ops: &[PatchOp], s: &mut Score) {
    s.ops += ops.len();
    for para in SHARED {
        let hits = ops.iter().filter(|o| para.contains(&content(o))).count();
        s.expected += 1;
        s.found += usize::from(hits == 1);
        s.false_ops += hits.saturating_sub(1);
    }
    // An op is wrong when it is no planted shared preference, or when its
    // evidence mixes in a statement of another preference (port 3000 with
    // port 8080, "always" with "never").
    s.false_ops += ops
        .iter()
        .filter(|o| {
            let Some(para) = SHARED.iter().find(|p| p.contains(&content(o))) else {
                return true;
            };
            !o.evidence
                .iter()
                .all(|e| e.quote.as_deref().is_some_and(|q| para.contains(&q)))
        })
        .count();
}

#[test]
fn planted_patterns_are_found_and_decoys_are_not() {
    let opts = DreamOptions::default();
    let (mut lessons, mut procedures, mut prefs) =
        (Score::default(), Score::default(), Score::default());
    let mut sessions = 0;
    for &seed in SEEDS {
        let (corpus, truth) = generate(seed);
        sessions += corpus.sessions.len();
        let l = errors::find(&corpus, &opts);
        let m = methods::find(&corpus, &opts);
        let p = preferences::find(&corpus, &opts);
        for op in l.iter().chain(&m).chain(&p) {
            assert!(!op.evidence.is_empty(), "op without evidence: {op:?}");
            for e in &op.evidence {
                assert!(
                    e.session.is_some() && e.line.is_some(),
                    "evidence without a session line: {op:?}"
                );
            }
        }
        for op in &p {
            assert!(
                op.evidence.len() >= 2,
                "a shared preference needs two statements: {op:?}"
            );
        }
        score_lessons(&l, &truth, &mut lessons);
        score_methods(&m, &mut procedures);
        score_preferences(&p, &mut prefs);
        if std::env::var_os("REVERIE_SHOW_OPS").is_some() {
            for op in l.iter().chain(&m).chain(&p) {
                println!(
                    "seed {seed}: {:?} {} | {}",
                    op.reason,
                    op.section.as_deref().unwrap_or(""),
                    content(op)
                );
            }
        }
    }
    println!("{} seeds, {sessions} sessions", SEEDS.len());
    for (name, s) in [
        ("lessons", &lessons),
        ("procedures", &procedures),
        ("preferences", &prefs),
    ] {
        println!(
            "{name:12} recall {:.3} ({}/{})  precision {:.3} ({} ops, {} wrong)",
            s.recall(),
            s.found,
            s.expected,
            s.precision(),
            s.ops,
            s.false_ops
        );
    }
    for (name, s) in [
        ("lessons", &lessons),
        ("procedures", &procedures),
        ("preferences", &prefs),
    ] {
        assert!(
            s.recall() >= 0.9,
            "{name}: recall {:.3} < 0.9: {s:?}",
            s.recall()
        );
        assert!(
            s.precision() >= 0.9,
            "{name}: precision {:.3} < 0.9: {s:?}",
            s.precision()
        );
    }
}

#[test]
fn larger_corpus_timing() {
    // Twenty seeded corpora in one: about 800 sessions
    // (REVERIE_BENCH_SEEDS=100 for about 4000).
    let seeds: u64 = std::env::var("REVERIE_BENCH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut corpus = Corpus::default();
    for seed in 0..seeds {
        let (c, _) = generate(seed);
        corpus.sessions.extend(c.sessions.into_iter().map(|mut s| {
            s.id = format!("{seed}-{}", s.id);
            s
        }));
    }
    let opts = DreamOptions::default();
    let t = std::time::Instant::now();
    let l = errors::find(&corpus, &opts);
    let t_errors = t.elapsed();
    let t = std::time::Instant::now();
    let m = methods::find(&corpus, &opts);
    let t_methods = t.elapsed();
    let t = std::time::Instant::now();
    let p = preferences::find(&corpus, &opts);
    let t_prefs = t.elapsed();
    println!(
        "{} sessions: errors {:?} ({} ops), methods {:?} ({} ops), preferences {:?} ({} ops)",
        corpus.sessions.len(),
        t_errors,
        l.len(),
        t_methods,
        m.len(),
        t_prefs,
        p.len()
    );
    // Merged, each decoy error now recurs (once per seed) and is a lesson;
    // methods and look-alikes keep their balance, so only the planted
    // methods remain, however many chance neighbours 800 sessions hold.
    assert_eq!(l.len(), planted_errors().len() + DECOYS.len(), "{l:#?}");
    let mut score = Score::default();
    score_methods(&m, &mut score);
    assert_eq!((score.found, score.false_ops), (METHODS.len(), 0), "{m:#?}");
    assert!(p.len() > SHARED.len(), "{p:#?}");
}

#[test]
fn same_corpus_gives_byte_identical_ops() {
    let opts = DreamOptions::default();
    let run = |seed: u64| {
        let (corpus, _) = generate(seed);
        let mut ops = errors::find(&corpus, &opts);
        ops.extend(methods::find(&corpus, &opts));
        ops.extend(preferences::find(&corpus, &opts));
        serde_yaml::to_string(&ops).unwrap_or_default()
    };
    let a = run(99);
    assert!(
        a.contains("recurring-error")
            && a.contains("working-method")
            && a.contains("shared-preference")
    );
    assert_eq!(a, run(99));
    assert_ne!(a, run(100), "different seeds should give different corpora");
}

#[test]
fn raising_min_sessions_removes_patterns() {
    let (corpus, _) = generate(7);
    let strict = DreamOptions {
        min_sessions: 50,
        ..DreamOptions::default()
    };
    assert!(errors::find(&corpus, &strict).is_empty());
    assert!(methods::find(&corpus, &strict).is_empty());
    assert!(preferences::find(&corpus, &strict).is_empty());
}

/// A minimal reader of the demo transcripts (both formats of DESIGN §5),
/// enough to check the files and run the analyses on them; the real
/// reader is `reverie::dream::ingest`. Returns the session and the number
/// of lines that were not JSON.
fn read_demo(path: &std::path::Path) -> (Session, usize) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("")
        .to_string();
    let mut b = Builder::new(&stem, "");
    let mut bad = 0;
    let mut last_ts: Option<chrono::DateTime<chrono::Utc>> = None;
    let mut calls: std::collections::BTreeMap<String, usize> = Default::default();
    for (i, line) in text.lines().enumerate() {
        let at = LineRef {
            session: stem.clone(),
            line: i as u64 + 1,
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            bad += 1;
            continue;
        };
        if v["type"] == "outcome" {
            b.session.outcome = match v["status"].as_str() {
                Some("succeeded") => Outcome::Succeeded,
                Some("failed") => Outcome::Failed,
                other => panic!("{}:{}: bad outcome status {other:?}", stem, i + 1),
            };
            b.session.outcome_summary = v["summary"].as_str().map(String::from);
            b.session.outcome_at = Some(at);
            continue;
        }
        let (msg, ts) = if v.get("message").is_some() {
            assert_eq!(v["sessionId"], stem.as_str(), "{stem}:{}: sessionId", i + 1);
            (&v["message"], &v["timestamp"])
        } else {
            assert_eq!(v["session"], stem.as_str(), "{stem}:{}: session", i + 1);
            if let Some(agent) = v["agent"].as_str() {
                b.session.agent = agent.to_string();
            }
            (&v, &v["ts"])
        };
        let ts: chrono::DateTime<chrono::Utc> = ts
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{stem}:{}: no RFC 3339 timestamp", i + 1));
        assert!(
            last_ts.is_none_or(|l| l <= ts),
            "{stem}:{}: time goes back",
            i + 1
        );
        last_ts = Some(ts);
        b.session.started.get_or_insert(ts);
        b.session.ended = Some(ts);
        let role = msg["role"].as_str().unwrap_or("");
        let blocks = match &msg["content"] {
            serde_json::Value::String(s) => vec![json!({"type": "text", "text": s})],
            serde_json::Value::Array(a) => a.clone(),
            other => panic!("{stem}:{}: content {other}", i + 1),
        };
        for block in blocks {
            match block["type"].as_str() {
                Some("text") => {
                    let text = block["text"].as_str().unwrap_or("").to_string();
                    let at = at.clone();
                    b.session.events.push(if role == "user" {
                        Event::UserText { text, at }
                    } else {
                        Event::AssistantText { text, at }
                    });
                }
                Some("tool_use") => {
                    let id = block["id"].as_str().unwrap_or("").to_string();
                    calls.insert(id.clone(), b.session.events.len());
                    b.session.events.push(Event::Tool(ToolCall {
                        id,
                        name: block["name"].as_str().unwrap_or("").to_string(),
                        input: block["input"].clone(),
                        at: at.clone(),
                        result: None,
                        is_error: false,
                        result_at: None,
                    }));
                }
                Some("tool_result") => {
                    let id = block["tool_use_id"].as_str().unwrap_or("");
                    let k = calls.get(id).copied();
                    let Some(Event::Tool(call)) = k.and_then(|k| b.session.events.get_mut(k))
                    else {
                        panic!("{stem}:{}: result for unknown call {id}", i + 1)
                    };
                    call.result = block["content"].as_str().map(String::from);
                    call.is_error = block["is_error"].as_bool().unwrap_or(false);
                    call.result_at = Some(at.clone());
                }
                other => panic!("{stem}:{}: block type {other:?}", i + 1),
            }
        }
    }
    (b.session, bad)
}

#[test]
fn demo_sessions_are_well_formed_and_show_each_pattern() {
    // REVERIE_DEMO_STORE points the check at another copy of the store
    // (e.g. with the memories and later sessions of the full demo).
    let store = std::env::var_os("REVERIE_DEMO_STORE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/store"));
    let dir = store.join("sessions");
    let mut sessions = Vec::new();
    let mut bad_total = 0;
    let mut last_start = None;
    for n in 1..=16 {
        let path = dir.join(format!("s-{n:03}.jsonl"));
        let lines = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .count();
        assert!(
            (10..=40).contains(&lines),
            "{}: {lines} lines",
            path.display()
        );
        let (session, bad) = read_demo(&path);
        bad_total += bad;
        assert!(
            session.started > last_start,
            "{} starts before the previous session",
            session.id
        );
        last_start = session.started;
        sessions.push(session);
    }
    assert_eq!(bad_total, 1, "exactly one truncated line is planted");
    let claude = sessions.iter().filter(|s| s.agent.is_empty()).count();
    assert!(
        (1..=2).contains(&claude),
        "one or two sessions in Claude Code format"
    );

    // Later sessions (s-017 …) of the demo, when present, join the corpus.
    let mut later: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    later.retain(|p| {
        p.file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.strip_prefix("s-"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n > 16)
    });
    later.sort();
    for p in &later {
        sessions.push(read_demo(p).0);
    }
    // The demo memories, when present: what they already hold is not proposed again.
    let mut memories = Vec::new();
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(store.join("memories"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "md"));
    files.sort();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let name = f
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        for e in reverie::memory::parse(&text).entries() {
            memories.push(MemoryEntry {
                path: name.clone(),
                entry: e.clone(),
            });
        }
    }
    println!(
        "{} sessions, {} memory entries",
        sessions.len(),
        memories.len()
    );
    let corpus = Corpus { memories, sessions };
    let opts = DreamOptions::default();
    let l = errors::find(&corpus, &opts);
    let m = methods::find(&corpus, &opts);
    let p = preferences::find(&corpus, &opts);
    for op in l.iter().chain(&m).chain(&p) {
        let ev: Vec<String> = op
            .evidence
            .iter()
            .map(|e| {
                format!(
                    "{}:{}",
                    e.session.as_deref().unwrap_or("?"),
                    e.line.unwrap_or(0)
                )
            })
            .collect();
        println!(
            "{:?} [{}] {}\n    evidence {}",
            op.reason,
            op.section.as_deref().unwrap_or(""),
            content(op),
            ev.join(" ")
        );
    }
    assert!(l.len() >= 2, "lessons: {l:#?}");
    assert!(m.len() >= 2, "procedures: {m:#?}");
    assert!(p.len() >= 2, "preferences: {p:#?}");
}

/// Random text from pieces that have tripped text code before: quotes
/// without partners, multi-byte characters, characters whose case mapping
/// changes their length, shell syntax, error markers.
fn junk(rng: &mut ChaCha8Rng) -> String {
    const PIECES: &[&str] = &[
        "error:",
        "Error:",
        "fatal:",
        "'",
        "\"",
        "`",
        "‘",
        "“",
        "\u{212A}",
        "İ",
        "ß",
        "é",
        "日本語",
        "🦀",
        "&&",
        "||",
        ";",
        "|",
        "\n",
        "  ",
        "exit code 1",
        "exit code:",
        "Traceback",
        "panicked at",
        "--flag",
        "-x",
        "a/b/c.rs:1:2",
        "0xdeadbeef",
        "2026-11-20T10:00:00Z",
        "always",
        "never",
        "please use",
        "don't",
        "we use",
        "Also,",
        "From now on:",
        ":",
        ".",
        "?",
        "!",
        "cargo",
        "git push",
        "kubectl",
        "=",
        "{",
        "}",
        "SHOP-1:",
        "x",
        "",
    ];
    let n = rng.random_range(0..12);
    (0..n)
        .map(|_| pick(rng, PIECES))
        .collect::<Vec<_>>()
        .join(if rng.random_bool(0.5) { " " } else { "" })
}

#[test]
fn odd_input_never_panics() {
    for seed in 0..8 {
        odd_input_run(seed);
    }
}

fn odd_input_run(seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sessions = Vec::new();
    for s in 0..60 {
        let agent = if rng.random_bool(0.3) {
            String::new()
        } else {
            pick(&mut rng, AGENTS).to_string()
        };
        let mut b = Builder::new(&format!("j-{s}"), &agent);
        for _ in 0..rng.random_range(0..25) {
            match rng.random_range(0..5) {
                0 => b.user(&junk(&mut rng)),
                1 => {
                    let cmd = junk(&mut rng);
                    let out = junk(&mut rng);
                    let err = rng.random_bool(0.4);
                    b.bash(&cmd, &out, err);
                }
                2 => {
                    let input = match rng.random_range(0..4) {
                        0 => serde_json::Value::Null,
                        1 => json!(junk(&mut rng)),
                        2 => json!({"op": junk(&mut rng), "command": junk(&mut rng)}),
                        _ => json!([1, 2, {"command": 3}]),
                    };
                    let name = junk(&mut rng);
                    let out = junk(&mut rng);
                    b.tool(&name, input, &out, rng.random_bool(0.3));
                }
                3 => {
                    // A call whose result never came back.
                    let at = b.next();
                    b.session.events.push(Event::Tool(ToolCall {
                        id: String::new(),
                        name: "bash".into(),
                        input: json!({"command": junk(&mut rng)}),
                        at,
                        result: None,
                        is_error: rng.random_bool(0.5),
                        result_at: None,
                    }));
                }
                _ => b.bash("cargo test", "test result: ok", false),
            }
        }
        let outcome = match rng.random_range(0..3) {
            0 => Outcome::Succeeded,
            1 => Outcome::Failed,
            _ => Outcome::Unknown,
        };
        sessions.push(b.finish(outcome, &junk(&mut rng)));
    }
    let memories = reverie::memory::parse(&format!("- {}\n- {}\n", junk(&mut rng), junk(&mut rng)))
        .entries()
        .map(|e| MemoryEntry {
            path: "notes.md".into(),
            entry: e.clone(),
        })
        .collect();
    let corpus = Corpus { memories, sessions };
    for min_sessions in [0, 1, 2] {
        let opts = DreamOptions {
            min_sessions,
            ..DreamOptions::default()
        };
        for op in errors::find(&corpus, &opts)
            .into_iter()
            .chain(methods::find(&corpus, &opts))
            .chain(preferences::find(&corpus, &opts))
        {
            assert!(!op.evidence.is_empty(), "{op:?}");
        }
    }
}
