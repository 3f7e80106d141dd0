//! Markdown memory files as sequences of entries (DESIGN §3).
//!
//! A file is split into blocks that together reproduce it byte for byte:
//! headings (which name the section of the entries below them), blank
//! runs, and entries (a top-level list item with its continuation lines, or
//! a paragraph). Rewriting a file only re-renders the entries that changed,
//! so untouched entries stay byte-identical.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Opening of the optional trailing metadata comment of an entry.
pub const META_OPEN: &str = "<!-- reverie:";
const META_CLOSE: &str = "-->";

/// The id of an entry: the first 12 hex digits of the SHA-256 of its text
/// (list marker, metadata comment and surrounding whitespace removed).
pub fn entry_id(text: &str) -> String {
    let digest = Sha256::digest(text.trim().as_bytes());
    hex::encode(&digest[..6])
}

/// Optional metadata kept in a trailing `<!-- reverie: {...} -->` comment.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EntryMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits: Option<u64>,
    /// Anything else a writer put there is kept.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// How an entry is written in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStyle {
    /// A top-level list item; the marker (`-`, `*`, `+`, `1.` …) is kept.
    ListItem,
    /// A paragraph.
    Paragraph,
}

/// One memory entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// 12 hex digits, see [`entry_id`].
    pub id: String,
    /// The entry's text: marker, indentation of continuation lines, metadata
    /// comment and surrounding whitespace removed.
    pub text: String,
    /// The nearest heading above the entry (its text without `#`s), if any.
    pub section: Option<String>,
    pub style: EntryStyle,
    /// The list marker as written (`-`, `*`, `1.` …); empty for paragraphs.
    pub marker: String,
    /// Parsed metadata comment, if present and valid JSON.
    pub meta: Option<EntryMeta>,
    /// The raw metadata comment, if present (kept even when not valid JSON).
    pub meta_raw: Option<String>,
    /// Byte range of the entry in the file (without the trailing newline).
    pub span: std::ops::Range<usize>,
    /// 1-based line of the entry's first line.
    pub line: usize,
}

/// A piece of a file.
// Most blocks of a memory file are entries, so boxing the large variant
// would add an allocation to nearly every block for no saving.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    /// Text that is not an entry (headings, blank lines, fences' closing …),
    /// reproduced verbatim.
    Raw(String),
    /// An entry; `raw` is its exact text in the file including the trailing newline if any.
    Entry { entry: Entry, raw: String },
}

/// A parsed memory file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct MemoryFile {
    pub blocks: Vec<Block>,
}

impl MemoryFile {
    /// The entries in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.blocks.iter().filter_map(|b| match b {
            Block::Entry { entry, .. } => Some(entry),
            Block::Raw(_) => None,
        })
    }

    /// The file's text: every block concatenated.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for b in &self.blocks {
            match b {
                Block::Raw(s) => out.push_str(s),
                Block::Entry { raw, .. } => out.push_str(raw),
            }
        }
        out
    }
}

/// The text of an ATX heading line (`## Deploys` → `Deploys`), or `None` when
/// the line is not a heading. Patch apply uses it to find sections.
pub fn is_heading(line: &str) -> Option<String> {
    let t = line.trim_start();
    if line.len() - t.len() > 3 || !t.starts_with('#') {
        return None;
    }
    let hashes = t.bytes().take_while(|&b| b == b'#').count();
    if hashes > 6 {
        return None;
    }
    let rest = &t[hashes..];
    if !rest.is_empty() && !rest.starts_with(' ') && !rest.starts_with('\t') {
        return None;
    }
    Some(rest.trim().trim_end_matches('#').trim().to_string())
}

/// The list marker at the start of a top-level line, and the byte length of
/// marker plus the whitespace after it.
fn list_marker(line: &str) -> Option<(&str, usize)> {
    let b = line.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mlen = if matches!(b[0], b'-' | b'*' | b'+') {
        1
    } else {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 || !matches!(b.get(digits), Some(b'.') | Some(b')')) {
            return None;
        }
        digits + 1
    };
    match b.get(mlen) {
        None => Some((&line[..mlen], mlen)),
        Some(b' ') | Some(b'\t') => {
            let ws = b[mlen..]
                .iter()
                .take_while(|c| **c == b' ' || **c == b'\t')
                .count();
            Some((&line[..mlen], mlen + ws))
        }
        _ => None,
    }
}

fn is_fence(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("```") || t.starts_with("~~~")
}

fn is_thematic_break(line: &str) -> bool {
    let t: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    t.len() >= 3
        && (t.chars().all(|c| c == '-')
            || t.chars().all(|c| c == '*')
            || t.chars().all(|c| c == '_'))
}

/// Splits a trailing metadata comment off an entry body.
fn split_meta(body: &str) -> (&str, Option<&str>) {
    let trimmed = body.trim_end();
    if trimmed.ends_with(META_CLOSE) {
        if let Some(pos) = trimmed.rfind(META_OPEN) {
            return (&body[..pos], Some(&trimmed[pos..]));
        }
    }
    (body, None)
}

fn parse_meta(raw: &str) -> Option<EntryMeta> {
    let inner = raw.strip_prefix(META_OPEN)?.strip_suffix(META_CLOSE)?;
    serde_json::from_str(inner.trim()).ok()
}

/// Normalises entry text from its raw lines: marker removed, continuation
/// indentation removed, trailing whitespace of each line and of the whole removed.
fn normalise(lines: &[&str], content_offset: usize) -> String {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let l = l.trim_end_matches(['\r', '\n']);
        if i == 0 {
            out.push(l.get(content_offset..).unwrap_or("").trim_end());
        } else {
            out.push(l.trim());
        }
    }
    out.join("\n").trim().to_string()
}

/// Parses a Markdown memory file. Never fails: any text is a valid file.
pub fn parse(text: &str) -> MemoryFile {
    // A byte-order mark (some editors write one) is kept as raw text, so a
    // first-line heading is still a heading and no entry starts with it.
    let bom = if text.starts_with('\u{FEFF}') {
        "\u{FEFF}"
    } else {
        ""
    };
    // Lines with their terminators, and byte offsets.
    let mut lines: Vec<(usize, &str)> = Vec::new();
    let mut off = bom.len();
    for l in text[bom.len()..].split_inclusive('\n') {
        lines.push((off, l));
        off += l.len();
    }
    let mut blocks = Vec::new();
    let mut section: Option<String> = None;
    let mut raw = String::from(bom);
    let mut i = 0;
    let flush_raw = |raw: &mut String, blocks: &mut Vec<Block>| {
        if !raw.is_empty() {
            blocks.push(Block::Raw(std::mem::take(raw)));
        }
    };
    while i < lines.len() {
        let (start, line) = lines[i];
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.trim().is_empty()
            || is_thematic_break(bare)
                && list_marker(bare).is_none_or(|_| bare.trim().len() >= 3 && !bare.contains(' '))
        {
            raw.push_str(line);
            i += 1;
            continue;
        }
        if let Some(h) = is_heading(bare) {
            section = Some(h);
            raw.push_str(line);
            i += 1;
            continue;
        }
        if bare.trim_start().starts_with("<!--") && !bare.contains(META_OPEN) {
            // A standalone HTML comment is not an entry.
            raw.push_str(line);
            i += 1;
            while i < lines.len() && !lines[i - 1].1.contains("-->") {
                raw.push_str(lines[i].1);
                i += 1;
            }
            continue;
        }
        // An entry starts here.
        let first = i;
        let marker = list_marker(bare);
        // A fence may open right after the list marker (`- ```sh`).
        let mut in_fence = is_fence(bare)
            || marker.is_some_and(|(_, len)| is_fence(bare.get(len..).unwrap_or("")));
        i += 1;
        while i < lines.len() {
            let l = lines[i].1.trim_end_matches(['\r', '\n']);
            if in_fence {
                if is_fence(l) {
                    in_fence = false;
                }
                i += 1;
                continue;
            }
            if l.trim().is_empty() {
                // A list item continues over a blank line only when the next
                // non-blank line is indented (a loose continuation paragraph).
                if marker.is_some() {
                    let mut j = i;
                    while j < lines.len() && lines[j].1.trim().is_empty() {
                        j += 1;
                    }
                    if j < lines.len() && lines[j].1.starts_with([' ', '\t']) {
                        i = j;
                        continue;
                    }
                }
                break;
            }
            if is_heading(l).is_some() || list_marker(l).is_some() || is_thematic_break(l) {
                break;
            }
            if is_fence(l) {
                in_fence = true;
            }
            i += 1;
        }
        let end_with_nl = lines[i - 1].0 + lines[i - 1].1.len();
        let raw_text = &text[start..end_with_nl];
        let end = start + raw_text.trim_end_matches(['\r', '\n']).len();
        let body_lines: Vec<&str> = lines[first..i].iter().map(|(_, l)| *l).collect();
        let joined: String = body_lines.concat();
        let (body, meta_raw) = split_meta(&joined);
        let body_lines: Vec<&str> = body.split_inclusive('\n').collect();
        let (style, marker_s, offset) = match marker {
            Some((m, len)) => (EntryStyle::ListItem, m.to_string(), len),
            None => (EntryStyle::Paragraph, String::new(), 0),
        };
        let text_norm = normalise(&body_lines, offset);
        flush_raw(&mut raw, &mut blocks);
        let entry = Entry {
            id: entry_id(&text_norm),
            text: text_norm,
            section: section.clone(),
            style,
            marker: marker_s,
            meta: meta_raw.and_then(parse_meta),
            meta_raw: meta_raw.map(str::to_string),
            span: start..end,
            line: first + 1,
        };
        blocks.push(Block::Entry {
            entry,
            raw: raw_text.to_string(),
        });
    }
    flush_raw(&mut raw, &mut blocks);
    MemoryFile { blocks }
}

/// Renders an entry's text as it is written in a file (without a trailing newline).
pub fn render_entry(text: &str, style: EntryStyle, marker: &str, meta_raw: Option<&str>) -> String {
    let text = text.trim();
    let mut out = String::new();
    match style {
        EntryStyle::ListItem => {
            let marker = if marker.is_empty() { "-" } else { marker };
            let indent = " ".repeat(marker.len() + 1);
            for (i, l) in text.lines().enumerate() {
                if i == 0 {
                    out.push_str(marker);
                    out.push(' ');
                    out.push_str(l);
                } else {
                    out.push('\n');
                    if !l.is_empty() {
                        out.push_str(&indent);
                        out.push_str(l);
                    }
                }
            }
        }
        EntryStyle::Paragraph => out.push_str(text),
    }
    if let Some(m) = meta_raw {
        out.push(' ');
        out.push_str(m);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_ignores_marker_and_whitespace() {
        let f = parse("- Use UTC.\n");
        let e = f.entries().next().unwrap();
        assert_eq!(e.text, "Use UTC.");
        assert_eq!(e.id, entry_id("Use UTC."));
        assert_eq!(e.id.len(), 12);
    }

    #[test]
    fn round_trip_is_byte_identical() {
        let src = "# Deploys\n\n- Use UTC.\n- Port is 8080\n  behind the proxy.\n\nA paragraph\nover two lines. <!-- reverie: {\"hits\":3} -->\n\n## Other\n1. first\n2) second\n\n```\ncode\n\nblock\n```\n";
        let f = parse(src);
        assert_eq!(f.render(), src);
        let ids: Vec<_> = f.entries().map(|e| e.text.clone()).collect();
        assert_eq!(
            ids,
            vec![
                "Use UTC.",
                "Port is 8080\nbehind the proxy.",
                "A paragraph\nover two lines.",
                "first",
                "second",
                "```\ncode\n\nblock\n```"
            ]
        );
        let p = f.entries().nth(2).unwrap();
        assert_eq!(p.meta.as_ref().and_then(|m| m.hits), Some(3));
        assert_eq!(p.section.as_deref(), Some("Deploys"));
        assert_eq!(
            f.entries().nth(3).unwrap().section.as_deref(),
            Some("Other")
        );
    }

    #[test]
    fn byte_order_mark_is_raw_text() {
        let src = "\u{FEFF}# Odd\r\n\r\n- one\r\n";
        let f = parse(src);
        assert_eq!(f.render(), src);
        let e: Vec<_> = f.entries().collect();
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].text.as_str(), e[0].section.as_deref()),
            ("one", Some("Odd"))
        );
        assert_eq!(&src[e[0].span.clone()], "- one");
        let f = parse("\u{FEFF}- first");
        assert_eq!(f.entries().next().map(|e| e.text.as_str()), Some("first"));
    }

    #[test]
    fn fence_after_list_marker() {
        let f = parse("- ```\n  code\n  ```\n- next\n");
        let texts: Vec<_> = f.entries().map(|e| e.text.clone()).collect();
        assert_eq!(texts, vec!["```\ncode\n```", "next"]);
    }

    #[test]
    fn render_entry_round_trips_through_parse() {
        let r = render_entry(
            "Port is 8080\nbehind the proxy.",
            EntryStyle::ListItem,
            "-",
            None,
        );
        let f = parse(&format!("{r}\n"));
        assert_eq!(
            f.entries().next().unwrap().text,
            "Port is 8080\nbehind the proxy."
        );
    }
}
