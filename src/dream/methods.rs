//! Working methods → procedures (DESIGN §6).
//!
//! A session is reduced to its *steps*: the successful tool calls, each named
//! by a coarse verb (`cargo test`, `git commit`, `files write`), without
//! look-only calls (`cat`, `ls`, `files read` …), without the calls that
//! recovered from a failure (those are lessons, see `errors`) and without
//! immediate repeats. Sequences of 2–5 steps, where one stray step may sit
//! between two neighbours, that occur in at least `min_sessions` successful
//! sessions, clearly more often there than in failed ones, and whose steps
//! mostly occur together, become a numbered procedure in `procedures.md`.
//! The longest such sequence wins; its parts and near-copies are not
//! emitted.

use super::errors::{call_failed, find_fix};
use super::text::{clip, jaccard, normalise, word_jaccard, words};
use super::{Corpus, DreamOptions, Event, Outcome, Session, ToolCall};
use crate::api::{Evidence, OpKind, PatchOp, Reason};
use std::collections::{BTreeMap, BTreeSet};

/// The memory file procedures are added to.
pub const PROCEDURES_PATH: &str = "procedures.md";
/// Shortest and longest sequence considered.
const MIN_LEN: usize = 2;
const MAX_LEN: usize = 5;
/// Distinct goals compared when choosing a procedure's goal.
const MAX_GOALS: usize = 50;
/// How many other steps may sit between two steps of a method (an edit,
/// a stray command) without breaking it.
const MAX_GAP: usize = 1;
/// Programs whose first argument is a subcommand worth keeping in the verb.
const SUBCOMMAND_PROGRAMS: &[&str] = &[
    "apt",
    "apt-get",
    "brew",
    "bundle",
    "cargo",
    "composer",
    "docker",
    "gh",
    "git",
    "go",
    "gradle",
    "helm",
    "kind",
    "kubectl",
    "make",
    "minikube",
    "mvn",
    "npm",
    "pip",
    "pip3",
    "pnpm",
    "poetry",
    "rustup",
    "systemctl",
    "terraform",
    "uv",
    "yarn",
    "kustomize",
    "skaffold",
    "tofu",
    "just",
    "sqlx",
    "diesel",
    "alembic",
];
/// Commands that only look at things; they are dropped from step sequences
/// because agents sprinkle them anywhere and they carry no method.
const LOOK_ONLY: &[&str] = &[
    "cat",
    "ls",
    "grep",
    "rg",
    "find",
    "head",
    "tail",
    "pwd",
    "echo",
    "wc",
    "less",
    "more",
    "tree",
    "which",
    "stat",
    "file",
    "git status",
    "git log",
    "git diff",
    "git show",
    "git branch",
];
/// Operations of non-shell tools that only look at things.
/// Claude Code's bookkeeping and web tools (`TodoWrite`, `WebFetch` …) count
/// as looking too: they sit between real steps without being one.
const LOOK_ONLY_OPS: &[&str] = &[
    "read",
    "view",
    "list",
    "ls",
    "search",
    "glob",
    "grep",
    "find",
    "stat",
    "get",
    "cat",
    "show",
    "todowrite",
    "todoread",
    "webfetch",
    "websearch",
    "exitplanmode",
    "bashoutput",
];
/// Wrappers skipped before the program name.
const WRAPPERS: &[&str] = &["sudo", "time", "env", "nohup", "exec", "command"];

/// The text a tool call ran: the shell command for a bash-like tool, else
/// the input as compact JSON.
pub fn call_input_text(call: &ToolCall) -> String {
    if is_shell(call) {
        for key in ["command", "cmd", "script"] {
            if let Some(s) = call.input.get(key).and_then(|v| v.as_str()) {
                return s.trim().to_string();
            }
        }
    }
    match &call.input {
        serde_json::Value::String(s) => s.trim().to_string(),
        serde_json::Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// Tools whose `command` field names an operation (`view`, `create` …),
/// not a shell command.
const OP_COMMAND_TOOLS: &[&str] = &[
    "files",
    "file",
    "memory",
    "str_replace_based_edit_tool",
    "str_replace_editor",
    "text_editor",
    "editor",
];

/// True when the call's input is a shell command.
pub fn is_shell(call: &ToolCall) -> bool {
    !OP_COMMAND_TOOLS.contains(&call.name.to_lowercase().as_str())
        && ["command", "cmd", "script"]
            .iter()
            .any(|k| call.input.get(*k).and_then(|v| v.as_str()).is_some())
}

/// The words of the first segment of a shell command that does real work:
/// `cd dir && FOO=1 sudo cargo test -p x` gives `cargo test -p x`.
pub fn main_segment(command: &str) -> Vec<&str> {
    for segment in command.split(['&', '|', ';', '\n']) {
        let mut toks: Vec<&str> = segment.split_whitespace().collect();
        while let Some(first) = toks.first() {
            let assignment = first.contains('=') && !first.starts_with('-');
            if assignment || WRAPPERS.contains(first) {
                toks.remove(0);
            } else {
                break;
            }
        }
        // Shell keywords: `for … ; do cargo test; done` runs `cargo test`.
        if toks
            .first()
            .is_some_and(|t| matches!(*t, "do" | "then" | "else" | "{" | "("))
        {
            toks.remove(0);
        }
        match toks.first() {
            None => continue,
            Some(&("for" | "while" | "until" | "if" | "done" | "fi" | "esac" | "case" | "}")) => {
                continue
            }
            Some(&("cd" | "export" | "set" | "source" | "." | "pushd" | "popd")) => continue,
            Some(_) => return toks,
        }
    }
    Vec::new()
}

/// The program of a shell command (`/usr/bin/cargo` → `cargo`), or "" when
/// there is none.
pub fn command_program(command: &str) -> String {
    main_segment(command)
        .first()
        .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
        .unwrap_or_default()
}

/// The coarse verb of a shell command: the program, plus its subcommand for
/// tools that have them (`cargo test`, `git commit`, `npm run build`).
pub fn command_verb(command: &str) -> String {
    let toks = main_segment(command);
    let program = command_program(command);
    if program.is_empty() {
        return String::new();
    }
    let is_word = |t: &&&str| {
        !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c == '-' || c == ':')
            && !t.starts_with('-')
    };
    let mut verb = program.clone();
    if !SUBCOMMAND_PROGRAMS.contains(&program.as_str()) {
        return verb;
    }
    // Global flags may come first (`kubectl --context staging -n x rollout
    // status`, `git -C dir commit`): skip each flag and, when it has no
    // `=`, the value after it.
    let mut i = 1;
    while let Some(t) = toks.get(i) {
        if t.starts_with('+') {
            // A toolchain (`cargo +nightly fmt`).
            i += 1;
            continue;
        }
        if !t.starts_with('-') {
            break;
        }
        let takes_value = !t.contains('=') && toks.get(i + 1).is_some_and(|n| !n.starts_with('-'));
        i += if takes_value { 2 } else { 1 };
    }
    if let Some(sub) = toks.get(i).filter(is_word) {
        verb.push(' ');
        verb.push_str(sub);
        let two_level =
            matches!(program.as_str(), "npm" | "yarn" | "pnpm") && *sub == "run" || program == "gh";
        if two_level {
            if let Some(script) = toks.get(i + 1).filter(is_word) {
                verb.push(' ');
                verb.push_str(script);
            }
        }
    }
    verb
}

/// The operation a non-shell tool call performs (`op`, `action`, … field).
fn tool_op(call: &ToolCall) -> Option<String> {
    ["op", "action", "operation", "mode", "command"]
        .iter()
        .find_map(|k| call.input.get(*k).and_then(|v| v.as_str()))
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
}

/// The step name of a tool call: `cargo test` for a shell command, `files
/// write` for a tool with an operation, else the tool name.
pub fn step_verb(call: &ToolCall) -> String {
    if is_shell(call) {
        let verb = command_verb(&call_input_text(call));
        if !verb.is_empty() {
            return verb;
        }
    }
    let name = call.name.to_lowercase();
    match tool_op(call) {
        Some(op) => format!("{name} {op}"),
        None => name,
    }
}

/// Operations of non-shell tools that change files.
const EDIT_OPS: &[&str] = &[
    "write",
    "edit",
    "create",
    "append",
    "replace",
    "insert",
    "patch",
    "str_replace",
    "delete",
    "multiedit",
    "notebookedit",
    "update",
];

/// True for a call that edits files (`files write`, Claude Code `Edit` …).
pub fn is_edit(call: &ToolCall) -> bool {
    if is_shell(call) {
        return false;
    }
    let name = call.name.to_lowercase();
    EDIT_OPS.contains(&name.as_str())
        || tool_op(call).is_some_and(|op| EDIT_OPS.contains(&op.as_str()))
}

/// True for steps that only look (read a file, list a directory).
pub fn is_look_only(call: &ToolCall, verb: &str) -> bool {
    if is_shell(call) {
        return LOOK_ONLY.contains(&verb);
    }
    let name = call.name.to_lowercase();
    if LOOK_ONLY_OPS.contains(&name.as_str()) {
        return true;
    }
    tool_op(call).is_some_and(|op| LOOK_ONLY_OPS.contains(&op.as_str()))
}

/// One step of a session's reduced sequence.
#[derive(Clone, Debug)]
struct Step<'a> {
    verb: String,
    call: &'a ToolCall,
    /// Index of the call among all the session's tool calls.
    index: usize,
}

/// The tool calls of a session in order.
pub fn tool_calls(session: &Session) -> Vec<&ToolCall> {
    session
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Tool(c) => Some(c),
            _ => None,
        })
        .collect()
}

/// The session's steps. Failed calls are left out, and so are the calls
/// that recovered from a failure before its fix (`docker compose up` before
/// the retried `cargo test`): they are the lesson of a recurring error, not
/// a method. The successful retry itself stays: it is the step that worked.
fn steps<'a>(calls: &[&'a ToolCall]) -> Vec<Step<'a>> {
    let mut recovery = vec![false; calls.len()];
    for i in 0..calls.len() {
        if !call_failed(calls[i]) {
            continue;
        }
        if let Some(fix) = find_fix(calls, i) {
            if let Some(j) = calls.iter().position(|c| std::ptr::eq(*c, fix.call)) {
                for r in recovery.iter_mut().take(j).skip(i + 1) {
                    *r = true;
                }
            }
        }
    }
    let mut out: Vec<Step<'a>> = Vec::new();
    for (index, call) in calls.iter().enumerate() {
        if recovery[index] || call_failed(call) {
            continue;
        }
        let verb = step_verb(call);
        if verb.is_empty() || is_look_only(call, &verb) {
            continue;
        }
        if out.last().is_some_and(|s| s.verb == verb) {
            continue;
        }
        out.push(Step { verb, call, index });
    }
    out
}

/// Where a sequence was seen in one session (first occurrence).
#[derive(Clone, Debug)]
struct Seen {
    line: u64,
    /// Index of each step of the occurrence among the session's steps
    /// (commands are looked up only for the methods emitted).
    path: Vec<usize>,
}

#[derive(Default, Debug)]
struct Support {
    /// Session index → first occurrence, for sessions that count as success.
    wins: BTreeMap<usize, Seen>,
    /// Failed sessions that contain the sequence.
    losses: BTreeSet<usize>,
}

/// True when `small` occurs in `big` in order (not necessarily adjacent).
fn is_subsequence<T: PartialEq>(big: &[T], small: &[T]) -> bool {
    let mut it = big.iter();
    small.iter().all(|s| it.any(|b| b == s))
}

/// Length of the longest common subsequence of two short sequences.
fn common_steps<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// Every subsequence of `seq` with at least [`MIN_LEN`] and fewer than all
/// of its steps (at most 2^5 of them).
fn proper_subsequences<T: Clone>(seq: &[T]) -> Vec<Vec<T>> {
    let n = seq.len();
    let full = (1u32 << n) - 1;
    (1..full)
        .filter(|mask| mask.count_ones() as usize >= MIN_LEN)
        .map(|mask| {
            (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| seq[i].clone())
                .collect()
        })
        .collect()
}

/// True when `q` is one step followed by a prefix of `p`, or a suffix of
/// `p` followed by one step (and not `p` itself).
fn steps_past_edge<T: PartialEq>(q: &[T], p: &[T]) -> bool {
    let overlap = q.len() - 1;
    if overlap == 0 || overlap > p.len() || q == p {
        return false;
    }
    q[1..] == p[..overlap] || q[..overlap] == p[p.len() - overlap..]
}

fn step_example(step: &Step<'_>) -> (String, bool) {
    if is_shell(step.call) {
        let cmd = main_segment(&call_input_text(step.call)).join(" ");
        (clip(&cmd, 80), true)
    } else {
        (step.verb.clone(), false)
    }
}

/// The main clause of the first sentence of the session's first user text,
/// else of its outcome summary.
fn session_goal(session: &Session) -> Option<String> {
    let first_user = session.events.iter().find_map(|e| match e {
        Event::UserText { text, .. } if !text.trim().is_empty() => Some(text.as_str()),
        _ => None,
    });
    first_user
        .and_then(goal_of)
        .or_else(|| session.outcome_summary.as_deref().and_then(goal_of))
}

fn goal_of(text: &str) -> Option<String> {
    let first_line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut sentence = first_line;
    for (i, c) in first_line.char_indices() {
        if matches!(c, '.' | '!' | '?')
            && first_line[i + c.len_utf8()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
        {
            sentence = &first_line[..i];
            break;
        }
    }
    let mut sentence = sentence.trim().trim_end_matches(['.', '!', '?', ':']);
    // A leading label ("SHOP-214: add …", "Task: …") is not the goal.
    if let Some((label, rest)) = sentence.split_once(": ") {
        if !label.contains(' ') && !rest.trim().is_empty() {
            sentence = rest.trim();
        }
    }
    // Keep the main clause: "add X to Y (issue #3), and Z" → "add X to Y".
    for cut in [";", ":", " (", ",", " and "] {
        if let Some(i) = sentence.find(cut) {
            if sentence[..i].split_whitespace().count() >= 3 {
                sentence = &sentence[..i];
            }
        }
    }
    let sentence = sentence
        .strip_prefix("Please ")
        .or_else(|| sentence.strip_prefix("please "))
        .unwrap_or(sentence);
    // A goal reads "To <verb> …": a text that opens with a path or an
    // identifier is not one.
    let opens_with_word = sentence
        .split_whitespace()
        .next()
        .is_some_and(|w| w.chars().all(char::is_alphabetic));
    if !opens_with_word {
        return None;
    }
    let mut chars = sentence.chars();
    let first = chars.next()?;
    let second_upper = chars.next().is_some_and(char::is_uppercase);
    let goal = if second_upper {
        sentence.to_string()
    } else {
        first
            .to_lowercase()
            .chain(sentence.chars().skip(1))
            .collect()
    };
    Some(clip(&goal, 100))
}

/// The goal most typical of a method's sessions: the one closest (word
/// Jaccard) to all the others; ties go to the earliest session.
fn typical_goal(goals: &[String]) -> Option<String> {
    // Identical goals are scored once, weighted by how often they occur;
    // only the first MAX_GOALS distinct ones are compared (quadratic).
    let mut distinct: Vec<(&String, usize, BTreeSet<String>)> = Vec::new();
    for g in goals {
        if let Some(entry) = distinct.iter_mut().find(|(d, _, _)| *d == g) {
            entry.1 += 1;
        } else if distinct.len() < MAX_GOALS {
            distinct.push((g, 1, words(g).into_iter().collect()));
        }
    }
    let mut best: Option<(f64, &String)> = None;
    for (g, _, gw) in &distinct {
        let score: f64 = distinct
            .iter()
            .map(|(_, n, ow)| *n as f64 * jaccard(gw, ow))
            .sum();
        if best.is_none_or(|(s, _)| score > s) {
            best = Some((score, g));
        }
    }
    best.map(|(_, g)| g.clone())
}

/// True when memory already describes this sequence: an entry mentions every
/// verb in order, or reads nearly the same.
fn already_known(verbs: &[String], content: &str, corpus: &Corpus) -> bool {
    corpus.memories.iter().any(|m| {
        let text = normalise(&m.entry.text);
        let mut pos = 0;
        let in_order = verbs.iter().all(|v| match text[pos..].find(v.as_str()) {
            Some(i) => {
                pos += i + v.len();
                true
            }
            None => false,
        });
        in_order || word_jaccard(content, &m.entry.text) >= 0.6
    })
}

/// `run `cargo test --all`` for a shell step (the most common full command
/// when one repeats, else the verb), `` `files write` `` for a tool step.
fn render_step(verb: &str, examples: &[&(String, bool)]) -> String {
    if !examples.iter().any(|(_, shell)| *shell) {
        return format!("`{verb}`");
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (e, _) in examples {
        *counts.entry(e.as_str()).or_default() += 1;
    }
    // A full command is shown only when most sessions ran exactly it.
    let mut shown = verb;
    let mut best = examples.len() / 2;
    for (e, _) in examples {
        let n = counts.get(e.as_str()).copied().unwrap_or(0);
        if n > best {
            best = n;
            shown = e;
        }
    }
    format!("run `{}`", shown.replace('`', "'"))
}

/// Finds working methods; deterministic.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    let min_sessions = opts.min_sessions.max(1);
    // Verbs are interned (in order of first appearance, so ids are
    // deterministic) to keep the pattern table small.
    let mut ids: BTreeMap<String, u32> = BTreeMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut table: BTreeMap<Vec<u32>, Support> = BTreeMap::new();
    // Successful sessions per step: at least two thirds of the sessions of
    // a method's rarest step should hold the method, else its steps just
    // met by chance.

    let mut step_wins: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
    let mut wins_total = 0usize;
    let mut losses_total = 0usize;
    for (si, session) in corpus.sessions.iter().enumerate() {
        let calls = tool_calls(session);
        // failed_after[i]: a call at index >= i failed.
        let mut failed_after = vec![false; calls.len() + 1];
        for i in (0..calls.len()).rev() {
            failed_after[i] = failed_after[i + 1] || call_failed(calls[i]);
        }
        match session.outcome {
            Outcome::Succeeded => wins_total += 1,
            Outcome::Failed => losses_total += 1,
            Outcome::Unknown if !failed_after[0] => wins_total += 1,
            Outcome::Unknown => {}
        }
        let steps = steps(&calls);
        let seq: Vec<u32> = steps
            .iter()
            .map(|st| {
                let next = names.len() as u32;
                *ids.entry(st.verb.clone()).or_insert_with(|| {
                    names.push(st.verb.clone());
                    next
                })
            })
            .collect();
        let win_at = |last: usize| match session.outcome {
            Outcome::Succeeded => true,
            Outcome::Failed => false,
            Outcome::Unknown => !failed_after[last + 1],
        };
        for (k, st) in steps.iter().enumerate() {
            if win_at(st.index) {
                step_wins.entry(seq[k]).or_default().insert(si);
            }
        }
        // Every run of 2–5 steps with at most MAX_GAP other steps between
        // neighbours, in order of its first step: the first time a
        // pattern shows up is its first occurrence in this session.
        let mut seen_here: BTreeSet<Vec<u32>> = BTreeSet::new();
        let mut stack: Vec<Vec<usize>> = (0..steps.len()).rev().map(|i| vec![i]).collect();
        while let Some(path) = stack.pop() {
            let Some(&last) = path.last() else { continue };
            if path.len() >= MIN_LEN {
                let key: Vec<u32> = path.iter().map(|&k| seq[k]).collect();
                if seen_here.insert(key.clone()) {
                    let support = table.entry(key).or_default();
                    if win_at(steps[last].index) {
                        support.wins.insert(
                            si,
                            Seen {
                                line: steps[path[0]].call.at.line,
                                path: path.clone(),
                            },
                        );
                    } else if session.outcome == Outcome::Failed {
                        support.losses.insert(si);
                    }
                }
            }
            if path.len() < MAX_LEN {
                let hi = (last + 1 + MAX_GAP).min(steps.len().saturating_sub(1));
                for next in (last + 1..=hi).rev() {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }

    let cohesive = |seq: &[u32], wins: usize| {
        let per_step: Vec<usize> = seq
            .iter()
            .map(|v| step_wins.get(v).map_or(0, BTreeSet::len))
            .collect();
        let rarest = per_step.iter().copied().min().unwrap_or(0);
        let commonest = per_step.iter().copied().max().unwrap_or(0);
        // Two steps are a weak pattern: a step that happens everywhere
        // (an edit) meets any rare one now and then, so a pair must also
        // hold in a third of its commonest step's sessions.
        3 * wins >= 2 * rarest && (seq.len() > MIN_LEN || 3 * wins >= commonest)
    };
    // Keep sequences that keep working, are clearly rarer in failures, and
    // hang together.
    let rate = |n: usize, total: usize| {
        if total == 0 {
            0.0
        } else {
            n as f64 / total as f64
        }
    };
    let works = |s: &Support| {
        let (w, l) = (s.wins.len(), s.losses.len());
        w >= 2 * l && rate(w, wins_total) >= 2.0 * rate(l, losses_total)
    };
    let candidates: Vec<(&Vec<u32>, &Support)> = table
        .iter()
        .filter(|(seq, s)| {
            let w = s.wins.len();
            // Without one of its steps, a method must not be a sequence
            // that fails as often as it works: that step only happened to
            // be there in the successes.
            let core_fails = seq.len() > MIN_LEN
                && (0..seq.len()).any(|skip| {
                    let core: Vec<u32> = (0..seq.len())
                        .filter(|&i| i != skip)
                        .map(|i| seq[i])
                        .collect();
                    table.get(&core).is_some_and(|c| !works(c))
                });
            w >= min_sessions && works(s) && !core_fails && cohesive(seq, w)
        })
        .collect();
    // A sequence that is another one plus a step or more, or that adds one
    // step before or after the edge of another (a chance neighbour), seen
    // in at most two thirds of that one's sessions, is an occasional
    // extension: the other, with its stronger evidence, is the method.
    // Looked up rather than compared pairwise: the most sessions of any
    // candidate by exact sequence, by prefix and by suffix.
    // Parts are looked up among all sequences seen, not only candidates:
    // a look-alike plus a stray step is no method either.
    let wins_of: BTreeMap<&[u32], usize> = table
        .iter()
        .map(|(p, ps)| (p.as_slice(), ps.wins.len()))
        .collect();
    let mut best_with_prefix: BTreeMap<&[u32], usize> = BTreeMap::new();
    let mut best_with_suffix: BTreeMap<&[u32], usize> = BTreeMap::new();
    for (p, ps) in &candidates {
        let w = ps.wins.len();
        for k in 1..=p.len() {
            let pre = best_with_prefix.entry(&p[..k]).or_default();
            *pre = (*pre).max(w);
            let suf = best_with_suffix.entry(&p[p.len() - k..]).or_default();
            *suf = (*suf).max(w);
        }
    }
    let kept: Vec<(&Vec<u32>, &Support)> = candidates
        .iter()
        .filter(|(q, qs)| {
            let n = q.len();
            let inner = proper_subsequences(q)
                .into_iter()
                .filter_map(|sub| wins_of.get(sub.as_slice()).copied());
            let edge = [
                best_with_prefix.get(&q[1..]).copied(),
                best_with_suffix.get(&q[..n - 1]).copied(),
            ];
            let strongest = inner.chain(edge.into_iter().flatten()).max().unwrap_or(0);
            3 * qs.wins.len() > 2 * strongest
        })
        .copied()
        .collect();
    let mut order = kept.clone();
    // Longest first, then best supported; on a tie the sequence of rarer
    // steps is the more specific one (a stray edit is common everywhere).
    let commonness = |seq: &[u32]| -> usize {
        seq.iter()
            .map(|v| step_wins.get(v).map_or(0, BTreeSet::len))
            .sum()
    };
    order.sort_by(|(a, sa), (b, sb)| {
        b.len()
            .cmp(&a.len())
            .then(sb.wins.len().cmp(&sa.wins.len()))
            .then(commonness(a).cmp(&commonness(b)))
            .then(first_seen(sa).cmp(&first_seen(sb)))
            .then(a.cmp(b))
    });
    let mut emitted: Vec<(&Vec<u32>, &Support)> = Vec::new();
    // Emitted methods and their near-copies (the same method shifted by a
    // step, or with one step swapped: a method longer than MAX_LEN shows up
    // as several such windows); nothing inside one of them is emitted.
    let mut covered: Vec<&Vec<u32>> = Vec::new();
    for (seq, support) in order {
        if covered.iter().any(|c| is_subsequence(c, seq)) {
            continue;
        }
        let near_copy = seq.len() >= 3
            && emitted
                .iter()
                .any(|(e, _)| steps_past_edge(seq, e) || common_steps(seq, e) + 1 >= seq.len());
        covered.push(seq);
        if !near_copy {
            emitted.push((seq, support));
        }
    }
    emitted.sort_by_key(|(seq, s)| (first_seen(s), (*seq).clone()));

    let mut ops = Vec::new();
    let mut step_examples: BTreeMap<usize, Vec<(String, bool)>> = BTreeMap::new();
    for (seq_ids, support) in emitted {
        let seq: Vec<String> = seq_ids
            .iter()
            .map(|&v| names.get(v as usize).cloned().unwrap_or_default())
            .collect();
        let seq = &seq;
        let goals: Vec<String> = support
            .wins
            .keys()
            .filter_map(|&si| corpus.sessions.get(si).and_then(session_goal))
            .collect();
        let goal = typical_goal(&goals).unwrap_or_else(|| "get a change done".to_string());
        let mut content = format!("To {goal}:");
        // The command each supporting session ran at each step (a
        // session's steps are rebuilt once, for all the methods it supports).
        let mut per_step: Vec<Vec<(String, bool)>> = vec![Vec::new(); seq.len()];
        for (&si, seen) in &support.wins {
            let Some(session) = corpus.sessions.get(si) else {
                continue;
            };
            let examples = step_examples.entry(si).or_insert_with(|| {
                let calls = tool_calls(session);
                steps(&calls).iter().map(step_example).collect()
            });
            for (i, &k) in seen.path.iter().enumerate() {
                if let (Some(slot), Some(example)) = (per_step.get_mut(i), examples.get(k)) {
                    slot.push(example.clone());
                }
            }
        }
        for (i, verb) in seq.iter().enumerate() {
            let examples: Vec<&(String, bool)> = per_step
                .get(i)
                .map(|v| v.iter().collect())
                .unwrap_or_default();
            content.push_str(&format!(" {}. {}", i + 1, render_step(verb, &examples)));
        }
        content.push('.');
        if already_known(seq, &content, corpus) {
            tracing::debug!(method = %seq.join(" → "), "working method already in memory");
            continue;
        }
        let quote = seq.join(" → ");
        let evidence = support
            .wins
            .iter()
            .filter_map(|(&si, seen)| {
                corpus.sessions.get(si).map(|s| Evidence {
                    session: Some(s.id.clone()),
                    line: Some(seen.line),
                    entry: None,
                    quote: Some(clip(&quote, 120)),
                })
            })
            .collect();
        ops.push(PatchOp {
            op: OpKind::Add,
            path: corpus.file_like(PROCEDURES_PATH, &["procedure.md", "howto.md", "methods.md"]),
            section: Some(section_for(seq)),
            id: None,
            ids: None,
            content: Some(content),
            to: None,
            before: None,
            reason: Reason::WorkingMethod,
            superseded_by: None,
            evidence,
        });
    }
    ops
}

fn first_seen(s: &Support) -> (usize, u64) {
    s.wins
        .iter()
        .next()
        .map(|(&si, seen)| (si, seen.line))
        .unwrap_or((usize::MAX, u64::MAX))
}

/// The section a procedure goes under: the program most of its steps use.
fn section_for(seq: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for v in seq {
        if let Some(p) = v.split_whitespace().next() {
            *counts.entry(p).or_default() += 1;
        }
    }
    let mut best: Option<(&str, usize)> = None;
    for v in seq {
        if let Some(p) = v.split_whitespace().next() {
            let n = counts.get(p).copied().unwrap_or(0);
            if best.is_none_or(|(_, b)| n > b) {
                best = Some((p, n));
            }
        }
    }
    let name = best.map(|(p, _)| p).unwrap_or("workflow");
    capitalise(name)
}

/// `cargo` → `Cargo`.
pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dream::errors::testkit::SessionBuilder;
    use serde_json::json;

    fn ship(id: &str, task: &str, outcome: Outcome) -> Session {
        SessionBuilder::new(id, "coder")
            .user(task)
            .tool(
                "files",
                json!({"op": "read", "path": "src/lib.rs"}),
                "fn main() {}",
                false,
            )
            .tool(
                "files",
                json!({"op": "write", "path": "src/lib.rs"}),
                "ok",
                false,
            )
            .bash("cargo fmt", "", false)
            .bash(
                "cargo clippy --all-targets -- -D warnings",
                "Finished",
                false,
            )
            .bash("cat Cargo.toml", "[package]", false)
            .bash("cargo test --all", "test result: ok. 12 passed", false)
            .bash("git commit -am wip", "[main 1a2b3c4] wip", false)
            .outcome(outcome, "done")
    }

    fn lookalike(id: &str, outcome: Outcome) -> Session {
        SessionBuilder::new(id, "ops")
            .user("Apply the infra change.")
            .bash("terraform plan -out plan.bin", "Plan: 1 to add", false)
            .bash("terraform apply plan.bin", "Apply complete", false)
            .outcome(outcome, "applied")
    }

    #[test]
    fn editor_commands_are_operations() {
        let call = |name: &str, input: serde_json::Value| ToolCall {
            id: "t".into(),
            name: name.into(),
            input,
            at: crate::dream::LineRef {
                session: "s".into(),
                line: 1,
            },
            result: Some("ok".into()),
            is_error: false,
            result_at: None,
        };
        let view = call(
            "str_replace_based_edit_tool",
            json!({"command": "view", "path": "a.rs"}),
        );
        assert!(!is_shell(&view));
        assert_eq!(step_verb(&view), "str_replace_based_edit_tool view");
        assert!(is_look_only(&view, &step_verb(&view)));
        let bash = call("bash", json!({"command": "cargo test"}));
        assert!(is_shell(&bash));
        assert_eq!(step_verb(&bash), "cargo test");
    }

    #[test]
    fn subsequence_helpers() {
        assert!(is_subsequence(&[1, 2, 3, 4], &[1, 3]));
        assert!(!is_subsequence(&[1, 2, 3], &[3, 1]));
        assert_eq!(common_steps(&[1, 2, 3, 5], &[1, 3, 4, 5]), 3);
        assert_eq!(proper_subsequences(&[1, 2, 3]).len(), 3);
    }

    #[test]
    fn verbs() {
        assert_eq!(
            command_verb("cd api && RUST_LOG=debug cargo test -p api"),
            "cargo test"
        );
        assert_eq!(command_verb("git -C x status"), "git status");
        assert_eq!(
            command_verb("kubectl --context staging -n shop rollout status deploy/api"),
            "kubectl rollout"
        );
        assert_eq!(command_verb("cargo +nightly fmt"), "cargo fmt");
        assert_eq!(
            command_verb("for i in 1 2; do cargo test -q || break; done"),
            "cargo test"
        );
        assert_eq!(command_verb("gh pr review 43 --approve"), "gh pr review");
        assert_eq!(command_verb("npm run build"), "npm run build");
        assert_eq!(
            command_verb("/usr/bin/python3 manage.py migrate"),
            "python3"
        );
        assert_eq!(
            command_verb("sudo systemctl restart nginx"),
            "systemctl restart"
        );
    }

    #[test]
    fn method_seen_in_successes_becomes_a_procedure() {
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![
                ship(
                    "s1",
                    "Fix the login bug. Always use UTC.",
                    Outcome::Succeeded,
                ),
                ship("s2", "Fix the logout bug.", Outcome::Succeeded),
                ship("s3", "Add a health endpoint.", Outcome::Succeeded),
                lookalike("s4", Outcome::Succeeded),
                lookalike("s5", Outcome::Failed),
                lookalike("s6", Outcome::Succeeded),
                lookalike("s7", Outcome::Failed),
            ],
        };
        let ops = find(&corpus, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:#?}");
        let op = &ops[0];
        assert_eq!(op.reason, Reason::WorkingMethod);
        assert_eq!(op.path, PROCEDURES_PATH);
        assert_eq!(
            op.content.as_deref(),
            Some("To fix the login bug: 1. `files write` 2. run `cargo fmt` 3. run `cargo clippy --all-targets -- -D warnings` 4. run `cargo test --all` 5. run `git commit -am wip`.")
        );
        assert_eq!(op.evidence.len(), 3);
        assert_eq!(op.evidence[0].line, Some(4));
        assert_eq!(ops, find(&corpus, &DreamOptions::default()));
    }

    #[test]
    fn method_only_in_failures_or_once_is_not_a_method() {
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![
                ship("s1", "Fix it.", Outcome::Succeeded),
                ship("s2", "Fix it.", Outcome::Failed),
                ship("s3", "Fix it.", Outcome::Failed),
            ],
        };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn sessions_without_outcome_count_when_no_error_follows() {
        let run = |id: &str, fail_after: bool| {
            let mut b = SessionBuilder::new(id, "")
                .user("Release the worker.")
                .bash("docker build -t w:1 .", "done", false)
                .bash("docker push w:1", "pushed", false)
                .bash("kubectl apply -f w.yaml", "configured", false);
            if fail_after {
                b = b.bash(
                    "kubectl rollout status deploy/w",
                    "error: timed out waiting for the condition",
                    true,
                );
            }
            let mut s = b.outcome(Outcome::Unknown, "");
            s.outcome_summary = None;
            s
        };
        let clean = Corpus {
            memories: Vec::new(),
            sessions: vec![run("a", false), run("b", false)],
        };
        let ops = find(&clean, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:#?}");
        assert!(ops[0]
            .content
            .as_deref()
            .unwrap_or("")
            .starts_with("To release the worker: 1. run `docker build -t w:1 .`"));
        let broken = Corpus {
            memories: Vec::new(),
            sessions: vec![run("a", true), run("b", true)],
        };
        assert!(find(&broken, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn known_procedure_is_skipped() {
        let text = "To ship a change: edit with files write, run cargo fmt, cargo clippy, cargo test, then git commit.";
        let memories = crate::memory::entry::parse(&format!("- {text}\n"))
            .entries()
            .map(|e| crate::dream::MemoryEntry {
                path: "procedures.md".into(),
                entry: e.clone(),
            })
            .collect();
        let corpus = Corpus {
            memories,
            sessions: vec![
                ship("s1", "Fix it.", Outcome::Succeeded),
                ship("s2", "Fix it.", Outcome::Succeeded),
            ],
        };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());
    }
}
