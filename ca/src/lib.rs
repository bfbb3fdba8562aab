//! The internal CA of sikkermail: OCES3-shaped certificate profiles,
//! issuance, renewal, revocation, CRLs and PKCS#12.
//!
//! **Pure**: no I/O, no database, no network. Certificates are built here as
//! to-be-signed DER from a [`Profile`] and signed through the [`Signer`]
//! trait, so the CA key can live anywhere (file, HSM). The store keeps
//! keys, certificates and CA state; the binary wires the two.
//!
//! Where to start reading:
//! - [`profile`]: the profiles as types (`OrganisationCertificate`,
//!   `UserCertificate`, `CaCertificate`) and reading them back from a
//!   certificate ([`ParsedEndEntity`]).
//! - [`authority`]: [`issue`] and [`crl`].
//! - [`names`]: `Cvr`, `EmailAddress`, `DisplayName`, `OcesUuid` (parse,
//!   don't validate).
//! - [`pkcs12`]: export in the modern and compatible flavours, import.
//!
//! ```
//! use ca::names::{Cvr, EmailAddress};
//! assert!(Cvr::parse("1234567").is_err());
//! assert!(EmailAddress::parse("jørgen@advokat.dk").unwrap_err().to_string().contains("Æ, Ø or Å"));
//! ```

pub mod authority;
pub(crate) mod der_build;
pub mod error;
pub mod names;
pub mod pkcs12;
pub mod profile;
pub mod signer;

pub use authority::{Issued, IssuerRef, RevocationReason, RevokedEntry, crl, issue};
pub use error::CaError;
pub use names::{Cvr, DisplayName, EmailAddress, OcesUuid};
pub use profile::{
    CaCertificate, EndEntity, IssuancePolicy, Kind, OrganisationCertificate, ParsedEndEntity,
    Profile, UserCertificate,
};
pub use signer::{RsaPssSigner, Signer, generate_rsa};
