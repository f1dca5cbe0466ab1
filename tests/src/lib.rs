//! Workspace integration tests for wendy.
//!
//! [`conformance`] holds one body of scenarios; each driver implements the small blocking
//! facade [`Driver`]/[`TestNode`] ([`tokio_driver`], [`smol_driver`]) and the
//! [`conformance_tests!`] macro instantiates every scenario as a `#[test]` for it
//! (see `tests/conformance_tokio.rs` and `tests/conformance_smol.rs`).
//!
//! Other test layers (fuzz-case replay, simulator scenarios) live beside these modules.

#![forbid(unsafe_code)]

pub mod conformance;
pub mod facade;
pub mod overload;
pub mod smol_driver;
pub mod tokio_driver;

pub use facade::{Driver, Ev, TestNode};
