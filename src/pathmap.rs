//! Translation of in-pod absolute paths through `REVERIE_PATH_MAP`.
//!
//! In a real pod a mount path such as `/workspace` exists and the map is
//! unset, so every path stays as it is. Where pods run as local processes
//! (the project's test node) a mount path cannot exist on the real root: the
//! node passes `REVERIE_PATH_MAP="/workspace=/real/dir:/dev/termination-log=/real/file"`
//! (`:`-separated `mount=real` pairs, longest mount path first) and every
//! absolute path a reverie process computes itself must go through
//! [`translate`] before it touches the file system.

use std::path::{Path, PathBuf};

/// The environment variable holding the map.
pub const ENV: &str = "REVERIE_PATH_MAP";

/// Parses a map value into `(mount, real)` pairs, longest mount first.
pub fn parse(map: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = map
        .split(':')
        .filter_map(|pair| {
            let (mount, real) = pair.split_once('=')?;
            (!mount.is_empty() && !real.is_empty()).then(|| (mount.to_string(), real.to_string()))
        })
        .collect();
    pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    pairs
}

/// Translates `path` through `pairs`: the first mount that is the path or a
/// `/`-prefix of it is replaced by its real directory.
pub fn translate_with(pairs: &[(String, String)], path: &Path) -> PathBuf {
    let Some(s) = path.to_str() else {
        return path.to_path_buf();
    };
    for (mount, real) in pairs {
        if s == mount {
            return PathBuf::from(real);
        }
        if let Some(rest) = s.strip_prefix(mount.as_str()) {
            if rest.starts_with('/') {
                return PathBuf::from(format!("{real}{rest}"));
            }
        }
    }
    path.to_path_buf()
}

/// Translates `path` through `REVERIE_PATH_MAP` (unchanged when it is unset).
pub fn translate(path: impl AsRef<Path>) -> PathBuf {
    match std::env::var(ENV) {
        Ok(map) => translate_with(&parse(&map), path.as_ref()),
        Err(_) => path.as_ref().to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_whole_prefix_wins() {
        let pairs = parse("/data=/r/d:/data/sub=/r/s:/dev/termination-log=/r/t");
        assert_eq!(
            translate_with(&pairs, Path::new("/data/x")),
            PathBuf::from("/r/d/x")
        );
        assert_eq!(
            translate_with(&pairs, Path::new("/data/sub/y")),
            PathBuf::from("/r/s/y")
        );
        assert_eq!(
            translate_with(&pairs, Path::new("/database")),
            PathBuf::from("/database")
        );
        assert_eq!(
            translate_with(&pairs, Path::new("/dev/termination-log")),
            PathBuf::from("/r/t")
        );
        assert_eq!(translate_with(&[], Path::new("/x")), PathBuf::from("/x"));
    }
}
