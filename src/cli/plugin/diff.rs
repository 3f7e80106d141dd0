//! `diff`: a MemoryPatch as a reviewable diff, from the resource alone
//! (DESIGN §4: ops that name an entry carry its text as `before`).

use super::existing_decision;
use crate::api::{Evidence, MemoryPatch, OpKind, PatchOp};

struct Palette {
    on: bool,
}

impl Palette {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

fn with_newline(text: &str) -> String {
    if text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

/// Lines of `text`, each prefixed with `mark`, in `code`'s colour.
fn marked(out: &mut String, p: &Palette, code: &str, mark: &str, text: &str) {
    for line in text.lines() {
        out.push_str(&p.paint(code, &format!("{mark}{line}")));
        out.push('\n');
    }
}

fn op_kind(op: OpKind) -> &'static str {
    match op {
        OpKind::Add => "add",
        OpKind::Update => "update",
        OpKind::Merge => "merge",
        OpKind::Delete => "delete",
        OpKind::Move => "move",
    }
}

fn reason_name(op: &PatchOp) -> String {
    serde_json::to_value(op.reason)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", op.reason))
}

fn op_title(op: &PatchOp) -> String {
    let mut t = format!("{} {}", op_kind(op.op), op.path);
    if let Some(id) = &op.id {
        t.push_str(&format!("#{id}"));
    }
    if let Some(ids) = &op.ids {
        t.push_str(&format!(" [{}]", ids.join(", ")));
    }
    if let Some(to) = &op.to {
        t.push_str(&format!(" -> {to}"));
    }
    if let Some(section) = &op.section {
        t.push_str(&format!(" (section \"{section}\")"));
    }
    t
}

/// The patch as a reviewable diff: a header, then per op its kind, path,
/// reason and evidence, and `before` against `content` line by line.
/// Needs only the resource (DESIGN §4: ops carry `before`).
pub fn render_diff(patch: &MemoryPatch, color: bool) -> String {
    let p = Palette { on: color };
    let name = patch.metadata.name.as_deref().unwrap_or("<unnamed>");
    let ns = patch.metadata.namespace.as_deref().unwrap_or("-");
    let phase = patch
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or("-".to_string(), |ph| format!("{ph:?}"));
    let mut out = String::new();
    out.push_str(&p.paint(
        "1",
        &format!(
            "memorypatch/{name} (namespace {ns}): store {}, base revision {}, {} op(s), phase {phase}",
            patch.spec.store_ref.name,
            patch.spec.base_revision,
            patch.spec.ops.len()
        ),
    ));
    out.push('\n');
    if let Some(done) = existing_decision(patch) {
        out.push_str(&format!("decision: {done}\n"));
    }
    if !patch.spec.summary.is_empty() {
        out.push_str(&format!("summary: {}\n", patch.spec.summary));
    }
    let total = patch.spec.ops.len();
    for (i, op) in patch.spec.ops.iter().enumerate() {
        out.push('\n');
        out.push_str(&p.paint(
            "36",
            &format!(
                "@@ op {}/{total}: {} | reason: {} @@",
                i + 1,
                op_title(op),
                reason_name(op)
            ),
        ));
        out.push('\n');
        for ev in &op.evidence {
            out.push_str(&format!("   evidence: {}\n", evidence_text(ev)));
        }
        if let Some(by) = &op.superseded_by {
            out.push_str(&format!("   superseded by: {by}\n"));
        }
        let before = op.before.as_deref();
        let content = op.content.as_deref();
        match op.op {
            OpKind::Add => marked(&mut out, &p, "32", "+", content.unwrap_or("")),
            OpKind::Delete => match before {
                Some(b) => marked(&mut out, &p, "31", "-", b),
                None => out.push_str("   (the entry's text is not recorded in the patch)\n"),
            },
            OpKind::Move => match before {
                Some(b) => marked(&mut out, &p, "0", " ", b),
                None => out.push_str("   (the entry's text is not recorded in the patch)\n"),
            },
            OpKind::Update | OpKind::Merge => match (before, content) {
                (Some(b), Some(c)) => {
                    let (b, c) = (with_newline(b), with_newline(c));
                    let diff = similar::TextDiff::from_lines(&b, &c);
                    for change in diff.iter_all_changes() {
                        let line = change.value().trim_end_matches('\n');
                        match change.tag() {
                            similar::ChangeTag::Delete => {
                                marked(&mut out, &p, "31", "-", line);
                                if line.is_empty() {
                                    out.push_str(&p.paint("31", "-"));
                                    out.push('\n');
                                }
                            }
                            similar::ChangeTag::Insert => {
                                marked(&mut out, &p, "32", "+", line);
                                if line.is_empty() {
                                    out.push_str(&p.paint("32", "+"));
                                    out.push('\n');
                                }
                            }
                            similar::ChangeTag::Equal => {
                                out.push_str(&format!(" {line}\n"));
                            }
                        }
                    }
                }
                (None, Some(c)) => {
                    out.push_str("   (the previous text is not recorded in the patch)\n");
                    marked(&mut out, &p, "32", "+", c);
                }
                (_, None) => out.push_str("   (no new text in the patch)\n"),
            },
        }
    }
    out
}

fn evidence_text(ev: &Evidence) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &ev.session {
        match ev.line {
            Some(l) => parts.push(format!("session {s} line {l}")),
            None => parts.push(format!("session {s}")),
        }
    }
    if let Some(e) = &ev.entry {
        parts.push(format!("entry {e}"));
    }
    if let Some(q) = &ev.quote {
        parts.push(format!("\"{q}\""));
    }
    if parts.is_empty() {
        "(empty)".to_string()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::plugin::fixtures::*;

    use crate::api::{Evidence, MemoryPatchStatus, PatchPhase, Reason};

    fn review_patch() -> MemoryPatch {
        let mut update = op(OpKind::Update);
        update.id = Some("77aa01c2d3e4".into());
        update.before = Some("The cluster runs 1.29.\nUpgrades on Fridays.".into());
        update.content = Some("The cluster runs 1.31.\nUpgrades on Fridays.".into());
        update.evidence = vec![Evidence {
            session: Some("s-014".into()),
            line: Some(37),
            entry: None,
            quote: Some("kubectl version says 1.31".into()),
        }];
        let mut delete = op(OpKind::Delete);
        delete.path = "notes.md".into();
        delete.id = Some("3f2a9c01b7de".into());
        delete.before = Some("Old VPN host is vpn1.".into());
        delete.reason = Reason::Stale;
        delete.superseded_by = Some("9b1e00000000".into());
        let mut add = op(OpKind::Add);
        add.path = "lessons.md".into();
        add.section = Some("Deploys".into());
        add.content = Some("Run migrations before deploys.".into());
        add.reason = Reason::RecurringError;
        let mut p = patch("p1", "team-memory", vec![update, delete, add]);
        p.status = Some(MemoryPatchStatus {
            phase: Some(PatchPhase::Pending),
            ..Default::default()
        });
        p
    }

    #[test]
    fn diff_shows_before_and_after_of_each_op() {
        let text = render_diff(&review_patch(), false);
        let expected = "\
memorypatch/p1 (namespace team): store team-memory, base revision 41, 3 op(s), phase Pending
summary: one fix

@@ op 1/3: update infra.md#77aa01c2d3e4 | reason: contradiction @@
   evidence: session s-014 line 37, \"kubectl version says 1.31\"
-The cluster runs 1.29.
+The cluster runs 1.31.
 Upgrades on Fridays.

@@ op 2/3: delete notes.md#3f2a9c01b7de | reason: stale @@
   superseded by: 9b1e00000000
-Old VPN host is vpn1.

@@ op 3/3: add lessons.md (section \"Deploys\") | reason: recurring-error @@
+Run migrations before deploys.
";
        assert_eq!(text, expected);
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn diff_colours_only_when_asked() {
        let text = render_diff(&review_patch(), true);
        assert!(
            text.contains("\x1b[31m-The cluster runs 1.29.\x1b[0m"),
            "{text}"
        );
        assert!(
            text.contains("\x1b[32m+The cluster runs 1.31.\x1b[0m"),
            "{text}"
        );
        // Deterministic: same resource, same bytes.
        assert_eq!(text, render_diff(&review_patch(), true));
    }

    #[test]
    fn diff_shows_merges_moves_and_missing_texts() {
        let mut merge = op(OpKind::Merge);
        merge.path = "prefs.md".into();
        merge.ids = Some(vec!["a1b2c3d4e5f6".into(), "notes.md#b2c3d4e5f6a1".into()]);
        merge.before = Some("Keep PRs small.\n\nKeep pull requests under 400 lines.".into());
        merge.content = Some("Keep pull requests small, under 400 changed lines.".into());
        merge.reason = Reason::Duplicate;
        merge.evidence = vec![Evidence {
            entry: Some("notes.md#b2c3d4e5f6a1".into()),
            ..Default::default()
        }];
        let mut mv = op(OpKind::Move);
        mv.path = "notes.md".into();
        mv.id = Some("0c1d2e3f4a5b".into());
        mv.to = Some("prefs.md".into());
        mv.section = Some("Shared".into());
        mv.before = Some("Ask before deleting data.".into());
        mv.reason = Reason::SharedPreference;
        let mut blind = op(OpKind::Update);
        blind.id = Some("77aa01c2d3e4".into());
        blind.content = Some("New text.".into());
        let text = render_diff(&patch("p2", "s", vec![merge, mv, blind]), false);
        let expected = "\
memorypatch/p2 (namespace team): store s, base revision 41, 3 op(s), phase -
summary: one fix

@@ op 1/3: merge prefs.md [a1b2c3d4e5f6, notes.md#b2c3d4e5f6a1] | reason: duplicate @@
   evidence: entry notes.md#b2c3d4e5f6a1
-Keep PRs small.
-
-Keep pull requests under 400 lines.
+Keep pull requests small, under 400 changed lines.

@@ op 2/3: move notes.md#0c1d2e3f4a5b -> prefs.md (section \"Shared\") | reason: shared-preference @@
 Ask before deleting data.

@@ op 3/3: update infra.md#77aa01c2d3e4 | reason: contradiction @@
   (the previous text is not recorded in the patch)
+New text.
";
        assert_eq!(text, expected);
    }
}
