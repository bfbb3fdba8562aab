//! [`Policy`]: a parsed policy file, three levels of partial settings.

use std::collections::BTreeMap;

use crate::error::PolicyError;
use crate::names::{Address, Domain};
use crate::settings::{Cipher, EncryptRule, Generation, Revocation, Undecryptable};

/// A value set in the policy file, with the line it was set on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Set<T> {
    pub(crate) value: T,
    pub(crate) line: Option<usize>,
}

/// One level (`[default]`, a domain or an address): each key is either set
/// here or inherited from the level above.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Level {
    pub(crate) encrypt: Option<Set<EncryptRule>>,
    pub(crate) sign: Option<Set<bool>>,
    pub(crate) cipher: Option<Set<Cipher>>,
    pub(crate) oaep: Option<Set<bool>>,
    pub(crate) generations: Option<Set<Vec<Generation>>>,
    pub(crate) subject_trigger: Option<Set<String>>,
    pub(crate) undecryptable: Option<Set<Undecryptable>>,
    /// Dotted OIDs.
    pub(crate) signer_policies: Option<Set<Vec<String>>>,
    /// SHA-256 fingerprints, upper-case hex without separators.
    pub(crate) signer_anchors: Option<Set<Vec<String>>>,
    pub(crate) revocation: Option<Set<Revocation>>,
}

/// A parsed policy. [`Policy::default`] is the policy of no file: every key
/// has its built-in default ([`defaults`](crate::defaults)).
///
/// Levels, most specific first: `[address."x@y.dk"]`, then every
/// `[domain."..."]` that covers the address's domain (the domain itself or a
/// parent: `[domain."domstol.dk"]` covers `x@ret.domstol.dk`) from the most
/// labels to the fewest, then `[default]`, then the built-in defaults. Each
/// key is taken from the first level that sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub(crate) default: Level,
    pub(crate) domains: BTreeMap<Domain, Level>,
    pub(crate) addresses: BTreeMap<Address, Level>,
}

impl Policy {
    /// Parse a policy text. An empty text is the same as no file.
    ///
    /// # Errors
    /// Every problem in the text, sorted by position (see [`PolicyError`]).
    pub fn parse(text: &str) -> Result<Self, Vec<PolicyError>> {
        crate::parse::parse(text)
    }

    /// The domains that have a `[domain."..."]` table, in order.
    pub fn domains(&self) -> impl Iterator<Item = &Domain> {
        self.domains.keys()
    }

    /// The addresses that have an `[address."..."]` table, in order.
    pub fn addresses(&self) -> impl Iterator<Item = &Address> {
        self.addresses.keys()
    }
}

/// Check a policy text: every problem in it, sorted by position; empty when
/// the text is a valid policy.
pub fn check(text: &str) -> Vec<PolicyError> {
    Policy::parse(text).err().unwrap_or_default()
}
