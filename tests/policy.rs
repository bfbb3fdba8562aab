//! `sikkermail policy check|explain` on the example policy and a broken one.

#![allow(clippy::unwrap_used)]

mod common;

use common::sikkermail;

#[test]
fn check_reports_every_error_and_explain_shows_the_rules() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/example-policy.toml");
    let o = sikkermail(&["policy", "check", example], b"");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[default]\nsign = \"ja\"\nbogus = 1\n[domain.\"x y\"]\n",
    )
    .unwrap();
    let o = sikkermail(&["policy", "check", bad.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("line 2") && err.contains("default.sign"),
        "{err}"
    );
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("x y"), "{err}");
    assert!(err.contains("3 error(s)"), "{err}");

    let o = sikkermail(
        &[
            "policy",
            "explain",
            "--policy",
            example,
            "--from",
            "a@advokatfirma.dk",
            "--to",
            "post@ret.domstol.dk",
            "--subject",
            "Sag 12 [SIKKER]",
        ],
        b"",
    );
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("encrypt = \"required\""), "{out}");
    assert!(out.contains("new subject: \"Sag 12\""), "{out}");
    // No file: the built-in defaults.
    let o = sikkermail(
        &["policy", "explain", "--from", "a@b.dk", "--to", "c@d.dk"],
        b"",
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("encrypt = \"opportunistic\"  <- built-in default"),
        "{out}"
    );
}
