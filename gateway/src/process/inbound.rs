//! Inbound: mail from outside to the organisation's mailboxes. Decrypt with
//! every key the organisation has held, verify signatures, note what was
//! done in `X-Sikkermail-*` headers, and collect the certificates of valid
//! signers for harvesting. Undecryptable mail is never dropped.
//!
//! This runs after the SMTP transaction (the reply was the same whatever
//! happens here), on a blocking thread: the caller supplies the keys, the
//! trust store and the policy and acts on the result; the only I/O is the
//! revocation data of valid signers' chains ([`Fetcher`], cached).

use openssl::x509::X509;
use policies::{Policy, Revocation};
use service::MailKeys;
use smime::{Error as SmimeError, LayerReport, SignatureReport, TrustStore};

use std::borrow::Cow;

use super::headers::{
    canonical, canonical_stripped, is_sikkermail_field, prepend_fields, strip_fields,
};
use crate::revocation::{Fetcher, Verdict};

/// What inbound processing found.
#[derive(Debug)]
pub struct InboundResult {
    /// The message to deliver: decrypted (inner signatures kept intact) or
    /// as received, with the info headers on top.
    pub message: Vec<u8>,
    /// The message was encrypted and opened.
    pub decrypted: bool,
    /// The message was encrypted and could not be opened (why).
    pub undecryptable: Option<String>,
    /// Why, as a metrics label
    /// ([`crate::metrics::decryption_failure_reason`]).
    pub undecryptable_reason: Option<&'static str>,
    /// `valid`, `untrusted` (valid, but breaks a trust rule of the policy),
    /// `unknown` (revocation required and unavailable), `invalid` or `none`.
    pub signature: &'static str,
    /// Certificates of valid signers with their addresses and announced
    /// S/MIME capabilities, to harvest.
    pub harvest: Vec<(String, X509, Vec<String>)>,
}

/// Processes one inbound message; `rules` are the policy's trust rules for
/// the sender (`signer_policies`, `signer_anchors`, `revocation`), and
/// `fetcher` fetches the revocation data a valid signer's chain names
/// (without one, `revocation = "require"` needs CRLs carried in the
/// message).
pub fn process(
    raw: &[u8],
    keys: &MailKeys,
    trust: &TrustStore,
    rules: &Policy,
    fetcher: Option<&Fetcher>,
) -> InboundResult {
    // Queued mail is canonical already; a message fetched over IMAP is
    // made so here.
    let canon = canonical(raw);
    let clean = strip_fields(&canon, is_sikkermail_field);
    let rule = rules.signer_rule(sender_address(&clean).as_deref().unwrap_or(""));
    let required;
    let trust = match rule.revocation {
        Revocation::Require if fetcher.is_none() && !trust.validation().require_revocation => {
            let mut v = trust.validation().clone();
            v.require_revocation = true;
            match trust.validating(v) {
                Ok(t) => {
                    required = t;
                    &required
                }
                Err(_) => trust,
            }
        }
        _ => trust,
    };
    let mut info: Vec<(&str, String)> = Vec::new();
    let mut reports: Vec<SignatureReport> = Vec::new();
    let mut decrypted = false;
    let mut undecryptable = None;
    let mut undecryptable_reason = None;
    let message = match smime::decrypt(&clean, &keys.decrypt, Some(trust)) {
        Ok(opened) => {
            for layer in &opened.layers {
                match layer {
                    LayerReport::Decrypted(d) if !decrypted => {
                        decrypted = true;
                        let mut v = decrypted_value(d, keys);
                        // Encrypted parts inside a multipart/mixed: say the
                        // rest of the message was not encrypted.
                        if let Some((parts, total)) = &opened.parts_opened {
                            let list: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
                            v.push_str(&format!(
                                "; only part {} of {total} of the multipart/mixed",
                                list.join(", ")
                            ));
                        }
                        info.push(("X-Sikkermail-Decrypted", v));
                    }
                    LayerReport::Decrypted(_) => {}
                    LayerReport::Signed(s) => reports.push(s.clone()),
                }
            }
            if let Some(why) = &opened.stopped {
                info.push((
                    "X-Sikkermail-Error",
                    format!("inner layer not opened: {why}"),
                ));
            }
            // The decrypted entity's own fields come after the outer ones:
            // an X-Sikkermail-* field hidden inside is as forged as one
            // outside.
            // Decrypted content is canonicalised first: a bare CR inside
            // the encryption must not become a line after the stripper.
            Cow::Owned(canonical_stripped(opened.message))
        }
        Err(SmimeError::NotSmime { .. }) => clean,
        // A multipart/mixed whose encrypted parts are for keys we do not
        // hold (an encrypted message forwarded as an attachment): the
        // message itself is not encrypted to us; delivered as received,
        // never quarantined.
        Err(e @ SmimeError::NoMatchingKey { .. })
            if smime::mime::Entity::parse(&clean).content_type().mime_type == "multipart/mixed" =>
        {
            info.push((
                "X-Sikkermail-Error",
                format!("an encrypted part was left as it is: {e}"),
            ));
            clean
        }
        Err(e) => {
            let why = e.to_string();
            info.push(("X-Sikkermail-Error", format!("not decrypted: {why}")));
            undecryptable = Some(why);
            undecryptable_reason = Some(crate::metrics::decryption_failure_reason(&e));
            clean
        }
    };
    // Signatures inside (or without) the encryption: verified for the
    // header only; the message keeps them, byte for byte.
    if undecryptable.is_none() {
        match smime::verify(&message, trust, None) {
            Ok(opened) => reports.extend(opened.signatures().cloned()),
            Err(SmimeError::NotSmime { .. }) => {}
            Err(e) => reports.push(SignatureReport {
                valid: false,
                reason: Some(e.to_string()),
                intact: false,
                trust_checked: false,
                detached: false,
                canonicalised: false,
                signers: Vec::new(),
                certificates: Vec::new(),
            }),
        }
    }
    let mut harvest = Vec::new();
    let signature = if reports.is_empty() {
        info.push(("X-Sikkermail-Signature", "none".into()));
        "none"
    } else {
        let signers: Vec<String> = reports
            .iter()
            .flat_map(|r| r.signers.iter())
            .filter_map(|s| s.emails.first().cloned())
            .collect();
        let signer = signers.first().cloned().unwrap_or_else(|| "unknown".into());
        // RFC 8550 §3: the signer must be the sender.
        let from = sender_address(&message);
        let mismatch = match &from {
            Some(f) => !reports
                .iter()
                .flat_map(|r| r.signers.iter())
                .any(|s| s.emails.iter().any(|e| e.eq_ignore_ascii_case(f))),
            None => true,
        };
        let bad = reports
            .iter()
            .find(|r| !r.valid)
            .map(|r| r.reason.clone().unwrap_or_else(|| "not valid".into()));
        let bad = bad.or_else(|| {
            mismatch.then(|| match &from {
                Some(f) => format!("the signer is not the sender {f}"),
                None => "the message has no From address".into(),
            })
        });
        // Valid and from the sender: revocation as the rule says, fetched.
        let mut unknown = None;
        let bad = match (bad, fetcher) {
            (None, Some(f)) if rule.revocation != Revocation::Off => {
                let mut revoked = None;
                for s in reports.iter().flat_map(|r| r.signers.iter()) {
                    match f.check_chain_blocking(&s.chain, trust) {
                        Verdict::Good(_) => {}
                        Verdict::Revoked(why) => {
                            revoked = Some(why);
                            break;
                        }
                        Verdict::Unavailable(why) => {
                            if rule.revocation == Revocation::Require {
                                unknown = Some(why);
                            } else {
                                tracing::info!(%why, "revocation unavailable (revocation = \"prefer\")");
                            }
                        }
                    }
                }
                revoked
            }
            (bad, _) => bad,
        };
        // The policy's trust rules for the sender.
        let untrusted = broken_rule(&rule, &reports);
        if let (None, Some(why)) = (&bad, &unknown) {
            info.push((
                "X-Sikkermail-Signature",
                format!("unknown (revocation unavailable: {why}); signer={signer}"),
            ));
            return InboundResult {
                message: prepend_fields(&message, &info),
                decrypted,
                undecryptable,
                undecryptable_reason,
                signature: "unknown",
                harvest,
            };
        }
        match (bad, untrusted) {
            (None, Some(rule)) => {
                info.push((
                    "X-Sikkermail-Signature",
                    format!("valid but untrusted ({rule}); signer={signer}"),
                ));
                "untrusted"
            }
            (bad, _) => match bad {
                None => {
                    for r in &reports {
                        for s in &r.signers {
                            let Some(der) = &s.certificate else { continue };
                            let Ok(cert) = X509::from_der(der) else {
                                continue;
                            };
                            for e in &s.emails {
                                harvest.push((
                                    e.to_ascii_lowercase(),
                                    cert.clone(),
                                    s.capabilities.clone(),
                                ));
                            }
                        }
                    }
                    info.push(("X-Sikkermail-Signature", format!("valid; signer={signer}")));
                    "valid"
                }
                Some(why) => {
                    info.push((
                        "X-Sikkermail-Signature",
                        format!("invalid ({why}); signer={signer}"),
                    ));
                    "invalid"
                }
            },
        }
    };
    InboundResult {
        message: prepend_fields(&message, &info),
        decrypted,
        undecryptable,
        undecryptable_reason,
        signature,
        harvest,
    }
}

/// The trust rule a valid signature breaks, if any (`signer_policies`,
/// `signer_anchors` of the sender's rule), as `valid but untrusted (...)`
/// names it.
pub fn broken_rule(rule: &policies::SignerRule, reports: &[SignatureReport]) -> Option<String> {
    reports
        .iter()
        .filter(|r| r.valid)
        .flat_map(|r| r.signers.iter())
        .find_map(|s| rule.check(&s.policies, s.anchor_sha256.as_deref()).err())
}

/// The address in the From field (the last `<...>`, or the bare value),
/// lower case.
pub fn sender_address(message: &[u8]) -> Option<String> {
    let v = super::headers::field(message, "from")?;
    let addr = match (v.rfind('<'), v.rfind('>')) {
        (Some(a), Some(b)) if a < b => v[a + 1..b].trim().to_string(),
        _ => v.trim().to_string(),
    };
    (addr.contains('@')).then(|| addr.to_ascii_lowercase())
}

fn decrypted_value(d: &smime::DecryptReport, keys: &MailKeys) -> String {
    let mut v = d.content_algorithm.clone();
    match keys.labels.get(&d.key_label) {
        Some(k) => {
            // The generation and what it was decided from (a policy OID,
            // the administrator's --legacy, or unknown); never a `;`.
            v.push_str(&format!(
                "; key={}; serial={}; generation={} ({})",
                k.subject,
                k.serial,
                k.generation,
                k.generation_basis.replace(';', ",")
            ));
        }
        None => v.push_str(&format!("; key={}", d.key_label)),
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the IMAP worker appends and the worker delivers is this
    /// function's output: a bare CR in a field must not survive into it as
    /// a second verdict a lenient reader would see.
    #[test]
    fn a_bare_cr_never_makes_a_second_verdict() {
        let keys = MailKeys {
            decrypt: smime::MemoryKeyring::new(),
            skipped: Vec::new(),
            signers: Vec::new(),
            ca: Vec::new(),
            labels: Default::default(),
        };
        let trust = TrustStore::new(Vec::new(), Vec::new(), Vec::new()).unwrap_or_else(|e| {
            panic!("{e}");
        });
        let policy = Policy::default();
        for forged in [
            &b"X-Foo: a\rX-Sikkermail-Signature: valid; signer=dommer@domstol.dk\r\n"[..],
            b"X-Foo: a\nX-Sikkermail-Signature: valid; signer=dommer@domstol.dk\r\n",
            b"X-Sikkermail-Signature: valid\r\n",
        ] {
            let raw = [
                &b"From: dommer@domstol.dk\r\nSubject: s\r\n"[..],
                forged,
                b"\r\nDom.\r\n",
            ]
            .concat();
            let out = process(&raw, &keys, &trust, &policy, None).message;
            let text = String::from_utf8_lossy(&out)
                .replace("\r\n", "\n")
                .replace('\r', "\n");
            let head = text.split("\n\n").next().unwrap_or("");
            let verdicts: Vec<&str> = head
                .lines()
                .filter(|l| l.to_ascii_lowercase().starts_with("x-sikkermail-signature"))
                .collect();
            assert_eq!(verdicts, ["X-Sikkermail-Signature: none"], "{text}");
            assert!(!out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
        }
    }
}
