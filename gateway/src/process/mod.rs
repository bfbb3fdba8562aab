//! What happens to an accepted message before delivery: [`inbound`]
//! (decrypt, verify, harvest, info headers) and [`outbound`] (policy, sign,
//! encrypt, split per recipient). Pure functions over bytes and keys; the
//! worker does the I/O.

pub mod headers;
pub mod inbound;
pub mod outbound;
pub mod senders;
