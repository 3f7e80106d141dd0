//! The session transcript in DESIGN §5's canonical format, appended and
//! flushed one line at a time so a crash leaves a readable prefix.

use super::provider::{Message, Role};
use super::RuntimeError;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An open transcript file.
pub struct Transcript {
    path: PathBuf,
    file: std::fs::File,
    session: String,
    agent: String,
}

impl Transcript {
    /// Opens (creating the directory) `path` for appending.
    pub fn open(path: &Path, session: &str, agent: &str) -> Result<Transcript, RuntimeError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RuntimeError::io(parent, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| RuntimeError::io(path, e))?;
        Ok(Transcript {
            path: path.to_path_buf(),
            file,
            session: session.to_string(),
            agent: agent.to_string(),
        })
    }

    fn line(&mut self, v: &serde_json::Value) -> Result<(), RuntimeError> {
        let mut s = v.to_string();
        s.push('\n');
        // One write per line: appends of whole lines do not interleave.
        self.file
            .write_all(s.as_bytes())
            .and_then(|_| self.file.flush())
            .map_err(|e| RuntimeError::io(&self.path, e))
    }

    /// Appends one message with its envelope.
    pub fn message(&mut self, m: &Message, ts: &str) -> Result<(), RuntimeError> {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        self.line(&serde_json::json!({
            "session": self.session,
            "agent": self.agent,
            "ts": ts,
            "role": role,
            "content": m.content,
        }))
    }

    /// Appends the closing `outcome` line.
    pub fn outcome(
        &mut self,
        succeeded: bool,
        summary: &str,
        ts: &str,
    ) -> Result<(), RuntimeError> {
        self.line(&serde_json::json!({
            "session": self.session,
            "agent": self.agent,
            "ts": ts,
            "type": "outcome",
            "status": if succeeded { "succeeded" } else { "failed" },
            "summary": summary,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::provider::Block;

    #[test]
    fn lines_follow_the_canonical_format() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sessions/s-1.jsonl");
        let mut t = Transcript::open(&p, "s-1", "coder").unwrap();
        t.message(
            &Message {
                role: Role::Assistant,
                content: vec![Block::ToolUse {
                    id: "tu_1".into(),
                    name: "bash".into(),
                    input: serde_json::json!({"command": "ls"}),
                }],
            },
            "2026-11-20T10:00:00Z",
        )
        .unwrap();
        t.outcome(true, "done", "2026-11-20T10:00:01Z").unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["role"], "assistant");
        assert_eq!(lines[0]["content"][0]["type"], "tool_use");
        assert_eq!(lines[0]["session"], "s-1");
        assert_eq!(lines[1]["type"], "outcome");
        assert_eq!(lines[1]["status"], "succeeded");
    }
}
