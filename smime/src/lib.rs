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
//! # Where the engine and OpenSSL differ, deliberately
//!
//! The differential fuzz targets (`fuzz/`, `diff_decrypt` and
//! `diff_verify`) run the engine and the OpenSSL it links on the same bytes.
//! Every disagreement they found was fixed (each with a test in
//! `tests/engine/gaps.rs`) or is one of these:
//!
//! | input | OpenSSL | engine | why |
//! |---|---|---|---|
//! | a header line with no colon, or a field name that is not ASCII text (`MIM\xFFE-Version`), before the Content-Type | skips the line and reads on | the header ends there (RFC 5322 §2.2); on line 1 the error says so | every mail reader ends the header at such a line; reading on can take a Content-Type from the body |
//! | bytes that begin as a DER SEQUENCE and go on as a MIME message | takes the DER as a bad header line, reads the MIME | bare CMS (as gpgsm and `cmsutil` write it) | bare CMS input is a feature; such a mixture is not mail |
//! | base64 with padding in the middle or bytes outside the alphabet | its BIO resynchronises and may decode something | refuses (transfer encoding) | a guessed decoding is another message |
//! | a corrupted encrypted key with a CBC cipher | the MMA countermeasure decrypts with a random key: 1 in 256 "succeeds" with garbage | the same OpenSSL call: the same chance | inherent to CBC (GCM fails cleanly); the fuzz harness counts an OpenSSL success only when two decryptions agree |
//! | multipart/signed OpenSSL's reader cannot split ("no multipart body") | refuses | verifies the parts it finds, over their exact bytes | more lenient only where the signature covers exactly the bytes shown |
//! | a signature that matches only with the other line ends | invalid | valid, reported as `canonicalised` | mail stored with LF line ends |
//! | a signer whose EKU is only anyExtendedKeyUsage | refused (`smime_sign` purpose) | accepted | RFC 8550 §4.4.4 |
//! | a chain that breaks its CAs' policy constraints | accepted (no policy check by default) | refused | RFC 5280 §6.1 |
//! | a recipient named by a Windows-derived key identifier | no matching recipient | opened | .NET and Windows write them |
//! | content encrypted in a stream mode (AES-CFB/OFB, DES-CFB/OFB) | "opens" with any key, a wrong one giving garbage | refused as unsupported | S/MIME uses CBC and GCM (RFC 8551 §2.7); nothing tells a right key from a wrong one |
//! | no RecipientInfo names the key's certificate (an altered identifier) | tries the key on the recipients anyway and may open | no matching key | never trial-decrypt: with implicit rejection a wrong key "succeeds" |
//! | a leading mbox `From ` or HTTP request line | read as a (bad) header line: opens, or refuses when the lines after it are damaged too | skipped, with a note | said aloud, and the header after it read as any other |
//! | binary bytes (NUL, 8-bit junk) inside header field values, fields whose names are intact | its reader stops and refuses | reads the fields by name and opens | RFC 5322 values are unstructured to a reader that only needs Content-Type; nothing from the body is taken as header |
//! | a form feed inside base64 lines | its BIO stops ("not enough data") | ignored, opens | RFC 2045 §6.8: characters outside the alphabet are ignored by decoders; whitespace is the safe part of that |
//! | base64 cut off mid-quantum (length 1 more than a multiple of 4) | decodes what it can | refuses (transfer encoding) | as any bad base64: a guessed decoding is another message |
//! | a first line that is only whitespace (a continuation with no field) | skips it | "line 1 is not a header field" | as a malformed header line |
//!
//! Real clients' mail (`tests/engine/clients.rs` checks every known answer
//! of `testvectors/README.md` for Bouncy Castle's, MimeKit's, Simple Java
//! Mail's, KDE's and .NET's sets). Where the verdicts differ:
//!
//! | mail | OpenSSL / the other stack | engine | why |
//! |---|---|---|---|
//! | Eudora Pro 3.0 (MimeKit msg12): a folded boundary with spaces | OpenSSL's reader cannot split it; verifies once split by hand | verifies | the boundary is legal (RFC 2046 §5.1.1) |
//! | an encrypted part beside others in a multipart/mixed (KDE's "ambiguous" mails; a relay's disclaimer) | `cms -decrypt` refuses (not S/MIME at the top) | the part opened in place, the other parts byte for byte, with a note (the gateway's `X-Sikkermail-Decrypted` says "only part N of M") | a court letter with a disclaimer added on the way must still open |
//! | Bouncy Castle `test128`/`test256`: the OID says AES-128/-256, the key is 24 bytes | OpenSSL: bad decrypt; BC decrypts | refused, saying the cipher may be labelled wrongly | a mislabelled cipher is not what the sender asked for; guessing another key size is trial decryption |
//! | Mac Outlook 14.4 (`3nnn`): the signed part's trailing CRLF is hashed | OpenSSL verifies; BC's test calls it invalid | verifies | the bytes signed are the bytes between the delimiters |
//! | validator `noEmail`: a signer certificate with no e-mail address | OpenSSL accepts; BC rejects | valid, no address reported | the gateway then refuses it as "not the sender" (RFC 8550 §3), which is where the address matters |
//! | signers' certificates long expired (every real-client set) | `-attime` to check at signing time | checked now by default (expired); `Validation::time` (`smime verify --at`) checks at a moment or at each signer's signing time | a gateway receiving mail checks now; archives choose |
//!
//! Also found: the `openssl` crate's `ErrorStack::get` panics when OpenSSL's
//! error data is not UTF-8, which `SMIME_read_CMS` produces by echoing a
//! Content-Type from the input. The engine never calls `SMIME_read_CMS`
//! (it parses MIME itself), and the fuzz harness reads the error queue
//! itself.
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
pub use verify::{
    CheckTime, CrlCheck, SignatureReport, SignerReport, TrustStore, Validation, verify_cms,
};

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
