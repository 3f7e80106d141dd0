//! reverie: a Kubernetes operator that runs teams of LLM agents and makes
//! them better between sessions by dreaming over their memory.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod controller;
pub mod dream;
#[doc(hidden)]
pub mod fuzzing;
pub mod llm_http;
pub mod memory;
pub mod pathmap;
pub mod runtime;
