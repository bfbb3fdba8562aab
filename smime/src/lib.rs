//! The S/MIME engine of sikkermail: decrypt, verify, encrypt and sign
//! RFC 5322 messages as bytes (RFC 8551, RFC 5652).
//!
//! **Pure**: no I/O, no network, no database, no async runtime. Callers read
//! files and hand over bytes; keys come through the [`Keyring`] trait.
//!
//! Where to start reading:
//! - [`open`]: [`decrypt`] and [`verify`] take layers off a message.
//! - [`encrypt()`] and [`sign()`] put them on.
//! - [`mime`]: the byte-exact MIME splitter everything rests on.
//! - [`cmsinfo`]: reading CMS structures (recipients, signers, algorithms).
//!
//! ```
//! // The MIME layer works on bytes and keeps every byte it is given.
//! let mail = b"Subject: x\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nMIAG";
//! let entity = smime::mime::Entity::parse(mail);
//! let ct = entity.content_type();
//! assert_eq!(ct.mime_type, "application/pkcs7-mime");
//! assert_eq!(ct.param("smime-type"), Some("enveloped-data"));
//! assert_eq!(entity.body(), b"MIAG");
//! ```
//!
//! All private-key and cipher work goes through OpenSSL (the vendored 3.x,
//! with implicit rejection for RSA PKCS#1 v1.5); call [`init`] once at
//! start (every entry point also does, once) so the `legacy` provider is there
//! for RC2 and old 3DES mail.

pub mod cmsinfo;
mod encrypt;
pub mod error;
mod ffi;
pub mod inspect;
pub mod keyring;
pub mod mime;
pub mod open;
mod prepare;
pub mod revocation;
mod sign;
pub mod stream;
pub mod verify;

use std::sync::OnceLock;

pub use encrypt::{ContentCipher, EncryptOptions, KeyTransport, encrypt, encrypt_to};
pub use error::{Error, Result};
pub use inspect::{Layer, inspect};
pub use keyring::{KeyPair, Keyring, MemoryKeyring, RecipientId};
pub use open::{DecryptReport, LayerReport, Opened, decrypt, verify};
pub use sign::{SMIME_CAPABILITIES, SignOptions, sign, sign_der};
pub use verify::{CrlCheck, SignatureReport, SignerReport, TrustStore, Validation, verify_cms};

static PROVIDERS: OnceLock<bool> = OnceLock::new();

/// Loads OpenSSL's `default` and `legacy` providers once for the life of the
/// process (RC2 in old mail needs `legacy`). Returns false when `legacy`
/// could not be loaded; RC2 mail then fails with a clear error.
pub fn init() -> bool {
    *PROVIDERS.get_or_init(|| {
        // Loading any provider explicitly turns off the implicit default:
        // load both. The handles are kept forever (dropping them has been
        // seen to crash at exit with the vendored build).
        let default = openssl::provider::Provider::try_load(None, "default", true);
        let legacy = openssl::provider::Provider::try_load(None, "legacy", true);
        let ok = default.is_ok() && legacy.is_ok();
        if let Ok(p) = default {
            std::mem::forget(p);
        }
        if let Ok(p) = legacy {
            std::mem::forget(p);
        }
        ok
    })
}
