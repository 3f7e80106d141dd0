//! `kubectl reverie`: the reviewer's interface to a cluster (DESIGN §1, §2
//! "Approval").
//!
//! The same binary serves it as `kubectl-reverie` on `PATH` (argv\[0\]
//! decides, see [`is_plugin_name`]) and as `reverie plugin …` for users who
//! do not link it. Subcommands: `approve`, `reject`, `diff`, `dream-now`,
//! `status`. Everything that decides what to send or print is a pure
//! function of the objects read ([`decision_patch`], [`render_diff`],
//! [`store_report`], [`session_tree`], …), so it is tested without a
//! cluster; the `run_*` functions only read, call them and write.

use super::{Exit, Output};
use crate::api::{
    AgentSession, DreamSchedule, MemoryPatch, MemoryStore, OpKind, PatchOp, APPROVAL_ANNOTATION,
    APPROVAL_REASON_ANNOTATION, APPROVED_BY_ANNOTATION,
};
use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Annotation that asks the controller for a dream now: its value is the
/// RFC 3339 time of the request; the controller turns each new value into
/// one Job `<schedule>-now-<8 hex>`.
pub const DREAM_NOW_ANNOTATION: &str = "reverie.dev/dream-now";

/// The executable name under which the binary acts as the kubectl plugin.
pub const PLUGIN_NAME: &str = "kubectl-reverie";

/// Whether argv\[0\] names the kubectl plugin (`kubectl-reverie`, with any
/// directory and an optional extension such as `.exe`).
pub fn is_plugin_name(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_stem()
        .is_some_and(|stem| stem == OsStr::new(PLUGIN_NAME))
}

/// `kubectl reverie`, when the binary runs as `kubectl-reverie`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "kubectl reverie",
    bin_name = "kubectl reverie",
    version,
    about = "Review, approve and trigger reverie memory changes on a cluster."
)]
pub struct PluginCli {
    /// Log filter (also RUST_LOG), e.g. `info` or `reverie=debug`.
    #[arg(long, global = true, env = "REVERIE_LOG", default_value = "warn")]
    pub log: String,
    #[command(flatten)]
    pub args: PluginArgs,
}

/// The plugin's flags and subcommand (shared by `kubectl reverie` and
/// `reverie plugin`).
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(flatten)]
    pub kube: KubeFlags,
    #[command(subcommand)]
    pub command: PluginCommand,
}

/// Connection flags, named like kubectl's.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct KubeFlags {
    /// Namespace; the kubeconfig context's namespace when absent, else `default`.
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use; the current context when absent.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig file; `KUBECONFIG` (or `~/.kube/config`) when absent.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Act as this user (impersonation, like `kubectl --as`).
    #[arg(long = "as", value_name = "USER", global = true)]
    pub as_user: Option<String>,
    /// Act in this group too (impersonation, like `kubectl --as-group`); repeatable.
    #[arg(long = "as-group", value_name = "GROUP", global = true)]
    pub as_group: Vec<String>,
}

/// What `kubectl reverie` does.
#[derive(clap::Subcommand, Debug)]
pub enum PluginCommand {
    /// Approve a MemoryPatch (needs the verb `approve` on its MemoryStore).
    Approve(DecideArgs),
    /// Reject a MemoryPatch (needs the verb `approve` on its MemoryStore).
    Reject(DecideArgs),
    /// Show a MemoryPatch as a reviewable diff, from the resource alone.
    Diff(DiffArgs),
    /// Ask the controller to run a DreamSchedule's dream now.
    DreamNow(DreamNowArgs),
    /// A MemoryStore (revision, patches) or an AgentSession (delegation
    /// tree); without a name, every store of the namespace.
    Status(StatusArgs),
}

/// `approve` / `reject`.
#[derive(clap::Args, Debug)]
pub struct DecideArgs {
    /// The MemoryPatch (`NAME` or `memorypatch/NAME`).
    pub patch: String,
    /// Why; recorded in the annotation `reverie.dev/approval-reason`.
    #[arg(long)]
    pub reason: Option<String>,
}

/// When `diff` colours its output.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ColorMode {
    /// Only when stdout is a terminal (and `NO_COLOR` is not set).
    #[default]
    Auto,
    Always,
    Never,
}

/// `diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// The MemoryPatch (`NAME` or `memorypatch/NAME`).
    pub patch: String,
    /// Colour the diff.
    #[arg(long, value_enum, default_value_t = ColorMode::Auto)]
    pub color: ColorMode,
}

/// `dream-now`.
#[derive(clap::Args, Debug)]
pub struct DreamNowArgs {
    /// The DreamSchedule (`NAME` or `dreamschedule/NAME`).
    pub schedule: String,
}

/// `status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A MemoryStore or AgentSession name; `memorystore/NAME` or
    /// `agentsession/NAME` when both kinds have it.
    pub target: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs a plugin command (blocking: starts its own tokio runtime).
pub fn run(args: PluginArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: PluginArgs) -> anyhow::Result<()> {
    let (client, namespace) = connect(&args.kube).await?;
    let mut out = std::io::stdout().lock();
    let text = match args.command {
        PluginCommand::Approve(a) => decide(&client, &namespace, &a, Decision::Approved).await?,
        PluginCommand::Reject(a) => decide(&client, &namespace, &a, Decision::Rejected).await?,
        PluginCommand::Diff(a) => {
            let name = strip_kind(&a.patch, PATCH_KINDS)?;
            let patch = get_patch(&client, &namespace, name).await?;
            let color = match a.color {
                ColorMode::Always => true,
                ColorMode::Never => false,
                ColorMode::Auto => {
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
                }
            };
            render_diff(&patch, color)
        }
        PluginCommand::DreamNow(a) => dream_now(&client, &namespace, &a, Utc::now()).await?,
        PluginCommand::Status(a) => status(&client, &namespace, &a).await?,
    };
    use std::io::Write;
    out.write_all(text.as_bytes())
        .context("cannot write to stdout")?;
    Ok(())
}

/// Builds a client from the kubeconfig and the flags; returns it with the
/// namespace to work in.
async fn connect(flags: &KubeFlags) -> anyhow::Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: flags.context.clone(),
        cluster: None,
        user: None,
    };
    let mut config = match &flags.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .with_context(|| format!("cannot use the kubeconfig {}", path.display()))?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .context("cannot load the kubeconfig (from KUBECONFIG or ~/.kube/config)")?,
    };
    if let Some(user) = &flags.as_user {
        config.auth_info.impersonate = Some(user.clone());
        if !flags.as_group.is_empty() {
            config.auth_info.impersonate_groups = Some(flags.as_group.clone());
        }
    } else if !flags.as_group.is_empty() {
        return Err(Exit::new(2, "--as-group needs --as (like kubectl)").into());
    }
    let namespace = flags
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    Ok((client, namespace))
}

const PATCH_KINDS: &[&str] = &[
    "memorypatch",
    "memorypatches",
    "mpatch",
    "memorypatch.reverie.dev",
    "memorypatches.reverie.dev",
];
const SCHEDULE_KINDS: &[&str] = &[
    "dreamschedule",
    "dreamschedules",
    "dsched",
    "dreamschedule.reverie.dev",
    "dreamschedules.reverie.dev",
];
const STORE_KINDS: &[&str] = &[
    "memorystore",
    "memorystores",
    "mstore",
    "memorystore.reverie.dev",
    "memorystores.reverie.dev",
];
const SESSION_KINDS: &[&str] = &[
    "agentsession",
    "agentsessions",
    "asess",
    "agentsession.reverie.dev",
    "agentsessions.reverie.dev",
];

/// `NAME` or `KIND/NAME` (kind one of `kinds`, case-insensitive) → `NAME`.
fn strip_kind<'a>(arg: &'a str, kinds: &[&str]) -> Result<&'a str, Exit> {
    match arg.split_once('/') {
        None if !arg.is_empty() => Ok(arg),
        None => Err(Exit::new(2, "an empty name was given")),
        Some((kind, name)) => {
            if name.is_empty() || name.contains('/') {
                return Err(Exit::new(2, format!("'{arg}' is not NAME or KIND/NAME")));
            }
            if kinds.iter().any(|k| k.eq_ignore_ascii_case(kind)) {
                Ok(name)
            } else {
                Err(Exit::new(
                    2,
                    format!(
                        "'{arg}': expected a {} name, not a {kind}",
                        kinds.first().copied().unwrap_or("resource")
                    ),
                ))
            }
        }
    }
}

/// The apiserver's answer inside a client error, if it is one.
fn api_status(err: &kube::Error) -> Option<&kube::core::Status> {
    match err {
        kube::Error::Api(status) => Some(status),
        _ => None,
    }
}

fn is_not_found(err: &kube::Error) -> bool {
    api_status(err).is_some_and(|s| s.code == 404)
}

async fn get_patch(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<MemoryPatch> {
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
    match api.get(name).await {
        Ok(p) => Ok(p),
        Err(e) if is_not_found(&e) => {
            Err(Exit::new(1, format!("MemoryPatch {name} not found in namespace {ns}")).into())
        }
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("cannot read MemoryPatch {name} in namespace {ns}"))),
    }
}

/// A reviewer's decision on a MemoryPatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Approved,
    Rejected,
}

impl Decision {
    /// The value of `reverie.dev/approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Rejected => "rejected",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Decision::Approved => "approve",
            Decision::Rejected => "reject",
        }
    }
}

/// The JSON merge patch that records a decision: the approval, who made it
/// (the policy checks it equals the requester), the reason when given, and
/// the `resourceVersion` read, so that a concurrent change makes the write
/// fail (409) instead of deciding on a state the user did not see.
pub fn decision_patch(
    decision: Decision,
    user: &str,
    reason: Option<&str>,
    resource_version: Option<&str>,
) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    annotations.insert(APPROVAL_ANNOTATION.into(), decision.as_str().into());
    annotations.insert(APPROVED_BY_ANNOTATION.into(), user.into());
    if let Some(reason) = reason {
        annotations.insert(APPROVAL_REASON_ANNOTATION.into(), reason.into());
    }
    let mut metadata = serde_json::Map::new();
    metadata.insert("annotations".into(), annotations.into());
    if let Some(rv) = resource_version {
        metadata.insert("resourceVersion".into(), rv.into());
    }
    serde_json::json!({ "metadata": metadata })
}

/// "already approved by alice (reason: …)" when the patch carries a
/// decision, else `None`.
pub fn existing_decision(patch: &MemoryPatch) -> Option<String> {
    let annotations = patch.metadata.annotations.as_ref()?;
    let decision = annotations.get(APPROVAL_ANNOTATION)?;
    let mut text = format!("already {decision}");
    if let Some(by) = annotations.get(APPROVED_BY_ANNOTATION) {
        text.push_str(&format!(" by {by}"));
    }
    if let Some(reason) = annotations.get(APPROVAL_REASON_ANNOTATION) {
        text.push_str(&format!(" (reason: {reason})"));
    }
    Some(text)
}

/// Who the apiserver says we are (after impersonation).
async fn whoami(client: &kube::Client) -> anyhow::Result<String> {
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let review = api
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context(
            "cannot ask the apiserver who you are (SelfSubjectReview, authentication.k8s.io/v1)",
        )?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "the apiserver's SelfSubjectReview named no user; cannot record who decides"
            )
        })
}

async fn decide(
    client: &kube::Client,
    ns: &str,
    args: &DecideArgs,
    decision: Decision,
) -> anyhow::Result<String> {
    let name = strip_kind(&args.patch, PATCH_KINDS)?;
    let patch = get_patch(client, ns, name).await?;
    if let Some(done) = existing_decision(&patch) {
        return Err(Exit::new(
            3,
            format!("MemoryPatch {name} in namespace {ns} is {done}; a decision is set once"),
        )
        .into());
    }
    let user = whoami(client).await?;
    let body = decision_patch(
        decision,
        &user,
        args.reason.as_deref(),
        patch.metadata.resource_version.as_deref(),
    );
    let api: Api<MemoryPatch> = Api::namespaced(client.clone(), ns);
    tracing::debug!(patch = name, namespace = ns, user = %user, "recording {}", decision.as_str());
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
    {
        Ok(_) => {}
        Err(e) => {
            let Some(status) = api_status(&e) else {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot {} MemoryPatch {name} in namespace {ns}",
                    decision.verb()
                )));
            };
            let message = match status.code {
                404 => format!("MemoryPatch {name} not found in namespace {ns}"),
                409 => {
                    // Someone changed the patch between our read and write: say
                    // what happened if it was a decision.
                    match get_patch(client, ns, name).await.ok().and_then(|p| existing_decision(&p)) {
                        Some(done) => format!(
                            "MemoryPatch {name} in namespace {ns} is {done}; a decision is set once"
                        ),
                        None => format!(
                            "MemoryPatch {name} in namespace {ns} changed while you decided; run the command again"
                        ),
                    }
                }
                _ => format!(
                    "the apiserver refused to let {user} {} MemoryPatch {name} in namespace {ns}: {}",
                    decision.verb(),
                    status.message
                ),
            };
            return Err(Exit::new(if status.code == 409 { 3 } else { 1 }, message).into());
        }
    }
    let store = &patch.spec.store_ref.name;
    let mut text = format!(
        "memorypatch/{name} {} by {user} (store {store}, namespace {ns})",
        decision.as_str()
    );
    if let Some(reason) = &args.reason {
        text.push_str(&format!("; reason: {reason}"));
    }
    text.push('\n');
    Ok(text)
}

/// The merge patch that requests a dream at `now`.
pub fn dream_now_patch(now: DateTime<Utc>) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"annotations": {DREAM_NOW_ANNOTATION: now.to_rfc3339_opts(SecondsFormat::Secs, true)}}
    })
}

/// The name of the Job the controller starts for a dream-now token:
/// `<schedule>-now-<first 8 hex digits of the token's SHA-256>`, the same
/// for the same token (so a restarted controller never starts it twice).
/// Names that would pass 63 characters are shortened by the controller;
/// then only the pattern is shown.
pub fn dream_now_job_name(schedule: &str, token: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    let hash = digest.get(..8).unwrap_or(&digest);
    let name = format!("{schedule}-now-{hash}");
    if name.len() <= 63 {
        name
    } else {
        format!("{schedule}-now-<8 hex> (shortened to 63 characters)")
    }
}

async fn dream_now(
    client: &kube::Client,
    ns: &str,
    args: &DreamNowArgs,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let name = strip_kind(&args.schedule, SCHEDULE_KINDS)?;
    let api: Api<DreamSchedule> = Api::namespaced(client.clone(), ns);
    let schedule = match api.get(name).await {
        Ok(s) => s,
        Err(e) if is_not_found(&e) => {
            return Err(Exit::new(
                1,
                format!("DreamSchedule {name} not found in namespace {ns}"),
            )
            .into())
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read DreamSchedule {name} in namespace {ns}"
            )))
        }
    };
    let body = dream_now_patch(now);
    api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map_err(|e| match api_status(&e) {
            Some(s) => anyhow::Error::new(Exit::new(
                1,
                format!(
                    "the apiserver refused to annotate DreamSchedule {name} in namespace {ns}: {}",
                    s.message
                ),
            )),
            None => anyhow::Error::new(e).context(format!(
                "cannot annotate DreamSchedule {name} in namespace {ns}"
            )),
        })?;
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let mut text = format!(
        "dreamschedule/{name} annotated {DREAM_NOW_ANNOTATION}={stamp}: the controller starts a dream of store {} as Job {}\n",
        schedule.spec.store_ref.name,
        dream_now_job_name(name, &stamp)
    );
    if schedule.spec.suspend {
        text.push_str("note: the schedule is suspended; suspension stops scheduled dreams only\n");
    }
    text.push_str(&format!("follow it with: kubectl get jobs -n {ns} -w\n"));
    Ok(text)
}

// ---------------------------------------------------------------- diff

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

fn evidence_text(ev: &crate::api::Evidence) -> String {
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

// -------------------------------------------------------------- status

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

fn condition_rows(conditions: &[Condition]) -> Vec<ConditionRow> {
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
    listed: Option<&crate::api::ChildSession>,
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
    let mut names: BTreeMap<&str, Option<&crate::api::ChildSession>> = BTreeMap::new();
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
        Some((kind, _)) => Err(Exit::new(
            2,
            format!("'{arg}': status shows a memorystore or an agentsession, not a {kind}"),
        )),
    }
}

fn read_error(e: kube::Error, what: &str, ns: &str) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("cannot read {what} in namespace {ns}"))
}

async fn status(client: &kube::Client, ns: &str, args: &StatusArgs) -> anyhow::Result<String> {
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
    use crate::api::{
        AgentSessionSpec, AgentSessionStatus, ChildSession, Evidence, LocalRef, MemoryPatchSpec,
        MemoryPatchStatus, MemoryStoreSpec, MemoryStoreStatus, PatchPhase, Reason, SessionPhase,
    };
    use clap::Parser;

    fn op(kind: OpKind) -> PatchOp {
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

    fn patch(name: &str, store: &str, ops: Vec<PatchOp>) -> MemoryPatch {
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

    #[test]
    fn plugin_name_is_recognised_by_file_stem() {
        assert!(is_plugin_name(OsStr::new("kubectl-reverie")));
        assert!(is_plugin_name(OsStr::new("/usr/local/bin/kubectl-reverie")));
        assert!(is_plugin_name(OsStr::new("C:/bin/kubectl-reverie.exe")));
        assert!(!is_plugin_name(OsStr::new("/usr/bin/reverie")));
        assert!(!is_plugin_name(OsStr::new("kubectl-reverie-old")));
    }

    #[test]
    fn flags_parse_like_kubectl() {
        let cli = PluginCli::try_parse_from([
            "kubectl-reverie",
            "approve",
            "memorypatch/p1",
            "--reason",
            "ok",
            "-n",
            "team",
            "--as",
            "alice",
            "--context",
            "c1",
        ])
        .expect("valid command line");
        assert_eq!(cli.args.kube.namespace.as_deref(), Some("team"));
        assert_eq!(cli.args.kube.as_user.as_deref(), Some("alice"));
        assert_eq!(cli.args.kube.context.as_deref(), Some("c1"));
        match cli.args.command {
            PluginCommand::Approve(a) => {
                assert_eq!(a.patch, "memorypatch/p1");
                assert_eq!(a.reason.as_deref(), Some("ok"));
            }
            other => panic!("parsed as {other:?}"),
        }
        let cli = PluginCli::try_parse_from(["kubectl-reverie", "status", "-o", "json"])
            .expect("valid command line");
        assert!(matches!(
            cli.args.command,
            PluginCommand::Status(StatusArgs {
                target: None,
                output: Output::Json
            })
        ));
        assert!(PluginCli::try_parse_from(["kubectl-reverie", "dream-now"]).is_err());
    }

    #[test]
    fn kinds_are_stripped_and_wrong_kinds_refused() {
        assert_eq!(strip_kind("p1", PATCH_KINDS).ok(), Some("p1"));
        assert_eq!(strip_kind("mpatch/p1", PATCH_KINDS).ok(), Some("p1"));
        assert_eq!(
            strip_kind("MemoryPatches.reverie.dev/p1", PATCH_KINDS).ok(),
            Some("p1")
        );
        let err = strip_kind("dreamschedule/p1", PATCH_KINDS).expect_err("wrong kind");
        assert_eq!(err.code, 2);
        assert!(
            err.message.contains("not a dreamschedule"),
            "{}",
            err.message
        );
        assert!(strip_kind("", PATCH_KINDS).is_err());
        assert!(strip_kind("mpatch/", PATCH_KINDS).is_err());
    }

    #[test]
    fn decision_patch_records_user_reason_and_precondition() {
        let body = decision_patch(Decision::Approved, "alice", Some("looks right"), Some("42"));
        assert_eq!(
            body,
            serde_json::json!({"metadata": {
                "annotations": {
                    "reverie.dev/approval": "approved",
                    "reverie.dev/approved-by": "alice",
                    "reverie.dev/approval-reason": "looks right"
                },
                "resourceVersion": "42"
            }})
        );
        let body = decision_patch(Decision::Rejected, "bob", None, None);
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"annotations": {
                "reverie.dev/approval": "rejected",
                "reverie.dev/approved-by": "bob"
            }}})
        );
    }

    #[test]
    fn existing_decision_names_who_and_why() {
        let mut p = patch("p1", "s", vec![]);
        assert_eq!(existing_decision(&p), None);
        p.metadata.annotations = Some(BTreeMap::from([
            (APPROVAL_ANNOTATION.to_string(), "rejected".to_string()),
            (APPROVED_BY_ANNOTATION.to_string(), "carol".to_string()),
            (
                APPROVAL_REASON_ANNOTATION.to_string(),
                "too broad".to_string(),
            ),
        ]));
        assert_eq!(
            existing_decision(&p).as_deref(),
            Some("already rejected by carol (reason: too broad)")
        );
    }

    #[test]
    fn dream_now_job_name_hashes_the_token() {
        // sha256("2026-11-30T20:41:07Z") starts with these 8 hex digits.
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"2026-11-30T20:41:07Z"))
        };
        assert_eq!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            format!("nightly-now-{}", &digest[..8])
        );
        assert_eq!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z")
        );
        assert_ne!(
            dream_now_job_name("nightly", "2026-11-30T20:41:07Z"),
            dream_now_job_name("nightly", "2026-11-30T20:41:08Z")
        );
        let long = "x".repeat(60);
        assert!(dream_now_job_name(&long, "t").contains("shortened"));
    }

    #[test]
    fn dream_now_patch_uses_the_injected_time() {
        let now = DateTime::parse_from_rfc3339("2026-11-30T20:41:07.123Z")
            .expect("valid time")
            .with_timezone(&Utc);
        assert_eq!(
            dream_now_patch(now),
            serde_json::json!({"metadata": {"annotations": {"reverie.dev/dream-now": "2026-11-30T20:41:07Z"}}})
        );
    }

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

    fn session(name: &str, parent: Option<&str>, phase: Option<SessionPhase>) -> AgentSession {
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
