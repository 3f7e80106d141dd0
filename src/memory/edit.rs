//! Computing what a patch does to the memory files, in memory, without
//! writing anything (DESIGN §4).
//!
//! Each touched file is held as a linked list of its blocks (raw text is
//! split into lines, entries stay whole) with a per-section insertion
//! point and an id index, so an add, a removal or an in-place update costs
//! O(1) and a 100k-op patch stays linear. Untouched blocks are rendered
//! from their original bytes, so untouched entries and files stay
//! byte-identical.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::entry::{is_heading, parse, render_entry, Block, Entry, EntryStyle, META_OPEN};
use super::layout::{check_memory_path, resolve_no_symlinks, PathError};
use super::patch::{check_content, kind_name, normalise_content, split_ref, SENTINEL};
use super::store::{read_optional, Store, StoreError};
use crate::api::memorypatch::{MemoryPatchSpec, OpKind, PatchOp};

/// Why a patch cannot be applied to this store.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A precondition failed: an entry is gone or its text is not `before`.
    #[error("spec.ops[{index}] ({kind}) {path}#{id}: {message}", kind = kind_name(*kind))]
    Conflict {
        index: usize,
        kind: OpKind,
        path: String,
        id: String,
        message: String,
    },
    /// The op is invalid against this store (a path through a symbolic
    /// link, a path that is a directory, content that does not fit the
    /// entry's style).
    #[error("spec.ops[{index}] ({kind}) {path}: {message}", kind = kind_name(*kind))]
    Invalid {
        index: usize,
        kind: OpKind,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The before and after text of one file (`None`: the file does not exist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEdit {
    pub before: Option<String>,
    pub after: Option<String>,
}

/// What applying a patch would do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Files whose bytes change, by path relative to `memories/`.
    pub files: BTreeMap<String, FileEdit>,
    /// Ops that undo the patch, in the order to apply them.
    pub inverse_ops: Vec<PatchOp>,
    /// Ops that changed nothing (an add of an entry already in its file).
    pub noops: usize,
}

struct Node {
    raw: String,
    /// Set for entries; raw lines have none.
    entry: Option<Entry>,
    /// The section the node is in (for entries: where a move takes it by default).
    section: Option<String>,
    blank: bool,
    alive: bool,
    /// The following node in file order.
    next: Option<usize>,
}

/// One file being edited.
struct Doc {
    before: Option<String>,
    /// Node 0 is an empty sentinel so every insertion is "after a node".
    nodes: Vec<Node>,
    last: usize,
    /// Section name → node after which the next add to it goes (the
    /// first section of that name).
    sections: HashMap<String, usize>,
    /// Entry id → nodes holding it, in file order then insertion order.
    ids: HashMap<String, Vec<usize>>,
    changed: bool,
    /// Line ending of new lines: `\r\n` when the file already uses it.
    eol: &'static str,
}

impl Doc {
    fn new(before: Option<String>) -> Doc {
        let text = before.clone().unwrap_or_default();
        let mut doc = Doc {
            before,
            nodes: vec![Node {
                raw: String::new(),
                entry: None,
                section: None,
                blank: false,
                alive: true,
                next: None,
            }],
            last: 0,
            sections: HashMap::new(),
            ids: HashMap::new(),
            changed: false,
            eol: if text.contains("\r\n") { "\r\n" } else { "\n" },
        };
        let mut section: Option<String> = None;
        // Whether the current heading is the first of its name: only that
        // section's entries move its insertion point.
        let mut first_of_name = false;
        let mut in_comment = false;
        for block in parse(&text).blocks {
            match block {
                Block::Raw(s) => {
                    for line in s.split_inclusive('\n') {
                        let bare = line.trim_end_matches(['\r', '\n']);
                        // Mirror the parser: lines inside a standalone HTML
                        // comment are never headings.
                        let opens_comment =
                            bare.trim_start().starts_with("<!--") && !bare.contains(META_OPEN);
                        let heading = if in_comment || opens_comment {
                            in_comment = !bare.contains("-->");
                            None
                        } else {
                            is_heading(bare)
                        };
                        let n = doc.push_end(line.to_string(), None, section.clone());
                        if let Some(h) = heading {
                            first_of_name = !doc.sections.contains_key(&h);
                            if first_of_name {
                                doc.sections.insert(h.clone(), n);
                            }
                            section = Some(h);
                        }
                    }
                }
                Block::Entry { entry, raw } => {
                    let n = doc.push_end(raw, Some(entry), section.clone());
                    if let (Some(s), true) = (&section, first_of_name) {
                        doc.sections.insert(s.clone(), n);
                    }
                }
            }
        }
        doc
    }

    /// Appends a node at the end of the list.
    fn push_end(&mut self, raw: String, entry: Option<Entry>, section: Option<String>) -> usize {
        let at = self.last;
        self.insert_after(at, raw, entry, section)
    }

    fn insert_after(
        &mut self,
        at: usize,
        raw: String,
        entry: Option<Entry>,
        section: Option<String>,
    ) -> usize {
        let n = self.nodes.len();
        let blank = entry.is_none() && raw.trim().is_empty();
        if let Some(e) = &entry {
            self.ids.entry(e.id.clone()).or_default().push(n);
        }
        self.nodes.push(Node {
            raw,
            entry,
            section,
            blank,
            alive: true,
            next: self.nodes[at].next,
        });
        self.nodes[at].next = Some(n);
        if self.last == at {
            self.last = n;
        }
        n
    }

    /// The first live node holding entry `id`.
    fn find(&self, id: &str) -> Option<usize> {
        self.ids.get(id)?.iter().copied().find(|&n| {
            self.nodes[n].alive && self.nodes[n].entry.as_ref().is_some_and(|e| e.id == id)
        })
    }

    fn entry(&self, n: usize) -> &Entry {
        // Only called with nodes returned by `find`, which hold entries.
        self.nodes[n]
            .entry
            .as_ref()
            .unwrap_or_else(|| unreachable!("node {n} holds no entry"))
    }

    fn remove(&mut self, n: usize) {
        self.nodes[n].alive = false;
        self.changed = true;
    }

    /// Replaces an entry's text in place, keeping its marker, style,
    /// metadata comment and line ending. Returns the new entry, or why the
    /// content does not fit there.
    fn update(&mut self, n: usize, content: &str) -> Result<Entry, String> {
        let node = &self.nodes[n];
        let old = self.entry(n).clone();
        let body_len = old.span.end - old.span.start;
        let ending = node.raw.get(body_len..).unwrap_or("\n").to_string();
        let rendered = render_entry(content, old.style, &old.marker, old.meta_raw.as_deref());
        let raw = format!("{}{ending}", rendered.replace('\n', self.eol));
        let entry = single_entry(&raw, content)?;
        self.ids.entry(entry.id.clone()).or_default().push(n);
        let node = &mut self.nodes[n];
        node.raw = raw;
        node.entry = Some(entry.clone());
        self.changed = true;
        Ok(entry)
    }

    /// Adds a list item at the end of `section` (created at the end of the
    /// file when missing) or, with no section, at the end of the file.
    /// Returns the entry, or `None` when an entry with that id is already
    /// in the file.
    fn add(
        &mut self,
        content: &str,
        section: Option<&str>,
        marker: &str,
        meta_raw: Option<&str>,
    ) -> Result<Option<Entry>, String> {
        let eol = self.eol;
        let raw = format!(
            "{}{eol}",
            render_entry(content, EntryStyle::ListItem, marker, meta_raw).replace('\n', eol)
        );
        let entry = single_entry(&raw, content)?;
        if self.find(&entry.id).is_some() {
            return Ok(None);
        }
        let at = match section {
            None => self.last,
            Some(s) => match self.sections.get(s) {
                Some(&t) => t,
                None => {
                    if self.last != 0 && !self.nodes[self.last].blank {
                        self.push_end(eol.into(), None, None);
                    }
                    self.push_end(format!("## {s}{eol}"), None, Some(s.to_string()));
                    self.push_end(eol.into(), None, Some(s.to_string()))
                }
            },
        };
        let n = self.insert_after(at, raw, Some(entry.clone()), section.map(str::to_string));
        if let Some(s) = section {
            self.sections.insert(s.to_string(), n);
        }
        self.changed = true;
        Ok(Some(entry))
    }

    /// The file's new text. Blank lines next to a removed entry are dropped
    /// when they would follow another blank line (or start the file), so a
    /// delete never leaves a run of blank lines behind; everything else is
    /// emitted as it was.
    fn render(&self) -> String {
        let mut out = String::with_capacity(self.before.as_ref().map_or(0, String::len));
        let mut removed_since_text = false;
        let mut last_blank = true;
        let mut cur = self.nodes[0].next;
        while let Some(n) = cur {
            let node = &self.nodes[n];
            cur = node.next;
            if !node.alive {
                removed_since_text = true;
                continue;
            }
            if node.blank && removed_since_text && last_blank {
                continue;
            }
            if !out.is_empty() && !out.ends_with('\n') {
                // The old last line had no newline and something now follows it.
                out.push_str(self.eol);
            }
            out.push_str(&node.raw);
            last_blank = node.blank;
            if !node.blank {
                removed_since_text = false;
            }
        }
        out
    }
}

/// Parses a rendered entry back and checks it is one entry holding `content`.
/// A sentinel item after it must stay a separate entry, so the new text
/// cannot swallow what follows it in the file.
fn single_entry(raw: &str, content: &str) -> Result<Entry, String> {
    let sep = if raw.ends_with('\n') { "" } else { "\n" };
    let file = parse(&format!("{raw}{sep}{SENTINEL}"));
    let entries: Vec<&Entry> = file.entries().collect();
    match entries.as_slice() {
        [one, sentinel]
            if one.text == normalise_content(content)
                && format!("- {}\n", sentinel.text) == SENTINEL =>
        {
            Ok((*one).clone())
        }
        _ => Err(
            "content cannot be written as one entry in this place (it would split or change)"
                .into(),
        ),
    }
}

/// Normalises `before` the way entry text is normalised.
fn normalise_before(before: &str) -> String {
    normalise_content(before)
}

/// Computes the effect of `spec` on the store, checking every
/// precondition. Nothing is written. The spec must already be valid
/// ([`super::patch::validate_spec`]).
pub fn plan(store: &Store, spec: &MemoryPatchSpec) -> Result<Plan, EditError> {
    let mut ed = Editor {
        store,
        docs: BTreeMap::new(),
        inverse: Vec::new(),
        noops: 0,
    };
    for (index, op) in spec.ops.iter().enumerate() {
        ed.apply_op(index, op)?;
    }
    let mut files = BTreeMap::new();
    for (path, doc) in ed.docs {
        if !doc.changed {
            continue;
        }
        let after = doc.render();
        if doc.before.as_deref() == Some(after.as_str()) {
            continue;
        }
        files.insert(
            path,
            FileEdit {
                before: doc.before,
                after: Some(after),
            },
        );
    }
    ed.inverse.reverse();
    Ok(Plan {
        files,
        inverse_ops: ed.inverse,
        noops: ed.noops,
    })
}

struct Editor<'a> {
    store: &'a Store,
    docs: BTreeMap<String, Doc>,
    inverse: Vec<PatchOp>,
    noops: usize,
}

impl Editor<'_> {
    /// Loads a file into the edit set (once), refusing paths through
    /// symbolic links and paths that are not regular files.
    fn doc(&mut self, index: usize, kind: OpKind, path: &str) -> Result<&mut Doc, EditError> {
        use std::collections::btree_map::Entry as Slot;
        let store = self.store;
        match self.docs.entry(path.to_string()) {
            Slot::Occupied(o) => Ok(o.into_mut()),
            Slot::Vacant(v) => {
                let invalid = |message: String| EditError::Invalid {
                    index,
                    kind,
                    path: path.to_string(),
                    message,
                };
                let full = resolve_no_symlinks(&store.memories_dir(), path)
                    .map_err(|e: PathError| invalid(e.to_string()))?;
                if full.exists() && !full.is_file() {
                    return Err(invalid("is not a regular file".into()));
                }
                let before = read_optional(Path::new(&full))?;
                Ok(v.insert(Doc::new(before)))
            }
        }
    }

    /// Finds entry `id` in `path` and checks `before` (when given) against it.
    fn locate(
        &mut self,
        index: usize,
        op: &PatchOp,
        path: &str,
        id: &str,
    ) -> Result<(usize, Entry), EditError> {
        let conflict = |message: &str| EditError::Conflict {
            index,
            kind: op.op,
            path: path.to_string(),
            id: id.to_string(),
            message: message.to_string(),
        };
        let doc = self.doc(index, op.op, path)?;
        if doc.before.is_none() && !doc.changed {
            return Err(conflict("file does not exist"));
        }
        let n = doc
            .find(id)
            .ok_or_else(|| conflict("entry not found (it was changed or removed)"))?;
        Ok((n, doc.entry(n).clone()))
    }

    fn check_before(
        &self,
        index: usize,
        op: &PatchOp,
        path: &str,
        id: &str,
        actual: &str,
    ) -> Result<(), EditError> {
        if let Some(b) = &op.before {
            if normalise_before(b) != actual {
                return Err(EditError::Conflict {
                    index,
                    kind: op.op,
                    path: path.to_string(),
                    id: id.to_string(),
                    message: "entry text differs from `before`".into(),
                });
            }
        }
        Ok(())
    }

    fn apply_op(&mut self, index: usize, op: &PatchOp) -> Result<(), EditError> {
        let path = check_memory_path(&op.path).map_err(|e| EditError::Invalid {
            index,
            kind: op.op,
            path: op.path.clone(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| EditError::Invalid {
            index,
            kind: op.op,
            path: path.clone(),
            message,
        };
        let inverse = |kind: OpKind, path: &str| PatchOp {
            op: kind,
            path: path.to_string(),
            section: None,
            id: None,
            ids: None,
            content: None,
            to: None,
            before: None,
            reason: op.reason,
            superseded_by: None,
            evidence: Vec::new(),
        };
        let content = op.content.as_deref().unwrap_or("");
        match op.op {
            OpKind::Add => {
                check_content(content).map_err(invalid)?;
                let doc = self.doc(index, op.op, &path)?;
                match doc
                    .add(content, op.section.as_deref(), "-", None)
                    .map_err(invalid)?
                {
                    None => self.noops += 1,
                    Some(e) => self.inverse.push(PatchOp {
                        id: Some(e.id),
                        before: Some(e.text),
                        ..inverse(OpKind::Delete, &path)
                    }),
                }
            }
            OpKind::Update => {
                let id = op.id.clone().unwrap_or_default();
                let (n, old) = self.locate(index, op, &path, &id)?;
                self.check_before(index, op, &path, &id, &old.text)?;
                let doc = self.doc(index, op.op, &path)?;
                let new = doc.update(n, content).map_err(invalid)?;
                self.inverse.push(PatchOp {
                    id: Some(new.id),
                    before: Some(new.text),
                    content: Some(old.text),
                    ..inverse(OpKind::Update, &path)
                });
            }
            OpKind::Merge => {
                let refs = op.ids.clone().unwrap_or_default();
                let mut found = Vec::with_capacity(refs.len());
                for r in &refs {
                    let (p, id) = split_ref(r, &path).map_err(invalid)?;
                    let (n, e) = self.locate(index, op, &p, &id)?;
                    found.push((p, id, n, e));
                }
                if let Some(b) = &op.before {
                    let joined: Vec<&str> = found.iter().map(|f| f.3.text.as_str()).collect();
                    let (p, id) = (&found[0].0, &found[0].1);
                    if normalise_before(b) != normalise_before(&joined.join("\n\n")) {
                        return Err(EditError::Conflict {
                            index,
                            kind: op.op,
                            path: p.clone(),
                            id: id.clone(),
                            message: "merged entries' text differs from `before`".into(),
                        });
                    }
                }
                let mut undo = Vec::new();
                for (i, (p, _id, n, e)) in found.iter().enumerate() {
                    let doc = self.doc(index, op.op, p)?;
                    if i == 0 {
                        let new = doc.update(*n, content).map_err(invalid)?;
                        undo.push(PatchOp {
                            id: Some(new.id),
                            before: Some(new.text),
                            content: Some(e.text.clone()),
                            ..inverse(OpKind::Update, p)
                        });
                    } else {
                        let section = doc.nodes[*n].section.clone();
                        doc.remove(*n);
                        undo.push(PatchOp {
                            section,
                            content: Some(e.text.clone()),
                            ..inverse(OpKind::Add, p)
                        });
                    }
                }
                self.inverse.extend(undo);
            }
            OpKind::Delete => {
                let id = op.id.clone().unwrap_or_default();
                let (n, old) = self.locate(index, op, &path, &id)?;
                self.check_before(index, op, &path, &id, &old.text)?;
                let doc = self.doc(index, op.op, &path)?;
                let section = doc.nodes[n].section.clone();
                doc.remove(n);
                self.inverse.push(PatchOp {
                    section,
                    content: Some(old.text),
                    ..inverse(OpKind::Add, &path)
                });
            }
            OpKind::Move => {
                let id = op.id.clone().unwrap_or_default();
                let to = op.to.as_deref().unwrap_or("");
                let to = check_memory_path(to).map_err(|e| invalid(format!("to: {e}")))?;
                let (n, old) = self.locate(index, op, &path, &id)?;
                self.check_before(index, op, &path, &id, &old.text)?;
                let doc = self.doc(index, op.op, &path)?;
                let from_section = doc.nodes[n].section.clone();
                doc.remove(n);
                // Without `section` the entry keeps the section it had.
                let section = op.section.clone().or(from_section.clone());
                let marker = if matches!(old.marker.as_str(), "-" | "*" | "+") {
                    old.marker.clone()
                } else {
                    "-".to_string()
                };
                let target = self.doc(index, op.op, &to)?;
                target
                    .add(
                        &old.text,
                        section.as_deref(),
                        &marker,
                        old.meta_raw.as_deref(),
                    )
                    .map_err(invalid)?;
                self.inverse.push(PatchOp {
                    id: Some(old.id),
                    to: Some(path.clone()),
                    section: from_section,
                    ..inverse(OpKind::Move, &to)
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::entry::entry_id;

    fn render(src: &str, f: impl FnOnce(&mut Doc)) -> String {
        let mut d = Doc::new(Some(src.to_string()));
        f(&mut d);
        d.render()
    }

    #[test]
    fn untouched_renders_identically() {
        let src = "# T\n\n- a\n- b\n\nPara\nline <!-- reverie: {\"hits\":1} -->\n\n<!-- c\n# not\n-->\n## S\n1. x\n```\nc\n```\nlast";
        assert_eq!(render(src, |_| {}), src);
    }

    #[test]
    fn add_to_section_and_new_section() {
        let src = "# T\n\n## A\n- a\n\n## B\n- b\n";
        let out = render(src, |d| {
            d.add("new", Some("A"), "-", None).unwrap();
            d.add("new2", Some("A"), "-", None).unwrap();
            d.add("c", Some("C"), "-", None).unwrap();
            assert!(d.add("b", None, "-", None).unwrap().is_none());
        });
        assert_eq!(
            out,
            "# T\n\n## A\n- a\n- new\n- new2\n\n## B\n- b\n\n## C\n\n- c\n"
        );
        let out = render("no newline", |d| {
            d.add("x", None, "-", None).unwrap();
        });
        assert_eq!(out, "no newline\n- x\n");
        let out = render("", |d| {
            d.add("x", Some("S"), "-", None).unwrap();
        });
        assert_eq!(out, "## S\n\n- x\n");
    }

    #[test]
    fn update_keeps_style_and_meta() {
        let src = "* a <!-- reverie: {\"hits\":2} -->\n\nPara\n\n1. one\n";
        let out = render(src, |d| {
            let n = d.find(&entry_id("a")).unwrap();
            d.update(n, "A\nmore").unwrap();
            let n = d.find(&entry_id("one")).unwrap();
            d.update(n, "ONE").unwrap();
        });
        assert_eq!(
            out,
            "* A\n  more <!-- reverie: {\"hits\":2} -->\n\nPara\n\n1. ONE\n"
        );
        let mut d = Doc::new(Some("Para\n\n- after\n".into()));
        let n = d.find(&entry_id("Para")).unwrap();
        assert!(d.update(n, "x\n- y").is_err());
        // An unclosed fence in a paragraph would swallow the entries below.
        assert!(d.update(n, "```\nunclosed").is_err());
        assert!(d.update(n, "```\nclosed\n```").is_ok());
    }

    #[test]
    fn crlf_files_keep_crlf() {
        let out = render("# T\r\n\r\n- a\r\n", |d| {
            d.add("b\nmore", None, "-", None).unwrap();
            d.add("c", Some("New"), "-", None).unwrap();
            let n = d.find(&entry_id("a")).unwrap();
            d.update(n, "A").unwrap();
        });
        assert_eq!(
            out,
            "# T\r\n\r\n- A\r\n- b\r\n  more\r\n\r\n## New\r\n\r\n- c\r\n"
        );
    }

    #[test]
    fn sections_by_first_heading_and_not_inside_comments() {
        let src = "## A\n- a1\n\n<!-- note\n## B\n-->\n## A\n- a2\n";
        let out = render(src, |d| {
            d.add("x", Some("A"), "-", None).unwrap();
            d.add("y", Some("B"), "-", None).unwrap();
        });
        assert_eq!(
            out,
            "## A\n- a1\n- x\n\n<!-- note\n## B\n-->\n## A\n- a2\n\n## B\n\n- y\n"
        );
    }

    #[test]
    fn delete_tidies_blank_lines() {
        let src = "- a\n\nP1\n\nP2\n\n- b\n";
        let out = render(src, |d| {
            let n = d.find(&entry_id("P1")).unwrap();
            d.remove(n);
            let n = d.find(&entry_id("P2")).unwrap();
            d.remove(n);
        });
        assert_eq!(out, "- a\n\n- b\n");
        let out = render("P\n\n- b\n", |d| {
            let n = d.find(&entry_id("P")).unwrap();
            d.remove(n);
        });
        assert_eq!(out, "- b\n");
    }
}
