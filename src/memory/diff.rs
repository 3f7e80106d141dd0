//! A unified diff of what applying a patch would change (DESIGN §1
//! `reverie memory diff`), with the same validation and preconditions as
//! apply. Nothing is written.

use similar::TextDiff;

use super::apply::{is_applied, ApplyError};
use super::edit::plan;
use super::layout::MEMORIES;
use super::patch::validate_spec;
use super::store::Store;
use crate::api::memorypatch::MemoryPatch;

/// Lines of context around each change.
pub const CONTEXT_LINES: usize = 3;

/// The unified diff (`--- a/memories/x.md`, `+++ b/memories/x.md`, 3 lines
/// of context; `/dev/null` for a file created or removed) of applying
/// `patch` to `store`, files in path order. Empty when nothing would
/// change, including when the patch is already applied.
pub fn diff(store: &Store, patch: &MemoryPatch) -> Result<String, ApplyError> {
    validate_spec(&patch.spec)?;
    if is_applied(store, &patch.spec)? {
        return Ok(String::new());
    }
    let plan = plan(store, &patch.spec)?;
    let mut out = String::new();
    for (path, f) in &plan.files {
        out.push_str(&unified_diff(path, f.before.as_deref(), f.after.as_deref()));
    }
    Ok(out)
}

/// The unified diff of one memory file between two versions (`None`: absent).
pub fn unified_diff(path: &str, before: Option<&str>, after: Option<&str>) -> String {
    let old_name = match before {
        Some(_) => format!("a/{MEMORIES}/{path}"),
        None => "/dev/null".to_string(),
    };
    let new_name = match after {
        Some(_) => format!("b/{MEMORIES}/{path}"),
        None => "/dev/null".to_string(),
    };
    let (old, new) = (before.unwrap_or(""), after.unwrap_or(""));
    if old == new && before.is_some() == after.is_some() {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(CONTEXT_LINES)
        .header(&old_name, &new_name)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_context() {
        let d = unified_diff(
            "x.md",
            Some("a\nb\nc\nd\ne\nf\ng\n"),
            Some("a\nb\nc\nD\ne\nf\ng\n"),
        );
        assert_eq!(
            d,
            "--- a/memories/x.md\n+++ b/memories/x.md\n@@ -1,7 +1,7 @@\n a\n b\n c\n-d\n+D\n e\n f\n g\n"
        );
        let d = unified_diff("n/y.md", None, Some("- x\n"));
        assert!(
            d.starts_with("--- /dev/null\n+++ b/memories/n/y.md\n"),
            "{d}"
        );
        assert_eq!(unified_diff("x.md", Some("same"), Some("same")), "");
    }
}
