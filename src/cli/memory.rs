//! `reverie memory apply|diff|log|rollback`.

#[derive(clap::Subcommand, Debug)]
pub enum MemoryCommand {}

pub fn run(c: MemoryCommand) -> anyhow::Result<()> {
    match c {}
}
