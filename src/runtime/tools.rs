//! The local tools: `memory` (the semantics of Anthropic's memory tool over
//! the mounted stores), `files` (the team workspace) and `bash`.
//!
//! Every path the model names is confined: the memory tool sees the virtual
//! tree `/memories/<store>/<file>.md` and maps it to `<mount>/memories/…`
//! with the store's own path checks (no `..`, no hidden components, no
//! symbolic links); `files` accepts paths below `/workspace` only, with the
//! same checks. Read-only stores refuse writes. Writes to a store take its
//! `StoreLock`, so they never interleave with a patch being applied.

use crate::memory::apply::recover_with_lock;
use crate::memory::layout::{check_memory_path, resolve_no_symlinks, MEMORIES};
use crate::memory::lock::StoreLock;
use crate::memory::store::Store;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// Longest tool output handed back to the model, in bytes.
pub const MAX_OUTPUT: usize = 16 * 1024;
/// How long a `bash` command may run.
pub const BASH_TIMEOUT: Duration = Duration::from_secs(120);

/// What a tool call returns to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    /// A result the model reads as success.
    pub fn ok(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: false,
        }
    }
    /// A result sent with `is_error: true`.
    pub fn err(content: impl Into<String>) -> Self {
        ToolOutput {
            content: content.into(),
            is_error: true,
        }
    }
}

/// A memory store as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMount {
    /// The MemoryStore's name: the first component below `/memories`.
    pub name: String,
    /// The store root on this file system (already translated).
    pub root: PathBuf,
    pub read_only: bool,
}

fn str_arg<'a>(input: &'a serde_json::Value, key: &str) -> Result<&'a str, String> {
    input
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("missing string argument `{key}`"))
}

fn cap(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut cut = MAX_OUTPUT;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("\n[output truncated]");
    }
    s
}

/// The memory tool over a set of stores.
#[derive(Clone, Debug)]
pub struct MemoryTool {
    pub stores: Vec<StoreMount>,
}

/// A resolved memory path: the store, and a path relative to its `memories/`
/// (empty for the store's root).
struct MemPath<'a> {
    store: &'a StoreMount,
    rel: String,
}

impl MemoryTool {
    /// Runs one command (`view`, `create`, `str_replace`, `insert`, `delete`, `rename`).
    pub fn call(&self, input: &serde_json::Value) -> ToolOutput {
        match self.dispatch(input) {
            Ok(s) => ToolOutput::ok(cap(s)),
            Err(e) => ToolOutput::err(e),
        }
    }

    fn dispatch(&self, input: &serde_json::Value) -> Result<String, String> {
        let command = str_arg(input, "command")?;
        match command {
            "view" => {
                let path = str_arg(input, "path")?;
                if path.trim_end_matches('/') == "/memories" {
                    let mut out = String::from("/memories\n");
                    for s in &self.stores {
                        let ro = if s.read_only { " (read-only)" } else { "" };
                        out.push_str(&format!("  /memories/{}/{ro}\n", s.name));
                    }
                    return Ok(out);
                }
                let p = self.resolve(path, true)?;
                let dir = p.store.root.join(MEMORIES);
                if p.rel.is_empty() {
                    return list_tree(&dir, &format!("/memories/{}", p.store.name));
                }
                let file = resolve_no_symlinks(&dir, &p.rel).map_err(|e| e.to_string())?;
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| format!("cannot read {path}: {e}"))?;
                let range = input.get("view_range").and_then(|r| r.as_array());
                let (from, to) = match range {
                    Some(r) if r.len() == 2 => (
                        r[0].as_i64().unwrap_or(1).max(1) as usize,
                        r[1].as_i64().filter(|n| *n >= 0).map(|n| n as usize),
                    ),
                    _ => (1, None),
                };
                let mut out = String::new();
                for (i, line) in text.lines().enumerate() {
                    let n = i + 1;
                    if n >= from && to.is_none_or(|t| n <= t) {
                        out.push_str(&format!("{n:6}\t{line}\n"));
                    }
                }
                Ok(out)
            }
            "create" => {
                let path = str_arg(input, "path")?;
                let text = str_arg(input, "file_text")?;
                let p = self.resolve(path, false)?;
                self.write(&p, |_| Ok(text.to_string()))?;
                Ok(format!("File created successfully at {path}"))
            }
            "str_replace" => {
                let path = str_arg(input, "path")?;
                let old_str = str_arg(input, "old_str")?;
                let new_str = input.get("new_str").and_then(|v| v.as_str()).unwrap_or("");
                let p = self.resolve(path, false)?;
                self.write(&p, |old| {
                    let old = old.ok_or_else(|| format!("{path} does not exist"))?;
                    match old.matches(old_str).count() {
                        0 => Err(format!("old_str not found in {path}")),
                        1 => Ok(old.replacen(old_str, new_str, 1)),
                        n => Err(format!(
                            "old_str appears {n} times in {path}; make it unique"
                        )),
                    }
                })?;
                Ok(format!("The memory file {path} has been edited"))
            }
            "insert" => {
                let path = str_arg(input, "path")?;
                let text = str_arg(input, "insert_text")?;
                let line = input
                    .get("insert_line")
                    .and_then(|v| v.as_u64())
                    .ok_or("missing integer argument `insert_line`")?
                    as usize;
                let p = self.resolve(path, false)?;
                self.write(&p, |old| {
                    let old = old.ok_or_else(|| format!("{path} does not exist"))?;
                    let mut lines: Vec<&str> = old.lines().collect();
                    if line > lines.len() {
                        return Err(format!(
                            "insert_line {line} is past the end of {path} ({} lines)",
                            lines.len()
                        ));
                    }
                    let new_lines: Vec<&str> = text.lines().collect();
                    lines.splice(line..line, new_lines);
                    let mut out = lines.join("\n");
                    out.push('\n');
                    Ok(out)
                })?;
                Ok(format!("Text inserted at line {line} of {path}"))
            }
            "delete" => {
                let path = str_arg(input, "path")?;
                let p = self.resolve(path, false)?;
                let store = self.writable(p.store)?;
                let _lock = lock_recovered(&store)?;
                let file = resolve_no_symlinks(&p.store.root.join(MEMORIES), &p.rel)
                    .map_err(|e| e.to_string())?;
                std::fs::remove_file(&file).map_err(|e| format!("cannot delete {path}: {e}"))?;
                Ok(format!("Deleted {path}"))
            }
            "rename" => {
                let from = str_arg(input, "old_path")?;
                let to = str_arg(input, "new_path")?;
                let a = self.resolve(from, false)?;
                let b = self.resolve(to, false)?;
                if a.store.name != b.store.name {
                    return Err("rename across stores is not supported".into());
                }
                let store = self.writable(a.store)?;
                let _lock = lock_recovered(&store)?;
                let dir = a.store.root.join(MEMORIES);
                let src = resolve_no_symlinks(&dir, &a.rel).map_err(|e| e.to_string())?;
                let dst = resolve_no_symlinks(&dir, &b.rel).map_err(|e| e.to_string())?;
                if dst.exists() {
                    return Err(format!("{to} exists already"));
                }
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create the directory of {to}: {e}"))?;
                }
                std::fs::rename(&src, &dst)
                    .map_err(|e| format!("cannot rename {from} to {to}: {e}"))?;
                Ok(format!("Renamed {from} to {to}"))
            }
            other => Err(format!(
                "unknown memory command {other:?} (view, create, str_replace, insert, delete, rename)"
            )),
        }
    }

    /// Maps `/memories/<store>/<rel>` to its store; `rel` is checked like a
    /// patch path unless `dir_ok` and it is empty (the store's root).
    fn resolve<'a>(&'a self, path: &str, dir_ok: bool) -> Result<MemPath<'a>, String> {
        let rest = path
            .strip_prefix("/memories/")
            .ok_or_else(|| format!("path {path:?} is not under /memories"))?;
        let (name, rel) = rest.split_once('/').unwrap_or((rest, ""));
        let store =
            self.stores.iter().find(|s| s.name == name).ok_or_else(|| {
                format!("no memory store {name:?} is mounted (see `view /memories`)")
            })?;
        let rel = rel.trim_end_matches('/');
        if rel.is_empty() {
            return if dir_ok {
                Ok(MemPath {
                    store,
                    rel: String::new(),
                })
            } else {
                Err(format!("path {path:?} names a store, not a file"))
            };
        }
        let rel = check_memory_path(rel).map_err(|e| e.to_string())?;
        Ok(MemPath { store, rel })
    }

    fn writable(&self, s: &StoreMount) -> Result<Store, String> {
        if s.read_only {
            return Err(format!("memory store {} is mounted read-only", s.name));
        }
        std::fs::create_dir_all(s.root.join(MEMORIES))
            .map_err(|e| format!("cannot create memories/ in store {}: {e}", s.name))?;
        Store::open(&s.root).map_err(|e| e.to_string())
    }

    /// Writes a file under the store lock; `edit` gets the old text (if any).
    fn write(
        &self,
        p: &MemPath<'_>,
        edit: impl FnOnce(Option<String>) -> Result<String, String>,
    ) -> Result<(), String> {
        let store = self.writable(p.store)?;
        let _lock = lock_recovered(&store)?;
        let file =
            resolve_no_symlinks(&p.store.root.join(MEMORIES), &p.rel).map_err(|e| e.to_string())?;
        let old = match std::fs::read_to_string(&file) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", p.rel)),
        };
        let new = edit(old)?;
        write_atomic(&file, &new)
    }
}

/// Takes the store's writer lock and, holding it, rolls forward a write
/// that an apply killed mid-way left behind: the tool then edits the new
/// revision, and no later recovery can replay the old intent over its edit.
fn lock_recovered(store: &Store) -> Result<StoreLock, String> {
    let lock = StoreLock::acquire(store).map_err(|e| e.to_string())?;
    recover_with_lock(store).map_err(|e| e.to_string())?;
    Ok(lock)
}

fn write_atomic(file: &Path, text: &str) -> Result<(), String> {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create a directory: {e}"))?;
    }
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = file.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| format!("cannot write: {e}"))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("cannot replace the file: {e}"))
}

/// A sorted listing of a directory tree (hidden entries and links left out).
fn list_tree(dir: &Path, shown: &str) -> Result<String, String> {
    let mut out = format!("{shown}\n");
    let mut entries = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot list {shown}/{prefix}: {e}")),
        };
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let Ok(ft) = ent.file_type() else { continue };
            let rel = format!("{prefix}{name}");
            if ft.is_dir() {
                entries.push(format!("{rel}/"));
                stack.push((ent.path(), format!("{rel}/")));
            } else if ft.is_file() {
                let size = ent.metadata().map(|m| m.len()).unwrap_or(0);
                entries.push(format!("{rel} ({size} bytes)"));
            }
        }
    }
    entries.sort();
    for e in entries {
        out.push_str(&format!("  {e}\n"));
    }
    Ok(out)
}

/// The `files` tool: read, write and list under the team workspace.
#[derive(Clone, Debug)]
pub struct FilesTool {
    /// The workspace on this file system (already translated).
    pub root: PathBuf,
}

/// Checks a workspace path (`/workspace/…` or relative to it) and returns it
/// relative, `/`-separated; `..`, hidden components and other absolute
/// paths are refused.
pub fn check_workspace_path(p: &str) -> Result<String, String> {
    let rel = if p == "/workspace" {
        ""
    } else if let Some(r) = p.strip_prefix("/workspace/") {
        r
    } else if p.starts_with('/') {
        return Err(format!("path {p:?} is outside /workspace"));
    } else {
        p
    };
    if rel.contains('\0') || rel.contains('\\') {
        return Err(format!("path {p:?} has a character that is not allowed"));
    }
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(s) => {
                let s = s
                    .to_str()
                    .ok_or_else(|| format!("path {p:?} is not UTF-8"))?;
                if s.starts_with('.') {
                    return Err(format!("path {p:?} has a hidden component"));
                }
                parts.push(s.to_string());
            }
            Component::CurDir => {}
            _ => return Err(format!("path {p:?} leaves /workspace")),
        }
    }
    Ok(parts.join("/"))
}

/// Joins a checked relative path onto `root`, refusing symbolic links.
fn resolve_workspace(root: &Path, p: &str) -> Result<PathBuf, String> {
    let rel = check_workspace_path(p)?;
    let mut cur = root.to_path_buf();
    for part in rel.split('/').filter(|s| !s.is_empty()) {
        cur.push(part);
        if let Ok(md) = std::fs::symlink_metadata(&cur) {
            if md.file_type().is_symlink() {
                return Err(format!("path {p:?} goes through a symbolic link"));
            }
        }
    }
    Ok(cur)
}

impl FilesTool {
    /// Runs one command: `read {path}`, `write {path, content}`, `list {path?}`.
    pub fn call(&self, input: &serde_json::Value) -> ToolOutput {
        let r = (|| -> Result<String, String> {
            match str_arg(input, "command")? {
                "read" => {
                    let path = str_arg(input, "path")?;
                    let f = resolve_workspace(&self.root, path)?;
                    std::fs::read_to_string(&f).map_err(|e| format!("cannot read {path}: {e}"))
                }
                "write" => {
                    let path = str_arg(input, "path")?;
                    let content = str_arg(input, "content")?;
                    let f = resolve_workspace(&self.root, path)?;
                    if f == self.root {
                        return Err("write needs a file path".into());
                    }
                    write_atomic(&f, content)?;
                    Ok(format!("Wrote {} bytes to {path}", content.len()))
                }
                "list" => {
                    let path = input
                        .get("path")
                        .and_then(|v| v.as_str())
                        .unwrap_or("/workspace");
                    let d = resolve_workspace(&self.root, path)?;
                    list_tree(&d, path)
                }
                other => Err(format!(
                    "unknown files command {other:?} (read, write, list)"
                )),
            }
        })();
        match r {
            Ok(s) => ToolOutput::ok(cap(s)),
            Err(e) => ToolOutput::err(e),
        }
    }
}

/// Runs `sh -c command` in `dir` with [`BASH_TIMEOUT`]; output is capped.
pub async fn bash(dir: Option<&Path>, input: &serde_json::Value) -> ToolOutput {
    let command = match str_arg(input, "command") {
        Ok(c) => c,
        Err(e) => return ToolOutput::err(e),
    };
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(d) = dir.filter(|d| d.is_dir()) {
        cmd.current_dir(d);
    }
    match tokio::time::timeout(BASH_TIMEOUT, cmd.output()).await {
        Err(_) => ToolOutput::err(format!(
            "command timed out after {}s",
            BASH_TIMEOUT.as_secs()
        )),
        Ok(Err(e)) => ToolOutput::err(format!("cannot run sh: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            let err = String::from_utf8_lossy(&out.stderr);
            if !err.is_empty() {
                text.push_str("\n[stderr]\n");
                text.push_str(&err);
            }
            let code = out.status.code().unwrap_or(-1);
            if out.status.success() {
                ToolOutput::ok(cap(text))
            } else {
                ToolOutput::err(cap(format!("exit code {code}\n{text}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(dir: &Path, read_only: bool) -> MemoryTool {
        std::fs::create_dir_all(dir.join("rw/memories")).unwrap();
        std::fs::create_dir_all(dir.join("ro/memories")).unwrap();
        std::fs::write(dir.join("ro/memories/facts.md"), "- The sky is blue.\n").unwrap();
        MemoryTool {
            stores: vec![
                StoreMount {
                    name: "team".into(),
                    root: dir.join("rw"),
                    read_only,
                },
                StoreMount {
                    name: "shared".into(),
                    root: dir.join("ro"),
                    read_only: true,
                },
            ],
        }
    }

    #[test]
    fn memory_commands_follow_the_memory_tool() {
        let d = tempfile::tempdir().unwrap();
        let t = tool(d.path(), false);
        let r = t.call(
            &json!({"command": "create", "path": "/memories/team/notes.md", "file_text": "a\nb\n"}),
        );
        assert!(!r.is_error, "{r:?}");
        let r = t.call(&json!({"command": "insert", "path": "/memories/team/notes.md", "insert_line": 1, "insert_text": "x"}));
        assert!(!r.is_error, "{r:?}");
        let r = t.call(&json!({"command": "str_replace", "path": "/memories/team/notes.md", "old_str": "b", "new_str": "c"}));
        assert!(!r.is_error, "{r:?}");
        let text = std::fs::read_to_string(d.path().join("rw/memories/notes.md")).unwrap();
        assert_eq!(text, "a\nx\nc\n");
        let r = t.call(
            &json!({"command": "view", "path": "/memories/team/notes.md", "view_range": [2, 2]}),
        );
        assert_eq!(r.content, "     2\tx\n");
        let r = t.call(&json!({"command": "view", "path": "/memories"}));
        assert!(r.content.contains("/memories/shared/ (read-only)"));
        let r = t.call(&json!({"command": "rename", "old_path": "/memories/team/notes.md", "new_path": "/memories/team/sub/n.md"}));
        assert!(!r.is_error, "{r:?}");
        let r = t.call(&json!({"command": "view", "path": "/memories/team"}));
        assert!(r.content.contains("sub/n.md"), "{}", r.content);
        let r = t.call(&json!({"command": "delete", "path": "/memories/team/sub/n.md"}));
        assert!(!r.is_error);
        assert!(!d.path().join("rw/memories/sub/n.md").exists());
        let r = t.call(&json!({"command": "str_replace", "path": "/memories/shared/facts.md", "old_str": "zzz", "new_str": ""}));
        assert!(r.is_error);
    }

    #[test]
    fn memory_paths_are_confined_and_read_only_is_enforced() {
        let d = tempfile::tempdir().unwrap();
        let t = tool(d.path(), false);
        std::os::unix::fs::symlink("/etc", d.path().join("rw/memories/link")).unwrap();
        for bad in [
            "/memories/team/../../../etc/passwd.md",
            "/etc/passwd",
            "/memories/team/.hidden.md",
            "/memories/nostore/a.md",
            "/memories/team/link/x.md",
            "memories/team/a.md",
        ] {
            let r = t.call(&json!({"command": "create", "path": bad, "file_text": "x"}));
            assert!(r.is_error, "{bad} was accepted");
        }
        let r = t.call(
            &json!({"command": "create", "path": "/memories/shared/new.md", "file_text": "x"}),
        );
        assert!(r.is_error && r.content.contains("read-only"), "{r:?}");
        let r = t.call(&json!({"command": "delete", "path": "/memories/shared/facts.md"}));
        assert!(r.is_error);
        assert!(d.path().join("ro/memories/facts.md").exists());
        let r = t.call(&json!({"command": "view", "path": "/memories/shared/facts.md"}));
        assert!(!r.is_error && r.content.contains("sky"));
    }

    #[test]
    fn workspace_paths_are_confined() {
        let d = tempfile::tempdir().unwrap();
        let f = FilesTool {
            root: d.path().to_path_buf(),
        };
        let r = f
            .call(&json!({"command": "write", "path": "/workspace/results/a.md", "content": "hi"}));
        assert!(!r.is_error, "{r:?}");
        let r = f.call(&json!({"command": "read", "path": "results/a.md"}));
        assert_eq!(r.content, "hi");
        let r = f.call(&json!({"command": "list"}));
        assert!(r.content.contains("results/a.md"), "{}", r.content);
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        for bad in [
            "/etc/passwd",
            "../x",
            "/workspace/../x",
            "out/passwd",
            ".git/config",
        ] {
            let r = f.call(&json!({"command": "read", "path": bad}));
            assert!(r.is_error, "{bad} was accepted");
        }
    }

    #[tokio::test]
    async fn bash_reports_exit_codes_and_caps_output() {
        let r = bash(None, &json!({"command": "echo hi; exit 3"})).await;
        assert!(r.is_error && r.content.contains("exit code 3") && r.content.contains("hi"));
        let r = bash(
            None,
            &json!({"command": "head -c 40000 /dev/zero | tr '\\0' a"}),
        )
        .await;
        assert!(!r.is_error);
        assert!(r.content.len() < MAX_OUTPUT + 100 && r.content.ends_with("[output truncated]"));
    }
}
