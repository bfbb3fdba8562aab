//! Certificate profiles as types: the subject and extensions of each kind
//! of certificate the CA issues, shaped like MitID Erhverv's OCES3 ones
//! (see `../shared/DOMAIN.md`).
//!
//! ```text
//! Organisationscertifikat subject, in encoded order (one value per RDN):
//!   CN=<name> serialNumber=UI:DK-O:G:<uuid> O=<org> organizationIdentifier=NTRDK-<CVR> C=DK
//! Brugercertifikat: the same with serialNumber=UI:DK-E:G:<uuid> and the person's name as CN.
//! C and serialNumber are PrintableString, the others UTF8String.
//! ```

use crate::der_build::{ctx_cons, ctx_prim, octets, oid_str, seq, set, tlv, true_, uint};
use crate::error::CaError;
use crate::names::{Cvr, DisplayName, EmailAddress, OcesUuid};

pub(crate) const OID_CN: &str = "2.5.4.3";
pub(crate) const OID_SERIAL_NUMBER: &str = "2.5.4.5";
pub(crate) const OID_O: &str = "2.5.4.10";
pub(crate) const OID_ORG_ID: &str = "2.5.4.97";
pub(crate) const OID_C: &str = "2.5.4.6";

/// What the CA needs to know to fill in the extensions that point back at it.
#[derive(Debug, Clone, Default)]
pub struct IssuancePolicy {
    /// Certificate policy OIDs to assert (dotted). The internal CA does not
    /// claim the Danish state's OIDs unless told to.
    pub policy_oids: Vec<String>,
    /// CRL distribution point URL.
    pub crl_url: Option<String>,
    /// Authority information access: where the issuing CA's certificate is.
    pub ca_issuers_url: Option<String>,
    /// Authority information access: OCSP responder.
    pub ocsp_url: Option<String>,
}

impl IssuancePolicy {
    /// Checks that every policy OID is a valid OBJECT IDENTIFIER and every
    /// URL is plain ASCII (IA5String).
    pub fn validate(&self) -> Result<(), CaError> {
        for o in &self.policy_oids {
            check_oid(o)?;
        }
        for u in [&self.crl_url, &self.ca_issuers_url, &self.ocsp_url]
            .into_iter()
            .flatten()
        {
            if !u.is_ascii() || u.is_empty() || u.contains(char::is_whitespace) {
                return Err(CaError::Invalid(format!(
                    "{u:?} is not a URL (ASCII, no spaces)"
                )));
            }
        }
        Ok(())
    }
}

/// Checks a dotted OID (X.660: first arc 0-2, second below 40 unless the
/// first is 2).
pub fn check_oid(dotted: &str) -> Result<(), CaError> {
    const_oid::ObjectIdentifier::new(dotted)
        .map(|_| ())
        .map_err(|e| CaError::Invalid(format!("{dotted:?} is not a valid OID: {e}")))
}

/// The two kinds of end-entity certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Organisationscertifikat (`UI:DK-O:G:`), for shared mailboxes and systems.
    Organisation,
    /// Brugercertifikat (`UI:DK-E:G:`), for an employee.
    User,
}

impl Kind {
    fn serial_prefix(self) -> &'static str {
        match self {
            Kind::Organisation => "UI:DK-O:G:",
            Kind::User => "UI:DK-E:G:",
        }
    }

    /// `organisation` or `user`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Organisation => "organisation",
            Kind::User => "user",
        }
    }

    /// Parses `organisation` or `user`.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        match s {
            "organisation" | "organization" | "org" => Ok(Kind::Organisation),
            "user" | "bruger" => Ok(Kind::User),
            other => Err(CaError::Invalid(format!(
                "kind must be organisation or user, not {other:?}"
            ))),
        }
    }
}

/// A profile: everything about a certificate except keys, serial, dates and issuer.
pub trait Profile {
    /// DER of the subject Name.
    fn subject(&self) -> Vec<u8>;
    /// DER of each extension this profile adds (besides SKI and AKI, which
    /// the issuer adds for every certificate).
    fn extensions(&self, policy: &IssuancePolicy) -> Vec<Vec<u8>>;
    /// Validity in seconds.
    fn validity_seconds(&self) -> i64;
}

/// 1095 days less one second: OCES3's three years.
pub const END_ENTITY_VALIDITY: i64 = 1095 * 86_400 - 1;

/// The fields an OCES3 end-entity certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndEntity {
    /// Certificate name (organisation) or the person's name (user).
    pub common_name: DisplayName,
    /// Kept across renewals.
    pub uuid: OcesUuid,
    /// The organisation's name.
    pub organisation: DisplayName,
    /// The organisation's CVR.
    pub cvr: Cvr,
    /// E-mail address for subjectAltName.
    pub email: Option<EmailAddress>,
}

/// Organisationscertifikat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationCertificate(pub EndEntity);

/// Brugercertifikat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCertificate(pub EndEntity);

fn atv(oid: &str, tag: u8, value: &str) -> Vec<u8> {
    set(&[&seq(&[&oid_str(oid), &tlv(tag, value.as_bytes())])])
}

const PRINTABLE: u8 = 0x13;
const UTF8: u8 = 0x0c;

fn end_entity_subject(e: &EndEntity, kind: Kind) -> Vec<u8> {
    seq(&[
        &atv(OID_CN, UTF8, e.common_name.as_str()),
        &atv(
            OID_SERIAL_NUMBER,
            PRINTABLE,
            &format!("{}{}", kind.serial_prefix(), e.uuid),
        ),
        &atv(OID_O, UTF8, e.organisation.as_str()),
        &atv(OID_ORG_ID, UTF8, &format!("NTRDK-{}", e.cvr)),
        &atv(OID_C, PRINTABLE, "DK"),
    ])
}

/// An extension: extnID, critical (when true), extnValue.
pub(crate) fn extension(oid: &str, critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        seq(&[&oid_str(oid), &true_(), &octets(value)])
    } else {
        seq(&[&oid_str(oid), &octets(value)])
    }
}

fn end_entity_extensions(e: &EndEntity, policy: &IssuancePolicy) -> Vec<Vec<u8>> {
    // keyUsage: digitalSignature (bit 0) + keyEncipherment (bit 2).
    let mut out = vec![extension("2.5.29.15", true, &tlv(0x03, &[0x05, 0xa0]))];
    if let Some(email) = &e.email {
        out.push(extension(
            "2.5.29.17",
            false,
            &seq(&[&ctx_prim(1, email.as_str().as_bytes())]),
        ));
    }
    out.extend(common_extensions(policy));
    out
}

fn common_extensions(policy: &IssuancePolicy) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if !policy.policy_oids.is_empty() {
        let infos: Vec<Vec<u8>> = policy
            .policy_oids
            .iter()
            .map(|o| seq(&[&oid_str(o)]))
            .collect();
        let refs: Vec<&[u8]> = infos.iter().map(Vec::as_slice).collect();
        out.push(extension("2.5.29.32", false, &seq(&refs)));
    }
    if let Some(url) = &policy.crl_url {
        // DistributionPoint { distributionPoint [0] { fullName [0] { URI [6] } } }
        let dp = seq(&[&ctx_cons(0, &ctx_cons(0, &ctx_prim(6, url.as_bytes())))]);
        out.push(extension("2.5.29.31", false, &seq(&[&dp])));
    }
    let mut aia = Vec::new();
    if let Some(url) = &policy.ocsp_url {
        aia.push(seq(&[
            &oid_str("1.3.6.1.5.5.7.48.1"),
            &ctx_prim(6, url.as_bytes()),
        ]));
    }
    if let Some(url) = &policy.ca_issuers_url {
        aia.push(seq(&[
            &oid_str("1.3.6.1.5.5.7.48.2"),
            &ctx_prim(6, url.as_bytes()),
        ]));
    }
    if !aia.is_empty() {
        let refs: Vec<&[u8]> = aia.iter().map(Vec::as_slice).collect();
        out.push(extension("1.3.6.1.5.5.7.1.1", false, &seq(&refs)));
    }
    out
}

impl Profile for OrganisationCertificate {
    fn subject(&self) -> Vec<u8> {
        end_entity_subject(&self.0, Kind::Organisation)
    }
    fn extensions(&self, policy: &IssuancePolicy) -> Vec<Vec<u8>> {
        end_entity_extensions(&self.0, policy)
    }
    fn validity_seconds(&self) -> i64 {
        END_ENTITY_VALIDITY
    }
}

impl Profile for UserCertificate {
    fn subject(&self) -> Vec<u8> {
        end_entity_subject(&self.0, Kind::User)
    }
    fn extensions(&self, policy: &IssuancePolicy) -> Vec<Vec<u8>> {
        end_entity_extensions(&self.0, policy)
    }
    fn validity_seconds(&self) -> i64 {
        END_ENTITY_VALIDITY
    }
}

/// A CA certificate (root or issuing): `CN=<name>, O=<org>, C=DK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCertificate {
    /// CA name, e.g. "Advokatfirma rod-CA".
    pub common_name: DisplayName,
    /// Organisation owning the CA.
    pub organisation: DisplayName,
    /// `Some(0)` for an issuing CA (issues end entities only), `None` for a root.
    pub path_len: Option<u8>,
    /// Validity in days.
    pub validity_days: i64,
}

impl Profile for CaCertificate {
    fn subject(&self) -> Vec<u8> {
        seq(&[
            &atv(OID_C, PRINTABLE, "DK"),
            &atv(OID_O, UTF8, self.organisation.as_str()),
            &atv(OID_CN, UTF8, self.common_name.as_str()),
        ])
    }
    /// No CRL distribution point or AIA on CA certificates: the URLs in the
    /// policy are the issuing CA's own, and pointing the issuing CA at its
    /// own CRL would be wrong (RFC 5280 §4.2.1.13).
    fn extensions(&self, _policy: &IssuancePolicy) -> Vec<Vec<u8>> {
        let bc = match self.path_len {
            Some(n) => seq(&[&true_(), &uint(&[n])]),
            None => seq(&[&true_()]),
        };
        // keyCertSign (bit 5) + cRLSign (bit 6).
        vec![
            extension("2.5.29.19", true, &bc),
            extension("2.5.29.15", true, &tlv(0x03, &[0x01, 0x06])),
        ]
    }
    fn validity_seconds(&self) -> i64 {
        self.validity_days * 86_400 - 1
    }
}

/// An end-entity certificate read back: which profile and its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEndEntity {
    /// Organisation or user.
    pub kind: Kind,
    /// The fields.
    pub fields: EndEntity,
}

impl ParsedEndEntity {
    /// Reads the OCES3 subject (and e-mail) of a certificate, ours or MitID
    /// Erhverv's. Fails when the subject is not of the OCES3 shape.
    pub fn from_der(der: &[u8]) -> Result<Self, CaError> {
        let cert = openssl::x509::X509::from_der(der).map_err(|e| CaError::Parse(e.to_string()))?;
        Self::from_x509(&cert)
    }

    /// As [`ParsedEndEntity::from_der`] for a parsed certificate.
    pub fn from_x509(cert: &openssl::x509::X509Ref) -> Result<Self, CaError> {
        let mut fields: Vec<(String, String)> = Vec::new();
        for e in cert.subject_name().entries() {
            let oid = e.object().to_string();
            let oid = openssl::asn1::Asn1Object::from_str(&oid)
                .ok()
                .and_then(|o| {
                    let nid = o.nid();
                    nid.short_name().ok().map(str::to_string)
                })
                .unwrap_or(oid);
            let v = e
                .data()
                .to_string()
                .map_err(|err| CaError::Parse(err.to_string()))?;
            fields.push((oid, v));
        }
        let get = |k: &[&str]| {
            fields
                .iter()
                .find(|(n, _)| k.contains(&n.as_str()))
                .map(|(_, v)| v.clone())
        };
        let missing =
            |what: &str| CaError::Parse(format!("subject has no {what}: not an OCES3 certificate"));
        let serial = get(&["serialNumber"]).ok_or_else(|| missing("serialNumber"))?;
        let (kind, uuid) = if let Some(u) = serial.strip_prefix("UI:DK-O:G:") {
            (Kind::Organisation, u)
        } else if let Some(u) = serial.strip_prefix("UI:DK-E:G:") {
            (Kind::User, u)
        } else {
            return Err(CaError::Parse(format!(
                "serialNumber {serial:?} is not UI:DK-O:G:<uuid> or UI:DK-E:G:<uuid>"
            )));
        };
        let org_id =
            get(&["organizationIdentifier"]).ok_or_else(|| missing("organizationIdentifier"))?;
        let cvr = org_id.strip_prefix("NTRDK-").ok_or_else(|| {
            CaError::Parse(format!(
                "organizationIdentifier {org_id:?} is not NTRDK-<CVR>"
            ))
        })?;
        let email = cert
            .subject_alt_names()
            .and_then(|s| s.iter().find_map(|g| g.email().map(str::to_string)));
        Ok(ParsedEndEntity {
            kind,
            fields: EndEntity {
                common_name: DisplayName::parse("CN", &get(&["CN"]).ok_or_else(|| missing("CN"))?)?,
                uuid: OcesUuid::parse(uuid)?,
                organisation: DisplayName::parse("O", &get(&["O"]).ok_or_else(|| missing("O"))?)?,
                cvr: Cvr::parse(cvr)?,
                email: email.map(|e| EmailAddress::parse(&e)).transpose()?,
            },
        })
    }
}

/// The subject's SubjectKeyIdentifier: SHA-1 of the subjectPublicKey bits
/// (RFC 5280 §4.2.1.2, method 1).
pub(crate) fn key_identifier(spki_der: &[u8]) -> Result<Vec<u8>, CaError> {
    let spki = openssl::pkey::PKey::public_key_from_der(spki_der)?;
    // The BIT STRING content of the SPKI is the key; for RSA it is the
    // DER RSAPublicKey, which is what `public_key_to_der_pkcs1` gives.
    let bits = match spki.rsa() {
        Ok(rsa) => rsa.public_key_to_der_pkcs1()?,
        Err(_) => spki_der.to_vec(),
    };
    Ok(openssl::hash::hash(openssl::hash::MessageDigest::sha1(), &bits)?.to_vec())
}

pub(crate) fn ski_extension(spki_der: &[u8]) -> Result<Vec<u8>, CaError> {
    Ok(extension(
        "2.5.29.14",
        false,
        &octets(&key_identifier(spki_der)?),
    ))
}

pub(crate) fn aki_extension(issuer_key_id: &[u8]) -> Vec<u8> {
    extension("2.5.29.35", false, &seq(&[&ctx_prim(0, issuer_key_id)]))
}
