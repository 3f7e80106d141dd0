//! `reverie dream`.

#[derive(clap::Args, Debug)]
pub struct DreamArgs {
    /// The store directory (holds `memories/` and `sessions/`).
    #[arg(long)]
    pub store: std::path::PathBuf,
}

pub fn run(_args: DreamArgs) -> anyhow::Result<()> {
    anyhow::bail!("dream: not built yet")
}
