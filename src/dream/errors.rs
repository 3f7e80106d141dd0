//! Recurring errors → lessons (DESIGN §6).
//!
//! Every failed tool call gets an *error signature*: the tool name plus its
//! most telling error line with numbers, hex ids, paths, file names, URLs,
//! timestamps and quoted values masked, so the same mistake in two sessions
//! compares equal. A later call of the same kind in the same session that
//! succeeded is the *fix*; how it differs from the failed call (a flag
//! added, a command run first) is the lesson. A signature seen in at least
//! `min_sessions` sessions with a known fix becomes one `add` to
//! `lessons.md`; an error seen once is noise.

use super::index::{EntryWords, Shared};
use super::methods::{
    call_input_text, capitalise, command_program, command_verb, is_edit, is_look_only, is_shell,
    step_verb, tool_calls,
};
use super::text::{clip, word_jaccard, words};
use super::{Corpus, DreamOptions, Session, ToolCall};
use crate::api::{Evidence, OpKind, PatchOp, Reason};
use std::collections::{BTreeMap, BTreeSet};

/// The memory file lessons are added to.
pub const LESSONS_PATH: &str = "lessons.md";
/// Longest error text kept in a signature.
const MAX_SIGNATURE_CHARS: usize = 160;
/// How many calls after a failure a fix is looked for.
const FIX_WINDOW: usize = 12;
/// Placeholders the masking writes.
const PLACEHOLDERS: &[&str] = &["<v>", "<n>", "<path>", "<hex>", "<url>", "<file>", "<ts>"];
/// File extensions that make a bare token a file name.
const FILE_EXTENSIONS: &[&str] = &[
    "rs", "py", "js", "ts", "tsx", "jsx", "go", "java", "rb", "c", "h", "cc", "cpp", "yaml", "yml",
    "json", "toml", "md", "txt", "sh", "lock", "log", "sql", "cfg", "conf", "ini", "html", "css",
    "xml", "env", "tf", "proto",
];
/// Line openings that report an error.
const ERROR_PREFIXES: &[&str] = &[
    "error:",
    "error[",
    "error ",
    "Error:",
    "ERROR:",
    "ERROR ",
    "ERROR]",
    "fatal:",
    "FATAL",
    "npm ERR!",
    "panic:",
    "Fatal error",
    "E   ",
];
/// Phrases that report an error anywhere in a line.
const ERROR_PHRASES: &[&str] = &[
    "panicked at",
    "Error from server",
    "command not found",
    "No such file or directory",
    "Permission denied",
    "permission denied",
    "test result: FAILED",
    "Segmentation fault",
    "Traceback (most recent call last)",
];

/// True when the call failed: flagged `is_error`, or its result reports a
/// failure (an error line, a non-zero exit status). The output of a call
/// that only looks (`cat app.log`, `rg error:`) echoes other text, so only
/// its flag or exit status count.
pub fn call_failed(call: &ToolCall) -> bool {
    if call.is_error {
        return true;
    }
    let Some(result) = call.result.as_deref() else {
        return false;
    };
    if is_look_only(call, &step_verb(call)) {
        result.lines().any(nonzero_exit)
    } else {
        reports_failure(result)
    }
}

/// True when a tool result reads as a failure.
pub fn reports_failure(text: &str) -> bool {
    text.lines().any(|l| is_error_line(l) || nonzero_exit(l))
}

/// True when one line of output reports an error.
pub fn is_error_line(line: &str) -> bool {
    let t = line.trim_start();
    if ERROR_PREFIXES.iter().any(|p| t.starts_with(p))
        || ERROR_PHRASES.iter().any(|p| t.contains(p))
    {
        return true;
    }
    // `ModuleNotFoundError: …`, `java.lang.IllegalStateException: …`
    t.split_whitespace().next().is_some_and(|first| {
        (first.ends_with("Error:") || first.ends_with("Exception:"))
            && first.starts_with(|c: char| c.is_ascii_alphabetic())
    })
}

/// True for `exit code 2`, `exit status: 101`, `exited with 1` (non-zero).
fn nonzero_exit(line: &str) -> bool {
    let lower = line.to_lowercase();
    ["exit code", "exit status", "exited with", "exit_code"]
        .iter()
        .any(|phrase| {
            lower.match_indices(phrase).any(|(i, _)| {
                let rest = lower[i + phrase.len()..].trim_start_matches([' ', ':', '=']);
                let rest = rest.strip_prefix("code").unwrap_or(rest).trim_start();
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                !digits.trim_start_matches('0').is_empty()
            })
        })
}

/// The line(s) of a failure output that say what went wrong: the exception
/// line of a traceback, else the first error line (with the next line when
/// it says too little), else the first non-empty line.
pub fn error_text(result: &str) -> String {
    let lines: Vec<&str> = result
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let exit_only = |l: &str| nonzero_exit(l) && !is_error_line(l);
    let is_trace = lines.iter().any(|l| l.starts_with("Traceback"));
    let chosen = if is_trace {
        lines
            .iter()
            .rposition(|l| is_error_line(l) && !l.starts_with("Traceback"))
    } else {
        lines.iter().position(|l| is_error_line(l))
    }
    .or_else(|| lines.iter().position(|l| !exit_only(l)))
    .or(if lines.is_empty() { None } else { Some(0) });
    let Some(i) = chosen else {
        return "(no output)".to_string();
    };
    let mut text = lines[i].to_string();
    if words(&strip_placeholders(&mask(&text))).len() < 3 {
        if let Some(next) = lines.get(i + 1).filter(|l| !exit_only(l)) {
            text.push(' ');
            text.push_str(next);
        }
    }
    text
}

/// Replaces what varies between two occurrences of the same error (quoted
/// values, numbers, hex ids, paths, file names, URLs, timestamps) with
/// placeholders; keeps case.
pub fn mask(text: &str) -> String {
    let unquoted = mask_quotes(text);
    let mut out: Vec<String> = Vec::new();
    for tok in unquoted.split_whitespace() {
        let start = tok
            .find(|c: char| c.is_alphanumeric() || matches!(c, '/' | '\\' | '<' | '~' | '-'))
            .unwrap_or(tok.len());
        let end = tok
            .rfind(|c: char| c.is_alphanumeric() || matches!(c, '/' | '\\' | '>'))
            .map(|i| i + tok[i..].chars().next().map_or(1, char::len_utf8))
            .unwrap_or(start)
            .max(start);
        let (pre, core, post) = (&tok[..start], &tok[start..end], &tok[end..]);
        out.push(format!("{pre}{}{post}", mask_token(core)));
    }
    out.join(" ")
}

fn mask_token(core: &str) -> String {
    if core.is_empty() || PLACEHOLDERS.contains(&core) {
        return core.to_string();
    }
    if core.contains("://") {
        return "<url>".into();
    }
    if core.contains('/') || core.contains('\\') {
        return "<path>".into();
    }
    let digits = core.chars().filter(char::is_ascii_digit).count();
    if digits > 0 && core.len() >= 7 && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return "<hex>".into();
    }
    if digits >= 4
        && core
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '-' | ':' | 'T' | 'Z' | '.' | '+'))
        && core.contains([':', '-'])
    {
        return "<ts>".into();
    }
    if let Some((stem, ext)) = core.rsplit_once('.') {
        let ext = ext.split(':').next().unwrap_or(ext);
        if !stem.is_empty() && FILE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
            return "<file>".into();
        }
    }
    // Digit runs inside a token (`v1.0.3`, `line:42`) become `<n>`.
    let mut s = String::with_capacity(core.len());
    let mut in_digits = false;
    for c in core.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                s.push_str("<n>");
            }
            in_digits = true;
        } else {
            in_digits = false;
            s.push(c);
        }
    }
    s
}

/// Replaces `'…'`, `"…"` and `` `…` `` spans with `<v>`. A quote opens only
/// after a non-word character, so apostrophes (`doesn't`) are left alone.
fn mask_quotes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let opens = matches!(c, '\'' | '"' | '`' | '‘' | '“')
            && (i == 0 || !chars[i - 1].is_alphanumeric());
        if opens {
            let close = match c {
                '‘' => '’',
                '“' => '”',
                other => other,
            };
            let end = (i + 1..chars.len().min(i + 200)).find(|&j| {
                chars[j] == close && chars.get(j + 1).is_none_or(|n| !n.is_alphanumeric())
            });
            if let Some(j) = end {
                out.push_str("<v>");
                i = j + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

fn strip_placeholders(text: &str) -> String {
    let mut s = text.to_string();
    for p in PLACEHOLDERS {
        s = s.replace(p, " ");
    }
    s
}

/// The identity of an error across sessions.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ErrorSignature {
    /// The tool that failed (`bash`, `files` …).
    pub tool: String,
    /// The masked error text, lower-cased, whitespace folded.
    pub text: String,
}

/// The signature of a failure output of `tool`, and the masked error text
/// in its original case (for showing).
pub fn signature(tool: &str, result: &str) -> (ErrorSignature, String) {
    let shown = clip(&mask(&error_text(result)), MAX_SIGNATURE_CHARS).replace('`', "'");
    let sig = ErrorSignature {
        tool: tool.to_lowercase(),
        text: shown.to_lowercase(),
    };
    (sig, shown)
}

/// What resolved a failure.
#[derive(Clone, Debug, PartialEq)]
pub struct Fix<'a> {
    /// The call that succeeded where the failure did not.
    pub call: &'a ToolCall,
    /// A call run before the retry, when that is what made it work.
    pub first: Option<&'a ToolCall>,
    /// The advice: "add `--locked`", "run `cargo update` first" ….
    pub advice: String,
    /// The example shown in the lesson.
    pub example: String,
}

fn shown_input(call: &ToolCall) -> String {
    let text = if is_shell(call) {
        call_input_text(call)
    } else {
        format!("{} {}", call.name, call_input_text(call))
    };
    clip(&text, 100).replace('`', "'")
}

/// True when `later` is another attempt at what `failed` tried.
fn same_attempt(failed: &ToolCall, later: &ToolCall) -> bool {
    if failed.name != later.name {
        return false;
    }
    let (a, b) = (call_input_text(failed), call_input_text(later));
    if is_shell(failed) && is_shell(later) {
        let program = command_program(&a);
        !program.is_empty()
            && program == command_program(&b)
            && (command_verb(&a) == command_verb(&b) || word_jaccard(&a, &b) >= 0.5)
    } else {
        step_verb(failed) == step_verb(later) || word_jaccard(&a, &b) >= 0.5
    }
}

/// The fix of the failure at `calls[i]`: the next attempt of the same kind
/// that succeeded, and how it differs.
pub fn find_fix<'a>(calls: &[&'a ToolCall], i: usize) -> Option<Fix<'a>> {
    let failed = *calls.get(i)?;
    let end = calls.len().min(i + 1 + FIX_WINDOW);
    let same = (i + 1..end).find(|&j| same_attempt(failed, calls[j]) && !call_failed(calls[j]));
    let Some(j) = same else {
        // No retry: another command of the same program that worked
        // replaced the failing one.
        let program = if is_shell(failed) {
            command_program(&call_input_text(failed))
        } else {
            String::new()
        };
        if program.is_empty() {
            return None;
        }
        // The next call of that program, if it worked and is about the same
        // thing (`npm test` → `npm run test:unit`, not `cargo build` →
        // `cargo fmt`).
        let next = (i + 1..end).map(|k| calls[k]).find(|c| {
            c.name == failed.name
                && is_shell(c)
                && command_program(&call_input_text(c)) == program
                && !is_look_only(c, &step_verb(c))
        })?;
        let fail_text = call_input_text(failed);
        let next_text = call_input_text(next);
        let related = fail_text.split_whitespace().skip(1).any(|a| {
            next_text
                .split_whitespace()
                .skip(1)
                .any(|b| a.len() >= 3 && b.len() >= 3 && (a.starts_with(b) || b.starts_with(a)))
        });
        if call_failed(next) || !related {
            return None;
        }
        let ok = next;
        let example = shown_input(ok);
        return Some(Fix {
            call: ok,
            first: None,
            advice: format!("run `{example}` instead"),
            example,
        });
    };
    let ok = calls[j];
    let (fail_in, ok_in) = (call_input_text(failed), call_input_text(ok));
    let fail_toks: Vec<&str> = fail_in.split_whitespace().collect();
    let ok_toks: Vec<&str> = ok_in.split_whitespace().collect();
    let added: Vec<&str> = ok_toks
        .iter()
        .filter(|t| !fail_toks.contains(t))
        .copied()
        .collect();
    let removed: Vec<&str> = fail_toks
        .iter()
        .filter(|t| !ok_toks.contains(t))
        .copied()
        .collect();
    let tick = |v: &[&str]| v.join(" ").replace('`', "'");
    let example = shown_input(ok);
    if !is_shell(ok) || added.len() + removed.len() > 6 {
        if fail_in != ok_in {
            return Some(Fix {
                call: ok,
                first: None,
                advice: format!("run `{example}` instead"),
                example,
            });
        }
    } else if !added.is_empty() || !removed.is_empty() {
        let advice = match (added.is_empty(), removed.is_empty()) {
            (false, true) => format!("add `{}`", tick(&added)),
            (true, false) => format!("drop `{}`", tick(&removed)),
            _ => format!("use `{}` instead of `{}`", tick(&added), tick(&removed)),
        };
        return Some(Fix {
            call: ok,
            first: None,
            advice,
            example,
        });
    }
    // Same input succeeded later: what ran in between made the difference.
    // Edits to files do not count: "change the code" teaches nothing, so a
    // retry after edits only has no fix worth a lesson.
    let between: Vec<&ToolCall> = (i + 1..j)
        .map(|k| calls[k])
        .filter(|c| !call_failed(c) && !same_attempt(failed, c) && !is_look_only(c, &step_verb(c)))
        .collect();
    let first = between.iter().rev().find(|c| !is_edit(c)).copied();
    if first.is_none() && !between.is_empty() {
        return None;
    }
    match first {
        Some(c) => {
            let before = shown_input(c);
            Some(Fix {
                call: ok,
                first: Some(c),
                advice: format!("run `{before}` first"),
                example: format!("{before}` then `{example}"),
            })
        }
        None => Some(Fix {
            call: ok,
            first: None,
            advice: "retry it; the failure is transient".into(),
            example,
        }),
    }
}

/// One failure of a signature.
struct Occurrence<'a> {
    session: &'a Session,
    call: &'a ToolCall,
    shown: String,
    error_line: String,
    fix: Option<Fix<'a>>,
}

/// What failed, as a reader knows it: the command most occurrences ran
/// (`` `git push` ``) for a shell tool, else the tool's name.
fn failing_what(tool: &str, occurrences: &[Occurrence<'_>]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for o in occurrences.iter().filter(|o| is_shell(o.call)) {
        let verb = command_verb(&call_input_text(o.call));
        if verb.is_empty() {
            continue;
        }
        let n = counts.entry(verb.clone()).or_default();
        if *n == 0 {
            order.push(verb);
        }
        *n += 1;
    }
    let mut best: Option<(&String, usize)> = None;
    for v in &order {
        let n = counts.get(v).copied().unwrap_or(0);
        if best.is_none_or(|(_, b)| n > b) {
            best = Some((v, n));
        }
    }
    match best {
        Some((verb, _)) => format!("`{verb}`"),
        None => tool.to_string(),
    }
}

/// Section of a lesson: the failing program (`Cargo`, `Git`) or the tool.
fn section_for(call: &ToolCall) -> String {
    if is_shell(call) {
        let program = command_program(&call_input_text(call));
        if !program.is_empty() {
            return capitalise(&program);
        }
    }
    capitalise(&call.name)
}

/// True when memory already holds this lesson: an entry that reads nearly
/// the same, or one that names the error and the fix.
/// Entries are read through the dream's shared interned token sets: one
/// flag per word of the lesson, then integer counts per entry, instead of
/// a `BTreeSet<String>` per entry (lessons × entries string comparisons).
fn already_known(content: &str, shown: &str, advice: &str, words: &EntryWords) -> bool {
    // Labels like `error:` say nothing about which error it is, and the
    // advice's own verbs say nothing about which fix it is.
    let sig_words = meaning_words(shown, &["error", "fatal", "err", "failed", "e"]);
    let fix_words = meaning_words(
        advice,
        &[
            "add",
            "run",
            "first",
            "drop",
            "instead",
            "retry",
            "transient",
            "failure",
        ],
    );
    let content_words: BTreeSet<String> = super::text::words(content).into_iter().collect();
    // Per vocabulary word: bit 0 in the content, bit 1 in the signature,
    // bit 2 in the fix, bit 3 a stopword (not a content word of an entry).
    let mut flags: Vec<u8> = words
        .vocab
        .flags(super::text::is_stopword)
        .into_iter()
        .map(|stop| if stop { 8 } else { 0 })
        .collect();
    for (bit, set) in [(1u8, &content_words), (2, &sig_words), (4, &fix_words)] {
        for w in set {
            if let Some(id) = words.vocab.id(w) {
                flags[id as usize] |= bit;
            }
        }
    }
    let share = |have: usize, want: usize| {
        if want == 0 {
            0.0
        } else {
            have as f64 / want as f64
        }
    };
    (0..words.len()).any(|i| {
        let (mut len, mut content, mut sig, mut fix) = (0usize, 0usize, 0usize, 0usize);
        for &id in words.of(i) {
            let f = flags[id as usize];
            if f & 8 != 0 {
                continue;
            }
            len += 1;
            content += usize::from(f & 1 != 0);
            sig += usize::from(f & 2 != 0);
            fix += usize::from(f & 4 != 0);
        }
        let union = content_words.len() + len - content;
        let jaccard = if union == 0 {
            1.0
        } else {
            content as f64 / union as f64
        };
        if jaccard >= 0.6 {
            return true;
        }
        let (error, fix) = (share(sig, sig_words.len()), share(fix, fix_words.len()));
        // Names the error and the fix; or gives the whole fix command for
        // an error it describes in its own words.
        (error >= 0.75 && fix >= 0.75) || (fix_words.len() >= 2 && fix >= 1.0 && error >= 0.25)
    })
}

/// Content words of a masked text, without placeholders and `ignore`.
fn meaning_words(text: &str, ignore: &[&str]) -> BTreeSet<String> {
    words(&strip_placeholders(text))
        .into_iter()
        .filter(|w| !ignore.contains(&w.as_str()))
        .collect()
}

/// True when two generalised advices have the same words but for at most a
/// third of them (never the first: `add` and `drop` are different fixes).
fn same_shape(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split(' ').collect(), b.split(' ').collect());
    if a.len() != b.len() || a.first() != b.first() {
        return false;
    }
    let differ = a.iter().zip(&b).filter(|(x, y)| x != y).count();
    differ * 3 <= a.len()
}

/// `a` with the words where `b` differs replaced by `<v>` (keeping the
/// backticks around them).
fn merge_shape(a: &str, b: &str) -> String {
    a.split(' ')
        .zip(b.split(' '))
        .map(|(x, y)| {
            if x == y {
                x.to_string()
            } else {
                let open = if x.starts_with('`') { "`" } else { "" };
                let close = if x.ends_with('`') && x.len() > 1 {
                    "`"
                } else {
                    ""
                };
                format!("{open}<v>{close}")
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Masks the values inside the `` `…` `` spans of an advice (not the spans
/// themselves), so the same fix with other values compares equal.
fn generalise(advice: &str) -> String {
    advice
        .split('`')
        .enumerate()
        .map(|(i, part)| {
            if i % 2 == 1 {
                mask(part)
            } else {
                part.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("`")
}

/// Finds recurring errors with a known fix; deterministic.
pub fn find(corpus: &Corpus, opts: &DreamOptions) -> Vec<PatchOp> {
    find_with(corpus, opts, &Shared::default())
}

/// [`find`] with the token sets the dream's analyses share.
pub fn find_with(corpus: &Corpus, opts: &DreamOptions, shared: &Shared) -> Vec<PatchOp> {
    let min_sessions = opts.min_sessions.max(1);
    // Signature → occurrences in corpus order; BTreeMap key order is not
    // the output order (that is first occurrence), it only groups.
    let mut groups: BTreeMap<ErrorSignature, Vec<Occurrence<'_>>> = BTreeMap::new();
    let mut first_seen: BTreeMap<ErrorSignature, (usize, u64)> = BTreeMap::new();
    for (si, session) in corpus.sessions.iter().enumerate() {
        let calls = tool_calls(session);
        for (i, call) in calls.iter().enumerate() {
            if !call_failed(call) {
                continue;
            }
            // A failure with no output is told apart by what was run.
            let result = match call.result.as_deref().map(str::trim) {
                Some(r) if !r.is_empty() => r.to_string(),
                _ => format!("(no output from {})", step_verb(call)),
            };
            let result = result.as_str();
            let (sig, shown) = signature(&call.name, result);
            first_seen.entry(sig.clone()).or_insert((si, call.at.line));
            groups.entry(sig).or_default().push(Occurrence {
                session,
                call,
                shown,
                error_line: error_text(result),
                fix: find_fix(&calls, i),
            });
        }
    }
    let mut order: Vec<(&ErrorSignature, &(usize, u64))> = first_seen.iter().collect();
    order.sort_by_key(|(sig, pos)| (**pos, (*sig).clone()));

    let mut ops = Vec::new();
    for (sig, _) in order {
        let Some(occurrences) = groups.get(sig) else {
            continue;
        };
        let sessions: BTreeSet<&str> = occurrences.iter().map(|o| o.session.id.as_str()).collect();
        if sessions.len() < min_sessions {
            continue;
        }
        // Group the fixes that say the same thing with other values (numbers
        // masked, or at most a third of the words different); the biggest
        // group wins, ties go to the earliest.
        let fixes: Vec<&Fix<'_>> = occurrences.iter().filter_map(|o| o.fix.as_ref()).collect();
        let mut groups: Vec<(String, Vec<&Fix<'_>>)> = Vec::new();
        for f in &fixes {
            let general = generalise(&f.advice);
            match groups.iter_mut().find(|(g, _)| same_shape(g, &general)) {
                Some((g, members)) => {
                    *g = merge_shape(g, &general);
                    members.push(f);
                }
                None => groups.push((general, vec![f])),
            }
        }
        let mut best: Option<&(String, Vec<&Fix<'_>>)> = None;
        for g in &groups {
            if best.is_none_or(|b| g.1.len() > b.1.len()) {
                best = Some(g);
            }
        }
        let Some((general, members)) = best else {
            tracing::debug!(tool = %sig.tool, error = %sig.text, "recurring error without a known fix");
            continue;
        };
        let Some(fix) = members.first().copied() else {
            continue;
        };
        // When the same fix was applied with different values, say it in
        // general (`kubectl create namespace <v>`); the example stays concrete.
        let varies = members.iter().any(|f| f.advice != fix.advice);
        let advice = if varies {
            general.clone()
        } else {
            fix.advice.clone()
        };
        let shown = &occurrences[0].shown;
        let content = format!(
            "When {} fails with `{}`, {} (e.g. `{}`).",
            failing_what(&sig.tool, occurrences),
            shown,
            advice,
            fix.example
        );
        if already_known(&content, shown, &advice, shared.entry_words(corpus)) {
            tracing::debug!(error = %sig.text, "lesson already in memory");
            continue;
        }
        let mut evidence: Vec<Evidence> = Vec::new();
        let mut seen: BTreeSet<(String, u64)> = BTreeSet::new();
        let mut push = |session: &str, line: u64, quote: String| {
            if seen.insert((session.to_string(), line)) {
                evidence.push(Evidence {
                    session: Some(session.to_string()),
                    line: Some(line),
                    entry: None,
                    quote: Some(quote),
                });
            }
        };
        for o in occurrences {
            let line = o.call.result_at.as_ref().unwrap_or(&o.call.at).line;
            push(&o.session.id, line, clip(&o.error_line, 120));
            if let Some(f) = &o.fix {
                if let Some(first) = f.first {
                    push(&o.session.id, first.at.line, clip(&shown_input(first), 120));
                }
                push(
                    &o.session.id,
                    f.call.at.line,
                    clip(&shown_input(f.call), 120),
                );
            }
        }
        ops.push(PatchOp {
            op: OpKind::Add,
            path: corpus.file_like(LESSONS_PATH, &["lesson.md", "learnings.md"]),
            section: Some(section_for(occurrences[0].call)),
            id: None,
            ids: None,
            content: Some(content),
            to: None,
            before: None,
            reason: Reason::RecurringError,
            superseded_by: None,
            evidence,
        });
    }
    ops
}

/// Builders of in-memory sessions for the analyses' unit tests.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::dream::{Event, LineRef, Outcome, Session, ToolCall};

    /// Builds one session line by line.
    pub struct SessionBuilder {
        session: Session,
        line: u64,
    }

    impl SessionBuilder {
        pub fn new(id: &str, agent: &str) -> Self {
            SessionBuilder {
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

        pub fn user(mut self, text: &str) -> Self {
            let at = self.next();
            self.session.events.push(Event::UserText {
                text: text.to_string(),
                at,
            });
            self
        }

        /// A tool call and its result, on two lines.
        pub fn tool(
            mut self,
            name: &str,
            input: serde_json::Value,
            result: &str,
            is_error: bool,
        ) -> Self {
            let at = self.next();
            let result_at = self.next();
            let id = format!("tu_{}", at.line);
            self.session.events.push(Event::Tool(ToolCall {
                id,
                name: name.to_string(),
                input,
                at,
                result: Some(result.to_string()),
                is_error,
                result_at: Some(result_at),
            }));
            self
        }

        /// A bash call.
        pub fn bash(self, command: &str, result: &str, is_error: bool) -> Self {
            self.tool(
                "bash",
                serde_json::json!({ "command": command }),
                result,
                is_error,
            )
        }

        pub fn outcome(mut self, outcome: Outcome, summary: &str) -> Session {
            let at = self.next();
            self.session.outcome = outcome;
            self.session.outcome_summary = Some(summary.to_string());
            self.session.outcome_at = Some(at);
            self.session
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::SessionBuilder;
    use super::*;
    use crate::dream::{MemoryEntry, Outcome};

    const UPSTREAM: &str = "fatal: The current branch feature-12 has no upstream branch.\nTo push the current branch and set the remote as upstream, use\n\n    git push --set-upstream origin feature-12\n";

    fn push_session(id: &str, branch: u32) -> Session {
        let err = UPSTREAM.replace("feature-12", &format!("feature-{branch}"));
        SessionBuilder::new(id, "coder")
            .user("Ship the change.")
            .bash("cargo test", "test result: ok. 4 passed", false)
            .bash(&format!("git push origin feature-{branch}"), &err, true)
            .bash(
                &format!("git push --set-upstream origin feature-{branch}"),
                "branch 'x' set up to track 'origin/x'.",
                false,
            )
            .outcome(Outcome::Succeeded, "pushed")
    }

    #[test]
    fn masking_makes_variants_equal() {
        let a = signature("bash", "error: could not open `/tmp/a1/Cargo.toml` at 2026-11-20T10:00:00Z (id 3f2a9c01b7de, line 42)");
        let b = signature("bash", "error: could not open `/var/x/Cargo.toml` at 2026-11-21T09:13:07Z (id 77aa01c2d3e4, line 7)");
        assert_eq!(a.0, b.0);
        assert_eq!(
            a.1,
            "error: could not open <v> at <ts> (id <hex>, line <n>)"
        );
        let c = signature("bash", "error: permission denied opening /etc/x.conf");
        assert_ne!(a.0, c.0);
        // Apostrophes are not quotes.
        assert_eq!(
            mask("the server doesn't have it"),
            "the server doesn't have it"
        );
        assert_eq!(
            mask("open src/main.rs:12:5 and config.yaml"),
            "open <path> and <file>"
        );
    }

    #[test]
    fn traceback_uses_the_exception_line() {
        let t = "Traceback (most recent call last):\n  File \"/app/t.py\", line 3, in <module>\n    import requests\nModuleNotFoundError: No module named 'requests'\n";
        assert_eq!(
            error_text(t),
            "ModuleNotFoundError: No module named 'requests'"
        );
        assert_eq!(
            signature("bash", t).1,
            "ModuleNotFoundError: No module named <v>"
        );
    }

    #[test]
    fn failure_detection() {
        assert!(reports_failure(
            "Compiling x\nerror[E0308]: mismatched types"
        ));
        assert!(reports_failure("done\nexit code: 2"));
        assert!(!reports_failure("done\nexit code: 0"));
        assert!(!reports_failure("test result: ok. 0 failed; 0 errors"));
        assert!(reports_failure("thread 'main' panicked at src/main.rs:3:5"));
        assert!(reports_failure(
            "Traceback (most recent call last):\nKeyError: 'x'"
        ));
        // Looking at a log that mentions errors is not a failure.
        let look = |cmd: &str, out: &str| ToolCall {
            id: "t".into(),
            name: "bash".into(),
            input: serde_json::json!({ "command": cmd }),
            at: crate::dream::LineRef {
                session: "s".into(),
                line: 1,
            },
            result: Some(out.into()),
            is_error: false,
            result_at: None,
        };
        assert!(!call_failed(&look(
            "cat app.log",
            "error: disk full\nfatal: retry"
        )));
        assert!(call_failed(&look(
            "cat nope.log",
            "cat: nope.log: No such file or directory\nexit code 1"
        )));
        assert!(call_failed(&look("make build", "error: disk full")));
    }

    #[test]
    fn fix_by_added_flag_and_by_command_first() {
        let s = push_session("s1", 3);
        let calls = tool_calls(&s);
        let fix = find_fix(&calls, 1).expect("a fix");
        assert_eq!(fix.advice, "add `--set-upstream`");

        let s = SessionBuilder::new("s2", "ops")
            .bash(
                "kubectl apply -f k8s/app.yaml",
                "Error from server (NotFound): namespaces \"team-3\" not found",
                true,
            )
            .bash("cat k8s/app.yaml", "kind: Deployment", false)
            .bash(
                "kubectl create namespace team-3",
                "namespace/team-3 created",
                false,
            )
            .bash(
                "kubectl apply -f k8s/app.yaml",
                "deployment.apps/app created",
                false,
            )
            .outcome(Outcome::Succeeded, "deployed");
        let calls = tool_calls(&s);
        let fix = find_fix(&calls, 0).expect("a fix");
        assert_eq!(fix.advice, "run `kubectl create namespace team-3` first");
    }

    #[test]
    fn recurring_error_becomes_one_lesson_with_evidence() {
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![
                push_session("s1", 3),
                push_session("s2", 17),
                push_session("s3", 4),
            ],
        };
        let ops = find(&corpus, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:#?}");
        let op = &ops[0];
        assert_eq!(op.reason, Reason::RecurringError);
        assert_eq!(op.path, LESSONS_PATH);
        assert_eq!(op.section.as_deref(), Some("Git"));
        let content = op.content.as_deref().unwrap_or("");
        assert!(content.starts_with("When `git push` fails with `fatal: The current branch feature-<n> has no upstream branch.`, add `--set-upstream`"), "{content}");
        // Error line (result) and fix line of each session.
        let lines: Vec<(String, u64)> = op
            .evidence
            .iter()
            .map(|e| (e.session.clone().unwrap_or_default(), e.line.unwrap_or(0)))
            .collect();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0], ("s1".to_string(), 5));
        assert_eq!(lines[1], ("s1".to_string(), 6));
        assert_eq!(ops, find(&corpus, &DreamOptions::default()));
    }

    #[test]
    fn fixes_with_other_values_are_said_in_general() {
        assert!(same_shape(
            "run `kubectl create namespace orders-staging` first",
            "run `kubectl create namespace orders-canary` first"
        ));
        assert_eq!(
            merge_shape(
                "run `kubectl create namespace orders-staging` first",
                "run `kubectl create namespace orders-canary` first"
            ),
            "run `kubectl create namespace <v>` first"
        );
        assert!(!same_shape("add `--force`", "drop `--force`"));
    }

    #[test]
    fn single_error_and_known_lesson_give_nothing() {
        let one = Corpus {
            memories: Vec::new(),
            sessions: vec![push_session("s1", 3)],
        };
        assert!(find(&one, &DreamOptions::default()).is_empty());

        let text = "If git push fails because the current branch has no upstream branch, use --set-upstream.";
        let entry = crate::memory::entry::parse(&format!("- {text}\n"));
        let memories = entry
            .entries()
            .map(|e| MemoryEntry {
                path: "lessons.md".into(),
                entry: e.clone(),
            })
            .collect();
        let known = Corpus {
            memories,
            sessions: vec![push_session("s1", 3), push_session("s2", 5)],
        };
        assert!(find(&known, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn unflagged_failure_and_claude_code_tool_names() {
        // `Bash` (Claude Code) and `bash` are the same tool; a non-zero exit
        // is a failure even when the call is not flagged.
        let s = |id: &str, tool: &str, n: u32| {
            SessionBuilder::new(id, "")
                .tool(
                    tool,
                    serde_json::json!({"command": "npm test"}),
                    &format!("npm ERR! missing script: test{n}\nexit code 1"),
                    false,
                )
                .tool(
                    tool,
                    serde_json::json!({"command": "npm run test:unit"}),
                    "ok",
                    false,
                )
                .outcome(Outcome::Unknown, "")
        };
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![s("a", "Bash", 1), s("b", "bash", 2)],
        };
        let ops = find(&corpus, &DreamOptions::default());
        assert_eq!(ops.len(), 1, "{ops:#?}");
        assert_eq!(
            ops[0].content.as_deref(),
            Some("When `npm test` fails with `npm ERR! missing script: test<n>`, run `npm run test:unit` instead (e.g. `npm run test:unit`).")
        );
    }

    #[test]
    fn a_retry_after_code_edits_is_no_lesson() {
        let s = |id: &str| {
            SessionBuilder::new(id, "coder")
                .bash(
                    "cargo build",
                    "error[E0308]: mismatched types\n --> src/a.rs:3:5",
                    true,
                )
                .tool(
                    "files",
                    serde_json::json!({"op": "edit", "path": "src/a.rs"}),
                    "ok",
                    false,
                )
                .bash("cargo build", "Finished", false)
                .outcome(Outcome::Succeeded, "")
        };
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![s("a"), s("b")],
        };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());
    }

    #[test]
    fn error_without_fix_gives_nothing() {
        let s = |id: &str| {
            SessionBuilder::new(id, "coder")
                .bash(
                    "make deploy",
                    "make: *** No rule to make target 'deploy'.  Stop.\nexit code 2",
                    false,
                )
                .outcome(Outcome::Failed, "gave up")
        };
        let corpus = Corpus {
            memories: Vec::new(),
            sessions: vec![s("a"), s("b")],
        };
        assert!(find(&corpus, &DreamOptions::default()).is_empty());
    }
}
