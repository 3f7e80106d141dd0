//! `reverie crdgen`: prints every CRD.

#[derive(clap::Args, Debug)]
pub struct CrdgenArgs {}

pub fn run(_args: CrdgenArgs) -> anyhow::Result<()> {
    anyhow::bail!("crdgen: not built yet")
}
