//! The organisation's users (employees): importing them from NemID
//! medarbejdersignatur, activating them, blocking, access requests, and
//! ordering and collecting brugercertifikater.
//!
//! Statuses ([`Status`]) follow MitID Erhverv: imported users are
//! *Klar til aktivering* or *Mangler fødselsdato*; activation sends a
//! single-use link and an 8-digit activation code that an administrator
//! reveals (users known by CPR too, until an identity provider proves the
//! CPR number); the employee opens the link, gives the code, sets a
//! password and is *Aktiv*.
//!
//! Secrets: the CPR number only as a keyed hash (HMAC-SHA256 under a key
//! derived from the organisation's root CA key, so it survives master-key
//! rotation and never leaves the server); the password and the activation
//! code as argon2id hashes; links by the SHA-256 of their token. Five wrong
//! codes or passwords lock the link until an administrator makes a new code;
//! each attempt is taken atomically before the secret is checked
//! ([`crate::limits`]), so parallel guesses get no more than five.
//! The functions that return a token return it once, for the e-mail.

use ca::pkcs12::Flavour;
use ca::{Cvr, DisplayName, EmailAddress, EndEntity, Kind, OcesUuid};
use openssl::pkey::PKey;
use openssl::sign::Signer;
use store::{OrgId, Organisation, UserRow};

use crate::admins::{new_token, token_hash};
use crate::certs::{P12Request, issue_end_entity, make_p12, serial_hex};
use crate::smtp_users::{hash_password_blocking, verify_password_blocking};
use crate::{Error, Result, Service};

/// How long an activation link lives (30 days).
pub const ACTIVATION_SECS: i64 = 30 * 86_400;
/// How long a certificate link lives (14 days).
pub const CERTIFICATE_SECS: i64 = 14 * 86_400;
/// Wrong codes or passwords before a link locks.
pub const MAX_FAILURES: i64 = 5;
/// The largest import accepted, rows.
pub const MAX_IMPORT_ROWS: usize = 10_000;
/// The shortest password an employee may set.
pub const MIN_USER_PASSWORD: usize = 10;

/// A user's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Imported without CPR or birth date: *Mangler fødselsdato*.
    MissingBirthDate,
    /// *Klar til aktivering*.
    Ready,
    /// Activation sent, not yet used: *Afventer aktivering*.
    ActivationSent,
    /// *Aktiv*.
    Active,
    /// *Spærret*.
    Blocked,
    /// Asked for access on the public page: *Anmodet om adgang*.
    Requested,
    /// Access refused: *Afvist*.
    Rejected,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 7] = [
        Status::MissingBirthDate,
        Status::Ready,
        Status::ActivationSent,
        Status::Active,
        Status::Blocked,
        Status::Requested,
        Status::Rejected,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::MissingBirthDate => "missing-birth-date",
            Status::Ready => "ready",
            Status::ActivationSent => "activation-sent",
            Status::Active => "active",
            Status::Blocked => "blocked",
            Status::Requested => "requested",
            Status::Rejected => "rejected",
        }
    }

    /// The Danish label MitID Erhverv shows.
    pub fn label_da(self) -> &'static str {
        match self {
            Status::MissingBirthDate => "Mangler fødselsdato",
            Status::Ready => "Klar til aktivering",
            Status::ActivationSent => "Afventer aktivering",
            Status::Active => "Aktiv",
            Status::Blocked => "Spærret",
            Status::Requested => "Anmodet om adgang",
            Status::Rejected => "Afvist",
        }
    }

    /// The English label.
    pub fn label_en(self) -> &'static str {
        match self {
            Status::MissingBirthDate => "Missing birth date",
            Status::Ready => "Ready for activation",
            Status::ActivationSent => "Awaiting activation",
            Status::Active => "Active",
            Status::Blocked => "Blocked",
            Status::Requested => "Requested access",
            Status::Rejected => "Rejected",
        }
    }

    /// Parses a stored or API name.
    pub fn parse(s: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "status {:?}: use one of {}",
                    crate::admins::loggable(s),
                    Status::ALL.map(Status::as_str).join(", ")
                ))
            })
    }
}

/// Identification means an employee can be activated with.
pub const IDENT_MEANS: &[&str] = &[
    "mitid-app",
    "mitid-kodeviser",
    "mitid-chip",
    "private-mitid",
];

/// A user as the API and pages show it (no secrets, no CPR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// E-mail address.
    pub email: String,
    /// RID from medarbejdersignatur.
    pub rid: Option<String>,
    /// A CPR number is recorded (never the number).
    pub has_cpr: bool,
    /// Birth date, `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    /// Rights carried over.
    pub rights: Vec<String>,
    /// Status.
    pub status: Status,
    /// The identification means chosen at activation.
    pub ident_means: Option<String>,
    /// An activation code is waiting to be used.
    pub has_code: bool,
    /// The activation is locked after too many wrong codes.
    pub locked: bool,
    /// Created.
    pub created_at: i64,
}

impl TryFrom<&UserRow> for User {
    type Error = Error;

    fn try_from(r: &UserRow) -> Result<User> {
        Ok(User {
            id: r.id,
            name: r.name.clone(),
            email: r.email.clone(),
            rid: r.rid.clone(),
            has_cpr: r.cpr_hash.is_some(),
            birth_date: r.birth_date.clone(),
            rights: split_rights(&r.rights),
            status: Status::parse(&r.status)?,
            ident_means: r.ident_means.clone(),
            has_code: r.code_hash.is_some(),
            locked: r.code_failures >= MAX_FAILURES,
            created_at: r.created_at,
        })
    }
}

fn split_rights(s: &str) -> Vec<String> {
    s.split([',', '|'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
}

/// One row of an import that was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Line number in the file (the header is line 1).
    pub line: usize,
    /// Why.
    pub error: String,
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// Users imported.
    pub imported: Vec<User>,
    /// Rows refused, one by one.
    pub errors: Vec<RowError>,
}

/// The import template: the header and one example row.
pub const IMPORT_TEMPLATE: &str = "Navn;E-mail;RID;CPR;Fødselsdato;Rettigheder\r\n\
     Jens Hansen;jens@firma.dk;12345678;;1970-05-01;Sygemelding,Barsel\r\n";

/// What the fields of a user can be changed to (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct UserPatch {
    /// Name.
    pub name: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// CPR number (`DDMMYYSSSS` or `DDMMYY-SSSS`): kept only as a keyed hash.
    pub cpr: Option<String>,
    /// Birth date, `YYYY-MM-DD` or `DD-MM-YYYY`.
    pub birth_date: Option<String>,
    /// Rights.
    pub rights: Option<Vec<String>>,
}

/// What one activation did.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The user, now awaiting activation.
    pub user: User,
    /// The link's token (for the e-mail; never stored).
    pub token: String,
    /// The user needs an activation code (known by birth date only); an
    /// administrator reveals it with [`Service::activation_code`].
    pub needs_code: bool,
}

/// A certificate collected by an employee.
#[derive(Debug)]
pub struct Collected {
    /// The certificate's id.
    pub id: i64,
    /// Its serial, hex.
    pub serial: String,
    /// The PKCS#12 file.
    pub p12: Vec<u8>,
    /// The generated password that opens it (shown once).
    pub password: String,
    /// The file's flavour.
    pub flavour: Flavour,
}

/// The organisation's settings that administrators change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Brugercertifikater may be ordered.
    pub allow_user_certificates: bool,
    /// Employees may use private MitID.
    pub allow_private_mitid: bool,
    /// Employees may request access on the public page.
    pub allow_access_requests: bool,
    /// The shared mailboxes (funktionspostkasser).
    pub shared_mailboxes: Vec<String>,
}

const SETTING_KEYS: [&str; 4] = [
    "allow_user_certificates",
    "allow_private_mitid",
    "allow_access_requests",
    "shared_mailbox",
];

/// The settings kept in `org`.
pub fn settings_of(org: &Organisation) -> Settings {
    let flag = |k: &str| org.setting(k).last().is_some_and(|v| v == "true");
    Settings {
        allow_user_certificates: flag("allow_user_certificates"),
        allow_private_mitid: flag("allow_private_mitid"),
        allow_access_requests: flag("allow_access_requests"),
        shared_mailboxes: org.setting("shared_mailbox"),
    }
}

/// Checks an e-mail address as MitID Erhverv does (ASCII; no Æ/Ø/Å).
pub fn check_email(email: &str) -> Result<String> {
    let e = email.trim();
    // What mail programs and MitID Erhverv take: a plain local part
    // (letters, digits, `.`, `_`, `%`, `+`, `-`, at most 64) and a host name.
    let local_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 64
            && !l.starts_with('.')
            && !l.ends_with('.')
            && !l.contains("..")
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._%+-".contains(&b))
    };
    let domain_ok = |d: &str| {
        d.contains('.')
            && d.len() <= 253
            && d.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    };
    let ok = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(l, d)| local_ok(l) && domain_ok(d));
    if !ok {
        return Err(Error::Invalid(format!(
            "e-mail address {:?} is not valid (ASCII only: MitID Erhverv refuses Æ, Ø and Å)",
            crate::admins::loggable(e)
        )));
    }
    Ok(e.to_ascii_lowercase())
}

fn check_name(name: &str) -> Result<String> {
    let n = name.trim();
    // 64: what a certificate's common name holds.
    if n.is_empty() || n.chars().count() > 64 || n.chars().any(char::is_control) {
        return Err(Error::Invalid(
            "the name must have 1-64 characters, no control characters".into(),
        ));
    }
    Ok(n.to_string())
}

fn check_rights(rights: &[String]) -> Result<String> {
    for r in rights {
        if r.len() > 64 || r.chars().any(|c| c.is_control() || c == ',' || c == '|') {
            return Err(Error::Invalid(format!(
                "right {:?} is not valid",
                crate::admins::loggable(r)
            )));
        }
    }
    Ok(rights
        .iter()
        .map(|r| r.trim())
        .filter(|r| !r.is_empty())
        .collect::<Vec<_>>()
        .join(","))
}

fn valid_date(y: i32, m: u32, d: u32) -> bool {
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d) && (1900..=2100).contains(&y)
}

/// Parses a birth date (`YYYY-MM-DD`, `DD-MM-YYYY` or `DD.MM.YYYY`) to
/// `YYYY-MM-DD`.
pub fn parse_birth_date(s: &str) -> Result<String> {
    let s = s.trim();
    let bad = || {
        Error::Invalid(format!(
            "birth date {:?}: use YYYY-MM-DD or DD-MM-YYYY",
            crate::admins::loggable(s)
        ))
    };
    let parts: Vec<&str> = s.split(['-', '.', '/']).collect();
    if parts.len() != 3 || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let (y, m, d) = if parts[0].len() == 4 {
        (parts[0], parts[1], parts[2])
    } else if parts[2].len() == 4 {
        (parts[2], parts[1], parts[0])
    } else {
        return Err(bad());
    };
    let (y, m, d): (i32, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !valid_date(y, m, d) {
        return Err(bad());
    }
    Ok(format!("{y:04}-{m:02}-{d:02}"))
}

/// Normalises a CPR number to its 10 digits (never echoing it in errors).
fn parse_cpr(s: &str) -> Result<String> {
    let digits: String = s
        .trim()
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .collect();
    let bad = || Error::Invalid("the CPR number must be 10 digits (DDMMYY-SSSS)".into());
    if digits.len() != 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let d: u32 = digits[0..2].parse().map_err(|_| bad())?;
    let m: u32 = digits[2..4].parse().map_err(|_| bad())?;
    if !valid_date(2000, m, d) {
        return Err(bad());
    }
    Ok(digits)
}

/// Splits one CSV line (`;` or `,` as chosen by the header; `"` quoting).
fn csv_fields(line: &str, sep: char) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
        } else if c == '"' && at_start {
            quoted = true;
            at_start = false;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
            at_start = true;
        } else {
            cur.push(c);
            at_start = false;
        }
    }
    if quoted {
        return Err("a quoted field is not closed".into());
    }
    out.push(cur);
    Ok(out.into_iter().map(|f| f.trim().to_string()).collect())
}

/// A column of the import, by its header (Danish or English).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Name,
    Email,
    Rid,
    Cpr,
    BirthDate,
    Rights,
}

fn column_of(h: &str) -> Option<Col> {
    let h = h.trim().trim_start_matches('\u{feff}').to_lowercase();
    Some(match h.as_str() {
        "navn" | "name" => Col::Name,
        "e-mail" | "email" | "e-mailadresse" | "mail" => Col::Email,
        "rid" | "rid-nummer" => Col::Rid,
        "cpr" | "cpr-nummer" | "cpr-nr" => Col::Cpr,
        "fødselsdato" | "foedselsdato" | "birth date" | "birth_date" | "birthdate" => {
            Col::BirthDate
        }
        "rettigheder" | "rights" => Col::Rights,
        _ => return None,
    })
}

fn status_of(u: &UserRow) -> Status {
    if u.cpr_hash.is_some() || u.birth_date.is_some() {
        Status::Ready
    } else {
        Status::MissingBirthDate
    }
}

fn random_code() -> Result<String> {
    // 8 digits, uniform: reject bytes that would bias the modulus.
    let mut out = String::new();
    while out.len() < 8 {
        let mut b = [0u8; 16];
        openssl::rand::rand_bytes(&mut b)?;
        for x in b {
            if x < 250 && out.len() < 8 {
                out.push(char::from(b'0' + x % 10));
            }
        }
    }
    Ok(out)
}

/// A strong password for a PKCS#12 file: 20 characters from an alphabet
/// without look-alikes (about 110 bits), grouped for reading.
pub fn generate_p12_password() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut out = String::new();
    let mut n = 0;
    while n < 20 {
        let mut b = [0u8; 32];
        openssl::rand::rand_bytes(&mut b)?;
        for x in b {
            let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
            if x < limit && n < 20 {
                if n > 0 && n % 5 == 0 {
                    out.push('-');
                }
                out.push(char::from(ALPHABET[usize::from(x) % ALPHABET.len()]));
                n += 1;
            }
        }
    }
    Ok(out)
}

impl Service {
    /// The organisation's settings.
    pub fn settings(&self) -> Settings {
        settings_of(&self.org)
    }

    /// Replaces the settings administrators change (other settings, like
    /// the CA's policy OIDs, are kept). Audited "settings.update".
    pub async fn set_user_settings(&self, s: &Settings) -> Result<Settings> {
        let mut mailboxes = Vec::new();
        for m in &s.shared_mailboxes {
            let m = check_email(m)?;
            if !mailboxes.contains(&m) {
                mailboxes.push(m);
            }
        }
        let mut tx = self.store.begin().await?;
        let org = tx.organisation(self.org.id).await?;
        let mut text: String = org
            .settings
            .lines()
            .filter(|l| {
                let k = l.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
                !SETTING_KEYS.contains(&k)
            })
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "allow_user_certificates={}\nallow_private_mitid={}\nallow_access_requests={}\n",
            s.allow_user_certificates, s.allow_private_mitid, s.allow_access_requests
        ));
        for m in &mailboxes {
            text.push_str(&format!("shared_mailbox={m}\n"));
            tx.ensure_mailbox(self.org.id, m).await?;
        }
        tx.set_settings(self.org.id, &text).await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "settings.update",
            &self.org.name,
            &format!(
                "allow_user_certificates={} allow_private_mitid={} allow_access_requests={} shared_mailboxes={}",
                s.allow_user_certificates,
                s.allow_private_mitid,
                s.allow_access_requests,
                mailboxes.join(",")
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Settings {
            shared_mailboxes: mailboxes,
            ..s.clone()
        })
    }

    /// The key of the CPR hash: derived from the root CA's private key
    /// (sealed in the store, so the same on every node and through
    /// master-key rotations).
    async fn cpr_key(&self) -> Result<Vec<u8>> {
        let a = self.authority().await?;
        let der = a.root_signer.key().private_key_to_der()?;
        let mut h = openssl::sha::Sha256::new();
        h.update(b"sikkermail cpr hmac v1\0");
        h.update(&der);
        Ok(h.finish().to_vec())
    }

    fn cpr_hash(key: &[u8], cpr: &str) -> Result<String> {
        let pkey = PKey::hmac(key)?;
        let mut s = Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
        s.update(cpr.as_bytes())?;
        Ok(s.sign_to_vec()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    }

    /// Imports users from a CSV file as exported from NemID
    /// medarbejdersignatur (`;` or `,`; the header names the columns, see
    /// [`IMPORT_TEMPLATE`]). Good rows import, each bad row is reported;
    /// audited "users.import" (counts only).
    pub async fn import_users(&self, csv: &[u8]) -> Result<ImportReport> {
        let text = std::str::from_utf8(csv)
            .map_err(|_| Error::Invalid("the file is not UTF-8 text".into()))?;
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .ok_or_else(|| Error::Invalid("the file is empty".into()))?;
        let sep = if header.contains(';') { ';' } else { ',' };
        let heads = csv_fields(header, sep).map_err(Error::Invalid)?;
        let cols: Vec<Option<Col>> = heads.iter().map(|h| column_of(h)).collect();
        for need in [Col::Name, Col::Email] {
            if !cols.contains(&Some(need)) {
                return Err(Error::Invalid(
                    "the header must name at least the columns Navn and E-mail \
                     (see GET /api/v1/users/import/template)"
                        .into(),
                ));
            }
        }
        let rows: Vec<(usize, &str)> = lines.filter(|(_, l)| !l.trim().is_empty()).collect();
        if rows.len() > MAX_IMPORT_ROWS {
            return Err(Error::Invalid(format!(
                "the file has {} rows; at most {MAX_IMPORT_ROWS} at a time",
                rows.len()
            )));
        }
        let needs_key = cols.contains(&Some(Col::Cpr));
        let key = if needs_key {
            Some(self.cpr_key().await?)
        } else {
            None
        };
        let mut report = ImportReport::default();
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        for (i, line) in rows {
            let line_no = i + 1;
            let parsed = (|| -> Result<UserRow> {
                let fields = csv_fields(line, sep).map_err(Error::Invalid)?;
                let mut u = UserRow {
                    org: self.org.id.0,
                    created_at: now,
                    ..UserRow::default()
                };
                for (c, v) in cols.iter().zip(fields.iter()) {
                    let v = v.trim();
                    match c {
                        Some(Col::Name) => u.name = check_name(v)?,
                        Some(Col::Email) => u.email = check_email(v)?,
                        Some(Col::Rid) if !v.is_empty() => {
                            if v.len() > 32 || !v.chars().all(|c| c.is_ascii_alphanumeric()) {
                                return Err(Error::Invalid(
                                    "RID must be letters and digits".into(),
                                ));
                            }
                            u.rid = Some(v.to_string());
                        }
                        Some(Col::Cpr) if !v.is_empty() => {
                            let cpr = parse_cpr(v)?;
                            let key = key.as_deref().unwrap_or_default();
                            u.cpr_hash = Some(Self::cpr_hash(key, &cpr)?);
                        }
                        Some(Col::BirthDate) if !v.is_empty() => {
                            u.birth_date = Some(parse_birth_date(v)?)
                        }
                        Some(Col::Rights) => u.rights = check_rights(&split_rights(v))?,
                        _ => {}
                    }
                }
                if u.name.is_empty() || u.email.is_empty() {
                    return Err(Error::Invalid(
                        "the name and the e-mail address are required".into(),
                    ));
                }
                u.status = status_of(&u).as_str().to_string();
                Ok(u)
            })();
            let row = match parsed {
                Ok(r) => r,
                Err(e) => {
                    report.errors.push(RowError {
                        line: line_no,
                        error: e.to_string(),
                    });
                    continue;
                }
            };
            match tx.user_insert(&row).await {
                Ok(id) => {
                    let mut row = row;
                    row.id = id;
                    report.imported.push(User::try_from(&row)?);
                }
                Err(store::StoreError::Conflict(m)) => report.errors.push(RowError {
                    line: line_no,
                    error: m,
                }),
                Err(e) => return Err(e.into()),
            }
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "users.import",
            &self.org.name,
            &format!(
                "imported={} refused={}",
                report.imported.len(),
                report.errors.len()
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(report)
    }

    /// The users, only those with `status` when given.
    pub async fn users(&self, status: Option<Status>) -> Result<Vec<User>> {
        let mut tx = self.store.begin_read().await?;
        let rows = tx.users(self.org.id, status.map(Status::as_str)).await?;
        tx.commit().await?;
        rows.iter().map(User::try_from).collect()
    }

    /// One user.
    pub async fn user(&self, id: i64) -> Result<User> {
        let mut tx = self.store.begin_read().await?;
        let row = tx.user(self.org.id, id).await?;
        tx.commit().await?;
        User::try_from(&row)
    }

    /// Changes a user's fields; a user missing a birth date becomes ready
    /// when a CPR number or birth date is added. Audited "user.update"
    /// (which fields, never the CPR number).
    pub async fn update_user(&self, id: i64, p: &UserPatch) -> Result<User> {
        let key = match &p.cpr {
            Some(_) => Some(self.cpr_key().await?),
            None => None,
        };
        let mut tx = self.store.begin().await?;
        let mut u = tx.user(self.org.id, id).await?;
        let before = u.status.clone();
        let mut changed = Vec::new();
        if let Some(n) = &p.name {
            u.name = check_name(n)?;
            changed.push("name");
        }
        if let Some(e) = &p.email {
            u.email = check_email(e)?;
            changed.push("email");
        }
        if let Some(c) = &p.cpr {
            u.cpr_hash = Some(Self::cpr_hash(
                key.as_deref().unwrap_or_default(),
                &parse_cpr(c)?,
            )?);
            changed.push("cpr");
        }
        if let Some(b) = &p.birth_date {
            u.birth_date = Some(parse_birth_date(b)?);
            changed.push("birth_date");
        }
        if let Some(r) = &p.rights {
            u.rights = check_rights(r)?;
            changed.push("rights");
        }
        if before == Status::MissingBirthDate.as_str() {
            u.status = status_of(&u).as_str().to_string();
        }
        if !tx.user_update(&u, &before, crate::now()).await? {
            return Err(Error::Conflict(format!(
                "user {id} changed meanwhile; try again"
            )));
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "user.update",
            &id.to_string(),
            &format!("fields={}", changed.join(",")),
        )
        .await?;
        tx.commit().await?;
        User::try_from(&u)
    }

    /// Activates users with the chosen identification means: each gets a
    /// new single-use link (earlier ones end) and, when known only by birth
    /// date, an activation code. All or nothing: a user that is not ready
    /// (or already awaiting activation) fails the whole request. Audited
    /// "user.activate" per user.
    pub async fn activate_users(&self, ids: &[i64], means: &str) -> Result<Vec<Activation>> {
        if !IDENT_MEANS.contains(&means) {
            return Err(Error::Invalid(format!(
                "identification means {:?}: use one of {}",
                crate::admins::loggable(means),
                IDENT_MEANS.join(", ")
            )));
        }
        if means == "private-mitid" && !self.settings().allow_private_mitid {
            return Err(Error::Invalid(
                "the organisation does not allow private MitID (settings)".into(),
            ));
        }
        if ids.is_empty() || ids.len() > 1000 {
            return Err(Error::Invalid("name 1 to 1000 users".into()));
        }
        let mut seen = std::collections::HashSet::new();
        let mut prepared = Vec::new();
        for id in ids {
            if !seen.insert(*id) {
                continue;
            }
            let token = new_token()?;
            prepared.push((*id, token));
        }
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        let mut out = Vec::new();
        for (id, token) in prepared {
            let mut u = tx.user(self.org.id, id).await?;
            let before = u.status.clone();
            if before != Status::Ready.as_str() && before != Status::ActivationSent.as_str() {
                return Err(Error::Invalid(format!(
                    "user {id} is {}: only users ready for activation can be activated",
                    Status::parse(&before)
                        .map(Status::label_en)
                        .unwrap_or("unknown")
                )));
            }
            // Every activation needs the activation code, users known by
            // CPR too: nothing proves the CPR number until an identity
            // provider does.
            let needs_code = true;
            u.status = Status::ActivationSent.as_str().to_string();
            u.ident_means = Some(means.to_string());
            u.code_failures = 0;
            // The code itself is made (and shown) when an administrator
            // reveals it; until then none matches.
            u.code_hash = Some(String::new());
            if !tx.user_update(&u, &before, now).await? {
                return Err(Error::Conflict(format!(
                    "user {id} changed meanwhile; try again"
                )));
            }
            tx.links_void(self.org.id, id, "activation", now).await?;
            tx.link_insert(
                &token_hash(&token),
                self.org.id,
                Some(id),
                "activation",
                now,
                now + ACTIVATION_SECS,
            )
            .await?;
            tx.audit(
                Some(self.org.id),
                self.actor.as_str(),
                "user.activate",
                &id.to_string(),
                &format!("means={means} code={needs_code}"),
            )
            .await?;
            out.push(Activation {
                user: User::try_from(&u)?,
                token,
                needs_code,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Sends the activation again: a new link (the old ones end). Audited
    /// "user.resend_activation".
    pub async fn resend_activation(&self, id: i64) -> Result<Activation> {
        let u = self.user(id).await?;
        if u.status != Status::ActivationSent {
            return Err(Error::Invalid(format!(
                "user {id} is not awaiting activation ({})",
                u.status.label_en()
            )));
        }
        let token = new_token()?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        tx.links_void(self.org.id, id, "activation", now).await?;
        tx.link_insert(
            &token_hash(&token),
            self.org.id,
            Some(id),
            "activation",
            now,
            now + ACTIVATION_SECS,
        )
        .await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "user.resend_activation",
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok(Activation {
            needs_code: true,
            user: u,
            token,
        })
    }

    /// Makes a new 8-digit activation code for a user awaiting activation
    /// and returns it (shown once; the store keeps its hash). Also resets
    /// the count of wrong codes. Audited "user.activation_code" (never the
    /// code).
    pub async fn activation_code(&self, id: i64) -> Result<String> {
        let code = random_code()?;
        let hash = hash_password_blocking(&code).await?;
        let mut tx = self.store.begin().await?;
        let mut u = tx.user(self.org.id, id).await?;
        if u.status != Status::ActivationSent.as_str() {
            return Err(Error::Invalid(format!(
                "user {id} is not awaiting activation: activate the user first"
            )));
        }
        let before = u.status.clone();
        u.code_hash = Some(hash);
        u.code_failures = 0;
        if !tx.user_update(&u, &before, crate::now()).await? {
            return Err(Error::Conflict(format!(
                "user {id} changed meanwhile; try again"
            )));
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "user.activation_code",
            &id.to_string(),
            "revealed",
        )
        .await?;
        tx.commit().await?;
        Ok(code)
    }

    /// Blocks (`true`) or unblocks a user. A blocked user cannot activate
    /// nor collect certificates; unblocking returns the user to active (if
    /// activated) or ready. Audited "user.block" / "user.unblock".
    pub async fn set_blocked(&self, id: i64, blocked: bool) -> Result<User> {
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        let mut u = tx.user(self.org.id, id).await?;
        let before = u.status.clone();
        let st = Status::parse(&before)?;
        if blocked {
            if matches!(st, Status::Blocked | Status::Requested | Status::Rejected) {
                return Err(Error::Invalid(format!(
                    "user {id} cannot be blocked ({})",
                    st.label_en()
                )));
            }
            u.status = Status::Blocked.as_str().to_string();
            tx.links_void(self.org.id, id, "activation", now).await?;
            tx.links_void(self.org.id, id, "certificate", now).await?;
        } else {
            if st != Status::Blocked {
                return Err(Error::Invalid(format!("user {id} is not blocked")));
            }
            u.status = if u.password_hash.is_some() {
                Status::Active
            } else {
                status_of(&u)
            }
            .as_str()
            .to_string();
        }
        if !tx.user_update(&u, &before, now).await? {
            return Err(Error::Conflict(format!(
                "user {id} changed meanwhile; try again"
            )));
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            if blocked {
                "user.block"
            } else {
                "user.unblock"
            },
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        User::try_from(&u)
    }

    /// An employee asks for access (public page; only when the setting
    /// allows). Audited "user.request".
    pub async fn request_access(&self, name: &str, email: &str) -> Result<User> {
        if !self.settings().allow_access_requests {
            return Err(Error::NotFound("access requests".into()));
        }
        let now = crate::now();
        let u = UserRow {
            org: self.org.id.0,
            name: check_name(name)?,
            email: check_email(email)?,
            status: Status::Requested.as_str().to_string(),
            created_at: now,
            ..UserRow::default()
        };
        let mut tx = self.store.begin().await?;
        let id = tx.user_insert(&u).await?;
        tx.audit(
            Some(self.org.id),
            "public",
            "user.request",
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        User::try_from(&UserRow { id, ..u })
    }

    /// Approves or rejects an access request. An approved user is missing a
    /// birth date until an administrator adds it. Audited.
    pub async fn decide_request(&self, id: i64, approve: bool) -> Result<User> {
        let mut tx = self.store.begin().await?;
        let mut u = tx.user(self.org.id, id).await?;
        if u.status != Status::Requested.as_str() {
            return Err(Error::Invalid(format!("user {id} has no open request")));
        }
        u.status = if approve {
            status_of(&u)
        } else {
            Status::Rejected
        }
        .as_str()
        .to_string();
        if !tx
            .user_update(&u, Status::Requested.as_str(), crate::now())
            .await?
        {
            return Err(Error::Conflict(format!(
                "user {id} changed meanwhile; try again"
            )));
        }
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            if approve {
                "user.request_approve"
            } else {
                "user.request_reject"
            },
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        User::try_from(&u)
    }

    /// Orders a brugercertifikat for an active user (when the organisation
    /// allows them): a single-use link valid 14 days, returned for the
    /// e-mail "Hent dit brugercertifikat". Audited "cert.order".
    pub async fn order_certificate(&self, id: i64) -> Result<(User, String)> {
        let token = new_token()?;
        let now = crate::now();
        let mut tx = self.store.begin().await?;
        let u = tx.user(self.org.id, id).await?;
        if !self.settings().allow_user_certificates {
            return Err(Error::Invalid(
                "the organisation does not allow brugercertifikater: an organisation \
                 administrator allows them in the settings"
                    .into(),
            ));
        }
        if u.status != Status::Active.as_str() {
            return Err(Error::Invalid(format!(
                "user {id} is not active: only activated users can get a brugercertifikat"
            )));
        }
        check_email(&u.email)?;
        tx.links_void(self.org.id, id, "certificate", now).await?;
        tx.link_insert(
            &token_hash(&token),
            self.org.id,
            Some(id),
            "certificate",
            now,
            now + CERTIFICATE_SECS,
        )
        .await?;
        tx.audit(
            Some(self.org.id),
            self.actor.as_str(),
            "cert.order",
            &id.to_string(),
            "",
        )
        .await?;
        tx.commit().await?;
        Ok((User::try_from(&u)?, token))
    }
}

/// Who a link belongs to, before it is used (for the page that asks).
#[derive(Debug, Clone)]
pub struct LinkInfo {
    /// The organisation.
    pub org: Organisation,
    /// The user.
    pub user: User,
    /// When the link ends.
    pub expires_at: i64,
}

/// Looks up an unused activation or certificate link (`purpose`), for the
/// page that opens it. None when unknown, used or expired.
pub async fn peek_link(root: &Service, token: &str, purpose: &str) -> Result<Option<LinkInfo>> {
    let mut tx = root.store.begin_read().await?;
    let Some(t) = tx
        .link_peek(&token_hash(token), purpose, crate::now())
        .await?
    else {
        return Ok(None);
    };
    let org = tx.organisation(t.org).await?;
    let Some(uid) = t.user else { return Ok(None) };
    let user = tx.user(t.org, uid).await?;
    tx.commit().await?;
    Ok(Some(LinkInfo {
        org,
        user: User::try_from(&user)?,
        expires_at: t.expires_at,
    }))
}

/// Who an employee is in the audit trail: `employee:<id>`, and the
/// client's address when known.
fn employee_actor(user: i64, from: Option<&str>) -> String {
    match from {
        Some(ip) => format!("employee:{user} from {ip}"),
        None => format!("employee:{user}"),
    }
}

/// Takes one attempt on a link (its user's count of wrong secrets, at most
/// [`MAX_FAILURES`]) and one on the client's address, before the code or
/// password is checked: parallel requests can never check more than the
/// limit. Invalid (`locked`) when the link is used up, TooMany when the
/// address is.
async fn take_link_attempt(
    root: &Service,
    org: OrgId,
    user: i64,
    from: Option<&str>,
    locked: &str,
) -> Result<crate::limits::Taken> {
    let addr: Vec<(crate::limits::Rule, &str)> = from
        .iter()
        .map(|a| (crate::limits::LINK_ADDRESS, *a))
        .collect();
    let taken = root.attempt(&addr).await?;
    if !root
        .store
        .link_attempt_take(org, user, MAX_FAILURES)
        .await?
    {
        // Not a check: the address keeps nothing for it.
        root.attempt_succeeded(taken).await?;
        return Err(Error::Invalid(locked.into()));
    }
    Ok(taken)
}

/// Gives back what [`take_link_attempt`] took (the secret was right, or
/// was never checked).
async fn give_back_link_attempt(
    root: &Service,
    org: OrgId,
    user: i64,
    taken: crate::limits::Taken,
) -> Result<()> {
    root.store.link_attempt_release(org, user).await?;
    root.attempt_succeeded(taken).await
}

/// A wrong code or password on `user` (already counted when its attempt
/// was taken): audited; Invalid with how many are left.
async fn wrong_secret(
    root: &Service,
    org: OrgId,
    user: i64,
    what: &str,
    from: Option<&str>,
) -> Error {
    let r = async {
        let mut tx = root.store.begin().await?;
        let n = tx.user(org, user).await?.code_failures;
        tx.audit(
            Some(org),
            &employee_actor(user, from),
            "user.wrong_secret",
            &user.to_string(),
            what,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, Error>(n)
    }
    .await;
    match r {
        Ok(n) if n >= MAX_FAILURES => Error::Invalid(
            "too many wrong attempts: the link is locked; ask your administrator for a new \
             activation code"
                .into(),
        ),
        Ok(n) => Error::Invalid(format!(
            "the {what} is wrong ({} attempts left)",
            MAX_FAILURES - n
        )),
        Err(e) => e,
    }
}

/// The employee opens the activation link: gives the activation code (when
/// one was made) and sets a password. The link is used up; the user is
/// active. Audited "user.activated".
pub async fn complete_activation(
    root: &Service,
    token: &str,
    code: Option<&str>,
    password: &str,
    accept_terms: bool,
    from: Option<&str>,
) -> Result<User> {
    let info = peek_link(root, token, "activation")
        .await?
        .ok_or_else(|| Error::NotFound("activation link (unknown, used or expired)".into()))?;
    let org = info.org.id;
    let mut tx = root.store.begin_read().await?;
    let row = tx.user(org, info.user.id).await?;
    tx.commit().await?;
    const LOCKED: &str = "too many wrong attempts: the link is locked; ask your administrator \
                          for a new activation code";
    if row.code_failures >= MAX_FAILURES {
        return Err(Error::Invalid(LOCKED.into()));
    }
    if !accept_terms {
        return Err(Error::Invalid("accept the terms to go on".into()));
    }
    // Every activation needs the code (a CPR number alone proves nothing
    // until an identity provider checks it); none matches until an
    // administrator makes one.
    let h = row.code_hash.clone().unwrap_or_default();
    let given: String = code
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let taken = take_link_attempt(root, org, row.id, from, LOCKED).await?;
    let ok = if !h.is_empty() && given.len() == 8 {
        match verify_password_blocking(&h, &given).await {
            Ok(ok) => ok,
            Err(e) => {
                give_back_link_attempt(root, org, row.id, taken).await?;
                return Err(e);
            }
        }
    } else {
        false
    };
    if !ok {
        return Err(wrong_secret(root, org, row.id, "activation code", from).await);
    }
    give_back_link_attempt(root, org, row.id, taken).await?;
    if password.chars().count() < MIN_USER_PASSWORD {
        return Err(Error::Invalid(format!(
            "choose a password of at least {MIN_USER_PASSWORD} characters"
        )));
    }
    let hash = hash_password_blocking(password).await?;
    let now = crate::now();
    let mut tx = root.store.begin().await?;
    if tx
        .link_take(&token_hash(token), "activation", now)
        .await?
        .is_none()
    {
        return Err(Error::NotFound(
            "activation link (unknown, used or expired)".into(),
        ));
    }
    let mut u = tx.user(org, row.id).await?;
    let before = u.status.clone();
    if before != Status::ActivationSent.as_str() {
        return Err(Error::Invalid(
            "this user is not awaiting activation".into(),
        ));
    }
    u.status = Status::Active.as_str().to_string();
    u.password_hash = Some(hash);
    u.code_hash = None;
    u.code_failures = 0;
    if !tx.user_update(&u, &before, now).await? {
        return Err(Error::Conflict(
            "the user changed meanwhile; try again".into(),
        ));
    }
    tx.audit(
        Some(org),
        &employee_actor(u.id, from),
        "user.activated",
        &u.id.to_string(),
        &format!("means={}", u.ident_means.clone().unwrap_or_default()),
    )
    .await?;
    tx.commit().await?;
    User::try_from(&u)
}

/// The employee opens the certificate link: proves who they are with the
/// password set at activation and accepts the terms; the internal CA issues
/// the brugercertifikat (key sealed in the store, so the gateway decrypts
/// and signs for the employee at once), and the PKCS#12 file and its
/// generated password are returned. The link is used up in the same
/// transaction that records the certificate. Audited "cert.issue" and
/// "cert.download".
pub async fn collect_certificate(
    root: &Service,
    token: &str,
    password: &str,
    accept_terms: bool,
    flavour: Flavour,
    from: Option<&str>,
) -> Result<Collected> {
    let info = peek_link(root, token, "certificate")
        .await?
        .ok_or_else(|| Error::NotFound("certificate link (unknown, used or expired)".into()))?;
    let org_id = info.org.id;
    let mut tx = root.store.begin_read().await?;
    let row = tx.user(org_id, info.user.id).await?;
    tx.commit().await?;
    if row.status != Status::Active.as_str() {
        return Err(Error::Invalid("this user is not active".into()));
    }
    const LOCKED: &str = "too many wrong attempts: the link is locked; ask your administrator";
    if row.code_failures >= MAX_FAILURES {
        return Err(Error::Invalid(LOCKED.into()));
    }
    let taken = take_link_attempt(root, org_id, row.id, from, LOCKED).await?;
    let ok = match row.password_hash.as_deref() {
        Some(h) => match verify_password_blocking(h, password).await {
            Ok(ok) => ok,
            Err(e) => {
                give_back_link_attempt(root, org_id, row.id, taken).await?;
                return Err(e);
            }
        },
        None => false,
    };
    if !ok {
        return Err(wrong_secret(root, org_id, row.id, "password", from).await);
    }
    give_back_link_attempt(root, org_id, row.id, taken).await?;
    if !accept_terms {
        return Err(Error::Invalid("accept the terms to go on".into()));
    }
    let svc = root
        .for_org(org_id, crate::Actor::named(employee_actor(row.id, from)))
        .await?;
    if !svc.settings().allow_user_certificates {
        return Err(Error::Invalid(
            "the organisation no longer allows brugercertifikater".into(),
        ));
    }
    let a = svc.authority().await?;
    let ee = EndEntity {
        common_name: DisplayName::parse("name", &row.name)?,
        uuid: OcesUuid::new_random()?,
        organisation: DisplayName::parse("organisation", &svc.org.name)?,
        cvr: Cvr::parse(&svc.org.cvr)?,
        email: Some(EmailAddress::parse(&row.email)?),
    };
    let (cert, key) = issue_end_entity(&a, Kind::User, ee)?;
    let p12_password = generate_p12_password()?;
    let now = crate::now();
    let mut tx = svc.store.begin().await?;
    if tx
        .link_take(&token_hash(token), "certificate", now)
        .await?
        .is_none()
    {
        return Err(Error::NotFound(
            "certificate link (unknown, used or expired)".into(),
        ));
    }
    let id = crate::certs::record(
        &mut tx,
        org_id,
        &cert,
        "user",
        "issued",
        Some((&key, false)),
        None,
    )
    .await?;
    tx.set_certificate_user(org_id, id, row.id).await?;
    let serial = serial_hex(&cert);
    tx.audit(
        Some(org_id),
        svc.actor.as_str(),
        "cert.issue",
        &id.to_string(),
        &format!("kind=user user={} serial={serial}", row.id),
    )
    .await?;
    let req = P12Request {
        password: p12_password.clone(),
        flavour,
    };
    let p12 = make_p12(&a, &req, &key, &cert, id)?;
    tx.audit(
        Some(org_id),
        svc.actor.as_str(),
        "cert.download",
        &id.to_string(),
        &format!(
            "flavour={}",
            if flavour == Flavour::Compatible {
                "compatible"
            } else {
                "modern"
            }
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(Collected {
        id,
        serial,
        p12,
        password: p12_password,
        flavour,
    })
}
