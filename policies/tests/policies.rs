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
    const O3: &[Generation] = &[Generation::Oces3];
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
                "(encrypt|sign|cipher|oaep|generations|subject_trigger|undecryptable|x) = (true|1|\"[^\"\\n]{0,10}\"|\\[\"OCES[0-9]\"\\]|\\[\\])",
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
        prop_assert_eq!(d.reasons.len(), Field::ALL.len());
        let _ = p.explain(&facts).to_string();
        let _ = p.undecryptable_for(&to);
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
