//! `sikkermail smime ...`: the S/MIME engine on files and pipes.

use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};

use super::io::{
    Fail, OutputFile, password, read_file, read_input, usage, write_output, write_via_temp,
};
use openssl::x509::X509;
use rayon::prelude::*;
use smime::{
    ContentCipher, EncryptOptions, KeyPair, KeyTransport, LayerReport, MemoryKeyring, Opened,
    SignOptions, TrustStore,
};

#[derive(Debug, Subcommand)]
pub enum SmimeCommand {
    /// Decrypt a message (or every file in a directory) with the given keys.
    Decrypt(DecryptArgs),
    /// Verify a signed message against trust anchors; exit 0 only if valid.
    ///
    /// Trust anchors come from --ca, and with --data-dir (or --database-url)
    /// also from the store's internal CA.
    Verify(VerifyArgs),
    /// Encrypt a message to one or more recipient certificates.
    ///
    /// --data-dir and --database-url are accepted, as by every command, and
    /// not used.
    Encrypt(EncryptArgs),
    /// Sign a message (detached multipart/signed by default).
    ///
    /// --data-dir and --database-url are accepted, as by every command, and
    /// not used.
    Sign(SignArgs),
    /// Print the S/MIME layers, recipients, algorithms and signers.
    ///
    /// --data-dir and --database-url are accepted, as by every command, and
    /// not used.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct IoArgs {
    /// Input file (default: standard input).
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default: standard output).
    #[arg(long = "out", value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// PEM file with a private key and its certificate, or a PKCS#12 file. Repeatable.
    #[arg(long = "key", value_name = "PEM")]
    keys: Vec<PathBuf>,
    /// Environment variable holding the password of the PKCS#12 file or the
    /// encrypted PEM key (never asked for on the terminal).
    #[arg(long = "password-env", value_name = "VAR")]
    password_env: Option<String>,
}

/// Where signatures are checked against.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Trust anchor certificates (PEM, several per file allowed). Repeatable.
    #[arg(long = "ca", value_name = "PEM")]
    ca: Vec<PathBuf>,
    /// CRLs to check every certificate against. Repeatable.
    #[arg(long = "crl", value_name = "PEM")]
    crl: Vec<PathBuf>,
    /// Further (untrusted) certificates for building chains. Repeatable.
    #[arg(long = "cert", value_name = "PEM")]
    cert: Vec<PathBuf>,
    /// With --crl: check revocation of every certificate below the trust
    /// anchor (all: the signer's and every intermediate CA's; a missing CRL
    /// is an error naming it) or of the signer's certificate only (leaf).
    #[arg(long = "crl-check", value_name = "leaf|all", default_value = "all", value_parser = ["leaf", "all"])]
    crl_check: String,
    /// Initial policy set (RFC 5280 §6.1.1): a certificate policy OID the
    /// chain may assert. Repeatable; none means any policy.
    #[arg(long = "policy", value_name = "OID")]
    policy: Vec<String>,
    /// The chain must assert a policy of the initial set (initial-explicit-policy).
    #[arg(long = "explicit-policy")]
    explicit_policy: bool,
    /// Policy mappings in the chain are not honoured (initial-policy-mapping-inhibit).
    #[arg(long = "inhibit-policy-mapping")]
    inhibit_policy_mapping: bool,
    /// anyPolicy in the chain is not honoured (initial-any-policy-inhibit).
    #[arg(long = "inhibit-any-policy")]
    inhibit_any_policy: bool,
    /// Every certificate below the anchor must have a CRL (given with
    /// --crl or carried in the message); without one the signature is not
    /// valid ("revocation unavailable").
    #[arg(long = "require-revocation")]
    require_revocation: bool,
    /// Smallest RSA/DSA signer key accepted, in bits (keys under 2048 are
    /// reported as WEAK either way).
    #[arg(long = "min-key-bits", value_name = "BITS")]
    min_key_bits: Option<u32>,
    /// When certificates and CRLs must be valid: now, signing-time (each
    /// signer's own claimed signing time, for archived mail), seconds since
    /// 1970, or YYYY-MM-DDTHH:MM:SSZ.
    #[arg(long = "at", value_name = "TIME", default_value = "now", value_parser = parse_check_time)]
    at: smime::CheckTime,
    /// Fetch revocation data over http as the gateway does (OCSP from each
    /// certificate's AIA, else its CRL distribution points; 5 s each): a
    /// revoked certificate makes the signature not valid; with
    /// --require-revocation, so does a certificate nobody answers for.
    #[arg(long = "fetch-revocation")]
    fetch_revocation: bool,
}

fn parse_check_time(s: &str) -> Result<smime::CheckTime, String> {
    s.parse()
}

impl TrustArgs {
    fn crl_mode(&self) -> smime::CrlCheck {
        if self.crl_check == "leaf" {
            smime::CrlCheck::Leaf
        } else {
            smime::CrlCheck::All
        }
    }

    /// The RFC 5280 §6.1.1 inputs.
    fn validation(&self) -> smime::Validation {
        smime::Validation {
            policies: self.policy.clone(),
            explicit_policy: self.explicit_policy,
            inhibit_policy_mapping: self.inhibit_policy_mapping,
            inhibit_any_policy: self.inhibit_any_policy,
            // Fetched revocation is required after the chain check, not
            // from CRLs given or carried.
            require_revocation: self.require_revocation && !self.fetch_revocation,
            min_key_bits: self.min_key_bits,
            time: self.at,
        }
    }

    /// What was checked for revocation, for the report.
    fn revocation_note(&self) -> &'static str {
        if self.fetch_revocation {
            return if self.require_revocation {
                "revocation: fetched (OCSP, else CRL) and required for every certificate below the trust anchor"
            } else {
                "revocation: fetched (OCSP, else CRL) for every certificate below the trust anchor; where none answers, not checked"
            };
        }
        match (self.crl.is_empty(), self.crl_mode()) {
            (true, _) if self.require_revocation => {
                "revocation: required at every level below the trust anchor (CRLs carried in the message)"
            }
            (true, _) => "revocation: not checked (no --crl)",
            (false, smime::CrlCheck::All) => {
                "revocation: checked at every level below the trust anchor"
            }
            (false, smime::CrlCheck::Leaf) => {
                "revocation: checked for the signer's certificate only (--crl-check leaf); the CA levels were not checked"
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct DecryptArgs {
    #[command(flatten)]
    keys: KeyArgs,
    /// Also use every key in this data directory's store (current and legacy).
    #[command(flatten)]
    store: super::context::StoreArgs,
    /// An outer signature (signed, then encrypted... then signed) is
    /// checked against --ca (with --crl and --cert) and reported on standard
    /// error; without --ca it is reported as not checked. It never stops the
    /// decryption.
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    io: IoArgs,
    /// Decrypt every file in this directory (bulk mode, in parallel).
    /// Symbolic links to files are followed; anything else that is not a
    /// file is listed as skipped.
    #[arg(long, value_name = "DIR", requires = "out_dir", conflicts_with_all = ["input", "output"])]
    in_dir: Option<PathBuf>,
    /// Where bulk mode writes the decrypted files (same names).
    #[arg(long, value_name = "DIR", requires = "in_dir")]
    out_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// --ca is required unless --data-dir (or --database-url) gives the
    /// store's CA.
    #[command(flatten)]
    trust: TrustArgs,
    /// Also trust the internal CA of this data directory's store.
    #[command(flatten)]
    store: super::context::StoreArgs,
    /// A policy file whose trust rules (signer_policies, signer_anchors,
    /// revocation) apply to the sender (From): a valid signature that
    /// breaks one is "valid but untrusted" and exits 1.
    #[arg(long = "rules", value_name = "POLICY")]
    rules: Option<PathBuf>,
    #[command(flatten)]
    io: IoArgs,
}

#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Recipient certificate (PEM or DER). Repeatable.
    #[arg(long = "to", value_name = "CERT", required = true)]
    to: Vec<PathBuf>,
    /// Content cipher: aes256-cbc (default), aes128-cbc, aes128-gcm, aes256-gcm.
    #[arg(long, default_value = "aes256-cbc")]
    cipher: String,
    /// RSA-OAEP (SHA-256) key transport instead of PKCS#1 v1.5.
    #[arg(long)]
    oaep: bool,
    /// Encrypt even to a CA certificate (refused otherwise: a CA's key is
    /// not meant to read mail, and naming one is usually a mistake).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    io: IoArgs,
    /// Accepted for uniformity with every other command; not used.
    #[command(flatten)]
    store: super::context::StoreArgs,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// PEM file with the signer's private key, certificate and chain, or PKCS#12.
    #[arg(long = "key", value_name = "PEM")]
    key: PathBuf,
    /// Environment variable holding the password of the PKCS#12 file or the
    /// encrypted PEM key (never asked for on the terminal).
    #[arg(long = "password-env", value_name = "VAR")]
    password_env: Option<String>,
    /// Opaque signature (application/pkcs7-mime) instead of multipart/signed.
    #[arg(long)]
    opaque: bool,
    /// RSASSA-PSS instead of RSA PKCS#1 v1.5.
    #[arg(long)]
    pss: bool,
    #[command(flatten)]
    io: IoArgs,
    /// Accepted for uniformity with every other command; not used.
    #[command(flatten)]
    store: super::context::StoreArgs,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    io: IoArgs,
    /// Accepted for uniformity with every other command; not used.
    #[command(flatten)]
    store: super::context::StoreArgs,
}

pub fn run(cmd: SmimeCommand) -> Result<ExitCode, Fail> {
    match cmd {
        SmimeCommand::Decrypt(a) => decrypt(a),
        SmimeCommand::Verify(a) => verify(a),
        SmimeCommand::Encrypt(a) => encrypt(a),
        SmimeCommand::Sign(a) => sign(a),
        SmimeCommand::Inspect(a) => inspect(a),
    }
}

fn load_keyring(a: &KeyArgs) -> Result<MemoryKeyring, Fail> {
    let pw = password(&a.password_env)?;
    let mut kr = MemoryKeyring::new();
    for p in &a.keys {
        let bytes = read_file(p)?;
        let kp = KeyPair::from_file_bytes(&bytes, pw.as_deref(), &p.display().to_string())
            .map_err(|e| usage(e.to_string()))?;
        kr.add(kp);
    }
    Ok(kr)
}

fn load_certs(paths: &[PathBuf]) -> Result<Vec<X509>, Fail> {
    let mut out = Vec::new();
    for p in paths {
        let bytes = read_file(p)?;
        out.extend(
            smime::keyring::certs_from_bytes(&bytes, &p.display().to_string())
                .map_err(|e| usage(e.to_string()))?,
        );
    }
    Ok(out)
}

/// The trust store of --ca, --cert and --crl, plus `extra` anchors and
/// pool certificates; `None` when there are no anchors at all.
fn load_trust(
    a: &TrustArgs,
    extra_anchors: Vec<X509>,
    extra_pool: Vec<X509>,
) -> Result<Option<TrustStore>, Fail> {
    let mut anchors = load_certs(&a.ca)?;
    anchors.extend(extra_anchors);
    let mut pool = load_certs(&a.cert)?;
    pool.extend(extra_pool);
    let mut crls = Vec::new();
    for p in &a.crl {
        let bytes = read_file(p)?;
        crls.extend(
            smime::keyring::crls_from_bytes(&bytes, &p.display().to_string())
                .map_err(|e| usage(e.to_string()))?,
        );
    }
    let v = a.validation();
    if anchors.is_empty() {
        if !crls.is_empty() || !pool.is_empty() || v != smime::Validation::default() {
            return Err(usage(
                "--crl, --cert, --policy, --explicit-policy, --inhibit-*, --require-revocation, --min-key-bits need trust anchors: give --ca",
            ));
        }
        return Ok(None);
    }
    TrustStore::with_crl_check(anchors, pool, crls, a.crl_mode())?
        .with_validation(v)
        .map(Some)
        .map_err(|e| usage(e.to_string()))
}

/// The internal CA of the store: (root as anchor, issuing CA for the pool).
/// An organisation without a CA gives none.
fn store_ca(store: &super::context::StoreArgs) -> Result<(Vec<X509>, Vec<X509>), Fail> {
    let ctx = super::context::open(store)?;
    let (st, org) = (ctx.store(), ctx.org().id);
    let Some(state) = ctx.rt.block_on(st.ca_state(org))? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let pem = |id: i64| -> Result<X509, Fail> {
        let row = ctx.rt.block_on(st.certificate(org, id))?;
        X509::from_pem(row.pem.as_bytes())
            .map_err(|e| usage(format!("stored CA certificate {id} unreadable: {e}")))
    };
    Ok((
        vec![pem(state.root_cert_id)?],
        vec![pem(state.issuing_cert_id)?],
    ))
}

/// A certificate policy OID with its name where it is one we know.
fn policy_name(oid: &str) -> String {
    match smime::verify::policy_label(oid) {
        Some(n) => format!("{oid} ({n})"),
        None => oid.to_string(),
    }
}

fn describe(opened: &Opened) -> Vec<String> {
    let mut lines = Vec::new();
    for n in &opened.notes {
        lines.push(format!("note: {n}"));
    }
    if let Some(why) = &opened.stopped {
        lines.push(format!("note: an inner layer was left as it is: {why}"));
    }
    for l in &opened.layers {
        match l {
            LayerReport::Decrypted(d) => lines.push(format!(
                "decrypted: {}{} via {} ({}) with key {}",
                d.content_algorithm,
                if d.authenticated {
                    " (authenticated)"
                } else {
                    ""
                },
                d.recipient,
                d.key_algorithm,
                d.key_label
            )),
            LayerReport::Signed(s) => {
                let status = if s.valid {
                    "signature valid".to_string()
                } else if !s.trust_checked && s.intact {
                    "signature not checked (no --ca; the content matches the signature)".to_string()
                } else {
                    format!(
                        "signature NOT valid: {}",
                        s.reason.as_deref().unwrap_or("unknown reason")
                    )
                };
                lines.push(format!(
                    "{status} ({})",
                    if s.detached { "detached" } else { "opaque" }
                ));
                for si in &s.signers {
                    let mut line = format!("  signer: {}", si.subject);
                    if !si.emails.is_empty() {
                        line.push_str(&format!(" <{}>", si.emails.join(", ")));
                    }
                    line.push_str(&format!(
                        "; {} / {}",
                        si.digest_algorithm, si.signature_algorithm
                    ));
                    if let Some(t) = &si.signing_time {
                        line.push_str(&format!("; signed {t}"));
                    }
                    for w in &si.weak {
                        line.push_str(&format!("; WEAK: {w}"));
                    }
                    lines.push(line);
                    if !si.capabilities.is_empty() {
                        lines.push(format!("  capabilities: {}", si.capabilities.join(", ")));
                    }
                    if !si.policies.is_empty() {
                        lines.push(format!(
                            "  policies: {}",
                            si.policies
                                .iter()
                                .map(|p| policy_name(p))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
                if s.canonicalised {
                    lines.push(
                        "  note: signature matched only after normalising line ends (CRLF/LF)"
                            .into(),
                    );
                }
            }
        }
    }
    lines
}

fn decrypt(a: DecryptArgs) -> Result<ExitCode, Fail> {
    let mut kr = load_keyring(&a.keys)?;
    if a.store.given() {
        let (store_kr, skipped) = super::context::store_keyring(&a.store)?;
        for s in skipped {
            errln!("warning: {s}");
        }
        kr.merge(store_kr);
    }
    if kr.is_empty() && !a.store.given() {
        return Err(usage(
            "no keys: give --key FILE (repeatable) and/or --data-dir DIR",
        ));
    }
    let trust = load_trust(&a.trust, Vec::new(), Vec::new())?;
    if let (Some(in_dir), Some(out_dir)) = (&a.in_dir, &a.out_dir) {
        return bulk_decrypt(&kr, trust.as_ref(), in_dir, out_dir);
    }
    let input = read_input(&a.io.input)?;
    let opened = smime::decrypt(&input, &kr, trust.as_ref())?;
    write_output(&a.io.output, &opened.message)?;
    for l in describe(&opened) {
        errln!("{l}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A path with why it was not decrypted.
type Skipped = Vec<(PathBuf, String)>;

/// The files of `dir` to decrypt (symbolic links to files followed), and
/// everything else with the reason it is skipped.
fn list_inputs(dir: &Path) -> Result<(Vec<PathBuf>, Skipped), Fail> {
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    let entries = fs::read_dir(dir)
        .map_err(|e| usage(format!("cannot read directory {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                skipped.push((dir.to_path_buf(), format!("cannot list an entry: {e}")));
                continue;
            }
        };
        let path = entry.path();
        // The directory entry's own type needs no stat: the common case.
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            files.push(path);
            continue;
        }
        let is_link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let link = if is_link { "symbolic link to a " } else { "" };
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => files.push(path),
            Ok(m) => {
                use std::os::unix::fs::FileTypeExt;
                let t = m.file_type();
                let what = if t.is_dir() {
                    "directory"
                } else if t.is_fifo() {
                    "FIFO"
                } else if t.is_socket() {
                    "socket"
                } else if t.is_char_device() {
                    "character device"
                } else if t.is_block_device() {
                    "block device"
                } else {
                    "special file"
                };
                skipped.push((path, format!("{link}{what}")));
            }
            Err(e) if is_link && e.kind() == io::ErrorKind::NotFound => {
                skipped.push((path, "broken symbolic link".into()));
            }
            Err(e) => skipped.push((path, format!("cannot read: {e}"))),
        }
    }
    files.sort();
    skipped.sort();
    Ok((files, skipped))
}

fn bulk_decrypt(
    kr: &MemoryKeyring,
    trust: Option<&TrustStore>,
    in_dir: &Path,
    out_dir: &Path,
) -> Result<ExitCode, Fail> {
    let (files, skipped) = list_inputs(in_dir)?;
    fs::create_dir_all(out_dir)
        .map_err(|e| usage(format!("cannot create {}: {e}", out_dir.display())))?;
    // Decrypted copies must never replace the encrypted originals.
    if fs::canonicalize(in_dir).ok() == fs::canonicalize(out_dir).ok() {
        return Err(usage(
            "--out-dir must not be the same directory as --in-dir",
        ));
    }

    let bar = indicatif::ProgressBar::with_draw_target(
        Some(files.len() as u64),
        if io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::stderr()
        } else {
            indicatif::ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} files  {per_sec}  ETA {eta}  {msg}",
    ) {
        bar.set_style(style);
    }
    let start = Instant::now();
    let failures: Vec<(PathBuf, String)> = files
        .par_iter()
        .filter_map(|path| {
            let res = (|| -> Result<(), String> {
                let data = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
                let opened = smime::decrypt(&data, kr, trust).map_err(|e| e.to_string())?;
                let name = path.file_name().ok_or("no file name")?;
                write_via_temp(&out_dir.join(name), &opened.message, false)
                    .map_err(|e| format!("cannot write: {e}"))
            })();
            bar.inc(1);
            res.err().map(|e| (path.clone(), e))
        })
        .collect();
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let ok = files.len() - failures.len();
    errln!(
        "decrypted {ok} of {} files in {secs:.2} s ({:.0} files/s) on {} threads; {} failed; {} skipped",
        files.len(),
        if secs > 0.0 {
            files.len() as f64 / secs
        } else {
            0.0
        },
        rayon::current_num_threads(),
        failures.len(),
        skipped.len()
    );
    for (p, why) in &skipped {
        errln!("  SKIPPED {}: {why}", p.display());
    }
    let mut failures = failures;
    failures.sort();
    for (p, why) in &failures {
        errln!("  FAILED {}: {why}", p.display());
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn verify(a: VerifyArgs) -> Result<ExitCode, Fail> {
    if a.trust.ca.is_empty() && !a.store.given() {
        return Err(usage(
            "no trust anchors: give --ca FILE (repeatable) and/or --data-dir DIR",
        ));
    }
    let (anchors, pool) = if a.store.given() {
        store_ca(&a.store)?
    } else {
        (Vec::new(), Vec::new())
    };
    let trust = load_trust(&a.trust, anchors, pool)?
        .ok_or_else(|| usage("no trust anchors: the store has no CA; give --ca FILE"))?;
    let input = read_input(&a.io.input)?;
    // The policy's trust rules for the sender (From), when given.
    let rule = match &a.rules {
        None => None,
        Some(p) => {
            let policy = super::policy_cmd::load(p)?;
            let from = gateway::process::inbound::sender_address(&input).unwrap_or_default();
            Some(policy.signer_rule(&from))
        }
    };
    let required;
    let trust = match &rule {
        Some(r) if r.revocation == policies::Revocation::Require && !a.trust.fetch_revocation => {
            let mut v = trust.validation().clone();
            v.require_revocation = true;
            required = trust.validating(v).map_err(|e| usage(e.to_string()))?;
            &required
        }
        _ => &trust,
    };
    let opened = smime::verify(&input, trust, None)?;
    for l in describe(&opened) {
        errln!("{l}");
    }
    errln!("{}", a.trust.revocation_note());
    match a.trust.at {
        smime::CheckTime::Now => {}
        smime::CheckTime::SigningTime => {
            errln!("certificates checked at each signer's signing time (the sender's claim)")
        }
        smime::CheckTime::At(t) => {
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            errln!("certificates checked at {secs} (seconds since 1970)")
        }
    }
    if let Some(r) = &rule {
        errln!("trust rules for {:?}:", r.sender);
        errout!("{r}");
    }
    let reports: Vec<_> = opened.signatures().cloned().collect();
    if a.trust.fetch_revocation && opened.all_signatures_valid() {
        let require = a.trust.require_revocation
            || rule
                .as_ref()
                .is_some_and(|r| r.revocation == policies::Revocation::Require);
        fetched_revocation(&reports, trust, require, &a.store)?;
    }
    if opened.all_signatures_valid()
        && let Some(why) = rule
            .as_ref()
            .and_then(|r| gateway::process::inbound::broken_rule(r, &reports))
    {
        return Err(Fail {
            code: 1,
            msg: format!("signature valid but untrusted ({why})"),
        });
    }
    if !opened.all_signatures_valid() {
        let why = opened
            .signatures()
            .find(|s| !s.valid)
            .and_then(|s| s.reason.clone())
            .unwrap_or_else(|| "no signature".into());
        return Err(Fail {
            code: 1,
            msg: format!("signature invalid: {why}"),
        });
    }
    if a.io.output.is_some() {
        write_output(&a.io.output, &opened.message)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `verify --fetch-revocation`: each valid signer's chain checked as the
/// gateway checks it (OCSP, else CRL, fetched over http).
/// With a data directory, the internal CA's own certificates are answered
/// from its records (and answers are cached in the store, shared with the
/// gateway).
fn fetched_revocation(
    reports: &[smime::SignatureReport],
    trust: &smime::TrustStore,
    require: bool,
    store: &super::context::StoreArgs,
) -> Result<(), Fail> {
    use gateway::revocation::{Fetcher, Limits, Verdict};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 2,
            msg: format!("cannot start the runtime: {e}"),
        })?;
    // Opened on this runtime: its connections belong to it.
    let svc = if store.given() {
        Some(rt.block_on(service::Service::open(
            &store.location()?,
            service::Actor::from_process(),
        ))?)
    } else {
        None
    };
    let fetcher = {
        let _g = rt.enter();
        Fetcher::new(svc.as_ref().map(|s| s.store().clone()), Limits::default())
    };
    for s in reports.iter().flat_map(|r| r.signers.iter()) {
        match fetcher.check_chain_blocking(&s.chain, trust) {
            Verdict::Good(how) => {
                for h in how {
                    errln!("  revocation: {h}");
                }
            }
            Verdict::Revoked(why) => {
                return Err(Fail {
                    code: 1,
                    msg: format!("signature invalid: {why}"),
                });
            }
            Verdict::Unavailable(why) if require => {
                return Err(Fail {
                    code: 1,
                    msg: format!("signature not valid: revocation unavailable: {why}"),
                });
            }
            Verdict::Unavailable(why) => errln!("  revocation not checked: {why}"),
        }
    }
    Ok(())
}

fn encrypt(a: EncryptArgs) -> Result<ExitCode, Fail> {
    let cipher = ContentCipher::from_name(&a.cipher).ok_or_else(|| {
        usage(format!(
            "unknown cipher {:?}: use aes256-cbc, aes128-cbc, aes128-gcm or aes256-gcm",
            a.cipher
        ))
    })?;
    let certs = load_certs(&a.to)?;
    if !a.force
        && let Some(c) = certs.iter().find(|c| smime::keyring::is_ca_certificate(c))
    {
        return Err(usage(format!(
            "{} is a CA certificate: mail is encrypted to a person's or a mailbox's certificate (give --force to encrypt to it anyway)",
            smime::keyring::name_to_string(c.subject_name())
        )));
    }
    let input = read_input(&a.io.input)?;
    let opts = EncryptOptions {
        cipher,
        key_transport: if a.oaep {
            KeyTransport::RsaOaepSha256
        } else {
            KeyTransport::RsaPkcs1
        },
    };
    match &a.io.output {
        None => {
            let out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
            smime::encrypt_to(&input, &certs, &opts, out)?;
        }
        Some(p) => {
            let fail = |e: io::Error| usage(format!("cannot write {}: {e}", p.display()));
            let mut out = OutputFile::create(p).map_err(fail)?;
            let mut w = io::BufWriter::with_capacity(1 << 16, out.file());
            smime::encrypt_to(&input, &certs, &opts, &mut w)?;
            w.into_inner().map_err(|e| fail(e.into_error()))?;
            out.commit(true).map_err(fail)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn sign(a: SignArgs) -> Result<ExitCode, Fail> {
    let pw = password(&a.password_env)?;
    let bytes = read_file(&a.key)?;
    let kp = KeyPair::from_file_bytes(&bytes, pw.as_deref(), &a.key.display().to_string())
        .map_err(|e| usage(e.to_string()))?;
    let input = read_input(&a.io.input)?;
    let out = smime::sign(
        &input,
        &kp,
        &SignOptions {
            opaque: a.opaque,
            pss: a.pss,
        },
    )?;
    write_output(&a.io.output, &out)?;
    Ok(ExitCode::SUCCESS)
}

fn inspect(a: InspectArgs) -> Result<ExitCode, Fail> {
    let a = a.io;
    let input = read_input(&a.input)?;
    let layers = smime::inspect(&input)?;
    let mut text = String::new();
    for l in &layers {
        text.push_str(&l.to_string());
    }
    write_output(&a.output, text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
