//! `status`: a MemoryStore with its patches, an AgentSession's delegation
//! tree, or a summary of every store in the namespace; as a table or as data.

use super::{strip_kind, StatusArgs, SCHEDULE_KINDS, SESSION_KINDS, STORE_KINDS};
use crate::api::{
    AgentSession, ChildSession, MemoryPatch, MemoryStore, APPROVAL_ANNOTATION,
    APPROVED_BY_ANNOTATION,
};
use crate::cli::{Exit, Output};
use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One condition, as `status` shows it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRow {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// One MemoryPatch of a store.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PatchRow {
    pub name: String,
    /// `status.phase`; absent before the controller saw the patch.
    pub phase: Option<String>,
    pub ops: usize,
    pub base_revision: u64,
    pub approval: Option<String>,
    pub approved_by: Option<String>,
    pub summary: String,
    pub created: Option<String>,
}

/// `status STORE`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreReport {
    pub name: String,
    pub namespace: String,
    pub revision: Option<u64>,
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub last_dream: Option<String>,
    pub pending_patches: Option<u32>,
    pub claim: Option<String>,
    pub conditions: Vec<ConditionRow>,
    pub patches: Vec<PatchRow>,
}

/// One row of `status` without a name.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StoreRow {
    pub name: String,
    pub revision: Option<u64>,
    pub entries: Option<u64>,
    pub bytes: Option<u64>,
    pub pending_patches: Option<u32>,
    pub last_dream: Option<String>,
    pub ready: Option<String>,
}

/// A session and the sessions it delegated to (`status SESSION`).
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SessionNode {
    pub name: String,
    pub phase: Option<String>,
    pub agent: Option<String>,
    pub team: Option<String>,
    pub member: Option<String>,
    /// False for a child the parent's status names but that no longer
    /// exists as an object.
    pub exists: bool,
    pub children: Vec<SessionNode>,
}

fn time_text(t: &Option<Time>) -> Option<String> {
    // jiff's Display of a Timestamp is RFC 3339 in UTC.
    t.as_ref().map(|t| t.0.to_string())
}

pub(crate) fn condition_rows(conditions: &[Condition]) -> Vec<ConditionRow> {
    let mut rows: Vec<ConditionRow> = conditions
        .iter()
        .map(|c| ConditionRow {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    rows.sort_by(|a, b| a.type_.cmp(&b.type_));
    rows
}

/// The report of one store and its patches (those whose `spec.storeRef`
/// names it), oldest first.
pub fn store_report(store: &MemoryStore, patches: &[MemoryPatch]) -> StoreReport {
    let name = store.metadata.name.clone().unwrap_or_default();
    let status = store.status.clone().unwrap_or_default();
    let mut mine: Vec<&MemoryPatch> = patches
        .iter()
        .filter(|p| p.spec.store_ref.name == name)
        .collect();
    mine.sort_by(|a, b| {
        let ka = (time_text(&a.metadata.creation_timestamp), &a.metadata.name);
        let kb = (time_text(&b.metadata.creation_timestamp), &b.metadata.name);
        ka.cmp(&kb)
    });
    let patches = mine
        .into_iter()
        .map(|p| {
            let ann = p.metadata.annotations.clone().unwrap_or_default();
            PatchRow {
                name: p.metadata.name.clone().unwrap_or_default(),
                phase: p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map(|ph| format!("{ph:?}")),
                ops: p.spec.ops.len(),
                base_revision: p.spec.base_revision,
                approval: ann.get(APPROVAL_ANNOTATION).cloned(),
                approved_by: ann.get(APPROVED_BY_ANNOTATION).cloned(),
                summary: p.spec.summary.clone(),
                created: time_text(&p.metadata.creation_timestamp),
            }
        })
        .collect();
    StoreReport {
        name,
        namespace: store.metadata.namespace.clone().unwrap_or_default(),
        revision: status.revision,
        entries: status.entries,
        bytes: status.bytes,
        last_dream: time_text(&status.last_dream),
        pending_patches: status.pending_patches,
        claim: status.claim_name,
        conditions: condition_rows(&status.conditions),
        patches,
    }
}

/// The summary rows of every store, by name.
pub fn store_rows(stores: &[MemoryStore]) -> Vec<StoreRow> {
    let mut rows: Vec<StoreRow> = stores
        .iter()
        .map(|s| {
            let status = s.status.clone().unwrap_or_default();
            StoreRow {
                name: s.metadata.name.clone().unwrap_or_default(),
                revision: status.revision,
                entries: status.entries,
                bytes: status.bytes,
                pending_patches: status.pending_patches,
                last_dream: time_text(&status.last_dream),
                ready: status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == crate::api::condition::READY)
                    .map(|c| c.status.clone()),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// The delegation tree under `root`: children are the sessions whose
/// `spec.parentRef` names their parent, plus children the parent's status
/// lists that no longer exist; ordered by name. A cycle (which the
/// controller never creates) is cut where a session would repeat.
pub fn session_tree(root: &str, sessions: &[AgentSession]) -> Option<SessionNode> {
    let by_name: BTreeMap<&str, &AgentSession> = sessions
        .iter()
        .filter_map(|s| s.metadata.name.as_deref().map(|n| (n, s)))
        .collect();
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, s) in &by_name {
        if let Some(parent) = &s.spec.parent_ref {
            children
                .entry(parent.name.as_str())
                .or_default()
                .insert(name);
        }
    }
    by_name.get(root)?;
    let mut seen = BTreeSet::new();
    Some(build_node(root, &by_name, &children, &mut seen, None))
}

fn build_node<'a>(
    name: &'a str,
    by_name: &BTreeMap<&'a str, &'a AgentSession>,
    children: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    seen: &mut BTreeSet<&'a str>,
    listed: Option<&ChildSession>,
) -> SessionNode {
    seen.insert(name);
    let Some(session) = by_name.get(name) else {
        return SessionNode {
            name: name.to_string(),
            phase: listed.and_then(|c| c.phase).map(|p| format!("{p:?}")),
            agent: None,
            team: None,
            member: listed.map(|c| c.member.clone()),
            exists: false,
            children: Vec::new(),
        };
    };
    let status = session.status.clone().unwrap_or_default();
    let mut names: BTreeMap<&str, Option<&ChildSession>> = BTreeMap::new();
    if let Some(kids) = children.get(name) {
        for k in kids {
            names.insert(k, None);
        }
    }
    for c in session
        .status
        .as_ref()
        .map(|s| s.children.as_slice())
        .unwrap_or_default()
    {
        names.insert(c.name.as_str(), Some(c));
    }
    let mut kids = Vec::new();
    for (child, listed) in names {
        if seen.contains(child) {
            continue;
        }
        kids.push(build_node(child, by_name, children, seen, listed));
    }
    SessionNode {
        name: name.to_string(),
        phase: status.phase.map(|p| format!("{p:?}")),
        agent: session.spec.agent_ref.as_ref().map(|r| r.name.clone()),
        team: session.spec.team_ref.as_ref().map(|r| r.name.clone()),
        member: session.spec.member.clone(),
        exists: true,
        children: kids,
    }
}

fn dash<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), |v| v.to_string())
}

/// Columns separated by two spaces, left-aligned, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(cell);
            line.push_str(&" ".repeat(w.saturating_sub(cell.chars().count()) + 2));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The table text of a store report.
pub fn render_store_report(r: &StoreReport) -> String {
    let mut out = format!("MemoryStore {} (namespace {})\n", r.name, r.namespace);
    let fields = [
        ("revision", dash(&r.revision)),
        ("entries", dash(&r.entries)),
        ("bytes", dash(&r.bytes)),
        ("last dream", dash(&r.last_dream)),
        ("pending patches", dash(&r.pending_patches)),
        ("claim", dash(&r.claim)),
    ];
    for (k, v) in fields {
        out.push_str(&format!("  {k}: {v}\n"));
    }
    out.push_str("\nConditions:\n");
    if r.conditions.is_empty() {
        out.push_str("  (none yet: the controller has not reported on this store)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["TYPE", "STATUS", "REASON", "MESSAGE"],
            &rows,
        )));
    }
    out.push_str("\nMemoryPatches:\n");
    if r.patches.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let rows: Vec<Vec<String>> = r
            .patches
            .iter()
            .map(|p| {
                let decision = match (&p.approval, &p.approved_by) {
                    (Some(a), Some(by)) => format!("{a} by {by}"),
                    (Some(a), None) => a.clone(),
                    _ => "-".to_string(),
                };
                vec![
                    p.name.clone(),
                    dash(&p.phase),
                    p.ops.to_string(),
                    p.base_revision.to_string(),
                    decision,
                    p.summary.clone(),
                ]
            })
            .collect();
        out.push_str(&indent(&table(
            &["NAME", "PHASE", "OPS", "BASE", "DECISION", "SUMMARY"],
            &rows,
        )));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// The table text of store rows.
pub fn render_store_rows(rows: &[StoreRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                dash(&r.revision),
                dash(&r.entries),
                dash(&r.bytes),
                dash(&r.pending_patches),
                dash(&r.last_dream),
                dash(&r.ready),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "REVISION",
            "ENTRIES",
            "BYTES",
            "PENDING",
            "LAST DREAM",
            "READY",
        ],
        &cells,
    )
}

/// The tree text of a session: one line per session, with its phase and
/// what it runs.
pub fn render_session_tree(root: &SessionNode) -> String {
    let mut lines: Vec<(String, &SessionNode)> = Vec::new();
    flatten_tree(root, "", "", &mut lines);
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|(prefix, n)| {
            let mut runs = Vec::new();
            if let Some(t) = &n.team {
                runs.push(format!("team/{t}"));
            }
            if let Some(a) = &n.agent {
                runs.push(format!("agent/{a}"));
            }
            if let Some(m) = &n.member {
                runs.push(format!("member {m}"));
            }
            if !n.exists {
                runs.push("(object gone)".to_string());
            }
            vec![
                format!("{prefix}{}", n.name),
                dash(&n.phase),
                runs.join(", "),
            ]
        })
        .collect();
    table(&["SESSION", "PHASE", "RUNS"], &rows)
}

fn flatten_tree<'a>(
    node: &'a SessionNode,
    prefix: &str,
    child_prefix: &str,
    out: &mut Vec<(String, &'a SessionNode)>,
) {
    out.push((prefix.to_string(), node));
    let n = node.children.len();
    for (i, child) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        let (branch, cont) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        flatten_tree(
            child,
            &format!("{child_prefix}{branch}"),
            &format!("{child_prefix}{cont}"),
            out,
        );
    }
}

fn render_data<T: Serialize>(
    value: &T,
    output: Output,
    table_text: impl FnOnce() -> String,
) -> anyhow::Result<String> {
    Ok(match output {
        Output::Table => table_text(),
        Output::Json => {
            let mut s = serde_json::to_string_pretty(value).context("cannot encode JSON")?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_yaml::to_string(value).context("cannot encode YAML")?,
    })
}

enum Target<'a> {
    Any(&'a str),
    Store(&'a str),
    Session(&'a str),
    Schedule(&'a str),
}

fn parse_target(arg: &str) -> Result<Target<'_>, Exit> {
    match arg.split_once('/') {
        None => Ok(Target::Any(strip_kind(arg, &[])?)),
        Some((kind, _)) if STORE_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) => {
            Ok(Target::Store(strip_kind(arg, STORE_KINDS)?))
        }
        Some((kind, _)) if SESSION_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) => {
            Ok(Target::Session(strip_kind(arg, SESSION_KINDS)?))
        }
        Some((kind, _)) if SCHEDULE_KINDS.iter().any(|k| k.eq_ignore_ascii_case(kind)) => {
            Ok(Target::Schedule(strip_kind(arg, SCHEDULE_KINDS)?))
        }
        Some((kind, _)) => Err(Exit::new(
            2,
            format!("'{arg}': status shows a memorystore, an agentsession or a dreamschedule, not a {kind}"),
        )),
    }
}

fn read_error(e: kube::Error, what: &str, ns: &str) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("cannot read {what} in namespace {ns}"))
}

/// Shows the target named in `args` (or every store); returns what to print.
pub(super) async fn run(
    client: &kube::Client,
    ns: &str,
    args: &StatusArgs,
) -> anyhow::Result<String> {
    let stores: Api<MemoryStore> = Api::namespaced(client.clone(), ns);
    let sessions: Api<AgentSession> = Api::namespaced(client.clone(), ns);
    let Some(target) = &args.target else {
        let list = stores
            .list(&ListParams::default())
            .await
            .map_err(|e| read_error(e, "MemoryStores", ns))?;
        let rows = store_rows(&list.items);
        return render_data(&rows, args.output, || {
            if rows.is_empty() {
                format!("no MemoryStores in namespace {ns}\n")
            } else {
                render_store_rows(&rows)
            }
        });
    };
    let (want_store, want_session, name) = match parse_target(target)? {
        Target::Any(n) => (true, true, n),
        Target::Store(n) => (true, false, n),
        Target::Session(n) => (false, true, n),
        Target::Schedule(n) => {
            let report = super::schedule::read(client, ns, n, chrono::Utc::now())
                .await?
                .ok_or_else(|| {
                    Exit::new(1, format!("no DreamSchedule named {n} in namespace {ns}"))
                })?;
            return render_data(&report, args.output, || {
                super::schedule::render_schedule_report(&report)
            });
        }
    };
    if want_store {
        if let Some(store) = stores
            .get_opt(name)
            .await
            .map_err(|e| read_error(e, &format!("MemoryStore {name}"), ns))?
        {
            let patches: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
            let list = patches
                .list(&ListParams::default())
                .await
                .map_err(|e| read_error(e, "MemoryPatches", ns))?;
            let report = store_report(&store, &list.items);
            return render_data(&report, args.output, || render_store_report(&report));
        }
    }
    if want_session
        && sessions
            .get_opt(name)
            .await
            .map_err(|e| read_error(e, &format!("AgentSession {name}"), ns))?
            .is_some()
    {
        let all = sessions
            .list(&ListParams::default())
            .await
            .map_err(|e| read_error(e, "AgentSessions", ns))?;
        // The session was read a moment ago; if it vanished since, say so.
        let tree = session_tree(name, &all.items).ok_or_else(|| {
            Exit::new(
                1,
                format!("AgentSession {name} was deleted in namespace {ns} while reading"),
            )
        })?;
        return render_data(&tree, args.output, || render_session_tree(&tree));
    }
    let kinds = match (want_store, want_session) {
        (true, true) => "MemoryStore or AgentSession",
        (true, false) => "MemoryStore",
        _ => "AgentSession",
    };
    Err(Exit::new(1, format!("no {kinds} named {name} in namespace {ns}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::plugin::fixtures::*;

    use crate::api::{
        ChildSession, MemoryPatchStatus, MemoryStoreSpec, MemoryStoreStatus, OpKind, PatchPhase,
        SessionPhase,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn store_report_lists_only_its_patches_oldest_first() {
        let mut store = MemoryStore::new(
            "team-memory",
            MemoryStoreSpec {
                storage: Default::default(),
                instructions: None,
                limits: None,
                retention: None,
                deletion_policy: Default::default(),
            },
        );
        store.metadata.namespace = Some("team".into());
        store.status = Some(MemoryStoreStatus {
            revision: Some(7),
            entries: Some(120),
            bytes: Some(9000),
            ..Default::default()
        });
        let mut b = patch("b", "team-memory", vec![op(OpKind::Add)]);
        b.status = Some(MemoryPatchStatus {
            phase: Some(PatchPhase::Applied),
            ..Default::default()
        });
        let a = patch("a", "team-memory", vec![]);
        let other = patch("c", "other", vec![]);
        let r = store_report(&store, &[b, other, a]);
        assert_eq!(r.revision, Some(7));
        let names: Vec<&str> = r.patches.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(r.patches[1].phase.as_deref(), Some("Applied"));
        let text = render_store_report(&r);
        assert!(text.contains("  revision: 7\n"), "{text}");
        assert!(text.contains("b     Applied  1    41"), "{text}");
        assert!(!text.contains(" c "), "{text}");
    }

    #[test]
    fn session_tree_follows_parent_refs_and_status_children() {
        let mut lead = session("lead", None, Some(SessionPhase::Running));
        if let Some(st) = lead.status.as_mut() {
            st.children = vec![ChildSession {
                name: "gone".into(),
                member: "tester".into(),
                phase: Some(SessionPhase::Failed),
            }];
        }
        let sessions = vec![
            session("c2", Some("lead"), Some(SessionPhase::Running)),
            lead,
            session("c1", Some("lead"), Some(SessionPhase::Succeeded)),
            session("g1", Some("c1"), None),
            session("unrelated", None, None),
        ];
        let tree = session_tree("lead", &sessions).expect("lead exists");
        let text = render_session_tree(&tree);
        let expected = "\
SESSION   PHASE      RUNS
lead      Running    team/dev
├─ c1     Succeeded  agent/coder, member coder
│  └─ g1  -          agent/coder, member coder
├─ c2     Running    agent/coder, member coder
└─ gone   Failed     member tester, (object gone)
";
        assert_eq!(text, expected);
        assert!(session_tree("missing", &sessions).is_none());
    }

    #[test]
    fn session_tree_cuts_cycles() {
        let sessions = vec![session("a", Some("b"), None), session("b", Some("a"), None)];
        let tree = session_tree("a", &sessions).expect("a exists");
        assert_eq!(tree.children.len(), 1);
        assert!(tree.children[0].children.is_empty());
    }

    #[test]
    fn store_rows_are_sorted_and_show_ready() {
        let mut s1 = MemoryStore::new(
            "zeta",
            MemoryStoreSpec {
                storage: Default::default(),
                instructions: None,
                limits: None,
                retention: None,
                deletion_policy: Default::default(),
            },
        );
        s1.status = Some(MemoryStoreStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "Bound".into(),
                message: String::new(),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        });
        let mut s2 = s1.clone();
        s2.metadata.name = Some("alpha".into());
        s2.status = None;
        let rows = store_rows(&[s1, s2]);
        let text = render_store_rows(&rows);
        assert_eq!(
            text,
            "NAME   REVISION  ENTRIES  BYTES  PENDING  LAST DREAM  READY\nalpha  -         -        -      -        -           -\nzeta   -         -        -      -        -           True\n"
        );
    }
}
