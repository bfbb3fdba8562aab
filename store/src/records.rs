//! Organisations, certificates, recipients' certificates, CA state and the
//! audit trail. Every function takes the organisation it works in.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Store, StoreError, Tx, in_tx, now};

/// An organisation's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrgId(pub i64);

/// An organisation.
#[derive(Debug, Clone)]
pub struct Organisation {
    /// Its id.
    pub id: OrgId,
    /// Name.
    pub name: String,
    /// CVR number.
    pub cvr: String,
    /// Settings, `key=value` lines.
    pub settings: String,
    /// `active`, or `pending` until its ledelsesrepræsentant approves.
    pub status: String,
    /// The ledelsesrepræsentant's name (organisations applied for).
    pub representative_name: Option<String>,
    /// The ledelsesrepræsentant's e-mail address.
    pub representative_email: Option<String>,
}

impl Organisation {
    /// Every value of setting `key`, in order.
    pub fn setting(&self, key: &str) -> Vec<String> {
        self.settings
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// A certificate to record.
#[derive(Debug, Clone, Default)]
pub struct NewCert {
    /// root-ca, issuing-ca, organisation, user.
    pub kind: String,
    /// OCES2, OCES3 or other ([`crate::keys::decide_generation`]).
    pub generation: String,
    /// What the generation was decided from (a policy OID, what the
    /// administrator said, or why it is unknown).
    pub generation_basis: String,
    /// issued, imported, legacy.
    pub source: String,
    /// PEM.
    pub pem: String,
    /// Subject, one line.
    pub subject: String,
    /// Issuer, one line.
    pub issuer: String,
    /// Serial, upper-case hex.
    pub serial: String,
    /// OCES3 UUID, when it has one.
    pub uuid: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    /// Validity, seconds since the epoch.
    pub not_after: i64,
    /// Its private key, when we hold it.
    pub key_id: Option<i64>,
    /// The mailbox it serves.
    pub mailbox_id: Option<i64>,
}

/// A certificate as stored.
#[derive(Debug, Clone)]
pub struct CertRow {
    /// Id.
    pub id: i64,
    /// root-ca, issuing-ca, organisation, user.
    pub kind: String,
    /// OCES2, OCES3 or other ([`crate::keys::decide_generation`]).
    pub generation: String,
    /// What the generation was decided from.
    pub generation_basis: String,
    /// issued, imported, legacy.
    pub source: String,
    /// active, revoked, superseded.
    pub status: String,
    /// PEM.
    pub pem: String,
    /// Subject.
    pub subject: String,
    /// Issuer.
    pub issuer: String,
    /// Serial (hex).
    pub serial: String,
    /// OCES3 UUID.
    pub uuid: Option<String>,
    /// E-mail.
    pub email: Option<String>,
    /// Validity.
    pub not_before: i64,
    /// Validity.
    pub not_after: i64,
    /// Private key, when held.
    pub key_id: Option<i64>,
    /// Mailbox.
    pub mailbox_id: Option<i64>,
    /// When revoked.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason name.
    pub revocation_reason: Option<String>,
    /// The certificate that replaced this one (renewal).
    pub replaced_by: Option<i64>,
    /// The user a brugercertifikat was issued to.
    pub user_id: Option<i64>,
}

/// The columns [`cert_row`] reads (a macro so queries stay `&'static str`).
macro_rules! cert_columns {
    () => {
        "id, kind, generation, generation_basis, source, status, pem, subject, issuer, serial, \
         uuid, email, not_before, not_after, key_id, mailbox_id, revoked_at, revocation_reason, \
         replaced_by, user_id"
    };
}

fn cert_row(r: &AnyRow) -> Result<CertRow, StoreError> {
    let source: String = r.try_get("source")?;
    let pem: String = r.try_get("pem")?;
    let mut generation: String = r.try_get("generation")?;
    let mut generation_basis: String = r.try_get("generation_basis")?;
    if generation_basis.is_empty() {
        // Recorded before generations were decided (migration 0013): the
        // stored one was guessed from the subject; decide it now.
        if let Ok(c) = openssl::x509::X509::from_pem(pem.as_bytes()) {
            let d = crate::keys::decide_recorded(&c, &source, false);
            generation = d.generation.to_string();
            generation_basis = d.basis;
        }
    }
    Ok(CertRow {
        id: r.try_get("id")?,
        kind: r.try_get("kind")?,
        generation,
        generation_basis,
        source,
        status: r.try_get("status")?,
        pem,
        subject: r.try_get("subject")?,
        issuer: r.try_get("issuer")?,
        serial: r.try_get("serial")?,
        uuid: r.try_get("uuid")?,
        email: r.try_get("email")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        key_id: r.try_get("key_id")?,
        mailbox_id: r.try_get("mailbox_id")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        replaced_by: r.try_get("replaced_by")?,
        user_id: r.try_get("user_id")?,
    })
}

/// An outside party's certificate (court, authority, colleague elsewhere).
#[derive(Debug, Clone)]
pub struct RecipientRow {
    /// Id.
    pub id: i64,
    /// E-mail address it is for.
    pub address: String,
    /// PEM.
    pub cert_pem: String,
    /// SHA-256 fingerprint, hex.
    pub fingerprint: String,
    /// Subject.
    pub subject: String,
    /// Expiry.
    pub not_after: i64,
    /// imported or harvested.
    pub source: String,
    /// First seen.
    pub first_seen: i64,
    /// Last seen.
    pub last_seen: i64,
    /// Pinned by an administrator.
    pub pinned: bool,
    /// SMIMECapabilities the signer announced (harvested certificates).
    pub capabilities: Option<String>,
}

/// The CA of an organisation.
#[derive(Debug, Clone)]
pub struct CaState {
    /// Root CA certificate id.
    pub root_cert_id: i64,
    /// Issuing CA certificate id.
    pub issuing_cert_id: i64,
    /// Number of the last CRL issued.
    pub crl_number: i64,
    /// The last CRL (DER).
    pub crl_der: Option<Vec<u8>>,
    /// When it was made.
    pub crl_updated_at: Option<i64>,
    /// The root's last authority revocation list (DER): the CA
    /// certificates it revoked (RFC 5280 5: an ARL is a CRL of CAs).
    pub arl_der: Option<Vec<u8>>,
    /// When it was made.
    pub arl_updated_at: Option<i64>,
}

/// One audit event.
#[derive(Debug, Clone)]
pub struct Audit {
    /// When.
    pub at: i64,
    /// Who (user name, "cli:root", ...).
    pub actor: String,
    /// What (cert.issue, key.import, ...).
    pub action: String,
    /// On what (certificate id, address, ...).
    pub subject: String,
    /// Details (never secrets, never CPR numbers).
    pub detail: String,
}

fn conflict_or(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        _ => StoreError::Db(e),
    }
}

macro_rules! org_columns {
    () => {
        "id, name, cvr, settings, status, representative_name, representative_email"
    };
}

fn org_row(r: &sqlx::any::AnyRow) -> Result<Organisation, StoreError> {
    Ok(Organisation {
        id: OrgId(r.try_get("id")?),
        name: r.try_get("name")?,
        cvr: r.try_get("cvr")?,
        settings: r.try_get("settings")?,
        status: r.try_get("status")?,
        representative_name: r.try_get("representative_name")?,
        representative_email: r.try_get("representative_email")?,
    })
}

impl Tx<'_> {
    /// Creates an organisation.
    pub async fn create_organisation(
        &mut self,
        name: &str,
        cvr: &str,
    ) -> Result<OrgId, StoreError> {
        let row = sqlx::query(
            "INSERT INTO organisations (name, cvr, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(name)
        .bind(cvr)
        .bind(now())
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(OrgId(row.try_get("id")?))
    }

    /// The first organisation (the one `init` made), if any.
    pub async fn first_organisation(&mut self) -> Result<Option<Organisation>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organisations ORDER BY id LIMIT 1"
        ))
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(org_row).transpose()
    }

    /// Organisation `org`; NotFound when there is none.
    pub async fn organisation(&mut self, org: OrgId) -> Result<Organisation, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organisations WHERE id = $1"
        ))
        .bind(org.0)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref()
            .map(org_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("organisation {}", org.0)))
    }

    /// Records an organisation applied for, `pending` until approved.
    pub async fn create_pending_organisation(
        &mut self,
        name: &str,
        cvr: &str,
        representative_name: &str,
        representative_email: &str,
    ) -> Result<OrgId, StoreError> {
        let row = sqlx::query(
            "INSERT INTO organisations (name, cvr, created_at, status, representative_name, \
             representative_email) VALUES ($1, $2, $3, 'pending', $4, $5) RETURNING id",
        )
        .bind(name)
        .bind(cvr)
        .bind(now())
        .bind(representative_name)
        .bind(representative_email)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(OrgId(row.try_get("id")?))
    }

    /// Sets `org`'s status; false when it was not `from`.
    pub async fn set_organisation_status(
        &mut self,
        org: OrgId,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query("UPDATE organisations SET status = $1 WHERE id = $2 AND status = $3")
            .bind(to)
            .bind(org.0)
            .bind(from)
            .execute(&mut *self.tx)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every organisation with this status, oldest first.
    pub async fn organisations_with_status(
        &mut self,
        status: &str,
    ) -> Result<Vec<Organisation>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organisations WHERE status = $1 ORDER BY id"
        ))
        .bind(status)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(org_row).collect()
    }

    /// Every organisation with this CVR number (whatever its status).
    pub async fn organisations_with_cvr(
        &mut self,
        cvr: &str,
    ) -> Result<Vec<Organisation>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            org_columns!(),
            " FROM organisations WHERE cvr = $1 ORDER BY id"
        ))
        .bind(cvr)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(org_row).collect()
    }

    /// Replaces `org`'s settings (`key=value` lines).
    pub async fn set_settings(&mut self, org: OrgId, settings: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE organisations SET settings = $1 WHERE id = $2")
            .bind(settings)
            .bind(org.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The mailbox `address` of `org`, created if new.
    pub async fn ensure_mailbox(&mut self, org: OrgId, address: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO mailboxes (org_id, address, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (org_id, address) DO UPDATE SET address = excluded.address RETURNING id",
        )
        .bind(org.0)
        .bind(address.to_ascii_lowercase())
        .bind(now())
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Records a certificate.
    pub async fn insert_certificate(&mut self, org: OrgId, c: &NewCert) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO certificates (org_id, kind, generation, generation_basis, source, status, pem, subject, issuer, serial, uuid, email, \
             not_before, not_after, key_id, mailbox_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) RETURNING id",
        )
        .bind(org.0)
        .bind(&c.kind)
        .bind(&c.generation)
        .bind(&c.generation_basis)
        .bind(&c.source)
        .bind(&c.pem)
        .bind(&c.subject)
        .bind(&c.issuer)
        .bind(&c.serial)
        .bind(c.uuid.clone())
        .bind(c.email.clone())
        .bind(c.not_before)
        .bind(c.not_after)
        .bind(c.key_id)
        .bind(c.mailbox_id)
        .bind(now())
        .fetch_one(&mut *self.tx)
        .await
        .map_err(|e| conflict_or(e, &format!("certificate with serial {} from this issuer", c.serial)))?;
        Ok(row.try_get("id")?)
    }

    /// One certificate of `org`.
    pub async fn certificate(&mut self, org: OrgId, id: i64) -> Result<CertRow, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE org_id = $1 AND id = $2"
        ))
        .bind(org.0)
        .bind(id)
        .fetch_optional(&mut *self.tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("certificate {id}")))?;
        cert_row(&row)
    }

    /// Every certificate of `org`, oldest first.
    pub async fn list_certificates(&mut self, org: OrgId) -> Result<Vec<CertRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE org_id = $1 ORDER BY id"
        ))
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(cert_row).collect()
    }

    /// Marks a certificate revoked.
    pub async fn revoke_certificate(
        &mut self,
        org: OrgId,
        id: i64,
        reason: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE certificates SET status = 'revoked', revoked_at = $1, revocation_reason = $2 \
             WHERE org_id = $3 AND id = $4 AND status <> 'revoked'",
        )
        .bind(at)
        .bind(reason)
        .bind(org.0)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        if done.rows_affected() == 0 {
            let c = self.certificate(org, id).await?;
            return Err(StoreError::Conflict(format!(
                "certificate {id} is already {}",
                c.status
            )));
        }
        Ok(())
    }

    /// Marks `old` superseded by `new` (renewal). Fails, changing nothing,
    /// unless `old` is active: two renewals of one certificate racing each
    /// other leave exactly one successor.
    pub async fn supersede(&mut self, org: OrgId, old: i64, new: i64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE certificates SET status = 'superseded', replaced_by = $1 WHERE org_id = $2 AND id = $3 AND status = 'active'")
            .bind(new)
            .bind(org.0)
            .bind(old)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() != 1 {
            let c = self.certificate(org, old).await?;
            return Err(StoreError::Conflict(format!(
                "certificate {old} is {}{}: only an active certificate can be renewed",
                c.status,
                c.replaced_by
                    .map(|n| format!(" (replaced by {n})"))
                    .unwrap_or_default()
            )));
        }
        Ok(())
    }

    /// The certificate of `org` with this issuer and serial, if recorded.
    pub async fn certificate_by_serial(
        &mut self,
        org: OrgId,
        issuer: &str,
        serial: &str,
    ) -> Result<Option<CertRow>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE org_id = $1 AND issuer = $2 AND serial = $3"
        ))
        .bind(org.0)
        .bind(issuer)
        .bind(serial)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.as_ref().map(cert_row).transpose()
    }

    /// The internal CA certificates (root and issuing, of every
    /// organisation) whose subject is `subject`, with their organisation:
    /// for answering revocation of the installation's own certificates
    /// from its records. The caller compares the certificate itself.
    pub async fn ca_certificates_named(
        &mut self,
        subject: &str,
    ) -> Result<Vec<(OrgId, CertRow)>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT org_id, ",
            cert_columns!(),
            " FROM certificates WHERE kind IN ('root-ca', 'issuing-ca') AND subject = $1 ORDER BY id"
        ))
        .bind(subject)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| Ok((OrgId(r.try_get("org_id")?), cert_row(r)?)))
            .collect()
    }

    /// Revoked certificates of `org` issued by `issuer` (for the CRL).
    pub async fn revoked_by_issuer(
        &mut self,
        org: OrgId,
        issuer: &str,
    ) -> Result<Vec<CertRow>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates WHERE org_id = $1 AND issuer = $2 AND status = 'revoked' ORDER BY id"
        ))
        .bind(org.0)
        .bind(issuer)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(cert_row).collect()
    }

    /// Records `org`'s CA.
    pub async fn set_ca_state(
        &mut self,
        org: OrgId,
        root: i64,
        issuing: i64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO ca_state (org_id, root_cert_id, issuing_cert_id, crl_number) VALUES ($1, $2, $3, 0)")
            .bind(org.0)
            .bind(root)
            .bind(issuing)
            .execute(&mut *self.tx)
            .await
            .map_err(|e| conflict_or(e, "a CA for this organisation"))?;
        Ok(())
    }

    /// `org`'s CA, if it has one.
    pub async fn ca_state(&mut self, org: OrgId) -> Result<Option<CaState>, StoreError> {
        let row = sqlx::query(
            "SELECT root_cert_id, issuing_cert_id, crl_number, crl_der, crl_updated_at, arl_der, arl_updated_at FROM ca_state WHERE org_id = $1",
        )
        .bind(org.0)
        .fetch_optional(&mut *self.tx)
        .await?;
        row.map(|r| {
            Ok(CaState {
                root_cert_id: r.try_get("root_cert_id")?,
                issuing_cert_id: r.try_get("issuing_cert_id")?,
                crl_number: r.try_get("crl_number")?,
                crl_der: r.try_get("crl_der")?,
                crl_updated_at: r.try_get("crl_updated_at")?,
                arl_der: r.try_get("arl_der")?,
                arl_updated_at: r.try_get("arl_updated_at")?,
            })
        })
        .transpose()
    }

    /// Takes the next CRL number (atomically: two nodes never get the same).
    pub async fn next_crl_number(&mut self, org: OrgId) -> Result<i64, StoreError> {
        let row = sqlx::query("UPDATE ca_state SET crl_number = crl_number + 1 WHERE org_id = $1 RETURNING crl_number")
            .bind(org.0)
            .fetch_optional(&mut *self.tx)
            .await?
            .ok_or_else(|| StoreError::NotFound("CA (run `sikkermail init`)".into()))?;
        Ok(row.try_get("crl_number")?)
    }

    /// Keeps the CRL just made.
    pub async fn store_crl(&mut self, org: OrgId, der: &[u8], at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE ca_state SET crl_der = $1, crl_updated_at = $2 WHERE org_id = $3")
            .bind(der.to_vec())
            .bind(at)
            .bind(org.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Keeps the root's ARL just made.
    pub async fn store_arl(&mut self, org: OrgId, der: &[u8], at: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE ca_state SET arl_der = $1, arl_updated_at = $2 WHERE org_id = $3")
            .bind(der.to_vec())
            .bind(at)
            .bind(org.0)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Records an outside party's certificate, or notes it was seen again.
    #[allow(clippy::too_many_arguments)]
    pub async fn upsert_recipient(
        &mut self,
        org: OrgId,
        address: &str,
        cert_pem: &str,
        fingerprint: &str,
        subject: &str,
        not_after: i64,
        source: &str,
    ) -> Result<i64, StoreError> {
        let t = now();
        let row = sqlx::query(
            "INSERT INTO recipients (org_id, address, cert_pem, fingerprint, subject, not_after, source, first_seen, last_seen) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (org_id, address, fingerprint) DO UPDATE SET last_seen = excluded.last_seen RETURNING id",
        )
        .bind(org.0)
        .bind(address.to_ascii_lowercase())
        .bind(cert_pem)
        .bind(fingerprint)
        .bind(subject)
        .bind(not_after)
        .bind(source)
        .bind(t)
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(row.try_get("id")?)
    }

    /// Every outside certificate of `org`.
    pub async fn list_recipients(&mut self, org: OrgId) -> Result<Vec<RecipientRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, address, cert_pem, fingerprint, subject, not_after, source, first_seen, last_seen, pinned, capabilities \
             FROM recipients WHERE org_id = $1 ORDER BY address, id",
        )
        .bind(org.0)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(recipient_row).collect()
    }

    /// Records the S/MIME capabilities announced with recipient entry `id`.
    pub async fn set_recipient_capabilities(
        &mut self,
        org: OrgId,
        id: i64,
        capabilities: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE recipients SET capabilities = $1 WHERE org_id = $2 AND id = $3")
            .bind(capabilities)
            .bind(org.0)
            .bind(id)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// The outside certificates recorded for `address` (lowercased).
    pub async fn recipients_for(
        &mut self,
        org: OrgId,
        address: &str,
    ) -> Result<Vec<RecipientRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, address, cert_pem, fingerprint, subject, not_after, source, first_seen, last_seen, pinned, capabilities \
             FROM recipients WHERE org_id = $1 AND address = $2 ORDER BY id",
        )
        .bind(org.0)
        .bind(address.to_ascii_lowercase())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(recipient_row).collect()
    }

    /// Appends to the audit trail.
    pub async fn audit(
        &mut self,
        org: Option<OrgId>,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit_events (org_id, at, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(org.map(|o| o.0))
            .bind(now())
            .bind(actor)
            .bind(action)
            .bind(subject)
            .bind(detail)
            .execute(&mut *self.tx)
            .await?;
        self.chain_audit().await
    }

    /// The newest `limit` audit events of `org`, newest first.
    pub async fn audit_events(&mut self, org: OrgId, limit: i64) -> Result<Vec<Audit>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, subject, detail FROM audit_events WHERE org_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(org.0)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Audit {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    detail: r.try_get("detail")?,
                })
            })
            .collect()
    }
}

in_tx! { begin:
    /// Creates an organisation.
    fn create_organisation(&self, name: &str, cvr: &str) -> OrgId;
    /// Replaces `org`'s settings.
    fn set_settings(&self, org: OrgId, settings: &str) -> ();
    /// The mailbox `address` of `org`, created if new.
    fn ensure_mailbox(&self, org: OrgId, address: &str) -> i64;
    /// Records a certificate.
    fn insert_certificate(&self, org: OrgId, c: &NewCert) -> i64;
    /// Marks a certificate revoked.
    fn revoke_certificate(&self, org: OrgId, id: i64, reason: &str, at: i64) -> ();
    /// Marks `old` superseded by `new`.
    fn supersede(&self, org: OrgId, old: i64, new: i64) -> ();
    /// Records `org`'s CA.
    fn set_ca_state(&self, org: OrgId, root: i64, issuing: i64) -> ();
    /// Takes the next CRL number.
    fn next_crl_number(&self, org: OrgId) -> i64;
    /// Keeps the CRL just made.
    fn store_crl(&self, org: OrgId, der: &[u8], at: i64) -> ();
    /// Records an outside party's certificate.
    #[allow(clippy::too_many_arguments)]
    fn upsert_recipient(&self, org: OrgId, address: &str, cert_pem: &str, fingerprint: &str, subject: &str, not_after: i64, source: &str) -> i64;
    /// Appends to the audit trail.
    fn audit(&self, org: Option<OrgId>, actor: &str, action: &str, subject: &str, detail: &str) -> ();
}

in_tx! { begin_read:
    /// The outside certificates recorded for `address`.
    fn recipients_for(&self, org: OrgId, address: &str) -> Vec<RecipientRow>;
    /// The first organisation, if any.
    fn first_organisation(&self) -> Option<Organisation>;
    /// Organisation `org`.
    fn organisation(&self, org: OrgId) -> Organisation;
    /// One certificate of `org`.
    fn certificate(&self, org: OrgId, id: i64) -> CertRow;
    /// The certificate of `org` with this issuer and serial, if recorded.
    fn certificate_by_serial(&self, org: OrgId, issuer: &str, serial: &str) -> Option<CertRow>;
    /// Every certificate of `org`, oldest first.
    fn list_certificates(&self, org: OrgId) -> Vec<CertRow>;
    /// Revoked certificates of `org` issued by `issuer`.
    fn revoked_by_issuer(&self, org: OrgId, issuer: &str) -> Vec<CertRow>;
    /// Internal CA certificates of any organisation with this subject.
    fn ca_certificates_named(&self, subject: &str) -> Vec<(OrgId, CertRow)>;
    /// `org`'s CA, if it has one.
    fn ca_state(&self, org: OrgId) -> Option<CaState>;
    /// Every outside certificate of `org`.
    fn list_recipients(&self, org: OrgId) -> Vec<RecipientRow>;
    /// The newest `limit` audit events of `org`, newest first.
    fn audit_events(&self, org: OrgId, limit: i64) -> Vec<Audit>;
}

fn recipient_row(r: &sqlx::any::AnyRow) -> Result<RecipientRow, StoreError> {
    Ok(RecipientRow {
        id: r.try_get("id")?,
        address: r.try_get("address")?,
        cert_pem: r.try_get("cert_pem")?,
        fingerprint: r.try_get("fingerprint")?,
        subject: r.try_get("subject")?,
        not_after: r.try_get("not_after")?,
        source: r.try_get("source")?,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        pinned: r.try_get::<i64, _>("pinned")? != 0,
        capabilities: r.try_get("capabilities")?,
    })
}
