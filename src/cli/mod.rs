//! Subcommands of the binary. They read files, call the crates, print, and
//! map results to exit statuses: 0 success, 1 the cryptographic operation
//! failed, 2 usage or unreadable input.

pub mod smime;
