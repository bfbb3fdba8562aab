//! The `smime` crate's integration tests: one binary, three tiers.
//! - `roundtrip`: every algorithm combination through our own encrypt/sign
//!   and decrypt/verify, plus property tests on arbitrary content.
//! - `malformed`: broken, truncated and tampered input gives typed errors.
//! - `corpus`: real mail from other implementations (`../shared/testvectors`).
//! - `pkits`: NIST PKITS path validation (from the PyPI `cryptography_vectors`).

#![allow(clippy::unwrap_used)]

mod clients;
mod corpus;
mod fixtures;
mod gaps;
mod malformed;
mod pkits;
mod roundtrip;
