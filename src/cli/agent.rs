//! `reverie agent --session NS/NAME`: the agent runtime in a session's pod.

use crate::runtime::plan::Outcome;
use anyhow::Context as _;

/// Arguments of `reverie agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// The AgentSession to run, as NAMESPACE/NAME.
    #[arg(long)]
    pub session: String,
}

/// Runs the session; exit 1 when it failed (the termination message says why).
pub fn run(a: AgentArgs) -> anyhow::Result<()> {
    let (ns, name) = a
        .session
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| {
            super::Exit::new(
                2,
                format!("--session {:?}: expected NAMESPACE/NAME", a.session),
            )
        })?;
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let term = rt.block_on(crate::runtime::run_session(ns, name));
    match term.outcome {
        Outcome::Succeeded => Ok(()),
        Outcome::Failed => Err(anyhow::anyhow!(
            "session {ns}/{name} failed: {}",
            term.message.unwrap_or_default()
        )),
    }
}
