//! Certificates: issue, renew, revoke, export, and the CA's CRLs.

use ca::pkcs12::Flavour;
use ca::{
    Cvr, DisplayName, EmailAddress, EndEntity, IssuancePolicy, IssuerRef, Kind, OcesUuid,
    OrganisationCertificate, ParsedEndEntity, Profile, RevocationReason, RevokedEntry,
    RsaPssSigner, UserCertificate,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use store::{NewCert, NewKey, Organisation, Tx};

use crate::{Error, Result, Service};

/// How long a CRL is valid.
pub const CRL_VALIDITY_SECS: i64 = 7 * 86_400;
/// How long an OCSP answer of the internal CA may be used (nextUpdate).
pub const OCSP_VALIDITY_SECS: u32 = 3600;

/// The organisation's CA: certificates and the signers.
pub struct Authority {
    /// Root CA certificate.
    pub root: X509,
    /// Issuing CA certificate.
    pub issuing: X509,
    /// The issuing CA's key.
    pub signer: RsaPssSigner,
    /// The root's key (for the ARL).
    pub root_signer: RsaPssSigner,
    /// What goes into issued certificates.
    pub policy: IssuancePolicy,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A PKCS#12 file to make for the key just issued or exported.
#[derive(Debug, Clone)]
pub struct P12Request {
    /// Its password.
    pub password: String,
    /// Modern or compatible.
    pub flavour: Flavour,
}

/// What was issued (or renewed).
#[derive(Debug)]
pub struct Issued {
    /// The certificate's id.
    pub id: i64,
    /// The certificate.
    pub cert: X509,
    /// The PKCS#12 file, when one was asked for (already handed over).
    pub p12: Option<Vec<u8>>,
}

/// The two revocation lists of the internal CA.
#[derive(Debug)]
pub struct Crls {
    /// The issuing CA's CRL (end entities), DER.
    pub issuing: Vec<u8>,
    /// The root's ARL (the issuing CA), DER.
    pub root: Vec<u8>,
}

/// The issuance policy kept in the organisation's settings.
pub fn policy_of(org: &Organisation) -> IssuancePolicy {
    // Where the gateway answers for the CA (`[http] public_url`, kept by
    // `serve`): its CRL and its OCSP responder, unless set explicitly.
    let public = org
        .setting("public_url")
        .into_iter()
        .next()
        .map(|u| u.trim_end_matches('/').to_string());
    IssuancePolicy {
        policy_oids: org.setting("policy_oid"),
        crl_url: org
            .setting("crl_url")
            .into_iter()
            .next()
            .or_else(|| public.as_ref().map(|u| format!("{u}/crl/{}.crl", org.id.0))),
        ca_issuers_url: org.setting("ca_issuers_url").into_iter().next(),
        ocsp_url: org
            .setting("ocsp_url")
            .into_iter()
            .next()
            .or_else(|| public.as_ref().map(|u| format!("{u}/ocsp/{}", org.id.0))),
    }
}

/// A certificate's validity as seconds since the epoch.
pub fn validity(cert: &X509) -> (i64, i64) {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok();
    let secs = |t: &openssl::asn1::Asn1TimeRef| {
        epoch
            .as_ref()
            .and_then(|e| e.diff(t).ok())
            .map_or(0, |d| i64::from(d.days) * 86_400 + i64::from(d.secs))
    };
    (secs(cert.not_before()), secs(cert.not_after()))
}

/// Upper-case hex serial of a certificate.
pub fn serial_hex(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .ok()
        .and_then(|b| b.to_hex_str().ok().map(|s| s.to_string()))
        .unwrap_or_default()
}

/// SHA-256 fingerprint, hex.
pub fn fingerprint(cert: &X509) -> String {
    cert.digest(openssl::hash::MessageDigest::sha256())
        .map(|d| d.iter().map(|b| format!("{b:02X}")).collect())
        .unwrap_or_default()
}

/// Parses a certificate's PEM from the store.
pub fn cert_of(pem: &str) -> Result<X509> {
    X509::from_pem(pem.as_bytes())
        .map_err(|e| Error::Invalid(format!("stored certificate unreadable: {e}")))
}

/// The generation of a certificate nobody said anything about: OCES3 or
/// OCES2 from its own policy OIDs, else `other` (see
/// [`store::keys::decide_generation`]).
pub fn generation_of(cert: &X509) -> &'static str {
    store::keys::decide_generation(cert, false).generation
}

/// A certificate's status as an administrator needs it: `expired` for an
/// active one past its end (kept for decryption), else the stored one
/// (`active`, `revoked`, `superseded`).
pub fn status_at(c: &store::CertRow, now: i64) -> &str {
    if c.status == "active" && c.not_after < now {
        "expired"
    } else {
        &c.status
    }
}

/// Stores a certificate (and its key) in `tx` and returns its id.
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    org: store::OrgId,
    cert: &X509,
    kind: &str,
    source: &str,
    key: Option<(&PKey<Private>, bool)>,
    mailbox: Option<&str>,
) -> Result<i64> {
    let parsed = ParsedEndEntity::from_x509(cert).ok();
    let email = smime::keyring::cert_emails(cert).into_iter().next();
    let mailbox = mailbox.map(str::to_string).or_else(|| {
        if kind.ends_with("-ca") {
            None
        } else {
            email.clone()
        }
    });
    let mailbox_id = match mailbox {
        Some(m) => Some(tx.ensure_mailbox(org, &m).await?),
        None => None,
    };
    let key_id = match key {
        Some((k, legacy)) => Some(tx.insert_key(org, NewKey { key: k, legacy }).await?),
        None => None,
    };
    let (not_before, not_after) = validity(cert);
    let pem = String::from_utf8(cert.to_pem()?)
        .map_err(|e| Error::Invalid(format!("certificate PEM: {e}")))?;
    let decided = store::keys::decide_recorded(cert, source, key.is_some_and(|(_, legacy)| legacy));
    let new = NewCert {
        kind: kind.to_string(),
        generation: decided.generation.to_string(),
        generation_basis: decided.basis,
        source: source.to_string(),
        pem,
        subject: smime::keyring::name_to_string(cert.subject_name()),
        issuer: smime::keyring::name_to_string(cert.issuer_name()),
        serial: serial_hex(cert),
        uuid: parsed.map(|p| p.fields.uuid.to_string()),
        email,
        not_before,
        not_after,
        key_id,
        mailbox_id,
    };
    Ok(tx.insert_certificate(org, &new).await?)
}

pub(crate) fn issue_end_entity(
    a: &Authority,
    kind: Kind,
    ee: EndEntity,
) -> Result<(X509, PKey<Private>)> {
    let key = ca::generate_rsa(3072)?;
    let spki = key.public_key_to_der()?;
    let profile: Box<dyn Profile> = match kind {
        Kind::Organisation => Box::new(OrganisationCertificate(ee)),
        Kind::User => Box::new(UserCertificate(ee)),
    };
    let issued = ca::issue(
        profile.as_ref(),
        &spki,
        &IssuerRef {
            cert: Some(&a.issuing),
            signer: &a.signer,
        },
        &a.policy,
        store::now() - 60,
    )?;
    Ok((X509::from_der(&issued.der)?, key))
}

/// The PKCS#12 file of `key` and `cert` with the CA chain.
pub(crate) fn make_p12(
    a: &Authority,
    req: &P12Request,
    key: &PKey<Private>,
    cert: &X509,
    id: i64,
) -> Result<Vec<u8>> {
    if req.password.is_empty() {
        return Err(Error::Invalid(
            "the PKCS#12 password must not be empty".into(),
        ));
    }
    let name = ParsedEndEntity::from_x509(cert)
        .map(|e| e.fields.common_name.to_string())
        .unwrap_or_else(|_| format!("sikkermail {id}"));
    Ok(ca::pkcs12::export(
        key,
        cert,
        &[a.issuing.clone(), a.root.clone()],
        &name,
        &req.password,
        req.flavour,
    )?)
}

fn flavour_name(f: Flavour) -> &'static str {
    match f {
        Flavour::Compatible => "compatible",
        _ => "modern",
    }
}

/// What an issue request names.
#[derive(Debug)]
pub struct IssueRequest {
    /// Organisation or user certificate.
    pub kind: Kind,
    /// Certificate name or the person's name.
    pub name: DisplayName,
    /// Its e-mail address.
    pub email: EmailAddress,
    /// A PKCS#12 file to hand over, if wanted.
    pub p12: Option<P12Request>,
}

impl Service {
    /// Loads the CA (opens the issuing and root keys).
    pub async fn authority(&self) -> Result<Authority> {
        let mut tx = self.store.begin_read().await?;
        let a = self.authority_in(&mut tx).await?;
        tx.commit().await?;
        Ok(a)
    }

    async fn authority_in(&self, tx: &mut Tx<'_>) -> Result<Authority> {
        let org = self.org.id;
        let st = tx
            .ca_state(org)
            .await?
            .ok_or_else(|| Error::Invalid("this organisation has no CA".into()))?;
        let root = tx.certificate(org, st.root_cert_id).await?;
        let issuing = tx.certificate(org, st.issuing_cert_id).await?;
        let key_of = |c: &store::CertRow| {
            c.key_id.ok_or_else(|| {
                Error::Invalid(format!("the key of CA certificate {} is missing", c.id))
            })
        };
        let issuing_key = tx.private_key(org, key_of(&issuing)?).await?;
        let root_key = tx.private_key(org, key_of(&root)?).await?;
        Ok(Authority {
            root: cert_of(&root.pem)?,
            issuing: cert_of(&issuing.pem)?,
            signer: RsaPssSigner::new(issuing_key)?,
            root_signer: RsaPssSigner::new(root_key)?,
            policy: policy_of(&self.org),
        })
    }

    /// Issues a certificate with a new key. When a PKCS#12 file is asked
    /// for, `deliver` gets it before anything is committed: if it fails
    /// (the output path cannot be written), nothing was issued.
    pub async fn issue(
        &self,
        req: IssueRequest,
        deliver: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Issued> {
        let a = self.authority().await?;
        let ee = EndEntity {
            common_name: req.name,
            uuid: OcesUuid::new_random()?,
            organisation: DisplayName::parse("organisation", &self.org.name)?,
            cvr: Cvr::parse(&self.org.cvr)?,
            email: Some(req.email),
        };
        // The slow part (RSA key generation) happens before the
        // transaction, so it holds no database lock.
        let (cert, key) = issue_end_entity(&a, req.kind, ee)?;
        let org = self.org.id;
        let mut tx = self.store.begin().await?;
        let id = record(
            &mut tx,
            org,
            &cert,
            req.kind.as_str(),
            "issued",
            Some((&key, false)),
            None,
        )
        .await?;
        tx.audit(
            Some(org),
            self.actor.as_str(),
            "cert.issue",
            &id.to_string(),
            &format!("kind={} serial={}", req.kind.as_str(), serial_hex(&cert)),
        )
        .await?;
        let p12 = self
            .hand_over(&mut tx, &a, req.p12.as_ref(), &key, &cert, id, deliver)
            .await?;
        tx.commit().await?;
        Ok(Issued { id, cert, p12 })
    }

    #[allow(clippy::too_many_arguments)]
    async fn hand_over(
        &self,
        tx: &mut Tx<'_>,
        a: &Authority,
        req: Option<&P12Request>,
        key: &PKey<Private>,
        cert: &X509,
        id: i64,
        deliver: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(req) = req else { return Ok(None) };
        let der = make_p12(a, req, key, cert, id)?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "cert.export",
            &id.to_string(),
            &format!("flavour={}", flavour_name(req.flavour)),
        )
        .await?;
        deliver(&der).map_err(Error::Output)?;
        Ok(Some(der))
    }

    /// Renews an active certificate this CA issued: new key, same UUID and
    /// names; the old one is marked superseded in the same transaction (two
    /// renewals racing leave one successor; the loser changes nothing).
    pub async fn renew(
        &self,
        id: i64,
        p12: Option<P12Request>,
        deliver: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Issued> {
        let org = self.org.id;
        let old = self.store.certificate(org, id).await?;
        if old.source != "issued" || old.kind.ends_with("-ca") {
            return Err(Error::Invalid(format!(
                "certificate {id} was not issued by this CA as an end entity: it cannot be renewed here"
            )));
        }
        match old.status.as_str() {
            "active" => {}
            "revoked" => {
                return Err(Error::Invalid(format!(
                    "certificate {id} is revoked: issue a new one instead"
                )));
            }
            other => {
                return Err(Error::Invalid(format!(
                    "certificate {id} is {other}{}: only an active certificate can be renewed",
                    old.replaced_by
                        .map(|n| format!(" (replaced by {n}; renew that one)"))
                        .unwrap_or_default()
                )));
            }
        }
        let old_cert = cert_of(&old.pem)?;
        let parsed = ParsedEndEntity::from_x509(&old_cert)?;
        let a = self.authority().await?;
        let kind = parsed.kind;
        let (cert, key) = issue_end_entity(&a, kind, parsed.fields)?;
        let mut tx = self.store.begin().await?;
        let new_id = record(
            &mut tx,
            org,
            &cert,
            kind.as_str(),
            "issued",
            Some((&key, false)),
            None,
        )
        .await?;
        tx.supersede(org, id, new_id).await?;
        tx.audit(
            Some(org),
            self.actor.as_str(),
            "cert.renew",
            &id.to_string(),
            &format!("new={new_id} serial={}", serial_hex(&cert)),
        )
        .await?;
        let p12 = self
            .hand_over(&mut tx, &a, p12.as_ref(), &key, &cert, new_id, deliver)
            .await?;
        tx.commit().await?;
        Ok(Issued {
            id: new_id,
            cert,
            p12,
        })
    }

    /// Revokes an end-entity certificate and makes new CRLs, in one
    /// transaction.
    pub async fn revoke(&self, id: i64, reason: RevocationReason) -> Result<Crls> {
        let org = self.org.id;
        let a = self.authority().await?;
        let mut tx = self.store.begin().await?;
        let c = tx.certificate(org, id).await?;
        if c.kind.ends_with("-ca") {
            return Err(Error::Invalid(
                "the CA's own certificates are not revoked this way".into(),
            ));
        }
        tx.revoke_certificate(org, id, reason.as_str(), store::now())
            .await?;
        tx.audit(
            Some(org),
            self.actor.as_str(),
            "cert.revoke",
            &id.to_string(),
            &format!("reason={}", reason.as_str()),
        )
        .await?;
        let crls = crls_in(&mut tx, org, &a).await?;
        tx.commit().await?;
        Ok(crls)
    }

    /// Exports a held key and its chain as PKCS#12, handed to `deliver`. A
    /// key whose certificate was revoked for keyCompromise is refused
    /// unless `force`; CA keys never leave.
    pub async fn export(
        &self,
        id: i64,
        req: P12Request,
        force: bool,
        deliver: impl FnOnce(&[u8]) -> std::result::Result<(), String>,
    ) -> Result<Vec<u8>> {
        let org = self.org.id;
        let a = self.authority().await?;
        let mut tx = self.store.begin().await?;
        let c = tx.certificate(org, id).await?;
        if c.kind.ends_with("-ca") {
            return Err(Error::Invalid("CA keys are never exported".into()));
        }
        if c.revocation_reason.as_deref() == Some("keyCompromise") && !force {
            return Err(Error::Invalid(format!(
                "certificate {id} was revoked because its key was compromised: exporting that key needs --force"
            )));
        }
        let key_id = c.key_id.ok_or_else(|| {
            Error::Invalid(format!("the private key of certificate {id} is not held"))
        })?;
        let key = tx.private_key(org, key_id).await?;
        let der = self
            .hand_over(
                &mut tx,
                &a,
                Some(&req),
                &key,
                &cert_of(&c.pem)?,
                id,
                deliver,
            )
            .await?
            .unwrap_or_default();
        tx.commit().await?;
        Ok(der)
    }

    /// Makes both CRLs anew (the issuing CA's and the root's ARL), keeps
    /// them and audits it.
    pub async fn make_crls(&self) -> Result<Crls> {
        let a = self.authority().await?;
        let mut tx = self.store.begin().await?;
        let crls = crls_in(&mut tx, self.org.id, &a).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "ca.crl",
            "issuing-ca root-ca",
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(crls)
    }

    /// The CRLs last made (issuing CA's, root's), if any.
    pub async fn current_crls(&self) -> Result<(Option<Vec<u8>>, Option<Vec<u8>>)> {
        let st = self
            .store
            .ca_state(self.org.id)
            .await?
            .ok_or_else(|| Error::Invalid("this organisation has no CA".into()))?;
        Ok((st.crl_der, st.arl_der))
    }
}

/// Makes and keeps both CRLs inside `tx`.
pub(crate) async fn crls_in(tx: &mut Tx<'_>, org: store::OrgId, a: &Authority) -> Result<Crls> {
    let now = store::now();
    let mut out = Vec::new();
    for (ca_cert, signer) in [(&a.issuing, &a.signer), (&a.root, &a.root_signer)] {
        let issuer = smime::keyring::name_to_string(ca_cert.subject_name());
        let entries: Vec<RevokedEntry> = tx
            .revoked_by_issuer(org, &issuer)
            .await?
            .iter()
            .map(|r| {
                Ok(RevokedEntry {
                    serial_hex: r.serial.clone(),
                    revoked_at: r.revoked_at.unwrap_or(now),
                    reason: RevocationReason::parse(
                        r.revocation_reason.as_deref().unwrap_or("unspecified"),
                    )?,
                })
            })
            .collect::<Result<_, ca::CaError>>()?;
        // One counter for both lists: numbers only have to grow per issuer.
        let number = tx.next_crl_number(org).await?;
        out.push(ca::crl(
            ca_cert,
            signer,
            &entries,
            number as u64,
            now,
            now + CRL_VALIDITY_SECS,
        )?);
    }
    let root = out.pop().unwrap_or_default();
    let issuing = out.pop().unwrap_or_default();
    tx.store_crl(org, &issuing, now).await?;
    tx.store_arl(org, &root, now).await?;
    Ok(Crls { issuing, root })
}

impl Service {
    /// Every certificate of the organisation (CA, organisation, user),
    /// oldest first.
    pub async fn certificates(&self) -> Result<Vec<store::CertRow>> {
        Ok(self.store.list_certificates(self.org.id).await?)
    }

    /// One certificate of the organisation; NotFound otherwise.
    pub async fn certificate(&self, id: i64) -> Result<store::CertRow> {
        Ok(self.store.certificate(self.org.id, id).await?)
    }

    /// Answers an OCSP request (RFC 6960, DER) for the internal CA: the
    /// issuing CA answers for the certificates it issued, the root for the
    /// issuing CA; each signs its own answers. Public, not audited.
    pub async fn ocsp_response(&self, req: &[u8]) -> Result<Vec<u8>> {
        let a = self.authority().await?;
        let certs = self.store.list_certificates(self.org.id).await?;
        let now = store::now();
        let names = [
            smime::keyring::name_to_string(a.issuing.subject_name()),
            smime::keyring::name_to_string(a.root.subject_name()),
        ];
        let norm = |s: &str| s.trim_start_matches('0').to_ascii_uppercase();
        let lookup = |ca: usize, serial: &str| {
            let serial = norm(serial);
            match certs
                .iter()
                .find(|c| c.issuer == names[ca] && norm(&c.serial) == serial)
            {
                None => smime::revocation::Known::Unknown,
                Some(c) if c.status == "revoked" => smime::revocation::Known::Revoked(
                    c.revoked_at.unwrap_or(now),
                    smime::revocation::reason_code(
                        c.revocation_reason.as_deref().unwrap_or("unspecified"),
                    ),
                ),
                Some(_) => smime::revocation::Known::Good,
            }
        };
        smime::revocation::ocsp_respond(
            req,
            &[(&a.issuing, a.signer.key()), (&a.root, a.root_signer.key())],
            OCSP_VALIDITY_SECS,
            &lookup,
        )
        .map_err(Error::Invalid)
    }

    /// Keeps the address the gateway is reached at (`[http] public_url`):
    /// certificates issued from now on name its `/crl/<org>.crl` and
    /// `/ocsp/<org>` (unless `crl_url`/`ocsp_url` are set). Audited when it
    /// changes; returns whether it did.
    pub async fn set_public_url(&self, url: &str) -> Result<bool> {
        let url = url.trim_end_matches('/');
        if !url.is_ascii() || url.contains(char::is_whitespace) || !url.contains("://") {
            return Err(Error::Invalid(format!("{url:?} is not a URL")));
        }
        let mut tx = self.store.begin().await?;
        let org = tx.organisation(self.org.id).await?;
        if org.setting("public_url").first().map(String::as_str) == Some(url) {
            return Ok(false);
        }
        let mut settings: String = org
            .settings
            .lines()
            .filter(|l| {
                l.split_once('=')
                    .is_none_or(|(k, _)| k.trim() != "public_url")
            })
            .map(|l| format!("{l}\n"))
            .collect();
        settings.push_str(&format!("public_url={url}\n"));
        tx.set_settings(self.org.id, &settings).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "org.public_url",
            url,
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The internal CA's certificates as PEM, root first then the issuing
    /// CA (public: what `/ca.pem` serves). No key is opened.
    pub async fn ca_pem(&self) -> Result<String> {
        let org = self.org.id;
        let mut tx = self.store.begin_read().await?;
        let st = tx
            .ca_state(org)
            .await?
            .ok_or_else(|| Error::NotFound("the internal CA".into()))?;
        let root = tx.certificate(org, st.root_cert_id).await?;
        let issuing = tx.certificate(org, st.issuing_cert_id).await?;
        tx.commit().await?;
        let mut pem = root.pem;
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem.push_str(&issuing.pem);
        Ok(pem)
    }
}
