//! Evaluation: ([`MessageFacts`], recipient) -> [`Decision`], with the
//! [`Reason`] for every field.

use std::fmt;

use crate::names::{Address, Domain, normalise_recipient};
use crate::policy::{Level, Policy, Set};
use crate::settings::{
    Cipher, EncryptRule, Field, Generation, Revocation, Undecryptable, defaults,
};
use crate::trigger;

/// What the gateway knows about an outbound message when it asks the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageFacts {
    /// The envelope sender. Rules match recipients, not the sender; it is
    /// kept for [`Explanation`]s.
    pub from: String,
    /// The envelope recipients; each gets its own [`Decision`].
    pub to: Vec<String>,
    /// The subject, decoded (RFC 2047 words already turned into text).
    pub subject: String,
}

/// Where a field's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// No level sets it: the built-in default.
    BuiltIn,
    /// The `[default]` table.
    Default,
    /// A `[domain."..."]` table covering the recipient's domain.
    Domain(Domain),
    /// The recipient's `[address."..."]` table.
    Address(Address),
    /// The subject contained the trigger (for `encrypt` only).
    SubjectTrigger,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::BuiltIn => f.write_str("built-in default"),
            Source::Default => f.write_str("[default]"),
            Source::Domain(d) => write!(f, "[domain.{:?}]", d.as_str()),
            Source::Address(a) => write!(f, "[address.{:?}]", a.as_str()),
            Source::SubjectTrigger => f.write_str("subject trigger"),
        }
    }
}

/// Why one field of a [`Decision`] has its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// The field.
    pub field: Field,
    /// Its value, written as in the policy file (`"required"`, `true`, `["OCES3"]`).
    pub value: String,
    /// The level (or trigger) that set it.
    pub source: Source,
    /// The line of the policy file that set it, when it came from the file.
    pub line: Option<usize>,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {}  <- {}", self.field, self.value, self.source)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

/// What to do with a message for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether to encrypt.
    pub encrypt: EncryptRule,
    /// Whether to sign with the organisation certificate.
    pub sign: bool,
    /// The content-encryption algorithm.
    pub cipher: Cipher,
    /// RSA-OAEP key transport instead of PKCS#1 v1.5.
    pub oaep: bool,
    /// The certificate generations the recipient may be encrypted to.
    pub generations: Vec<Generation>,
    /// What to do with inbound mail for this address that cannot be decrypted.
    pub undecryptable: Undecryptable,
    /// The subject with the trigger removed and whitespace tidied, when the
    /// subject contained the trigger; `None` means "leave the subject alone".
    pub new_subject: Option<String>,
    /// One reason per field, in the order of [`Field::OUTBOUND`].
    pub reasons: Vec<Reason>,
}

impl Decision {
    /// The reason for `field`.
    pub fn reason(&self, field: Field) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.field == field)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.reasons {
            writeln!(f, "  {r}")?;
        }
        if let Some(s) = &self.new_subject {
            writeln!(f, "  new subject: {s:?}")?;
        }
        Ok(())
    }
}

/// The decisions for every recipient of a message, for `sikkermail policy
/// explain`. Its `Display` is the human-readable report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The sender, as given.
    pub from: String,
    /// The subject, as given.
    pub subject: String,
    /// Each recipient, as given, with its decision.
    pub recipients: Vec<(String, Decision)>,
    /// Inbound: what signed mail from the sender must satisfy.
    pub sender_rule: SignerRule,
}

/// Inbound: what the signature on mail from one sender must satisfy beyond
/// a valid chain to a configured anchor. Matched on the sender (the From
/// address) the way outbound rules match recipients: `[address."..."]`,
/// then the `[domain."..."]` tables covering its domain, then `[default]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerRule {
    /// The sender, as given.
    pub sender: String,
    /// The signer's chain must assert at least one of these certificate
    /// policies (dotted OIDs) itself: anyPolicy alone does not do. Empty:
    /// no requirement.
    pub policies: Vec<String>,
    /// The chain must end at one of these anchors (SHA-256 fingerprints,
    /// upper-case hex). Empty: any configured anchor.
    pub anchors: Vec<String>,
    /// Whether revocation data is required.
    pub revocation: Revocation,
    /// One reason per field, in the order of [`Field::SIGNER`].
    pub reasons: Vec<Reason>,
}

impl SignerRule {
    /// The reason for `field`.
    pub fn reason(&self, field: Field) -> Option<&Reason> {
        self.reasons.iter().find(|r| r.field == field)
    }

    /// Checks the chain of a signature that is otherwise valid: the
    /// policies it asserts (dotted OIDs) and its anchor's SHA-256
    /// fingerprint (hex, any case, colons allowed). `Err` names the rule it
    /// breaks, as `"<level> <key> = <value> (line N): what the chain has"`.
    pub fn check(
        &self,
        chain_policies: &[String],
        anchor_sha256: Option<&str>,
    ) -> Result<(), String> {
        let rule = |f: Field| {
            self.reason(f).map_or_else(String::new, |r| {
                let mut s = format!("{} {} = {}", r.source, r.field, r.value);
                if let Some(l) = r.line {
                    s.push_str(&format!(" (line {l})"));
                }
                s
            })
        };
        if !self.policies.is_empty() && !chain_policies.iter().any(|p| self.policies.contains(p)) {
            let has = if chain_policies.is_empty() {
                "none".to_string()
            } else {
                chain_policies.join(", ")
            };
            return Err(format!(
                "{}: the signer's chain asserts none of them (it asserts {has})",
                rule(Field::SignerPolicies)
            ));
        }
        if !self.anchors.is_empty() {
            let fp = anchor_sha256.map(|f| f.replace(':', "").to_ascii_uppercase());
            if !fp.as_ref().is_some_and(|f| self.anchors.contains(f)) {
                return Err(format!(
                    "{}: the signer's chain ends at another anchor (sha256:{})",
                    rule(Field::SignerAnchors),
                    fp.as_deref().unwrap_or("unknown")
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for SignerRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.reasons {
            writeln!(f, "  {r}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "from {:?}, subject {:?}", self.from, self.subject)?;
        for (to, d) in &self.recipients {
            writeln!(f, "to {to:?}:")?;
            write!(f, "{d}")?;
        }
        writeln!(
            f,
            "signed mail from {:?} (inbound):",
            self.sender_rule.sender
        )?;
        write!(f, "{}", self.sender_rule)
    }
}

/// The levels that apply to one recipient, most specific first.
struct Chain<'p> {
    levels: Vec<(&'p Level, Source)>,
}

impl<'p> Chain<'p> {
    fn new(policy: &'p Policy, recipient: &str) -> Self {
        let (address, host) = normalise_recipient(recipient);
        let mut levels = Vec::with_capacity(3);
        if let Some((a, level)) = policy.addresses.iter().find(|(a, _)| a.as_str() == address) {
            levels.push((level, Source::Address(a.clone())));
        }
        // Every domain table covering the host, the most specific first:
        // `[domain."ret.domstol.dk"]` inherits from `[domain."domstol.dk"]`.
        let mut domains: Vec<_> = policy
            .domains
            .iter()
            .filter(|(d, _)| d.covers(&host))
            .collect();
        domains.sort_by_key(|(d, _)| std::cmp::Reverse(d.labels()));
        levels.extend(
            domains
                .into_iter()
                .map(|(d, level)| (level, Source::Domain(d.clone()))),
        );
        levels.push((&policy.default, Source::Default));
        Self { levels }
    }

    /// The first level that sets a key, or the built-in default.
    fn pick<T: Clone>(
        &self,
        get: impl Fn(&Level) -> &Option<Set<T>>,
        builtin: T,
    ) -> (T, Source, Option<usize>) {
        self.levels
            .iter()
            .find_map(|(level, source)| {
                get(level)
                    .as_ref()
                    .map(|s| (s.value.clone(), source.clone(), s.line))
            })
            .unwrap_or((builtin, Source::BuiltIn, None))
    }
}

fn reason(field: Field, value: String, (source, line): (Source, Option<usize>)) -> Reason {
    Reason {
        field,
        value,
        source,
        line,
    }
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

impl Policy {
    /// The decision for one recipient of a message. Never fails: a recipient
    /// that is not a valid address matches no domain or address table and
    /// gets `[default]`.
    ///
    /// A subject containing the trigger makes `encrypt` required even where
    /// the policy says `"never"`: the sender asked for it, and a message that
    /// cannot be encrypted is held and bounced rather than sent in clear.
    pub fn decide(&self, facts: &MessageFacts, recipient: &str) -> Decision {
        let chain = Chain::new(self, recipient);
        let (mut encrypt, mut encrypt_src, mut encrypt_line) =
            chain.pick(|l| &l.encrypt, defaults::ENCRYPT);
        let (sign, sign_src, sign_line) = chain.pick(|l| &l.sign, defaults::SIGN);
        let (cipher, cipher_src, cipher_line) = chain.pick(|l| &l.cipher, defaults::CIPHER);
        let (oaep, oaep_src, oaep_line) = chain.pick(|l| &l.oaep, defaults::OAEP);
        let (generations, gen_src, gen_line) =
            chain.pick(|l| &l.generations, defaults::GENERATIONS.to_vec());
        let (trigger, trig_src, trig_line) = chain.pick(
            |l| &l.subject_trigger,
            defaults::SUBJECT_TRIGGER.to_string(),
        );
        let (undecryptable, und_src, und_line) =
            chain.pick(|l| &l.undecryptable, defaults::UNDECRYPTABLE);

        let new_subject = trigger::remove(&facts.subject, &trigger);
        if new_subject.is_some() {
            encrypt = EncryptRule::Required;
            encrypt_src = Source::SubjectTrigger;
            encrypt_line = None;
        }

        let gen_names: Vec<String> = generations.iter().map(|g| quoted(g.name())).collect();
        let reasons = vec![
            reason(
                Field::Encrypt,
                quoted(encrypt.name()),
                (encrypt_src, encrypt_line),
            ),
            reason(Field::Sign, sign.to_string(), (sign_src, sign_line)),
            reason(
                Field::Cipher,
                quoted(cipher.name()),
                (cipher_src, cipher_line),
            ),
            reason(Field::Oaep, oaep.to_string(), (oaep_src, oaep_line)),
            reason(
                Field::Generations,
                format!("[{}]", gen_names.join(", ")),
                (gen_src, gen_line),
            ),
            reason(
                Field::SubjectTrigger,
                quoted(&trigger),
                (trig_src, trig_line),
            ),
            reason(
                Field::Undecryptable,
                quoted(undecryptable.name()),
                (und_src, und_line),
            ),
        ];
        Decision {
            encrypt,
            sign,
            cipher,
            oaep,
            generations,
            undecryptable,
            new_subject,
            reasons,
        }
    }

    /// The decisions for every recipient in `facts.to`, with their reasons.
    pub fn explain(&self, facts: &MessageFacts) -> Explanation {
        Explanation {
            from: facts.from.clone(),
            subject: facts.subject.clone(),
            recipients: facts
                .to
                .iter()
                .map(|to| (to.clone(), self.decide(facts, to)))
                .collect(),
            sender_rule: self.signer_rule(&facts.from),
        }
    }

    /// Inbound: what signed mail from `sender` must satisfy.
    pub fn signer_rule(&self, sender: &str) -> SignerRule {
        let chain = Chain::new(self, sender);
        let builtin = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (policies, p_src, p_line) =
            chain.pick(|l| &l.signer_policies, builtin(defaults::SIGNER_POLICIES));
        let (anchors, a_src, a_line) =
            chain.pick(|l| &l.signer_anchors, builtin(defaults::SIGNER_ANCHORS));
        let (revocation, r_src, r_line) = chain.pick(|l| &l.revocation, defaults::REVOCATION);
        let list = |v: &[String], prefix: &str| {
            format!(
                "[{}]",
                v.iter()
                    .map(|s| quoted(&format!("{prefix}{s}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let reasons = vec![
            reason(Field::SignerPolicies, list(&policies, ""), (p_src, p_line)),
            reason(
                Field::SignerAnchors,
                list(&anchors, "sha256:"),
                (a_src, a_line),
            ),
            reason(
                Field::Revocation,
                quoted(revocation.name()),
                (r_src, r_line),
            ),
        ];
        SignerRule {
            sender: sender.to_string(),
            policies,
            anchors,
            revocation,
            reasons,
        }
    }

    /// Inbound: what to do with mail for `recipient` (one of the
    /// organisation's addresses) that cannot be decrypted.
    pub fn undecryptable_for(&self, recipient: &str) -> Undecryptable {
        Chain::new(self, recipient)
            .pick(|l| &l.undecryptable, defaults::UNDECRYPTABLE)
            .0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[default]
sign = true
cipher = "aes128-cbc"

[domain."dk"]
oaep = true

[domain."domstol.dk"]
encrypt = "required"
cipher = "aes256-gcm"

[domain."ret.domstol.dk"]
generations = ["OCES2", "OCES3"]

[domain."gammel.dk"]
encrypt = "never"
subject_trigger = ""

[address."Byret@Ret.Domstol.dk"]
sign = false
undecryptable = "quarantine"

[address."post@advokatfirma.dk"]
undecryptable = "quarantine"
"#;

    fn facts(subject: &str) -> MessageFacts {
        MessageFacts {
            from: "post@advokatfirma.dk".into(),
            to: vec![],
            subject: subject.into(),
        }
    }

    fn src(s: &str) -> Source {
        match s {
            "builtin" => Source::BuiltIn,
            "default" => Source::Default,
            "trigger" => Source::SubjectTrigger,
            a if a.contains('@') => Source::Address(Address::parse(a).unwrap()),
            d => Source::Domain(Domain::parse(d).unwrap()),
        }
    }

    /// recipient, then (value, source) of encrypt, sign, cipher and oaep.
    struct Row(
        &'static str,
        (EncryptRule, &'static str),
        (bool, &'static str),
        (Cipher, &'static str),
        (bool, &'static str),
    );

    #[test]
    fn inheritance_and_matching() {
        use EncryptRule::*;
        let p = Policy::parse(POLICY).unwrap();
        // recipient, encrypt (source), sign (source), cipher (source), oaep (source)
        #[rustfmt::skip]
        let table = [
            Row("x@example.com", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (false, "builtin")),
            Row("x@firma.dk", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (true, "dk")),
            Row("x@domstol.dk", (Required, "domstol.dk"), (true, "default"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("X@DOMSTOL.DK", (Required, "domstol.dk"), (true, "default"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("x@sub.domstol.dk", (Required, "domstol.dk"), (true, "default"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("x@ret.domstol.dk", (Required, "domstol.dk"), (true, "default"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("byret@ret.domstol.dk", (Required, "domstol.dk"), (false, "byret@ret.domstol.dk"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("<BYRET@ret.domstol.dk.>", (Required, "domstol.dk"), (false, "byret@ret.domstol.dk"), (Cipher::Aes256Gcm, "domstol.dk"), (true, "dk")),
            Row("x@xdomstol.dk", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (true, "dk")),
            Row("x@domstol.dk.evil.com", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (false, "builtin")),
            Row("x@gammel.dk", (Never, "gammel.dk"), (true, "default"), (Cipher::Aes128Cbc, "default"), (true, "dk")),
            Row("not an address", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (false, "builtin")),
            Row("", (Opportunistic, "builtin"), (true, "default"), (Cipher::Aes128Cbc, "default"), (false, "builtin")),
        ];
        for Row(to, encrypt, sign, cipher, oaep) in table {
            let d = p.decide(&facts("Hej"), to);
            assert_eq!(
                (d.encrypt, d.reason(Field::Encrypt).unwrap().source.clone()),
                (encrypt.0, src(encrypt.1)),
                "{to} encrypt"
            );
            assert_eq!(
                (d.sign, d.reason(Field::Sign).unwrap().source.clone()),
                (sign.0, src(sign.1)),
                "{to} sign"
            );
            assert_eq!(
                (d.cipher, d.reason(Field::Cipher).unwrap().source.clone()),
                (cipher.0, src(cipher.1)),
                "{to} cipher"
            );
            assert_eq!(
                (d.oaep, d.reason(Field::Oaep).unwrap().source.clone()),
                (oaep.0, src(oaep.1)),
                "{to} oaep"
            );
            assert_eq!(d.new_subject, None);
            assert_eq!(d.reasons.len(), Field::OUTBOUND.len());
        }
    }

    #[test]
    fn nested_domains_inherit_most_specific_first() {
        let p = Policy::parse(POLICY).unwrap();
        let d = p.decide(&facts("Hej"), "x@a.ret.domstol.dk");
        let from = |f| d.reason(f).unwrap().source.clone();
        assert_eq!(d.generations, vec![Generation::Oces2, Generation::Oces3]);
        assert_eq!(from(Field::Generations), src("ret.domstol.dk"));
        assert_eq!(
            (d.encrypt, from(Field::Encrypt)),
            (EncryptRule::Required, src("domstol.dk"))
        );
        assert_eq!((d.oaep, from(Field::Oaep)), (true, src("dk")));
        assert_eq!((d.sign, from(Field::Sign)), (true, Source::Default));
        assert_eq!(from(Field::Undecryptable), Source::BuiltIn);
        // A sibling of ret.domstol.dk does not get its generations.
        let d = p.decide(&facts("Hej"), "x@tinglysning.domstol.dk");
        assert_eq!(
            d.reason(Field::Generations).unwrap().source,
            Source::BuiltIn
        );
    }

    #[test]
    fn no_file_is_the_builtin_defaults() {
        let d = Policy::default().decide(&facts("Hej"), "x@y.dk");
        assert_eq!(
            d,
            Policy::parse("").unwrap().decide(&facts("Hej"), "x@y.dk")
        );
        assert_eq!(
            (
                d.encrypt,
                d.sign,
                d.cipher,
                d.oaep,
                d.generations.as_slice(),
                d.undecryptable
            ),
            (
                EncryptRule::Opportunistic,
                true,
                Cipher::Aes256Cbc,
                false,
                &[Generation::Oces3, Generation::Other][..],
                Undecryptable::Deliver
            )
        );
        assert!(
            d.reasons
                .iter()
                .all(|r| r.source == Source::BuiltIn && r.line.is_none())
        );
    }

    #[test]
    fn subject_trigger() {
        let p = Policy::parse(POLICY).unwrap();
        for (to, subject, encrypt, new_subject) in [
            (
                "x@example.com",
                "[sikker] Dom",
                EncryptRule::Required,
                Some("Dom"),
            ),
            (
                "x@example.com",
                "Dom [SIKKER]",
                EncryptRule::Required,
                Some("Dom"),
            ),
            ("x@example.com", "Dom", EncryptRule::Opportunistic, None),
            // The trigger overrides "never" ...
            (
                "x@domstol.dk",
                "Re: [Sikker] Dom",
                EncryptRule::Required,
                Some("Re: Dom"),
            ),
            // ... unless the level turns the trigger off.
            ("x@gammel.dk", "[sikker] Dom", EncryptRule::Never, None),
        ] {
            let d = p.decide(&facts(subject), to);
            assert_eq!(
                (d.encrypt, d.new_subject.as_deref()),
                (encrypt, new_subject),
                "{to} {subject:?}"
            );
            let source = &d.reason(Field::Encrypt).unwrap().source;
            assert_eq!(*source == Source::SubjectTrigger, new_subject.is_some());
        }
        let p = Policy::parse("[default]\nencrypt = \"never\"\nsubject_trigger = \"[FORTROLIGT]\"")
            .unwrap();
        let d = p.decide(&facts("[fortroligt] Dom [sikker]"), "x@y.dk");
        assert_eq!(
            (d.encrypt, d.new_subject.as_deref()),
            (EncryptRule::Required, Some("Dom [sikker]"))
        );
    }

    #[test]
    fn undecryptable_inbound() {
        let p = Policy::parse(POLICY).unwrap();
        assert_eq!(
            p.undecryptable_for("post@advokatfirma.dk"),
            Undecryptable::Quarantine
        );
        assert_eq!(
            p.undecryptable_for("POST@advokatfirma.dk"),
            Undecryptable::Quarantine
        );
        assert_eq!(
            p.undecryptable_for("andet@advokatfirma.dk"),
            Undecryptable::Deliver
        );
        assert_eq!(
            Policy::default().undecryptable_for("post@advokatfirma.dk"),
            Undecryptable::Deliver
        );
    }

    #[test]
    fn explain_reports_lines_and_every_recipient() {
        let p = Policy::parse(POLICY).unwrap();
        let facts = MessageFacts {
            from: "post@advokatfirma.dk".into(),
            to: vec!["byret@ret.domstol.dk".into(), "x@example.com".into()],
            subject: "[sikker] Processkrift".into(),
        };
        let e = p.explain(&facts);
        assert_eq!(e.recipients.len(), 2);
        let text = e.to_string();
        assert!(
            text.contains(r#"cipher = "aes256-gcm"  <- [domain."domstol.dk"] (line 11)"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sign = false  <- [address."byret@ret.domstol.dk"] (line 21)"#),
            "{text}"
        );
        assert!(
            text.contains(r#"encrypt = "required"  <- subject trigger"#),
            "{text}"
        );
        assert!(
            text.contains(r#"oaep = false  <- built-in default"#),
            "{text}"
        );
        assert!(text.contains(r#"new subject: "Processkrift""#), "{text}");
    }
}
