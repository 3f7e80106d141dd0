//! Loading and validating MemoryPatch manifests (DESIGN §4).
//!
//! A patch file is YAML or JSON: either the whole object
//! (`apiVersion`/`kind`/`metadata`/`spec`) or a bare `spec`. `spec.ops` is
//! read element by element so that an unknown op or a missing field is
//! reported with its index: `spec.ops[3] (merge): needs at least two ids`.
//! Validation here needs no store; the checks that do (entries present,
//! symbolic links) happen at apply time.

use std::path::Path;

use serde_yaml::Value;

use super::entry::{is_heading, parse, render_entry, EntryStyle};
use super::layout::check_memory_path;
use crate::api::memorypatch::{LocalRef, MemoryPatch, MemoryPatchSpec, OpKind, PatchOp};

/// Largest content of one op, in bytes.
pub const MAX_CONTENT_BYTES: usize = 64 * 1024;

/// A list item placed after rendered content to check that the content
/// ends where it should.
pub(crate) const SENTINEL: &str = "- reverie-sentinel-entry\n";
const SENTINEL_TEXT: &str = "reverie-sentinel-entry";

/// The fields a patch op may carry (camelCase, as serialised).
const OP_FIELDS: &[&str] = &[
    "op",
    "path",
    "section",
    "id",
    "ids",
    "content",
    "to",
    "before",
    "reason",
    "supersededBy",
    "evidence",
];

/// Why a patch is invalid (exit code 2).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The file could not be read.
    #[error("cannot read patch {path}: {message}")]
    Read { path: String, message: String },
    /// The document is not a MemoryPatch (syntax, kind, a spec field).
    #[error("{0}")]
    Document(String),
    /// One op is invalid.
    #[error("spec.ops[{index}]{}: {message}", kind.map(|k| format!(" ({})", kind_name(k))).unwrap_or_default())]
    Op {
        index: usize,
        kind: Option<OpKind>,
        message: String,
    },
}

impl PatchError {
    fn op(index: usize, kind: OpKind, message: impl Into<String>) -> Self {
        PatchError::Op {
            index,
            kind: Some(kind),
            message: message.into(),
        }
    }
}

/// The name of an op kind as written in a patch (`add`, `merge` …).
pub fn kind_name(k: OpKind) -> &'static str {
    match k {
        OpKind::Add => "add",
        OpKind::Update => "update",
        OpKind::Merge => "merge",
        OpKind::Delete => "delete",
        OpKind::Move => "move",
    }
}

/// Reads and validates a patch file. A bare `spec` gets the file's stem as
/// its name.
pub fn load_patch(path: &Path) -> Result<MemoryPatch, PatchError> {
    let text = std::fs::read_to_string(path).map_err(|e| PatchError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "patch".into());
    parse_patch(&text, &stem)
}

/// Parses and validates a patch from YAML or JSON text. `default_name`
/// names a bare spec (or an object without `metadata.name`).
pub fn parse_patch(text: &str, default_name: &str) -> Result<MemoryPatch, PatchError> {
    // YAML reads JSON too; JSON goes through serde_json only because it is
    // much faster on the large patches a dream over a big store emits.
    let mut doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| PatchError::Document(format!("not valid JSON: {e}")))?
    } else {
        serde_yaml::from_str(text)
            .map_err(|e| PatchError::Document(format!("not valid YAML or JSON: {e}")))?
    };
    let Value::Mapping(map) = &doc else {
        return Err(PatchError::Document(
            "a patch must be a mapping (a MemoryPatch object or its spec)".into(),
        ));
    };
    let get = |k: &str| map.get(Value::String(k.into()));
    let (full, name) = if get("spec").is_some() {
        if let Some(kind) = get("kind") {
            if kind.as_str() != Some("MemoryPatch") {
                return Err(PatchError::Document(format!(
                    "kind: expected MemoryPatch, found {}",
                    value_str(kind)
                )));
            }
        }
        if let Some(api) = get("apiVersion") {
            if api.as_str() != Some("reverie.dev/v1alpha1") {
                return Err(PatchError::Document(format!(
                    "apiVersion: expected reverie.dev/v1alpha1, found {}",
                    value_str(api)
                )));
            }
        }
        let name = get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .unwrap_or(default_name)
            .to_string();
        (true, name)
    } else if get("ops").is_some() {
        (false, default_name.to_string())
    } else {
        return Err(PatchError::Document(
            "no `spec` and no `ops`: not a MemoryPatch".into(),
        ));
    };
    // Taken out by value: a large patch is not copied op by op.
    let spec_v = if full {
        doc.get_mut("spec").map(std::mem::take).unwrap_or_default()
    } else {
        doc
    };
    let spec = parse_spec(spec_v)?;
    validate_spec(&spec)?;
    Ok(MemoryPatch::new(&name, spec))
}

fn value_str(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn parse_spec(v: Value) -> Result<MemoryPatchSpec, PatchError> {
    let Value::Mapping(mut m) = v else {
        return Err(PatchError::Document("spec: must be a mapping".into()));
    };
    let field = |k: &str| m.get(Value::String(k.into()));
    let store_ref = match field("storeRef") {
        None => LocalRef {
            name: String::new(),
        },
        Some(r) => serde_yaml::from_value(r.clone())
            .map_err(|e| PatchError::Document(format!("spec.storeRef: {e}")))?,
    };
    let base_revision = match field("baseRevision") {
        None | Some(Value::Null) => 0,
        Some(r) => r.as_u64().ok_or_else(|| {
            PatchError::Document(format!(
                "spec.baseRevision: expected a non-negative integer, found {}",
                value_str(r)
            ))
        })?,
    };
    let summary = match field("summary") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(PatchError::Document(format!(
                "spec.summary: expected a string, found {}",
                value_str(other)
            )))
        }
    };
    let ops_v = match m.remove("ops") {
        None => return Err(PatchError::Document("spec.ops: missing".into())),
        Some(Value::Null) => Vec::new(),
        Some(Value::Sequence(s)) => s,
        Some(_) => return Err(PatchError::Document("spec.ops: must be a list".into())),
    };
    let mut ops = Vec::with_capacity(ops_v.len());
    for (index, v) in ops_v.into_iter().enumerate() {
        ops.push(parse_op(index, v)?);
    }
    Ok(MemoryPatchSpec {
        store_ref,
        base_revision,
        summary,
        ops,
    })
}

fn parse_op(index: usize, v: Value) -> Result<PatchOp, PatchError> {
    let bad = |message: String| PatchError::Op {
        index,
        kind: None,
        message,
    };
    let Value::Mapping(m) = &v else {
        return Err(bad("must be a mapping with an `op` field".into()));
    };
    let kind = match m.get(Value::String("op".into())) {
        None => return Err(bad("missing field `op`".into())),
        Some(Value::String(s)) => match s.as_str() {
            "add" => OpKind::Add,
            "update" => OpKind::Update,
            "merge" => OpKind::Merge,
            "delete" => OpKind::Delete,
            "move" => OpKind::Move,
            other => {
                return Err(bad(format!(
                    "unknown op {other:?} (expected add, update, merge, delete or move)"
                )))
            }
        },
        Some(other) => {
            return Err(bad(format!(
                "op must be a string, found {}",
                value_str(other)
            )))
        }
    };
    for k in m.keys() {
        let name = k.as_str().unwrap_or("");
        if !OP_FIELDS.contains(&name) {
            return Err(PatchError::op(
                index,
                kind,
                format!("unknown field {}", value_str(k)),
            ));
        }
    }
    serde_yaml::from_value(v).map_err(|e| PatchError::op(index, kind, e.to_string()))
}

/// Whether `s` is an entry id: 12 lowercase hex digits.
pub fn is_entry_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Splits `path#id` into its parts (path checked), or takes a bare id in
/// `default_path`. Returns `(path, id)`.
pub fn split_ref(r: &str, default_path: &str) -> Result<(String, String), String> {
    match r.rsplit_once('#') {
        Some((p, id)) => {
            let p = check_memory_path(p).map_err(|e| e.to_string())?;
            if !is_entry_id(id) {
                return Err(format!("{r:?}: id must be 12 lowercase hex digits"));
            }
            Ok((p, id.to_string()))
        }
        None => {
            if !is_entry_id(r) {
                return Err(format!(
                    "{r:?}: id must be 12 lowercase hex digits (or path#id)"
                ));
            }
            Ok((default_path.to_string(), r.to_string()))
        }
    }
}

/// Checks op content: non-empty, at most [`MAX_CONTENT_BYTES`], and stored
/// as exactly one entry (no heading, no second list item, no metadata
/// comment) when rendered as a list item and parsed back.
pub fn check_content(content: &str) -> Result<(), String> {
    if content.trim().is_empty() {
        return Err("content is empty".into());
    }
    if content.len() > MAX_CONTENT_BYTES {
        return Err(format!(
            "content is {} bytes, more than the limit of {MAX_CONTENT_BYTES}",
            content.len()
        ));
    }
    if content.contains('\0') {
        return Err("content contains a NUL byte".into());
    }
    if let Some(l) = content.lines().find(|l| is_heading(l).is_some()) {
        return Err(format!(
            "content has a heading line {l:?}; an entry cannot contain headings"
        ));
    }
    let rendered = render_entry(content, EntryStyle::ListItem, "-", None);
    // A sentinel item after the entry must stay separate: content with an
    // unclosed code fence would otherwise swallow the entries below it.
    let file = parse(&format!("{rendered}\n{SENTINEL}"));
    let mut entries: Vec<_> = file.entries().collect();
    if entries.last().is_some_and(|e| e.text == SENTINEL_TEXT) {
        entries.pop();
    } else {
        return Err("content would swallow the entries after it (an unclosed code fence?)".into());
    }
    match entries.as_slice() {
        [one] if one.meta_raw.is_none() && one.text == normalise_content(content) => Ok(()),
        [one] if one.meta_raw.is_some() => {
            Err("content ends with a `<!-- reverie: -->` metadata comment".into())
        }
        [_] => Err(
            "content would not be stored as written (a line such as `---` ends the entry)".into(),
        ),
        _ => Err(format!(
            "content would be stored as {} entries, not one (a line starts a new list item or block)",
            entries.len()
        )),
    }
}

/// Content as the parser reads it back: every line trimmed, then the whole.
pub fn normalise_content(content: &str) -> String {
    content
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Validates a spec without a store: per-kind required fields, ids, paths
/// and content. The dream engine and the controller call it too.
pub fn validate_spec(spec: &MemoryPatchSpec) -> Result<(), PatchError> {
    for (index, op) in spec.ops.iter().enumerate() {
        validate_op(index, op)?;
    }
    Ok(())
}

fn validate_op(index: usize, op: &PatchOp) -> Result<(), PatchError> {
    let k = op.op;
    let err = |m: String| PatchError::op(index, k, m);
    let path = check_memory_path(&op.path).map_err(|e| err(format!("path: {e}")))?;
    let forbid = |present: bool, field: &str| -> Result<(), PatchError> {
        if present {
            Err(err(format!("{} does not take `{field}`", kind_name(k))))
        } else {
            Ok(())
        }
    };
    let need_id = || -> Result<(), PatchError> {
        match &op.id {
            None => Err(err("missing field `id`".into())),
            Some(id) if !is_entry_id(id) => {
                Err(err(format!("id {id:?} must be 12 lowercase hex digits")))
            }
            Some(_) => Ok(()),
        }
    };
    let need_content = || -> Result<(), PatchError> {
        match &op.content {
            None => Err(err("missing field `content`".into())),
            Some(c) => check_content(c).map_err(err),
        }
    };
    if let Some(s) = &op.section {
        if s.trim().is_empty() || s.contains(['\n', '\r', '\0']) {
            return Err(err(format!("section {s:?} must be one non-empty line")));
        }
    }
    if let Some(s) = &op.superseded_by {
        split_ref(s, &path).map_err(|m| err(format!("supersededBy: {m}")))?;
    }
    match k {
        OpKind::Add => {
            forbid(op.id.is_some(), "id")?;
            forbid(op.ids.is_some(), "ids")?;
            forbid(op.to.is_some(), "to")?;
            need_content()?;
        }
        OpKind::Update => {
            forbid(op.ids.is_some(), "ids")?;
            forbid(op.to.is_some(), "to")?;
            need_id()?;
            need_content()?;
        }
        OpKind::Merge => {
            forbid(op.id.is_some(), "id")?;
            forbid(op.to.is_some(), "to")?;
            let ids = op.ids.as_deref().unwrap_or(&[]);
            if ids.len() < 2 {
                return Err(err("needs at least two ids".into()));
            }
            let mut seen = std::collections::BTreeSet::new();
            for r in ids {
                let key = split_ref(r, &path).map_err(|m| err(format!("ids: {m}")))?;
                if !seen.insert(key) {
                    return Err(err(format!("ids: {r:?} is named twice")));
                }
            }
            need_content()?;
        }
        OpKind::Delete => {
            forbid(op.ids.is_some(), "ids")?;
            forbid(op.to.is_some(), "to")?;
            forbid(op.content.is_some(), "content")?;
            need_id()?;
        }
        OpKind::Move => {
            forbid(op.ids.is_some(), "ids")?;
            forbid(op.content.is_some(), "content")?;
            need_id()?;
            match &op.to {
                None => return Err(err("missing field `to`".into())),
                Some(to) => {
                    check_memory_path(to).map_err(|e| err(format!("to: {e}")))?;
                }
            }
        }
    }
    Ok(())
}

/// Hex SHA-256 of the spec as canonical JSON: what the journal records to
/// recognise a patch that was already applied.
pub fn spec_hash(spec: &MemoryPatchSpec) -> String {
    // Serialising a struct of Vec/String/Option fields cannot fail.
    let bytes = serde_json::to_vec(spec).unwrap_or_default();
    super::store::sha256_hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_patch(text, "p").unwrap_err().to_string()
    }

    #[test]
    fn full_object_and_bare_spec() {
        let full = "apiVersion: reverie.dev/v1alpha1\nkind: MemoryPatch\nmetadata: {name: p1}\nspec:\n  storeRef: {name: s}\n  ops:\n  - {op: add, path: a.md, content: x, reason: instruction}\n";
        let p = parse_patch(full, "d").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("p1"));
        assert_eq!(p.spec.ops.len(), 1);
        let bare =
            r#"{"ops":[{"op":"delete","path":"a.md","id":"0123456789ab","reason":"stale"}]}"#;
        let p = parse_patch(bare, "d").unwrap();
        assert_eq!(p.metadata.name.as_deref(), Some("d"));
        assert_eq!(p.spec.ops[0].op, OpKind::Delete);
    }

    #[test]
    fn errors_name_the_op() {
        let head = "ops:\n- {op: add, path: a.md, content: x, reason: instruction}\n";
        assert_eq!(
            err(&format!(
                "{head}- {{op: frob, path: a.md, reason: stale}}\n"
            )),
            "spec.ops[1]: unknown op \"frob\" (expected add, update, merge, delete or move)"
        );
        assert_eq!(
            err(&format!("{head}- {{op: merge, path: a.md, ids: [0123456789ab], content: x, reason: duplicate}}\n")),
            "spec.ops[1] (merge): needs at least two ids"
        );
        assert_eq!(
            err(&format!(
                "{head}- {{op: update, path: a.md, content: x, reason: stale}}\n"
            )),
            "spec.ops[1] (update): missing field `id`"
        );
        assert!(
            err(&format!("{head}- {{op: add, path: a.md, content: x}}\n"))
                .starts_with("spec.ops[1] (add): missing field `reason`")
        );
        assert!(err(&format!(
            "{head}- {{op: add, path: a.md, contnt: x, reason: stale}}\n"
        ))
        .contains("unknown field contnt"));
        assert!(err(&format!(
            "{head}- {{op: delete, path: a.md, id: ABC, reason: stale}}\n"
        ))
        .contains("12 lowercase hex"));
        assert!(err("kind: Pod\nspec: {ops: []}\n").contains("kind"));
        assert!(err("- 1\n").contains("mapping"));
    }

    #[test]
    fn paths_are_checked() {
        for p in [
            "../x.md",
            "/etc/x.md",
            "a/../../x.md",
            ".reverie/j.md",
            "x.txt",
        ] {
            let e = err(&format!(
                "ops:\n- {{op: add, path: {p:?}, content: x, reason: stale}}\n"
            ));
            assert!(e.starts_with("spec.ops[0] (add): path:"), "{e}");
        }
        let e = err("ops:\n- {op: add, path: \"a\\0.md\", content: x, reason: stale}\n");
        assert!(e.contains("NUL"), "{e}");
        let e =
            err("ops:\n- {op: move, path: a.md, id: 0123456789ab, to: ../b.md, reason: stale}\n");
        assert!(e.contains("to:"), "{e}");
        let e = err("ops:\n- {op: merge, path: a.md, ids: [0123456789ab, \"../b.md#0123456789ab\"], content: x, reason: stale}\n");
        assert!(e.contains("ids:"), "{e}");
    }

    #[test]
    fn content_must_be_one_entry() {
        assert!(check_content("Use UTC.").is_ok());
        assert!(check_content("line one\nline two").is_ok());
        assert!(check_content("para\n\nsecond para").is_ok());
        assert!(check_content("").is_err());
        assert!(check_content("x\n## Heading").is_err());
        assert!(check_content("a\n- b").is_ok());
        assert!(check_content("a\n---").is_err());
        assert!(check_content("```\nunclosed").is_err());
        assert!(check_content("```\nclosed\n```").is_ok());
        assert!(check_content("x <!-- reverie: {} -->").is_err());
        assert!(check_content(&"x".repeat(MAX_CONTENT_BYTES + 1)).is_err());
    }

    #[test]
    fn spec_hash_is_stable() {
        let a = parse_patch("ops: []\n", "a").unwrap();
        let b = parse_patch("{\"ops\": []}", "b").unwrap();
        assert_eq!(spec_hash(&a.spec), spec_hash(&b.spec));
        assert_eq!(spec_hash(&a.spec).len(), 64);
    }
}
