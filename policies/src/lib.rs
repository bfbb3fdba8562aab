//! The policy of sikkermail: which mail is signed and encrypted, how, and
//! what happens to mail that cannot be decrypted.
//!
//! **Pure**: no I/O, no runtime, no database, no network. It takes the text
//! of a policy file (`&str`) and the facts of a message, and returns values.
//! Reading the file, finding certificates, and acting on a [`Decision`]
//! (holding, bouncing, encrypting) belong to the gateway.
//!
//! # The policy file
//!
//! TOML with three kinds of level, each inheriting from the one above:
//! `[address."x@y.dk"]` overrides `[domain."y.dk"]`, which overrides
//! `[default]`, which overrides the built-in [`defaults`]. Keys:
//!
//! | key | values | built-in default |
//! |---|---|---|
//! | `encrypt` | `"required"`, `"opportunistic"`, `"never"` | `"opportunistic"` |
//! | `sign` | `true`, `false` | `true` |
//! | `cipher` | `"aes256-cbc"`, `"aes128-cbc"`, `"aes256-gcm"`, `"aes128-gcm"` | `"aes256-cbc"` |
//! | `oaep` | `true`, `false` | `false` |
//! | `generations` | non-empty array of `"OCES2"`, `"OCES3"`, `"other"` (no OCES policy OID) | `["OCES3", "other"]` |
//! | `subject_trigger` | text; `""` turns it off | `"[sikker]"` |
//! | `undecryptable` | `"deliver"`, `"quarantine"` | `"deliver"` |
//! | `signer_policies` | array of policy OIDs the signer's chain must assert (one of them) | `[]` (none required) |
//! | `signer_anchors` | array of `"sha256:<hex>"` anchor fingerprints the chain must end at | `[]` (any configured anchor) |
//! | `revocation` | `"require"`, `"prefer"`, `"off"` | `"prefer"` |
//!
//! Matching is on the recipient, case-insensitively; the last three keys
//! are inbound trust rules and match the sender ([`Policy::signer_rule`]):
//! a signature that is cryptographically valid but breaks one is reported
//! as `valid but untrusted (<rule>)`, never as valid. A domain table covers
//! the domain and its subdomains (`[domain."domstol.dk"]` covers
//! `x@ret.domstol.dk`, not `x@xdomstol.dk`); when several cover an address
//! they inherit from each other too, the one with the most labels first
//! (`ret.domstol.dk` over `domstol.dk` over `dk`). No file, or an empty one, is
//! [`Policy::default`]. A subject containing the trigger (case-insensitive)
//! makes encryption required, even over `"never"`, and the trigger is removed
//! ([`Decision::new_subject`]). The organisation's own legacy OCES2 keys are
//! never encryption targets, whatever `generations` says: they are kept to
//! decrypt old mail only. See `example-policy.toml` next to this crate.
//!
//! # Where to start reading
//!
//! - [`Policy::parse`] / [`check`] (in `parse.rs`): text to [`Policy`], every
//!   problem reported at once as [`PolicyError`]s with their [`Location`].
//! - [`Policy::decide`] (in `decide.rs`): ([`MessageFacts`], recipient) to
//!   [`Decision`], with a [`Reason`] per field; [`Policy::explain`] does every
//!   recipient; [`Policy::undecryptable_for`] is the inbound question.
//! - [`settings`]: the value types ([`EncryptRule`], [`Cipher`],
//!   [`Generation`], [`Undecryptable`]) and [`defaults`].
//! - [`names`]: [`Domain`] and [`Address`], parsed once, lower case.
//!
//! ```
//! use policies::{EncryptRule, MessageFacts, Policy, Source};
//!
//! let policy = Policy::parse(r#"
//!     [domain."domstol.dk"]
//!     encrypt = "required"
//! "#).unwrap();
//! let facts = MessageFacts {
//!     from: "post@advokatfirma.dk".into(),
//!     to: vec!["byret@ret.domstol.dk".into()],
//!     subject: "Processkrift".into(),
//! };
//! let d = policy.decide(&facts, "byret@ret.domstol.dk");
//! assert_eq!(d.encrypt, EncryptRule::Required);
//! assert!(matches!(d.reasons[0].source, Source::Domain(_)));
//!
//! let errors = policies::check("[default]\nencypt = \"required\"\nsign = \"yes\"\n");
//! assert_eq!(errors.len(), 2);
//! ```

pub mod decide;
pub mod error;
pub mod names;
mod parse;
pub mod policy;
pub mod settings;
mod trigger;

pub use decide::{Decision, Explanation, MessageFacts, Reason, SignerRule, Source};
pub use error::{Location, PolicyError};
pub use names::{Address, Domain};
pub use policy::{Policy, check};
pub use settings::{Cipher, EncryptRule, Field, Generation, Revocation, Undecryptable, defaults};
