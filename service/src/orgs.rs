//! Organisations in one installation: applying for one through the admin
//! API (when the installation allows applications), waiting for the
//! installation's operator (`sikkermail org pending|accept|reject`), then
//! pending until its ledelsesrepræsentant approves through an e-mailed link
//! (when its internal CA is made); and the one-time bootstrap link that
//! creates the first organisation administrator.
//!
//! An organisation's status: `applied` (waits for the operator; nothing is
//! sent), `pending` (the operator accepted; the approval link is out),
//! `active`, or `rejected`. One CVR number has at most one organisation
//! that is not rejected: a second application is refused, at application
//! and again at acceptance.

use ca::{Cvr, DisplayName, IssuancePolicy};
use store::{OrgId, Organisation};

use crate::admins::{new_token, token_hash};
use crate::certs::{crls_in, record};
use crate::init::make_ca;
use crate::users::check_email;
use crate::{Actor, Error, Result, Role, Service};

/// How long an approval link lives (14 days).
pub const APPROVAL_SECS: i64 = 14 * 86_400;
/// How long the bootstrap link lives (7 days).
pub const BOOTSTRAP_SECS: i64 = 7 * 86_400;

/// An application for a new organisation.
#[derive(Clone)]
pub struct Application {
    /// The organisation's name.
    pub name: String,
    /// Its CVR number.
    pub cvr: String,
    /// The ledelsesrepræsentant's name.
    pub representative_name: String,
    /// The ledelsesrepræsentant's e-mail address.
    pub representative_email: String,
    /// The applying administrator's login name.
    pub admin_name: String,
    /// Their password.
    pub admin_password: String,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("name", &self.name)
            .field("cvr", &self.cvr)
            .field("admin_name", &self.admin_name)
            .finish_non_exhaustive()
    }
}

/// An application the operator accepted.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The pending organisation.
    pub org: Organisation,
    /// The approval link's token, for the representative's e-mail.
    pub token: String,
}

/// The status of an application waiting for the installation's operator.
pub const APPLIED: &str = "applied";
/// The status of an application the operator rejected.
pub const REJECTED: &str = "rejected";

/// Conflict when another organisation (not rejected, not `except`) has
/// this CVR number.
async fn cvr_free(tx: &mut store::Tx<'_>, cvr: &str, except: Option<OrgId>) -> Result<()> {
    let taken = tx
        .organisations_with_cvr(cvr)
        .await?
        .into_iter()
        .any(|o| Some(o.id) != except && o.status != REJECTED);
    if taken {
        return Err(Error::Conflict(format!(
            "CVR {cvr} already has an organisation (or an application) in this installation"
        )));
    }
    Ok(())
}

impl Service {
    /// The same installation seen as organisation `org` (for the admin API,
    /// which serves every organisation from one [`Service`]). NotFound when
    /// there is no such organisation.
    pub async fn for_org(&self, org: OrgId, actor: Actor) -> Result<Service> {
        let org = self.store.organisation(org).await?;
        Ok(Service {
            store: self.store.clone(),
            org,
            actor,
            loc: self.loc.clone(),
            _lock: None,
        })
    }

    /// Applies for a new organisation: recorded as `applied` with its first
    /// organisation administrator, who can log in but do nothing. Nothing
    /// is sent: the installation's operator accepts or rejects it first
    /// ([`Service::accept_application`]). Conflict when the CVR number
    /// already has an organisation or an application. Audited "org.apply".
    pub async fn apply_organisation(&self, a: &Application) -> Result<Organisation> {
        let name = DisplayName::parse("organisation name", a.name.trim())?;
        let cvr = Cvr::parse(a.cvr.trim())?;
        let rep_name = DisplayName::parse("representative's name", a.representative_name.trim())?;
        let rep_email = check_email(&a.representative_email)?;
        crate::smtp_users::check_account_name("administrator", &a.admin_name)?;
        crate::admins::check_password(&a.admin_password)?;
        let hash = crate::smtp_users::hash_password_blocking(&a.admin_password).await?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        cvr_free(&mut tx, cvr.as_str(), None).await?;
        let org = tx
            .create_pending_organisation(name.as_str(), cvr.as_str(), rep_name.as_str(), &rep_email)
            .await?;
        tx.set_organisation_status(org, "pending", APPLIED).await?;
        tx.admin_create(org, &a.admin_name, Role::OrgAdmin.as_str(), &hash, now)
            .await?;
        tx.audit(
            Some(org),
            &format!("applicant:{}", a.admin_name),
            "org.apply",
            name.as_str(),
            &format!("cvr={} representative={rep_email}", cvr.as_str()),
        )
        .await?;
        let org = tx.organisation(org).await?;
        tx.commit().await?;
        Ok(org)
    }

    /// The applications waiting for the installation's operator, oldest
    /// first.
    pub async fn pending_applications(&self) -> Result<Vec<Organisation>> {
        let mut tx = self.store.begin_read().await?;
        let list = tx.organisations_with_status(APPLIED).await?;
        tx.commit().await?;
        Ok(list)
    }

    /// The operator accepts application `org`: it becomes `pending`, gets
    /// a one-time approval link for its ledelsesrepræsentant, and the
    /// approval e-mail (`mail` makes it from the organisation and the
    /// link's token) is queued from `from` to the representative, in the
    /// same transaction: all of it or nothing. The gateway delivers it as
    /// any outbound mail of this organisation (signed as the policy says).
    /// NotFound when `org` is not an application waiting; Conflict when its
    /// CVR number got an organisation meanwhile. Audited "org.accept".
    pub async fn accept_application(
        &self,
        org: OrgId,
        from: &str,
        mail: impl FnOnce(&Organisation, &str) -> std::result::Result<Vec<u8>, String>,
    ) -> Result<Applied> {
        let token = new_token()?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        let o = waiting(&mut tx, org).await?;
        cvr_free(&mut tx, &o.cvr, Some(o.id)).await?;
        let to = o
            .representative_email
            .clone()
            .ok_or_else(|| Error::Invalid("the application names no representative".into()))?;
        let body = mail(&o, &token).map_err(Error::Invalid)?;
        if !tx.set_organisation_status(o.id, APPLIED, "pending").await? {
            return Err(not_waiting(org));
        }
        tx.enqueue(
            &store::queue::NewMessage {
                org: self.org.id,
                direction: store::queue::Direction::Outbound,
                mail_from: from,
                envid: None,
                ret: None,
                client: "sikkermail org accept",
                body: &body,
                recipients: &[store::queue::NewRecipient {
                    address: &to,
                    notify: None,
                    orcpt: None,
                }],
            },
            now,
        )
        .await?;
        tx.link_insert(
            &token_hash(&token),
            o.id,
            None,
            "approval",
            now,
            now + APPROVAL_SECS,
        )
        .await?;
        let detail = format!(
            "application={} cvr={} representative={}",
            o.id.0,
            o.cvr,
            o.representative_email.clone().unwrap_or_default()
        );
        audit_both(&mut tx, self, o.id, "org.accept", &o.name, &detail).await?;
        let o = tx.organisation(o.id).await?;
        tx.commit().await?;
        Ok(Applied { org: o, token })
    }

    /// The operator rejects application `org`: it becomes `rejected` and
    /// nothing is sent. NotFound when `org` is not an application waiting.
    /// Audited "org.reject".
    pub async fn reject_application(&self, org: OrgId) -> Result<Organisation> {
        let mut tx = self.store.begin().await?;
        let o = waiting(&mut tx, org).await?;
        if !tx.set_organisation_status(o.id, APPLIED, REJECTED).await? {
            return Err(not_waiting(org));
        }
        let detail = format!("application={} cvr={}", o.id.0, o.cvr);
        audit_both(&mut tx, self, o.id, "org.reject", &o.name, &detail).await?;
        let o = tx.organisation(o.id).await?;
        tx.commit().await?;
        Ok(o)
    }

    /// The pending organisation an approval link names.
    pub async fn approval_info(&self, token: &str) -> Result<Option<Organisation>> {
        let mut tx = self.store.begin_read().await?;
        let t = tx
            .link_peek(&token_hash(token), "approval", crate::now())
            .await?;
        let org = match t {
            Some(t) => Some(tx.organisation(t.org).await?),
            None => None,
        };
        tx.commit().await?;
        Ok(org.filter(|o| o.status == "pending"))
    }

    /// The ledelsesrepræsentant approves: the organisation becomes active
    /// and gets its internal CA. Audited "org.approve".
    pub async fn approve_organisation(&self, token: &str) -> Result<Organisation> {
        let org = self
            .approval_info(token)
            .await?
            .ok_or_else(|| Error::NotFound("approval link (unknown, used or expired)".into()))?;
        let org_name = DisplayName::parse("organisation name", &org.name)?;
        let policy = crate::certs::policy_of(&self.org);
        // The CA names must fit 64 characters: a long organisation name is
        // shortened in them (the organisation attribute keeps it whole).
        let short = |suffix: &str| {
            let room = 64 - suffix.chars().count();
            let n: String = org.name.chars().take(room).collect();
            format!("{}{suffix}", n.trim_end())
        };
        let made = make_ca(
            &policy,
            &org_name,
            DisplayName::parse("root CA name", &short(" rod-CA"))?,
            DisplayName::parse("issuing CA name", &short(" udstedende-CA 1"))?,
        )?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        cvr_free(&mut tx, &org.cvr, Some(org.id)).await?;
        if tx
            .link_take(&token_hash(token), "approval", now)
            .await?
            .is_none()
            || !tx
                .set_organisation_status(org.id, "pending", "active")
                .await?
        {
            return Err(Error::NotFound(
                "approval link (unknown, used or expired)".into(),
            ));
        }
        let root_id = record(
            &mut tx,
            org.id,
            &made.root,
            "root-ca",
            "issued",
            Some((made.root_signer.key(), false)),
            None,
        )
        .await?;
        let issuing_id = record(
            &mut tx,
            org.id,
            &made.issuing,
            "issuing-ca",
            "issued",
            Some((made.signer.key(), false)),
            None,
        )
        .await?;
        tx.set_ca_state(org.id, root_id, issuing_id).await?;
        let settings = policy_settings(&policy);
        tx.set_settings(org.id, &settings).await?;
        crls_in(&mut tx, org.id, &made).await?;
        tx.audit(
            Some(org.id),
            &format!(
                "representative:{}",
                org.representative_email.clone().unwrap_or_default()
            ),
            "org.approve",
            &org.name,
            &format!("root={root_id} issuing={issuing_id}"),
        )
        .await?;
        let org = tx.organisation(org.id).await?;
        tx.commit().await?;
        Ok(org)
    }

    /// When the installation has no administrator yet: a new one-time
    /// bootstrap link's token for this organisation (earlier ones end).
    /// None when an administrator exists.
    pub async fn bootstrap_token(&self) -> Result<Option<String>> {
        let token = new_token()?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        if tx.admin_count().await? > 0 {
            return Ok(None);
        }
        tx.org_links_void(self.org.id, "bootstrap", now).await?;
        tx.link_insert(
            &token_hash(&token),
            self.org.id,
            None,
            "bootstrap",
            now,
            now + BOOTSTRAP_SECS,
        )
        .await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "admin.bootstrap_link",
            "",
            "a new one-time bootstrap link; earlier ones void",
        )
        .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// True when the bootstrap link is live.
    pub async fn bootstrap_valid(&self, token: &str) -> Result<bool> {
        let mut tx = self.store.begin_read().await?;
        let t = tx
            .link_peek(&token_hash(token), "bootstrap", crate::now())
            .await?;
        tx.commit().await?;
        Ok(t.is_some())
    }

    /// Uses the bootstrap link: creates the first organisation
    /// administrator of its organisation. Audited "admin.create" by
    /// "bootstrap".
    pub async fn bootstrap(&self, token: &str, name: &str, password: &str) -> Result<crate::Admin> {
        crate::smtp_users::check_account_name("administrator", name)?;
        crate::admins::check_password(password)?;
        let hash = crate::smtp_users::hash_password_blocking(password).await?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        let Some(t) = tx.link_take(&token_hash(token), "bootstrap", now).await? else {
            return Err(Error::NotFound(
                "bootstrap link (unknown, used or expired)".into(),
            ));
        };
        let id = tx
            .admin_create(t.org, name, Role::OrgAdmin.as_str(), &hash, now)
            .await?;
        tx.audit(
            Some(t.org),
            "bootstrap",
            "admin.create",
            name,
            "role=org-admin",
        )
        .await?;
        tx.commit().await?;
        Ok(crate::Admin {
            id,
            name: name.to_string(),
            role: Role::OrgAdmin,
            org: t.org,
            created_at: now,
            disabled: false,
        })
    }
}

/// The operator's decision in the installation's audit trail (where the
/// operator reads it) and in the application's own.
async fn audit_both(
    tx: &mut store::Tx<'_>,
    svc: &Service,
    app: OrgId,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<()> {
    tx.audit(
        Some(svc.org.id),
        svc.actor.as_str(),
        action,
        subject,
        detail,
    )
    .await?;
    if app != svc.org.id {
        tx.audit(Some(app), svc.actor.as_str(), action, subject, detail)
            .await?;
    }
    Ok(())
}

fn not_waiting(org: OrgId) -> Error {
    Error::NotFound(format!("application {} (none waits with this id)", org.0))
}

/// Application `org`, when it waits for the operator.
async fn waiting(tx: &mut store::Tx<'_>, org: OrgId) -> Result<Organisation> {
    match tx.organisation(org).await {
        Ok(o) if o.status == APPLIED => Ok(o),
        Ok(_) | Err(store::StoreError::NotFound(_)) => Err(not_waiting(org)),
        Err(e) => Err(e.into()),
    }
}

/// The settings lines that carry an issuance policy.
pub(crate) fn policy_settings(policy: &IssuancePolicy) -> String {
    let mut settings = String::new();
    for o in &policy.policy_oids {
        settings.push_str(&format!("policy_oid={o}\n"));
    }
    if let Some(u) = &policy.crl_url {
        settings.push_str(&format!("crl_url={u}\n"));
    }
    if let Some(u) = &policy.ca_issuers_url {
        settings.push_str(&format!("ca_issuers_url={u}\n"));
    }
    settings
}
