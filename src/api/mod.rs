//! The custom resources of group `reverie.dev`, version `v1alpha1`: types,
//! defaults and validation only (no logic).

pub mod memorypatch;

pub use memorypatch::*;

/// The API group of every reverie resource.
pub const GROUP: &str = "reverie.dev";
/// The version served and stored.
pub const VERSION: &str = "v1alpha1";
