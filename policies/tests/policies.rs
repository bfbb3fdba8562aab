//! The crate from outside: the committed example policy, a file full of
//! mistakes, and property tests that nothing panics.

use policies::{
    Cipher, EncryptRule, Field, Generation, MessageFacts, Policy, PolicyError, Source,
    Undecryptable, check,
};
use proptest::prelude::*;

const EXAMPLE: &str = include_str!("../example-policy.toml");

fn facts(subject: &str) -> MessageFacts {
    MessageFacts {
        from: "advokat@advokatfirma.dk".into(),
        to: vec![],
        subject: subject.into(),
    }
}

#[test]
fn example_policy_parses() {
    assert_eq!(check(EXAMPLE), Vec::<PolicyError>::new());
    let p = Policy::parse(EXAMPLE).unwrap();
    let domains: Vec<&str> = p.domains().map(|d| d.as_str()).collect();
    assert_eq!(
        domains,
        ["domstol.dk", "gammelpartner.dk", "test.domstol.dk"]
    );
    let addresses: Vec<&str> = p.addresses().map(|a| a.as_str()).collect();
    assert_eq!(
        addresses,
        ["post@advokatfirma.dk", "skifteretten@ret.domstol.dk"]
    );
}

#[test]
fn example_policy_decides_as_documented() {
    let p = Policy::parse(EXAMPLE).unwrap();
    let gcm = Cipher::Aes256Gcm;
    let cbc = Cipher::Aes256Cbc;
    // The built-in default: anything but OCES2.
    const O3: &[Generation] = &[Generation::Oces3, Generation::Other];
    const O23: &[Generation] = &[Generation::Oces2, Generation::Oces3];
    /// to, subject, encrypt, sign, cipher, oaep, generations, new subject
    struct Row(
        &'static str,
        &'static str,
        EncryptRule,
        bool,
        Cipher,
        bool,
        &'static [Generation],
        Option<&'static str>,
    );
    use EncryptRule::*;
    #[rustfmt::skip]
    let table = [
        Row("klient@gmail.com", "Møde", Opportunistic, true, cbc, false, O3, None),
        Row("klient@gmail.com", "[SIKKER] Møde", Required, true, cbc, false, O3, Some("Møde")),
        Row("byret@domstol.dk", "Processkrift", Required, true, cbc, false, O3, None),
        Row("byret@ret.domstol.dk", "Processkrift", Required, true, cbc, false, O3, None),
        Row("x@test.domstol.dk", "Test", Required, true, gcm, true, O3, None),
        Row("skifteretten@ret.domstol.dk", "Bo", Required, false, cbc, false, O3, None),
        Row("SKIFTERETTEN@RET.DOMSTOL.DK", "Bo", Required, false, cbc, false, O3, None),
        Row("x@gammelpartner.dk", "Faktura", Never, true, cbc, false, O23, None),
        Row("x@gammelpartner.dk", "Faktura [sikker]", Required, true, cbc, false, O23, Some("Faktura")),
    ];
    for Row(to, subject, encrypt, sign, cipher, oaep, generations, new_subject) in table {
        let d = p.decide(&facts(subject), to);
        assert_eq!(
            (
                d.encrypt,
                d.sign,
                d.cipher,
                d.oaep,
                d.generations.as_slice(),
                d.new_subject.as_deref()
            ),
            (encrypt, sign, cipher, oaep, generations, new_subject),
            "{to} {subject:?}"
        );
    }

    assert_eq!(
        p.undecryptable_for("post@advokatfirma.dk"),
        Undecryptable::Quarantine
    );
    assert_eq!(
        p.undecryptable_for("advokat@advokatfirma.dk"),
        Undecryptable::Deliver
    );

    let d = p.decide(&facts("Bo"), "skifteretten@ret.domstol.dk");
    let source = |f| d.reason(f).unwrap().source.to_string();
    assert_eq!(
        source(Field::Sign),
        r#"[address."skifteretten@ret.domstol.dk"]"#
    );
    assert_eq!(source(Field::Encrypt), r#"[domain."domstol.dk"]"#);
    assert_eq!(source(Field::SubjectTrigger), "[default]");
    assert_eq!(source(Field::Cipher), "built-in default");
    let line = EXAMPLE
        .lines()
        .position(|l| l.starts_with("sign = false"))
        .map(|i| i + 1);
    assert_eq!(d.reason(Field::Sign).unwrap().line, line);
}

#[test]
fn a_file_with_many_mistakes_reports_all_of_them() {
    let text = "\
[defaults]
encrypt = \"required\"

[default]
encrypt = \"always\"
sign = 1
oaep = \"no\"
generations = [\"OCES1\"]
undecryptable = \"drop\"
chiper = \"aes256-cbc\"

[domain.\"domstol..dk\"]
encrypt = \"required\"

[address.\"post(at)firma.dk\"]
sign = true
";
    let errors = check(text);
    let lines: Vec<Option<usize>> = errors.iter().map(|e| e.location().line).collect();
    assert_eq!(
        lines,
        [
            Some(1),
            Some(5),
            Some(6),
            Some(7),
            Some(8),
            Some(9),
            Some(10),
            Some(12),
            Some(15)
        ]
    );
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        messages[0].contains("unknown key `defaults`, expected default, domain or address"),
        "{messages:#?}"
    );
    assert!(
        messages[1]
            .contains(r#"bad value "always", expected "required", "opportunistic" or "never""#)
    );
    assert!(messages[2].contains("expected a boolean (true or false), found integer"));
    assert!(
        messages[4].contains(r#"(default.generations[0]): bad value "OCES1""#),
        "{messages:#?}"
    );
    assert!(messages[6].contains("unknown key `chiper`"));
    assert!(messages[7].contains(r#"bad domain "domstol..dk": empty label"#));
    assert!(messages[8].contains(r#"bad address "post(at)firma.dk": no '@'"#));
    assert!(Policy::parse(text).is_err());
}

#[test]
fn sources_render_as_written() {
    let p = Policy::parse("[domain.\"a.dk\"]\nsign = false\n").unwrap();
    let d = p.decide(&facts(""), "x@b.a.dk");
    assert!(
        matches!(&d.reason(Field::Sign).unwrap().source, Source::Domain(x) if x.as_str() == "a.dk")
    );
    assert_eq!(
        d.reason(Field::Sign).unwrap().to_string(),
        r#"sign = false  <- [domain."a.dk"] (line 2)"#
    );
}

const OCES3_ORG: &str = "1.2.208.169.1.1.1.3.7";
const OCES3_PERSON: &str = "1.2.208.169.1.1.1.2.7";

const RULES: &str = r#"
[domain."domstol.dk"]
signer_policies = ["1.2.208.169.1.1.1.3.7", "1.2.208.169.1.1.1.2.7"]
revocation = "require"

[domain."ret.domstol.dk"]
signer_anchors = ["sha256:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89"]

[address."aaben@domstol.dk"]
signer_policies = []
revocation = "off"
"#;

#[test]
fn signer_rules_match_the_sender_and_name_the_rule_they_break() {
    use policies::Revocation;
    let p = Policy::parse(RULES).unwrap();
    // No rule: anything valid is trusted.
    let free = p.signer_rule("someone@example.com");
    assert!(free.policies.is_empty() && free.anchors.is_empty());
    assert_eq!(free.revocation, Revocation::Prefer);
    assert!(free.check(&[], None).is_ok());

    let court = p.signer_rule("Retten@Domstol.dk");
    assert_eq!(court.policies, [OCES3_ORG, OCES3_PERSON]);
    assert_eq!(court.revocation, Revocation::Require);
    assert!(court.check(&[OCES3_ORG.to_string()], None).is_ok());
    assert!(
        court
            .check(&[OCES3_PERSON.to_string(), "1.2.3".into()], None)
            .is_ok()
    );
    let e = court.check(&["2.5.29.32.0".to_string()], None).unwrap_err();
    assert!(
        e.starts_with(r#"[domain."domstol.dk"] signer_policies = ["1.2.208.169.1.1.1.3.7", "1.2.208.169.1.1.1.2.7"] (line 3)"#),
        "{e}"
    );
    assert!(e.contains("asserts 2.5.29.32.0"), "{e}");
    assert!(court.check(&[], None).unwrap_err().contains("asserts none"));

    // A subdomain inherits the policies and adds an anchor.
    let sub = p.signer_rule("byret@ret.domstol.dk");
    assert_eq!(sub.policies, [OCES3_ORG, OCES3_PERSON]);
    let fp = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";
    assert!(
        sub.check(&[OCES3_ORG.into()], Some(&fp.to_ascii_lowercase()))
            .is_ok()
    );
    let e = sub
        .check(&[OCES3_ORG.into()], Some(&"00".repeat(32)))
        .unwrap_err();
    assert!(
        e.contains("signer_anchors") && e.contains("another anchor"),
        "{e}"
    );
    assert!(sub.check(&[OCES3_ORG.into()], None).is_err());

    // An address table turns the requirement off again.
    let open = p.signer_rule("aaben@domstol.dk");
    assert!(open.policies.is_empty());
    assert_eq!(open.revocation, Revocation::Off);
    assert!(open.check(&[], None).is_ok());

    // `policy explain` shows the sender's rule with where it came from.
    let ex = p
        .explain(&MessageFacts {
            from: "retten@domstol.dk".into(),
            to: vec!["post@firma.dk".into()],
            subject: String::new(),
        })
        .to_string();
    assert!(
        ex.contains(r#"signed mail from "retten@domstol.dk" (inbound):"#),
        "{ex}"
    );
    assert!(
        ex.contains(r#"revocation = "require"  <- [domain."domstol.dk"] (line 4)"#),
        "{ex}"
    );
}

#[test]
fn signer_rule_values_are_checked() {
    let errors = policies::check(
        r#"
[default]
signer_policies = ["oces3", "1.2.3", "1.2.3"]
signer_anchors = ["sha1:00", "sha256:12"]
revocation = "always"
"#,
    );
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 5, "{text:#?}");
    assert!(
        text[0].contains("oces3") && text[0].contains("dotted decimal"),
        "{}",
        text[0]
    );
    assert!(text[1].contains("each value once"), "{}", text[1]);
    assert!(
        text[2].contains("sha1:00") && text[2].contains("SHA-256"),
        "{}",
        text[2]
    );
    assert!(
        text[4].contains(r#""require", "prefer" or "off""#),
        "{}",
        text[4]
    );
}

proptest! {
    #[test]
    fn parse_never_panics(text in "\\PC*") {
        let _ = Policy::parse(&text);
    }

    #[test]
    fn parse_never_panics_on_toml_like_text(
        lines in proptest::collection::vec(
            prop_oneof![
                Just("[default]".to_string()),
                "\\[(domain|address)\\.\"[^\"\\n]{0,12}\"\\]",
                "(encrypt|sign|cipher|oaep|generations|subject_trigger|undecryptable|signer_policies|signer_anchors|revocation|x) = (true|1|\"[^\"\\n]{0,10}\"|\\[\"OCES[0-9]\"\\]|\\[\\])",
                "\\PC{0,20}",
            ],
            0..12,
        )
    ) {
        let _ = Policy::parse(&lines.join("\n"));
    }

    #[test]
    fn decide_never_panics(to in "\\PC*", from in "\\PC*", subject in "\\PC*") {
        let p = Policy::parse(EXAMPLE).unwrap();
        let facts = MessageFacts { from, to: vec![to.clone()], subject };
        let d = p.decide(&facts, &to);
        prop_assert_eq!(d.reasons.len(), Field::OUTBOUND.len());
        let _ = p.explain(&facts).to_string();
        let _ = p.undecryptable_for(&to);
        let r = p.signer_rule(&facts.from);
        prop_assert_eq!(r.reasons.len(), Field::SIGNER.len());
        let _ = r.check(&[], None);
    }

    #[test]
    fn trigger_is_removed_and_makes_encryption_required(
        prefix in "[^\\[\\]\\p{C}]{0,20}",
        suffix in "[^\\[\\]\\p{C}]{0,20}",
        upper in any::<bool>(),
    ) {
        let trigger = if upper { "[SIKKER]" } else { "[sikker]" };
        let subject = format!("{prefix}{trigger}{suffix}");
        let d = Policy::default().decide(&facts(&subject), "x@y.dk");
        prop_assert_eq!(d.encrypt, EncryptRule::Required);
        let new = d.new_subject.unwrap_or_else(|| "missing".into());
        prop_assert!(!new.contains('['), "{:?} -> {:?}", subject, new);
        prop_assert_eq!(new.trim(), new.as_str());
        prop_assert!(new.len() < subject.len());
    }
}
