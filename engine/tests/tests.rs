//! Behaviour tests of the public API, as one binary (see ripgrep's `tests/tests.rs`).

mod suite;
