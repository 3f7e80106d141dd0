//! `cargo bench --bench dream`: the dream pipeline (load_corpus + analyse)
//! on generated stores at several scales, and MinHash/LSH against the
//! all-pairs baseline.
//!
//! Each scale is measured in a child process (this binary re-run with
//! `child DIR`), so the peak RSS it reports (`VmHWM`) is the pipeline's
//! alone, not the generator's. Scales: `REVERIE_BENCH_SCALES` (comma
//! separated, default `0.1,1`; 1 = 1M entries + 100k sessions).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use reverie::dream::{budget, duplicates, emit, index, ingest, DreamOptions};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const FULL_ENTRIES: usize = 1_000_000;
const FULL_SESSIONS: usize = 100_000;
const ENTRIES_PER_FILE: usize = 1000;

const SYLLABLES: &[&str] = &[
    "ka", "lo", "ve", "ri", "tan", "mo", "sel", "dur", "pi", "nex", "ar", "bo", "cle", "fin",
    "gra", "hu", "jet", "kor", "lum", "mar", "nor", "ost", "pra", "quil", "ros", "sta", "tri",
    "ulm", "vor", "wex", "yal", "zen", "del", "fa", "gin", "ber", "cor", "dex", "ept", "ion",
];

/// A word of a vocabulary of ~65k with a Zipf-like (log-uniform rank)
/// distribution, like the jargon of a real team: a few words everywhere, a
/// long tail.
fn word(rng: &mut ChaCha8Rng) -> String {
    let v = (SYLLABLES.len().pow(3) + SYLLABLES.len().pow(2)) as f64;
    let rank = (rng.random::<f64>() * v.ln()).exp() as usize - 1;
    let n = SYLLABLES.len();
    if rank < n * n {
        format!("{}{}", SYLLABLES[rank / n], SYLLABLES[rank % n])
    } else {
        let r = rank - n * n;
        format!(
            "{}{}{}",
            SYLLABLES[r / (n * n) % n],
            SYLLABLES[r / n % n],
            SYLLABLES[r % n]
        )
    }
}

fn fact(rng: &mut ChaCha8Rng) -> String {
    let n = rng.random_range(6..=14);
    let mut words: Vec<String> = (0..n).map(|_| word(rng)).collect();
    if rng.random_bool(0.3) {
        words.push(format!("port {}", rng.random_range(1024..65000)));
    }
    let mut s = words.join(" ");
    if let Some(f) = s.get_mut(0..1) {
        f.make_ascii_uppercase();
    }
    s.push('.');
    s
}

/// A paraphrase: upper-cased, or one word added, or halves swapped.
fn paraphrase(rng: &mut ChaCha8Rng, s: &str) -> String {
    match rng.random_range(0..3) {
        0 => s.to_uppercase(),
        1 => format!("{} {}", word(rng), s),
        _ => {
            let w: Vec<&str> = s.trim_end_matches('.').split(' ').collect();
            let mid = w.len() / 2;
            format!("{}, {}.", w[mid..].join(" "), w[..mid].join(" "))
        }
    }
}

/// Entry texts: 5% are paraphrases of an earlier one.
fn entries(rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    for _ in 0..n {
        if !out.is_empty() && rng.random_bool(0.05) {
            let i = rng.random_range(0..out.len());
            let p = paraphrase(rng, &out[i]);
            out.push(p);
        } else if out.len() % 50 == 7 {
            // Facts the sessions later change (contradictions) or retire
            // (stale): one service per slot, so a session line names it.
            let k = out.len() / 50;
            out.push(if k.is_multiple_of(2) {
                format!(
                    "The {} API listens on port {}.",
                    service(k),
                    8000 + k % 1000
                )
            } else {
                format!("Sessions of {} are cached in {}.", service(k), store(k))
            });
        } else {
            out.push(fact(rng));
        }
    }
    out
}

/// The name of the service of planted fact slot `k` (unique per slot).
fn service(k: usize) -> String {
    format!("svc{k}")
}

/// The cache of planted fact slot `k`.
fn store(k: usize) -> String {
    format!("cachestore{k}")
}

/// Programs of the repeated tool sequences and recurring errors: a small
/// pool, so methods and errors recur across sessions as in a real team.
const PROGRAMS: &[&str] = &[
    "cargo",
    "npm",
    "make",
    "kubectl",
    "helm",
    "terraform",
    "go",
    "pytest",
];

fn tool_use(id: &str, cmd: &str, text: Option<String>) -> serde_json::Value {
    let mut content = Vec::new();
    if let Some(t) = text {
        content.push(serde_json::json!({"type": "text", "text": t}));
    }
    content.push(serde_json::json!({"type": "tool_use", "id": id, "name": "bash", "input": {"command": cmd}}));
    serde_json::json!({"role": "assistant", "content": content})
}

fn tool_result(id: &str, out: &str, failed: bool) -> serde_json::Value {
    serde_json::json!({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": id, "content": out, "is_error": failed}]})
}

/// The lines of session `s` (without session id, agent, ts): a user ask
/// (1 in 10 states a preference, 1 in 5 quotes an entry), a repeated tool
/// sequence of 3 steps from a pool of 64, 1 in 5 a recurring error fixed by
/// a changed command, 1 in 8 a changed or removed planted fact, an
/// assistant answer and the outcome.
fn session_lines(rng: &mut ChaCha8Rng, texts: &[String], s: usize) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let ask = match rng.random_range(0..10) {
        0 => format!(
            "Please always run {} check before you commit.",
            PROGRAMS[rng.random_range(0..PROGRAMS.len())]
        ),
        1 | 2 => texts[rng.random_range(0..texts.len())].clone(),
        _ => fact(rng),
    };
    out.push(serde_json::json!({"role": "user", "content": ask}));
    let seq = rng.random_range(0..64usize);
    let prog = PROGRAMS[seq % PROGRAMS.len()];
    let target = format!("mod{}", seq / PROGRAMS.len());
    let failed = rng.random_bool(0.2);
    let steps = [
        format!("{prog} fetch {target}"),
        format!("{prog} build {target}"),
        format!("{prog} test {target}"),
    ];
    for (k, cmd) in steps.iter().enumerate() {
        let id = format!("tu_{k}");
        let text = (k == 0).then(|| fact(rng));
        out.push(tool_use(&id, cmd, text));
        if k == 1 && failed {
            let err =
                format!("error: {prog} build {target} failed: lockfile {target}.lock is stale");
            out.push(tool_result(&id, &err, true));
            let fix = format!("{prog} build {target} --locked-refresh");
            out.push(tool_use("tu_fix", &fix, None));
            out.push(tool_result("tu_fix", "ok", false));
        } else {
            out.push(tool_result(&id, &fact(rng), false));
        }
    }
    if s % 8 == 3 {
        // Slots that exist in the entries: about one in 50 entries.
        let slots = (texts.len() / 50).max(1);
        let k = rng.random_range(0..slots);
        let say = if k.is_multiple_of(2) {
            format!(
                "Done: we moved the {} API port to {} and restarted it.",
                service(k),
                9000 + k % 1000
            )
        } else {
            format!("We removed {} from {}; it is gone.", store(k), service(k))
        };
        out.push(serde_json::json!({"role": "assistant", "content": say}));
    }
    out.push(serde_json::json!({"role": "assistant", "content": fact(rng)}));
    out.push(serde_json::json!({"type": "outcome", "status": if failed {"failed"} else {"succeeded"}, "summary": fact(rng)}));
    out
}

fn generate(dir: &Path, n_entries: usize, n_sessions: usize) -> std::io::Result<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mem = dir.join("memories");
    let ses = dir.join("sessions");
    std::fs::create_dir_all(&mem)?;
    std::fs::create_dir_all(&ses)?;
    let mut bytes = 0u64;
    let texts = entries(&mut rng, n_entries);
    for (f, chunk) in texts.chunks(ENTRIES_PER_FILE).enumerate() {
        let sub = mem.join(format!("team{:02}", f % 50));
        std::fs::create_dir_all(&sub)?;
        let mut body = String::with_capacity(chunk.len() * 100);
        body.push_str("# Notes\n\n");
        for (i, t) in chunk.iter().enumerate() {
            if i % 100 == 0 {
                body.push_str(&format!("\n## Part {}\n\n", i / 100));
            }
            body.push_str("- ");
            body.push_str(t);
            if i % 7 == 0 {
                body.push_str(&format!(
                    " <!-- reverie: {{\"hits\":{},\"lastSeen\":\"2026-11-{:02}\"}} -->",
                    i % 13,
                    1 + i % 28
                ));
            }
            body.push('\n');
        }
        bytes += body.len() as u64;
        std::fs::write(sub.join(format!("notes{f:04}.md")), body)?;
    }
    for s in 0..n_sessions {
        let id = format!("s-{s:06}");
        let ts = |sec: u64| {
            let t = 1_763_600_000 + s as u64 * 60 + sec;
            chrono::DateTime::from_timestamp(t as i64, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let agent = ["lead", "coder", "reviewer", "ops"][s % 4];
        let mut lines = session_lines(&mut rng, &texts, s);
        for (k, l) in lines.iter_mut().enumerate() {
            if let Some(o) = l.as_object_mut() {
                o.insert("session".into(), id.clone().into());
                if o.get("type").is_none() {
                    o.insert("agent".into(), agent.into());
                    o.insert("ts".into(), ts(k as u64 * 5).into());
                }
            }
        }
        let mut body = String::new();
        for l in lines {
            body.push_str(&l.to_string());
            body.push('\n');
        }
        bytes += body.len() as u64;
        std::fs::write(ses.join(format!("{id}.jsonl")), body)?;
    }
    Ok(bytes)
}

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) this process used so far, from
/// `/proc/self/stat` (clock ticks of 1/100 s, the Linux default). Reported
/// beside wall time because the bench machine is shared: wall time moves
/// with other load, CPU time much less.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let u: f64 = f.get(11)?.parse().ok()?;
            let k: f64 = f.get(12)?.parse().ok()?;
            Some((u + k) / 100.0)
        })
        .unwrap_or(0.0)
}

/// `ingest::load_corpus`, exiting with its error.
fn load(dir: &Path, opts: &DreamOptions) -> (reverie::dream::Corpus, reverie::dream::IngestReport) {
    match ingest::load_corpus(dir, opts) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("load_corpus: {e}");
            std::process::exit(1);
        }
    }
}

/// The measured part, run in a child process.
fn child(dir: &Path) {
    let opts = DreamOptions::default();
    let t0 = Instant::now();
    let (corpus, report) = load(dir, &opts);
    let load = t0.elapsed().as_secs_f64();
    if std::env::var_os("REVERIE_BENCH_BREAKDOWN").is_some() {
        // Each analysis on its own (as `emit::analyse` runs them, before
        // overlap resolution), to find the stages that do not scale.
        for (name, f) in emit::STAGES {
            let t = Instant::now();
            let n = f(&corpus, &opts, &index::Shared::default()).len();
            println!("STAGE {name} {:.3} {n}", t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let n = budget::enforce(&corpus, &opts, &[]).len();
        println!("STAGE budget {:.3} {n}", t.elapsed().as_secs_f64());
    }
    let t1 = Instant::now();
    let ops = emit::analyse(&corpus, &opts);
    let analyse = t1.elapsed().as_secs_f64();
    println!(
        "RESULT {} {} {} {} {:.3} {:.3} {} {:.2}",
        corpus.memories.len(),
        corpus.sessions.len(),
        report.lines,
        ops.len(),
        load,
        analyse,
        vm_hwm_kb(),
        cpu_seconds()
    );
}

/// Loads a kept store and runs one stage, printing time and peak RSS, to
/// find which stage sets the pipeline's peak.
fn stage_alone(dir: &Path, name: &str) {
    let opts = DreamOptions::default();
    let t0 = Instant::now();
    let (corpus, _) = load(dir, &opts);
    println!(
        "load {:.3}s, peak RSS {} MB",
        t0.elapsed().as_secs_f64(),
        vm_hwm_kb() / 1024
    );
    let t = Instant::now();
    let n = match name {
        "analyse" => emit::analyse(&corpus, &opts).len(),
        "budget" => budget::enforce(&corpus, &opts, &[]).len(),
        _ => match emit::STAGES.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f(&corpus, &opts, &index::Shared::default()).len(),
            None => {
                eprintln!("unknown stage {name}");
                std::process::exit(2);
            }
        },
    };
    println!(
        "{name} {:.3}s, {n} ops, peak RSS {} MB, CPU {:.1}s",
        t.elapsed().as_secs_f64(),
        vm_hwm_kb() / 1024,
        cpu_seconds()
    );
}

fn lsh_vs_all_pairs(n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let texts = entries(&mut rng, n);
    let feats: Vec<duplicates::Features> = texts.iter().map(|t| duplicates::features(t)).collect();
    let t = Instant::now();
    let lsh = duplicates::near_duplicate_pairs(&feats, 0.7);
    let lsh_t = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let all = duplicates::near_duplicate_pairs_exhaustive(&feats, 0.7);
    let all_t = t.elapsed().as_secs_f64();
    let common = lsh.iter().filter(|p| all.binary_search(p).is_ok()).count();
    println!("\n| {n} entries | time (s) | pairs found |");
    println!("|---|---:|---:|");
    println!("| MinHash/LSH | {lsh_t:.3} | {} |", lsh.len());
    println!("| all pairs (exact Jaccard) | {all_t:.3} | {} |", all.len());
    println!(
        "\nLSH found {common} of the {} all-pairs pairs ({:.1}% recall), {} extra; {:.0}× faster",
        all.len(),
        100.0 * common as f64 / all.len().max(1) as f64,
        lsh.len() - common,
        all_t / lsh_t.max(1e-9)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let (Some("gen"), Some(dir), Some(scale)) = (
        args.get(1).map(String::as_str),
        args.get(2),
        args.get(3).and_then(|s| s.parse::<f64>().ok()),
    ) {
        // Keep a generated store for profiling: `dream gen DIR SCALE`.
        let n_e = (FULL_ENTRIES as f64 * scale) as usize;
        let n_s = (FULL_SESSIONS as f64 * scale) as usize;
        if let Err(e) = generate(Path::new(dir), n_e, n_s) {
            eprintln!("generating: {e}");
            std::process::exit(1);
        }
        return;
    }
    if let (Some("stage"), Some(dir), Some(name)) =
        (args.get(1).map(String::as_str), args.get(2), args.get(3))
    {
        // One stage alone on a kept store, with the peak RSS after load and
        // after the stage: `dream stage DIR NAME` (NAME from `emit::STAGES`,
        // `budget` or `analyse`).
        stage_alone(Path::new(dir), name);
        return;
    }
    if args.get(1).map(String::as_str) == Some("child") {
        if let Some(dir) = args.get(2) {
            child(Path::new(dir));
        }
        return;
    }
    let scales: Vec<f64> = std::env::var("REVERIE_BENCH_SCALES")
        .unwrap_or_else(|_| "0.1,1".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("current_exe: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "| scale | entries | sessions | lines | input MB | generate (s) | load (s) | analyse (s) | total (s) | CPU (s) | peak RSS (MB) | ops |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(usize, f64, f64)> = Vec::new();
    for scale in scales {
        let n_e = (FULL_ENTRIES as f64 * scale) as usize;
        let n_s = (FULL_SESSIONS as f64 * scale) as usize;
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => {
                eprintln!("tempdir: {e}");
                std::process::exit(1);
            }
        };
        let t = Instant::now();
        let bytes = match generate(dir.path(), n_e, n_s) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("generating: {e}");
                std::process::exit(1);
            }
        };
        let gen_t = t.elapsed().as_secs_f64();
        let out = std::process::Command::new(&exe)
            .arg("child")
            .arg(dir.path())
            .output();
        let out = match out {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                eprintln!("child failed: {}", String::from_utf8_lossy(&o.stderr));
                std::process::exit(1);
            }
            Err(e) => {
                eprintln!("child: {e}");
                std::process::exit(1);
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(line) = stdout.lines().find(|l| l.starts_with("RESULT ")) else {
            eprintln!("child printed no result: {stdout}");
            std::process::exit(1);
        };
        let f: Vec<&str> = line.split_whitespace().skip(1).collect();
        let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let total = num(4) + num(5);
        println!(
            "| {scale} | {} | {} | {} | {:.0} | {gen_t:.1} | {:.2} | {:.2} | {total:.2} | {:.1} | {:.0} | {} |",
            f[0],
            f[1],
            f[2],
            bytes as f64 / 1e6,
            num(4),
            num(5),
            num(7),
            num(6) / 1024.0,
            f[3]
        );
        let stages: Vec<String> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("STAGE "))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!(
                    "{} {}s ({} ops)",
                    f[0],
                    f.get(1).unwrap_or(&"?"),
                    f.get(2).unwrap_or(&"?")
                )
            })
            .collect();
        if !stages.is_empty() {
            println!("|  | stages: {} |", stages.join(", "));
        }
        let _ = std::io::stdout().flush();
        rows.push((n_e, total, num(7)));
    }
    if let (Some(&(n0, t0, c0)), Some(&(n1, t1, c1))) = (rows.first(), rows.last()) {
        if rows.len() > 1 {
            println!(
                "\n{:.0}× the input took {:.1}× the wall time and {:.1}× the CPU time (first row to last)",
                n1 as f64 / n0.max(1) as f64,
                t1 / t0.max(1e-9),
                c1 / c0.max(1e-9)
            );
        }
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at the end: {}", l.trim());
    }
    lsh_vs_all_pairs(10_000);
}
