//! The layout of a store directory (DESIGN §3) and safe resolution of the
//! relative paths that patches, tools and sessions name.
//!
//! ```text
//! memories/   Markdown files, any tree
//! sessions/   <session>.jsonl transcripts
//! .reverie/   revision, journal, lock
//! ```

use std::path::{Component, Path, PathBuf};

/// Directory of the Markdown memory files, relative to the store root.
pub const MEMORIES: &str = "memories";
/// Directory of the session transcripts, relative to the store root.
pub const SESSIONS: &str = "sessions";
/// Directory of reverie's own state (revision, journal, lock).
pub const STATE: &str = ".reverie";

/// Why a relative path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} is absolute; paths are relative to memories/")]
    Absolute(String),
    #[error("path {0:?} leaves the store (`..`)")]
    Escapes(String),
    #[error("path {0:?} has a component that is not allowed (`.`, hidden, or a backslash)")]
    BadComponent(String),
    #[error("path {0:?} is not a Markdown file (.md)")]
    NotMarkdown(String),
    #[error("path {0:?} goes through a symbolic link")]
    Symlink(String),
    #[error("path {0:?} contains U+{1:04X}, a control, invisible or bidirectional character or one that looks like `.`, `/` or `\\`")]
    Confusable(String, u32),
}

/// Whether `c` may not appear in a memory path: control characters,
/// invisible and bidirectional formatting characters (a reviewer would read
/// a different name than the one written), and look-alikes of `.`, `/` and
/// `\` (`．．／x.md` reads as a traversal even where it is not one).
fn is_confusable(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2069}'
                | '\u{FEFF}'
                // Look-alikes of `.`
                | '\u{2024}'
                | '\u{3002}'
                | '\u{FE52}'
                | '\u{FF0E}'
                | '\u{FF61}'
                // Look-alikes of `/`
                | '\u{2044}'
                | '\u{2215}'
                | '\u{2571}'
                | '\u{29F8}'
                | '\u{FF0F}'
                // Look-alikes of `\`
                | '\u{2216}'
                | '\u{29F5}'
                | '\u{29F9}'
                | '\u{FE68}'
                | '\u{FF3C}'
        )
}

/// Checks a path relative to `memories/` as a patch or the memory tool names
/// it: non-empty, relative, no `..`, no `.`-prefixed (hidden) component, no
/// NUL or backslash, ends in `.md`. Returns it normalised with `/` separators.
/// Does not touch the file system: see [`resolve_no_symlinks`] for that.
pub fn check_memory_path(p: &str) -> Result<String, PathError> {
    if p.is_empty() {
        return Err(PathError::Empty);
    }
    if p.contains('\0') {
        return Err(PathError::Nul(p.to_string()));
    }
    if p.starts_with('/') || Path::new(p).is_absolute() {
        return Err(PathError::Absolute(p.to_string()));
    }
    if p.contains('\\') {
        return Err(PathError::BadComponent(p.to_string()));
    }
    if let Some(c) = p.chars().find(|&c| is_confusable(c)) {
        return Err(PathError::Confusable(p.to_string(), u32::from(c)));
    }
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => {
                let s = s
                    .to_str()
                    .ok_or_else(|| PathError::BadComponent(p.to_string()))?;
                if s.starts_with('.') {
                    return Err(PathError::BadComponent(p.to_string()));
                }
                parts.push(s);
            }
            Component::ParentDir => return Err(PathError::Escapes(p.to_string())),
            Component::CurDir => return Err(PathError::BadComponent(p.to_string())),
            Component::RootDir | Component::Prefix(_) => {
                return Err(PathError::Absolute(p.to_string()))
            }
        }
    }
    if parts.is_empty() {
        return Err(PathError::Empty);
    }
    let norm = parts.join("/");
    if !norm.ends_with(".md") {
        return Err(PathError::NotMarkdown(p.to_string()));
    }
    Ok(norm)
}

/// Joins a checked relative path onto `base` and refuses it when any
/// existing component below `base` is a symbolic link (so a link planted in
/// the volume cannot redirect a write outside it).
pub fn resolve_no_symlinks(base: &Path, rel: &str) -> Result<PathBuf, PathError> {
    let rel = check_memory_path(rel)?;
    let mut cur = base.to_path_buf();
    for part in rel.split('/') {
        cur.push(part);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_symlink() => return Err(PathError::Symlink(rel)),
            _ => {}
        }
    }
    Ok(cur)
}

/// Checks a session name as used in `sessions/<name>.jsonl`: a DNS-1123-ish
/// token of letters, digits, `-`, `_` and `.`, not starting with `.`, at most 253 bytes.
pub fn check_session_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Every `*.md` file below `root/memories`, as sorted `/`-separated paths
/// relative to `memories/`. Hidden files and directories and symbolic links
/// are skipped.
pub fn list_memory_files(root: &Path) -> std::io::Result<Vec<String>> {
    let base = root.join(MEMORIES);
    let mut out = Vec::new();
    let mut stack = vec![(base.clone(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for ent in std::fs::read_dir(&dir)? {
            let ent = ent?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') {
                continue;
            }
            let ft = ent.file_type()?;
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            if ft.is_dir() {
                stack.push((ent.path(), rel));
            } else if ft.is_file() && name.ends_with(".md") {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_paths() {
        assert_eq!(check_memory_path("a/b.md").unwrap(), "a/b.md");
        assert!(matches!(
            check_memory_path("../x.md"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            check_memory_path("a/../../x.md"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            check_memory_path("/etc/x.md"),
            Err(PathError::Absolute(_))
        ));
        assert!(matches!(
            check_memory_path("a\0.md"),
            Err(PathError::Nul(_))
        ));
        assert!(matches!(
            check_memory_path(".reverie/x.md"),
            Err(PathError::BadComponent(_))
        ));
        assert!(matches!(
            check_memory_path("x.txt"),
            Err(PathError::NotMarkdown(_))
        ));
        assert!(matches!(check_memory_path(""), Err(PathError::Empty)));
        for p in [
            "\u{FF0E}\u{FF0E}/x.md",
            "..\u{FF0F}x.md",
            "a\u{2215}b.md",
            "evil\u{202E}dm.x.md",
            "a\u{200B}.md",
            "a\nb.md",
        ] {
            assert!(
                matches!(
                    check_memory_path(p),
                    Err(PathError::Confusable(..)) | Err(PathError::BadComponent(_))
                ),
                "{p:?}"
            );
        }
        let e = check_memory_path("evil\u{202E}dm.x.md")
            .unwrap_err()
            .to_string();
        assert!(e.contains("U+202E"), "{e}");
        assert_eq!(
            check_memory_path("notes/日本語.md").unwrap(),
            "notes/日本語.md"
        );
        assert!(matches!(
            check_memory_path("a\\..\\b.md"),
            Err(PathError::BadComponent(_))
        ));
    }

    #[test]
    fn session_names() {
        assert!(check_session_name("s-014"));
        assert!(!check_session_name("../x"));
        assert!(!check_session_name(".hidden"));
        assert!(!check_session_name("a/b"));
    }
}
