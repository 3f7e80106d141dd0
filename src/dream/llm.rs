//! The optional LLM pass. (Being written.)
