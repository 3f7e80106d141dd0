//! The command line: one binary, subcommands per DESIGN §1.
//!
//! `anyhow` lives here, at the edge; the library below returns typed errors.

pub mod agent;
pub mod controller;
pub mod crdgen;
pub mod dream;
pub mod logging;
pub mod memory;
pub mod plugin;

use clap::{Parser, Subcommand, ValueEnum};

/// reverie: teams of LLM agents on Kubernetes that get better by dreaming.
#[derive(Parser, Debug)]
#[command(name = "reverie", version, about, propagate_version = true)]
pub struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `reverie=debug`.
    #[arg(long, global = true, env = "REVERIE_LOG", default_value = "warn")]
    pub log: String,
    /// Log lines as human text or as one JSON object per line (with the
    /// reconciled object's kind, namespace and name on each line).
    #[arg(
        long,
        global = true,
        env = "REVERIE_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read a store's memories and sessions and propose a MemoryPatch.
    Dream(Box<dream::DreamArgs>),
    /// Apply, preview, list and roll back changes to a store.
    #[command(subcommand)]
    Memory(memory::MemoryCommand),
    /// Run an AgentSession (the agent runtime in a session's pod).
    Agent(agent::AgentArgs),
    /// Print every CustomResourceDefinition (the content of `crds/`).
    Crdgen(crdgen::CrdgenArgs),
    /// The kubectl plugin (`kubectl reverie …`) for users who do not link
    /// the binary as `kubectl-reverie`.
    Plugin(plugin::PluginArgs),
    /// Run the operator: reconcile stores, schedules and patches.
    Controller(controller::ControllerArgs),
}

/// Output format for commands that print data.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
    Yaml,
}

/// An error that ends the process with a specific exit code
/// (2: invalid input, 3: a failed precondition).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Exit {
            code,
            message: message.into(),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Dream(a) => dream::run(*a),
        Command::Memory(c) => memory::run(c),
        Command::Crdgen(a) => crdgen::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Plugin(a) => plugin::run(a),
        Command::Controller(a) => controller::run(a),
    }
}
