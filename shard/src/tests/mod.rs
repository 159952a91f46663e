//! Loom models; filled in below.
