//! `reverie crdgen`: prints every CRD, or writes one file per CRD.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CrdgenArgs {
    /// Write `<plural>.yaml` files into this directory instead of printing
    /// one multi-document YAML stream.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The YAML of one CRD, exactly as checked in under `crds/`.
pub fn render(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> anyhow::Result<String> {
    Ok(serde_yaml::to_string(crd)?)
}

/// Every CRD as `(file name, YAML)`.
pub fn files() -> anyhow::Result<Vec<(String, String)>> {
    crate::api::crds()
        .into_iter()
        .map(|(plural, crd)| Ok((format!("{plural}.yaml"), render(&crd)?)))
        .collect()
}

pub fn run(args: CrdgenArgs) -> anyhow::Result<()> {
    let files = files()?;
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
        None => {
            let docs: Vec<String> = files.into_iter().map(|(_, y)| y).collect();
            print!("{}", docs.join("---\n"));
        }
    }
    Ok(())
}
