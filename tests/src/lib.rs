//! Conformance suite shared by the drivers.
