//! Test objects shared by the plugin's unit tests.

use crate::api::{
    AgentSession, AgentSessionSpec, AgentSessionStatus, LocalRef, MemoryPatch, MemoryPatchSpec,
    OpKind, PatchOp, Reason, SessionPhase,
};

pub fn op(kind: OpKind) -> PatchOp {
    PatchOp {
        op: kind,
        path: "infra.md".into(),
        section: None,
        id: None,
        ids: None,
        content: None,
        to: None,
        before: None,
        reason: Reason::Contradiction,
        superseded_by: None,
        evidence: Vec::new(),
    }
}

pub fn patch(name: &str, store: &str, ops: Vec<PatchOp>) -> MemoryPatch {
    let mut p = MemoryPatch::new(
        name,
        MemoryPatchSpec {
            store_ref: LocalRef::new(store),
            base_revision: 41,
            summary: "one fix".into(),
            ops,
        },
    );
    p.metadata.namespace = Some("team".into());
    p
}

pub fn session(name: &str, parent: Option<&str>, phase: Option<SessionPhase>) -> AgentSession {
    let mut s = AgentSession::new(
        name,
        AgentSessionSpec {
            agent_ref: parent.map(|_| LocalRef::new("coder")),
            team_ref: if parent.is_none() {
                Some(LocalRef::new("dev"))
            } else {
                None
            },
            prompt: "do it".into(),
            parent_ref: parent.map(LocalRef::new),
            member: parent.map(|_| "coder".to_string()),
            timeout_seconds: 60,
        },
    );
    s.status = Some(AgentSessionStatus {
        phase,
        ..Default::default()
    });
    s
}
