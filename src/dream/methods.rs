//! Analysis: methods. (Being written.)

use super::{Corpus, DreamOptions};
use crate::api::PatchOp;

/// Finds what this analysis proposes; deterministic.
pub fn find(_corpus: &Corpus, _opts: &DreamOptions) -> Vec<PatchOp> {
    Vec::new()
}
