//! Subcommands of the binary. They read files, call the crates, print, and
//! map results to exit statuses: 0 success, 1 the cryptographic operation
//! failed, 2 usage or unreadable input.

pub mod admin_cmd;
pub mod backup_cmd;
pub mod ca_cmd;
pub mod context;
pub mod io;
pub mod keys_cmd;
pub mod mailbox_cmd;
pub mod org_cmd;
pub mod policy_cmd;
pub mod queue_cmd;
pub mod serve;
pub mod smime;
pub mod smtp_user_cmd;
