//! The values a policy sets, one type per key, and the built-in defaults.
//!
//! Each type has the name used in the policy file ([`EncryptRule::name`]
//! etc.) and parses from it; the names are the file format, so they never
//! change.

use std::fmt;

macro_rules! named_enum {
    ($(#[$m:meta])* $name:ident, expected = $expected:literal, { $($(#[$vm:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant,)+
        }

        impl $name {
            /// Every value, in the order of the docs.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];
            /// What the policy file accepts, for error messages.
            pub(crate) const EXPECTED: &'static str = $expected;

            /// The name in the policy file.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value with this name in the policy file (exact, lower case).
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

named_enum!(
    /// `encrypt`: whether mail to a recipient is encrypted.
    EncryptRule, expected = r#""required", "opportunistic" or "never""#, {
        /// Encrypt, or hold the message and bounce it to the sender when no
        /// certificate is found. Plaintext is never sent.
        Required = "required",
        /// Encrypt when a certificate is found, otherwise send signed only
        /// (the built-in default).
        Opportunistic = "opportunistic",
        /// Never encrypt (for peers that cannot read S/MIME). The subject
        /// trigger still overrides this.
        Never = "never",
    }
);

named_enum!(
    /// `cipher`: the content-encryption algorithm. CBC is
    /// EnvelopedData (RFC 5652 §6), GCM is AuthEnvelopedData (RFC 5083).
    Cipher, expected = r#""aes256-cbc", "aes128-cbc", "aes256-gcm" or "aes128-gcm""#, {
        /// AES-256-CBC, read by every peer (the built-in default).
        Aes256Cbc = "aes256-cbc",
        /// AES-128-CBC.
        Aes128Cbc = "aes128-cbc",
        /// AES-256-GCM (AuthEnvelopedData).
        Aes256Gcm = "aes256-gcm",
        /// AES-128-GCM (AuthEnvelopedData).
        Aes128Gcm = "aes128-gcm",
    }
);

named_enum!(
    /// A certificate generation a recipient may be encrypted to, as read
    /// from the certificate's own policy OIDs (OCES2 `1.2.208.169.1.1.1.x.1`
    /// to `.6`, OCES3 `.7`).
    Generation, expected = r#""OCES2", "OCES3" or "other""#, {
        /// NemID-era certificates (VOCES, MOCES, FOCES).
        Oces2 = "OCES2",
        /// MitID Erhverv certificates (in the built-in default).
        Oces3 = "OCES3",
        /// Neither: no OCES policy OID (a partner abroad, a CA of its own;
        /// in the built-in default). `["OCES3"]` leaves these out.
        Other = "other",
    }
);

named_enum!(
    /// `undecryptable`: what happens to inbound mail the gateway cannot
    /// decrypt. It is never dropped.
    Undecryptable, expected = r#""deliver" or "quarantine""#, {
        /// Deliver as received, with a header saying why (the built-in default).
        Deliver = "deliver",
        /// Keep it in quarantine for an administrator.
        Quarantine = "quarantine",
    }
);

named_enum!(
    /// `revocation`: whether a signer's chain must have revocation data
    /// (CRLs given, carried in the message, or fetched).
    Revocation, expected = r#""require", "prefer" or "off""#, {
        /// Without revocation data for every certificate of the chain the
        /// signature is not valid ("revocation unavailable").
        Require = "require",
        /// Check what is available (the built-in default).
        Prefer = "prefer",
        /// Do not check revocation.
        Off = "off",
    }
);

named_enum!(
    /// A key of a policy level; used in [`Reason`](crate::Reason)s to say
    /// which field a rule set.
    Field, expected = "encrypt, sign, cipher, oaep, generations, subject_trigger, undecryptable, signer_policies, signer_anchors or revocation", {
        /// `encrypt`.
        Encrypt = "encrypt",
        /// `sign`.
        Sign = "sign",
        /// `cipher`.
        Cipher = "cipher",
        /// `oaep`.
        Oaep = "oaep",
        /// `generations`.
        Generations = "generations",
        /// `subject_trigger`.
        SubjectTrigger = "subject_trigger",
        /// `undecryptable`.
        Undecryptable = "undecryptable",
        /// `signer_policies` (inbound, by sender).
        SignerPolicies = "signer_policies",
        /// `signer_anchors` (inbound, by sender).
        SignerAnchors = "signer_anchors",
        /// `revocation` (inbound, by sender).
        Revocation = "revocation",
    }
);

impl Field {
    /// The keys of an outbound [`Decision`](crate::Decision), in its order.
    pub const OUTBOUND: &'static [Field] = &[
        Field::Encrypt,
        Field::Sign,
        Field::Cipher,
        Field::Oaep,
        Field::Generations,
        Field::SubjectTrigger,
        Field::Undecryptable,
    ];
    /// The keys of a [`SignerRule`](crate::SignerRule), in its order.
    pub const SIGNER: &'static [Field] = &[
        Field::SignerPolicies,
        Field::SignerAnchors,
        Field::Revocation,
    ];
}

/// The built-in defaults, used where no level of the policy sets a key.
pub mod defaults {
    use super::{Cipher, EncryptRule, Generation, Revocation, Undecryptable};

    /// `encrypt = "opportunistic"`.
    pub const ENCRYPT: EncryptRule = EncryptRule::Opportunistic;
    /// `sign = true`.
    pub const SIGN: bool = true;
    /// `cipher = "aes256-cbc"`: every peer reads it.
    pub const CIPHER: Cipher = Cipher::Aes256Cbc;
    /// `oaep = false`: RSA PKCS#1 v1.5 key transport, which every peer reads.
    pub const OAEP: bool = false;
    /// `generations = ["OCES3", "other"]`: anything but OCES2. NemID
    /// (OCES2) certificates expired with NemID; the organisation's own
    /// legacy OCES2 keys are kept for decryption only and are never
    /// encryption targets whatever this says. Certificates without an OCES
    /// policy (partners abroad, CAs of their own) are `other`: a policy
    /// that says `["OCES3"]` encrypts to real OCES3 certificates only.
    pub const GENERATIONS: &[Generation] = &[Generation::Oces3, Generation::Other];
    /// `subject_trigger = "[sikker]"`.
    pub const SUBJECT_TRIGGER: &str = "[sikker]";
    /// `undecryptable = "deliver"`.
    pub const UNDECRYPTABLE: Undecryptable = Undecryptable::Deliver;
    /// `signer_policies = []`: any policy (or none) the chain asserts.
    pub const SIGNER_POLICIES: &[&str] = &[];
    /// `signer_anchors = []`: any configured trust anchor.
    pub const SIGNER_ANCHORS: &[&str] = &[];
    /// `revocation = "prefer"`: checked where revocation data is at hand.
    pub const REVOCATION: Revocation = Revocation::Prefer;
}
