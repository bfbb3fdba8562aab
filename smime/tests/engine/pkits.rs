//! NIST's PKITS (Public Key Interoperability Test Suite, 2011 edition): its
//! 224 S/MIME messages, each signed under one of the suite's certificate
//! paths, verified with PKITS' default settings (initial policy set
//! anyPolicy, no explicit policy, mappings and anyPolicy allowed,
//! revocation required). The CRLs travel in the messages; the one trust
//! anchor is `TrustAnchorRootCertificate.crt`.
//!
//! The data ships in the PyPI package `cryptography_vectors`
//! (`x509/PKITS_data/`), which `.ci/run` installs; `PKITS_DIR` overrides
//! where it is looked for. Skips loudly when absent; fails instead under
//! `SIKKERMAIL_REQUIRE_PEERS=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use openssl::x509::X509;
use smime::{TrustStore, Validation};

const NIST1: &str = "2.16.840.1.101.3.2.1.48.1";
const NIST2: &str = "2.16.840.1.101.3.2.1.48.2";
const NIST3: &str = "2.16.840.1.101.3.2.1.48.3";
const ANY_POLICY: &str = "2.5.29.32.0";

fn pkits() -> Option<PathBuf> {
    let dir = match std::env::var_os("PKITS_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => Command::new("python3")
            .args([
                "-c",
                "import cryptography_vectors, os; print(os.path.dirname(cryptography_vectors.__file__))",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                Path::new(String::from_utf8_lossy(&o.stdout).trim()).join("x509/PKITS_data")
            }),
    };
    if let Some(d) = dir.filter(|d| d.join("smime").is_dir()) {
        return Some(d);
    }
    if std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "PKITS data missing (pip install cryptography_vectors, or set PKITS_DIR) and SIKKERMAIL_REQUIRE_PEERS=1"
        );
    }
    eprintln!(
        "!!! SKIPPING PKITS test: the Python package cryptography_vectors is not installed (pip install cryptography_vectors) and PKITS_DIR is not set"
    );
    None
}

fn anchor(d: &Path) -> X509 {
    X509::from_der(&fs::read(d.join("certs/TrustAnchorRootCertificate.crt")).unwrap()).unwrap()
}

fn store(d: &Path, v: Validation) -> TrustStore {
    TrustStore::new(vec![anchor(d)], vec![], vec![])
        .unwrap()
        .with_validation(Validation {
            require_revocation: true,
            ..v
        })
        .unwrap()
}

/// The verdict PKITS expects with its default settings. `SignedValid*` and
/// `SignedInvalid*` say it in the name; for the policy tests without
/// either word, PKITS' section 4.8 gives it (4.8.4, 4.8.5, 4.8.7, 4.8.8,
/// 4.8.9 and 4.8.12 fail under every setting; 4.4.1 Missing CRL fails).
fn expected_valid(name: &str) -> bool {
    if name.starts_with("SignedValid") {
        return true;
    }
    if name.starts_with("SignedInvalid") || name == "SignedMissingCRLTest1" {
        return false;
    }
    !matches!(
        name,
        "SignedDifferentPoliciesTest4"
            | "SignedDifferentPoliciesTest5"
            | "SignedDifferentPoliciesTest7"
            | "SignedDifferentPoliciesTest8"
            | "SignedDifferentPoliciesTest9"
            | "SignedDifferentPoliciesTest12"
    )
}

/// Verdicts that differ from PKITS', each for a reason written down (see
/// the engine's documentation, `smime/src/verify.rs`).
const EXPLAINED: &[(&str, &str)] = &[
    (
        "SignedValidDSAParameterInheritanceTest5",
        "DSA parameter inheritance (a DSA key without parameters, taking its issuer's) is not supported by OpenSSL 3",
    ),
    (
        "SignedValidcRLIssuerTest30",
        "the CRL's own path needs the CRL being checked (a circular dependency PKITS itself says may be skipped); OpenSSL reports a CRL path validation error",
    ),
];

/// Verifies one message; (valid, reason, policies of the first signer).
fn verdict(trust: &TrustStore, p: &Path) -> (bool, String, Vec<String>) {
    let eml = fs::read(p).unwrap();
    match smime::verify(&eml, trust, None) {
        Ok(o) => {
            let valid = o.all_signatures_valid();
            let s = o.signatures().next();
            let reason = s.and_then(|s| s.reason.clone()).unwrap_or_default();
            let policies = s
                .and_then(|s| s.signers.first())
                .map(|si| si.policies.clone())
                .unwrap_or_default();
            (valid, reason, policies)
        }
        Err(e) => (false, e.to_string(), Vec::new()),
    }
}

#[test]
fn pkits_every_message_with_default_settings() {
    let Some(d) = pkits() else { return };
    let trust = store(&d, Validation::default());
    let mut names: Vec<String> = fs::read_dir(d.join("smime"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".eml").map(str::to_string)
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 224, "PKITS has 224 S/MIME messages");
    let (mut agree, mut unexplained) = (0, Vec::new());
    for n in &names {
        let (valid, reason, _) = verdict(&trust, &d.join("smime").join(format!("{n}.eml")));
        let want = expected_valid(n);
        if valid == want {
            agree += 1;
        } else if let Some((_, why)) = EXPLAINED.iter().find(|(e, _)| e == n) {
            eprintln!("PKITS {n}: expected {want}, got {valid} (explained: {why}); ours: {reason}");
        } else {
            unexplained.push(format!(
                "{n}: expected valid={want}, got valid={valid}: {reason}"
            ));
        }
    }
    eprintln!("PKITS: {agree} of {} expected verdicts", names.len());
    assert!(
        unexplained.is_empty(),
        "PKITS verdicts that differ, unexplained:\n{}",
        unexplained.join("\n")
    );
    assert!(agree >= 220, "PKITS: only {agree} of 224");
}

/// The policy tests under the other settings of PKITS' section 4.8-4.12
/// (the settings and answers of OpenSSL's `pkits-test.pl`), and the
/// policies the report names.
#[test]
fn pkits_policy_settings_and_reported_policies() {
    let Some(d) = pkits() else { return };
    let msg = |n: &str| d.join("smime").join(format!("Signed{n}.eml"));
    let set = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let explicit = |p: &[&str]| Validation {
        policies: set(p),
        explicit_policy: true,
        ..Validation::default()
    };
    // (test, settings, valid, policies of a valid chain)
    let cases: Vec<(&str, Validation, bool, Vec<String>)> = vec![
        (
            "AllCertificatesSamePolicyTest1",
            explicit(&[]),
            true,
            set(&[NIST1]),
        ),
        (
            "AllCertificatesSamePolicyTest1",
            explicit(&[NIST1]),
            true,
            set(&[NIST1]),
        ),
        (
            "AllCertificatesSamePolicyTest1",
            explicit(&[NIST2]),
            false,
            vec![],
        ),
        (
            "AllCertificatesSamePolicyTest1",
            explicit(&[NIST1, NIST2]),
            true,
            set(&[NIST1]),
        ),
        (
            "AllCertificatesNoPoliciesTest2",
            Validation::default(),
            true,
            vec![],
        ),
        (
            "AllCertificatesNoPoliciesTest2",
            explicit(&[]),
            false,
            vec![],
        ),
        ("DifferentPoliciesTest3", explicit(&[]), false, vec![]),
        (
            "OverlappingPoliciesTest6",
            Validation::default(),
            true,
            set(&[NIST1]),
        ),
        (
            "OverlappingPoliciesTest6",
            Validation {
                policies: set(&[NIST2]),
                ..Validation::default()
            },
            false,
            vec![],
        ),
        (
            "AllCertificatesSamePoliciesTest10",
            Validation::default(),
            true,
            set(&[NIST1, NIST2]),
        ),
        (
            "AllCertificatesSamePoliciesTest10",
            Validation {
                policies: set(&[NIST2]),
                ..Validation::default()
            },
            true,
            set(&[NIST2]),
        ),
        (
            "AllCertificatesAnyPolicyTest11",
            Validation::default(),
            true,
            set(&[ANY_POLICY]),
        ),
        (
            "AllCertificatesAnyPolicyTest11",
            Validation {
                policies: set(&[NIST1]),
                ..Validation::default()
            },
            true,
            set(&[NIST1]),
        ),
        (
            "AllCertificatesSamePoliciesTest13",
            Validation::default(),
            true,
            set(&[NIST1, NIST2, NIST3]),
        ),
        (
            "ValidPolicyMappingTest1",
            Validation {
                inhibit_policy_mapping: true,
                ..explicit(&[])
            },
            false,
            vec![],
        ),
        (
            "ValidPolicyMappingTest1",
            Validation::default(),
            true,
            set(&[NIST1]),
        ),
        (
            "inhibitAnyPolicyTest3",
            Validation::default(),
            true,
            set(&[NIST1]),
        ),
        (
            "inhibitAnyPolicyTest3",
            Validation {
                inhibit_any_policy: true,
                ..Validation::default()
            },
            false,
            vec![],
        ),
    ];
    let mut wrong = Vec::new();
    for (n, v, want, policies) in cases {
        let label = format!("{n} with {v:?}");
        let (valid, reason, got) = verdict(&store(&d, v), &msg(n));
        if valid != want {
            wrong.push(format!(
                "{label}: expected valid={want}, got {valid}: {reason}"
            ));
        } else if valid && got != policies {
            wrong.push(format!("{label}: policies {got:?}, expected {policies:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn revocation_required_without_any_crl_is_not_valid() {
    let Some(d) = pkits() else { return };
    // A valid path whose CRLs travel in the message: with the CRLs it is
    // valid; stripped of them (the signature's certificates only), it is
    // not, and the reason says revocation data is missing.
    let trust = store(&d, Validation::default());
    let (valid, reason, _) = verdict(&trust, &d.join("smime/SignedValidSignaturesTest1.eml"));
    assert!(valid, "{reason}");
    let (valid, reason, _) = verdict(&trust, &d.join("smime/SignedMissingCRLTest1.eml"));
    assert!(!valid);
    assert!(reason.contains("CRL"), "{reason}");
    // Revocation not required: the same message without its CRL is valid.
    let relaxed = TrustStore::new(vec![anchor(&d)], vec![], vec![]).unwrap();
    let (valid, reason, _) = verdict(&relaxed, &d.join("smime/SignedMissingCRLTest1.eml"));
    assert!(valid, "{reason}");
}

#[test]
fn a_policy_that_is_not_an_oid_is_refused_when_the_store_is_made() {
    let e = TrustStore::new(vec![], vec![], vec![])
        .unwrap()
        .with_validation(Validation {
            policies: vec!["oces3".into()],
            ..Validation::default()
        })
        .unwrap_err();
    assert!(e.to_string().contains("oces3"), "{e}");
}
