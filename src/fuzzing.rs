//! The checks the fuzz targets (`fuzz/fuzz_targets/*.rs`) and the corpus
//! regression test (`tests/fuzz_regressions.rs`) run on one input. They live
//! here so both run exactly the same code.
//!
//! Each check feeds arbitrary bytes to one of the parsers that read
//! untrusted input and returns `Err` with what broke when an invariant does
//! not hold; a panic inside the parser is a failure too.

use crate::dream::ingest::{read_transcript_bounded, MAX_LINE_BYTES};
use crate::dream::{Event, IngestReport, LineRef, Session};
use crate::memory::entry::{entry_id, parse, Block};
use crate::memory::patch::{parse_patch, spec_hash, validate_spec};

/// The fuzz targets, by the name of their corpus directory.
pub const TARGETS: &[&str] = &["transcript_line", "memory_entries", "patch"];

/// Runs the check of `target` (one of [`TARGETS`]) on `data`.
pub fn check(target: &str, data: &[u8]) -> Result<(), String> {
    match target {
        "transcript_line" => check_transcript(data),
        "memory_entries" => check_memory_entries(data),
        "patch" => check_patch(data),
        other => Err(format!("unknown fuzz target {other:?}")),
    }
}

/// The line bound the transcript check also reads with, small so that
/// fuzz inputs reach the too-long path.
const SMALL_LINE_BOUND: usize = 64;

/// Transcript reader: counts agree with the lines of the input, every
/// reference points at a real line, reading in tiny chunks gives the same
/// result as reading at once, and a small line bound counts long lines as
/// bad without changing how many lines were seen.
pub fn check_transcript(data: &[u8]) -> Result<(), String> {
    let stem = "fuzz";
    let (session, report) = read_both(stem, data, MAX_LINE_BYTES)?;
    let lines = split_lines(data);
    let nonblank = lines.iter().filter(|l| !is_blank(l)).count() as u64;
    if report.lines != nonblank {
        return Err(format!(
            "report.lines = {}, the input has {nonblank} non-blank lines",
            report.lines
        ));
    }
    check_report(&report, stem)?;
    if let Some(s) = &session {
        check_session(s, stem, lines.len() as u64)?;
    }
    let (small_session, small) = read_both(stem, data, SMALL_LINE_BOUND)?;
    let long = lines
        .iter()
        .filter(|l| strip_terminator(l).len() > SMALL_LINE_BOUND)
        .count() as u64;
    let expected = lines
        .iter()
        .filter(|l| strip_terminator(l).len() > SMALL_LINE_BOUND || !is_blank(l))
        .count() as u64;
    if small.lines != expected {
        return Err(format!(
            "with a {SMALL_LINE_BOUND}-byte bound, report.lines = {}, expected {expected}",
            small.lines
        ));
    }
    if small.bad_json < long {
        return Err(format!(
            "{long} lines exceed the {SMALL_LINE_BOUND}-byte bound but only {} were counted bad",
            small.bad_json
        ));
    }
    check_report(&small, stem)?;
    if let Some(s) = &small_session {
        check_session(s, stem, lines.len() as u64)?;
    }
    Ok(())
}

/// Reads `data` whole and through a 7-byte buffer (which splits every line
/// across many reads) with line bound `bound`; chunk boundaries must not
/// matter, so the two results must be equal.
fn read_both(
    stem: &str,
    data: &[u8],
    bound: usize,
) -> Result<(Option<Session>, IngestReport), String> {
    let whole = read_transcript_bounded(stem, data, bound)
        .map_err(|e| format!("io error (bound {bound}): {e}"))?;
    let chunked = read_transcript_bounded(stem, std::io::BufReader::with_capacity(7, data), bound)
        .map_err(|e| format!("io error (bound {bound}, chunked): {e}"))?;
    if chunked != whole {
        return Err(format!(
            "with a {bound}-byte line bound, reading in 7-byte chunks gave a different result"
        ));
    }
    Ok(whole)
}

/// The input's lines as the reader sees them: split after each `\n`.
fn split_lines(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

fn strip_terminator(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn is_blank(l: &[u8]) -> bool {
    l.iter().all(u8::is_ascii_whitespace)
}

fn check_report(r: &IngestReport, stem: &str) -> Result<(), String> {
    if r.bad_json + r.bad_utf8 + r.unknown_shape > r.lines {
        return Err(format!("more bad lines than lines: {r:?}"));
    }
    if r.samples.len() > 10 {
        return Err(format!("{} samples kept, at most 10", r.samples.len()));
    }
    let prefix = format!("{stem}.jsonl:");
    if let Some(s) = r.samples.iter().find(|s| !s.starts_with(&prefix)) {
        return Err(format!("sample {s:?} does not name the file"));
    }
    Ok(())
}

fn check_session(s: &Session, stem: &str, lines: u64) -> Result<(), String> {
    if s.id != stem {
        return Err(format!("session id {:?}, expected the stem {stem:?}", s.id));
    }
    let check_ref = |at: &LineRef| -> Result<(), String> {
        if at.session != stem || at.line == 0 || at.line > lines {
            return Err(format!("reference {at:?} outside the {lines} lines"));
        }
        Ok(())
    };
    let mut last = 0;
    for e in &s.events {
        let at = match e {
            Event::UserText { at, .. } | Event::AssistantText { at, .. } => at,
            Event::Tool(call) => {
                if let Some(r) = &call.result_at {
                    check_ref(r)?;
                    if r.line < call.at.line {
                        return Err(format!("tool result at {r:?} before its call"));
                    }
                }
                &call.at
            }
        };
        check_ref(at)?;
        if at.line < last {
            return Err(format!("events out of line order at {at:?}"));
        }
        last = at.line;
    }
    if let Some(at) = &s.outcome_at {
        check_ref(at)?;
    }
    Ok(())
}

/// Markdown entry parser: rendering the parsed file gives back the input
/// byte for byte, every entry's id is the hash of its text, its text is
/// trimmed, and its span and line point at where it is in the input.
pub fn check_memory_entries(data: &[u8]) -> Result<(), String> {
    // Memory files that are not UTF-8 are read lossily by the dream engine.
    let text = String::from_utf8_lossy(data);
    let file = parse(&text);
    let rendered = file.render();
    if rendered != text {
        return Err(format!(
            "render differs from the input ({} vs {} bytes)",
            rendered.len(),
            text.len()
        ));
    }
    let mut prev_raw = false;
    for b in &file.blocks {
        match b {
            Block::Raw(r) => {
                if r.is_empty() {
                    return Err("an empty raw block".into());
                }
                if prev_raw {
                    return Err("two raw blocks in a row".into());
                }
                prev_raw = true;
            }
            Block::Entry { entry, raw } => {
                prev_raw = false;
                if entry.id != entry_id(&entry.text) || entry.id.len() != 12 {
                    return Err(format!(
                        "entry {:?}: id {} is not its hash",
                        entry.text, entry.id
                    ));
                }
                if entry.text != entry.text.trim() {
                    return Err(format!("entry text {:?} is not trimmed", entry.text));
                }
                let Some(in_file) = text.get(entry.span.clone()) else {
                    return Err(format!("span {:?} is not within the input", entry.span));
                };
                if in_file != raw.trim_end_matches(['\r', '\n']) {
                    return Err(format!(
                        "span {:?} does not hold the entry's raw text",
                        entry.span
                    ));
                }
                let line = text[..entry.span.start].matches('\n').count() + 1;
                if entry.line != line {
                    return Err(format!("entry at line {line} says line {}", entry.line));
                }
            }
        }
    }
    // Parsing the same text twice is deterministic.
    if parse(&text) != file {
        return Err("two parses of the same text differ".into());
    }
    Ok(())
}

/// Patch parser and validator: a patch that parses also validates, and it
/// survives a round trip through JSON and through YAML with the same spec
/// and spec hash; an error has a message.
pub fn check_patch(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let patch = match parse_patch(text, "fuzz") {
        Ok(p) => p,
        Err(e) => {
            return if e.to_string().trim().is_empty() {
                Err("an error without a message".into())
            } else {
                Ok(())
            };
        }
    };
    validate_spec(&patch.spec).map_err(|e| format!("parsed but does not validate: {e}"))?;
    let hash = spec_hash(&patch.spec);
    let json = serde_json::to_string(&patch).map_err(|e| format!("to JSON: {e}"))?;
    let yaml = serde_yaml::to_string(&patch).map_err(|e| format!("to YAML: {e}"))?;
    for (form, again) in [("JSON", json), ("YAML", yaml)] {
        let back = parse_patch(&again, "other")
            .map_err(|e| format!("the {form} form does not parse back: {e}\n{again}"))?;
        if back.spec != patch.spec || spec_hash(&back.spec) != hash {
            return Err(format!(
                "the {form} form parses to a different spec\n{again}"
            ));
        }
        if back.metadata.name != patch.metadata.name {
            return Err(format!("the {form} form lost the name"));
        }
    }
    Ok(())
}
