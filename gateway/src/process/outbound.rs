//! Outbound: mail from the firm to the world. The policy decides per
//! recipient; recipients that get the same treatment share one copy. Sign
//! with the sender's key or the organisation's, encrypt to each
//! recipient's newest valid certificate of an allowed generation.
//! Plaintext never leaves for a recipient whose encryption is required:
//! without a certificate that recipient is refused (the caller bounces it).

use std::collections::BTreeMap;

use openssl::x509::X509;
use policies::{Cipher, Decision, EncryptRule, MessageFacts, Policy};
use service::{MailKeys, RecipientCert};
use smime::{ContentCipher, EncryptOptions, KeyTransport, SignOptions};

use super::headers::{
    canonical, decode_words, field, is_sikkermail_field, replace_subject, strip_fields,
};

/// One copy to send, to some of the recipients.
#[derive(Debug)]
pub struct Copy {
    /// Indexes (into the caller's recipient list) this copy goes to.
    pub recipients: Vec<usize>,
    /// The message as it leaves.
    pub message: Vec<u8>,
    /// Signed, and with which certificate (subject).
    pub signed_by: Option<String>,
    /// Encrypted, and with which cipher.
    pub encrypted: Option<&'static str>,
}

/// A recipient nothing is sent to, and why (for the DSN).
#[derive(Debug, Clone)]
pub struct Refused {
    /// Index into the caller's recipient list.
    pub recipient: usize,
    /// RFC 3463 status, e.g. `5.7.1`.
    pub status: &'static str,
    /// Why, naming the rule.
    pub reason: String,
}

/// The outcome: copies to send and recipients refused.
#[derive(Debug, Default)]
pub struct Plan {
    /// Copies to send.
    pub copies: Vec<Copy>,
    /// Recipients refused.
    pub refused: Vec<Refused>,
}

/// How one recipient's copy is made; recipients with equal treatment share
/// a copy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Treatment {
    /// Encrypted copies are made per recipient: one copy's RecipientInfos
    /// would tell every recipient who else (Bcc included) got it.
    encrypt_to: Option<String>,
    sign: bool,
    cipher: &'static str,
    oaep: bool,
    subject: Option<String>,
}

/// Plans the copies of one message. `certs_for` returns the certificates
/// known for an address (pinned ones only when any is pinned; newest
/// first).
pub fn plan(
    raw: &[u8],
    from: &str,
    recipients: &[String],
    policy: &Policy,
    keys: &MailKeys,
    certs_for: &dyn Fn(&str) -> Vec<RecipientCert>,
    now: i64,
) -> Plan {
    let canon = canonical(raw);
    let clean = strip_fields(&canon, is_sikkermail_field);
    let subject = field(&clean, "subject")
        .map(|s| decode_words(&s))
        .unwrap_or_default();
    let facts = MessageFacts {
        from: from.to_string(),
        to: recipients.to_vec(),
        subject,
    };
    let mut groups: BTreeMap<Treatment, (Vec<usize>, Vec<X509>)> = BTreeMap::new();
    let mut out = Plan::default();
    for (i, rcpt) in recipients.iter().enumerate() {
        let d = policy.decide(&facts, rcpt);
        let cert = if d.encrypt == EncryptRule::Never {
            None
        } else {
            certs_for(rcpt)
                .into_iter()
                .find(|c| allowed(&d, c.generation))
                .map(|c| c.cert)
        };
        let encrypt = match (d.encrypt, &cert) {
            (EncryptRule::Never, _) => false,
            (_, Some(_)) => true,
            (EncryptRule::Required, None) => {
                let why = d
                    .reason(policies::Field::Encrypt)
                    .map(|r| format!(" ({})", r.source))
                    .unwrap_or_default();
                let gens: Vec<&str> = d.generations.iter().map(|g| g.name()).collect();
                out.refused.push(Refused {
                    recipient: i,
                    status: "5.7.1",
                    reason: format!(
                        "encryption is required{why} and no valid {} certificate is known for {rcpt}; nothing was sent to this recipient",
                        gens.join("/")
                    ),
                });
                continue;
            }
            (EncryptRule::Opportunistic, None) => false,
        };
        let t = Treatment {
            encrypt_to: encrypt.then(|| rcpt.to_ascii_lowercase()),
            sign: d.sign,
            cipher: d.cipher.name(),
            oaep: d.oaep,
            subject: d.new_subject.clone(),
        };
        let g = groups.entry(t).or_default();
        g.0.push(i);
        if let Some(c) = cert {
            g.1.push(c);
        }
    }
    for (t, (idx, certs)) in groups {
        let mut msg = match &t.subject {
            Some(s) => replace_subject(&clean, s),
            None => clean.to_vec(),
        };
        let mut signed_by = None;
        // A bounce (`<>`) is never signed with a person's or the
        // organisation's key: its text is largely the bounced message's.
        if t.sign && !from.is_empty() {
            let Some(k) = keys.signer_for(from, now) else {
                // The policy says sign: never send unsigned instead. The
                // message waits (and says why) until a key is there.
                for i in &idx {
                    out.refused.push(Refused {
                        recipient: *i,
                        status: "4.7.0",
                        reason: format!(
                            "the policy says sign, and no valid organisation or personal key can sign for {from} (issue or import an organisation certificate)"
                        ),
                    });
                }
                continue;
            };
            match smime::sign(&msg, &k.pair, &SignOptions::default()) {
                Ok(signed) => {
                    msg = signed;
                    signed_by = Some(smime::keyring::name_to_string(k.pair.cert.subject_name()));
                }
                Err(e) => {
                    // Refuse rather than send unsigned against the policy.
                    for i in &idx {
                        out.refused.push(Refused {
                            recipient: *i,
                            status: "4.7.0",
                            reason: format!("signing failed: {e}"),
                        });
                    }
                    continue;
                }
            }
        }
        let mut encrypted = None;
        if t.encrypt_to.is_some() {
            let opts = EncryptOptions {
                cipher: cipher_of(t.cipher),
                key_transport: if t.oaep {
                    KeyTransport::RsaOaepSha256
                } else {
                    KeyTransport::RsaPkcs1
                },
            };
            match smime::encrypt(&msg, &certs, &opts) {
                Ok(enc) => {
                    msg = enc;
                    encrypted = Some(t.cipher);
                }
                Err(e) => {
                    // Encryption was chosen: never fall back to plaintext.
                    for i in &idx {
                        out.refused.push(Refused {
                            recipient: *i,
                            status: "5.7.1",
                            reason: format!(
                                "encryption failed ({e}); nothing was sent to this recipient"
                            ),
                        });
                    }
                    continue;
                }
            }
        }
        out.copies.push(Copy {
            recipients: idx,
            message: msg,
            signed_by,
            encrypted,
        });
    }
    out
}

fn allowed(d: &Decision, generation: &str) -> bool {
    d.generations.iter().any(|g| g.name() == generation)
}

fn cipher_of(name: &str) -> ContentCipher {
    match Cipher::from_name(name) {
        Some(Cipher::Aes128Cbc) => ContentCipher::Aes128Cbc,
        Some(Cipher::Aes256Gcm) => ContentCipher::Aes256Gcm,
        Some(Cipher::Aes128Gcm) => ContentCipher::Aes128Gcm,
        _ => ContentCipher::Aes256Cbc,
    }
}
