//! Helpers shared by the gguf integration tests.
pub mod writer;
