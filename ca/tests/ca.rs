//! The CA checked by OpenSSL (chain, subject string types, PSS, extensions,
//! CRL), gpgsm (compatible PKCS#12) and NSS `pk12util` (modern PKCS#12);
//! profiles round-trip; the OCES3 test certificates parse into our types.

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use ca::pkcs12::{Flavour, export, import};
use ca::{
    CaCertificate, Cvr, DisplayName, EmailAddress, EndEntity, IssuancePolicy, IssuerRef, Kind,
    OcesUuid, OrganisationCertificate, ParsedEndEntity, RevocationReason, RevokedEntry,
    RsaPssSigner, Signer, UserCertificate, crl, generate_rsa, issue,
};
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;
use proptest::prelude::*;

struct Pki {
    root: X509,
    issuing: X509,
    issuing_signer: RsaPssSigner,
    policy: IssuancePolicy,
    leaf_key: PKey<Private>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let policy = IssuancePolicy {
            policy_oids: vec!["1.3.6.1.4.1.99999.1.1".into()],
            crl_url: Some("http://ca.advokat.example/issuing.crl".into()),
            ca_issuers_url: Some("http://ca.advokat.example/issuing.cer".into()),
            ocsp_url: None,
        };
        let root_signer = RsaPssSigner::new(generate_rsa(4096).unwrap()).unwrap();
        let name = |s: &str| DisplayName::parse("name", s).unwrap();
        let root_profile = CaCertificate {
            common_name: name("Advokatfirma Test rod-CA"),
            organisation: name("Advokatfirma Test"),
            path_len: None,
            validity_days: 7300,
        };
        let root = issue(
            &root_profile,
            &root_signer.public_key_info().unwrap(),
            &IssuerRef {
                cert: None,
                signer: &root_signer,
            },
            &policy,
            now() - 60,
        )
        .unwrap();
        let root = X509::from_der(&root.der).unwrap();
        let issuing_signer = RsaPssSigner::new(generate_rsa(3072).unwrap()).unwrap();
        let issuing_profile = CaCertificate {
            common_name: name("Advokatfirma Test udstedende-CA 1"),
            organisation: name("Advokatfirma Test"),
            path_len: Some(0),
            validity_days: 3650,
        };
        let issuing = issue(
            &issuing_profile,
            &issuing_signer.public_key_info().unwrap(),
            &IssuerRef {
                cert: Some(&root),
                signer: &root_signer,
            },
            &policy,
            now() - 60,
        )
        .unwrap();
        Pki {
            root,
            issuing: X509::from_der(&issuing.der).unwrap(),
            issuing_signer,
            policy,
            leaf_key: generate_rsa(3072).unwrap(),
        }
    })
}

fn end_entity(cn: &str, email: &str) -> EndEntity {
    EndEntity {
        common_name: DisplayName::parse("CN", cn).unwrap(),
        uuid: OcesUuid::new_random().unwrap(),
        organisation: DisplayName::parse("O", "Advokatfirma Jørgensen & Co").unwrap(),
        cvr: Cvr::parse("12345678").unwrap(),
        email: Some(EmailAddress::parse(email).unwrap()),
    }
}

fn issue_leaf(profile: &dyn ca::Profile) -> X509 {
    let p = pki();
    let issued = issue(
        profile,
        &p.leaf_key.public_key_to_der().unwrap(),
        &IssuerRef {
            cert: Some(&p.issuing),
            signer: &p.issuing_signer,
        },
        &p.policy,
        now() - 60,
    )
    .unwrap();
    assert_eq!(issued.not_after - issued.not_before, 1095 * 86_400 - 1);
    X509::from_der(&issued.der).unwrap()
}

fn openssl_present() -> bool {
    peer("openssl")
}

fn peer(tool: &str) -> bool {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("peer `{tool}` missing and SIKKERMAIL_REQUIRE_PEERS=1");
        }
        eprintln!("!!! SKIPPING: peer `{tool}` is not installed");
    }
    ok
}

fn sh(dir: &Path, cmd: &str) -> String {
    let o = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "`{cmd}`: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn write_chain(dir: &Path, leaf: &X509) {
    let p = pki();
    fs::write(dir.join("root.pem"), p.root.to_pem().unwrap()).unwrap();
    fs::write(dir.join("issuing.pem"), p.issuing.to_pem().unwrap()).unwrap();
    fs::write(dir.join("leaf.pem"), leaf.to_pem().unwrap()).unwrap();
}

#[test]
fn organisation_certificate_matches_the_profile_field_for_field() {
    if !openssl_present() {
        return;
    }
    let t = tempfile_dir();
    let ee = end_entity(
        "Advokatfirma Jørgensen - fælles postkasse",
        "post@advokat-joergensen.dk",
    );
    let leaf = issue_leaf(&OrganisationCertificate(ee.clone()));
    write_chain(&t, &leaf);
    let v = sh(
        &t,
        "openssl verify -x509_strict -CAfile root.pem -untrusted issuing.pem leaf.pem",
    );
    assert!(v.contains("leaf.pem: OK"), "{v}");
    // Subject in encoded order with the string types.
    let subj = sh(
        &t,
        "openssl x509 -in leaf.pem -noout -subject -nameopt sep_comma_plus,show_type,esc_msb,utf8,-esc_msb",
    );
    let expected = format!(
        "subject=CN=UTF8STRING:Advokatfirma Jørgensen - fælles postkasse,serialNumber=PRINTABLESTRING:UI:DK-O:G:{},O=UTF8STRING:Advokatfirma Jørgensen & Co,organizationIdentifier=UTF8STRING:NTRDK-12345678,C=PRINTABLESTRING:DK",
        ee.uuid
    );
    assert_eq!(subj.trim(), expected);
    let text = sh(
        &t,
        "openssl x509 -in leaf.pem -noout -text -certopt no_pubkey,no_sigdump",
    );
    for want in [
        "Signature Algorithm: rsassaPss",
        "Hash Algorithm: sha256",
        "Mask Algorithm: mgf1 with sha256",
        "Salt Length: 0x20",
        "X509v3 Key Usage: critical",
        "Digital Signature, Key Encipherment",
        "email:post@advokat-joergensen.dk",
        "Policy: 1.3.6.1.4.1.99999.1.1",
        "URI:http://ca.advokat.example/issuing.crl",
        "CA Issuers - URI:http://ca.advokat.example/issuing.cer",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
        "Version: 3 (0x2)",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("Extended Key Usage"), "OCES3 has no EKU");
    assert_eq!(leaf.public_key().unwrap().bits(), 3072);
    // The CAs: PSS too, root 4096, issuing 3072 with pathlen 0.
    let root = sh(
        &t,
        "openssl x509 -in root.pem -noout -text -certopt no_sigdump",
    );
    assert!(
        root.contains("Public-Key: (4096 bit)")
            && root.contains("rsassaPss")
            && root.contains("CA:TRUE")
    );
    let issuing = sh(
        &t,
        "openssl x509 -in issuing.pem -noout -text -certopt no_sigdump",
    );
    assert!(issuing.contains("Public-Key: (3072 bit)") && issuing.contains("CA:TRUE, pathlen:0"));
}

#[test]
fn user_certificate_has_the_e_prefix_and_parses_back() {
    let ee = end_entity("Søren Ørsted", "soeren@advokat.dk");
    let leaf = issue_leaf(&UserCertificate(ee.clone()));
    let parsed = ParsedEndEntity::from_x509(&leaf).unwrap();
    assert_eq!(parsed.kind, Kind::User);
    assert_eq!(parsed.fields, ee);
}

#[test]
fn revoked_certificate_fails_openssl_crl_check() {
    if !openssl_present() {
        return;
    }
    let p = pki();
    let t = tempfile_dir();
    let revoked = issue_leaf(&OrganisationCertificate(end_entity(
        "Revoked",
        "a@advokat.dk",
    )));
    let good = issue_leaf(&OrganisationCertificate(end_entity("Good", "b@advokat.dk")));
    let serial = revoked
        .serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string();
    let der = crl(
        &p.issuing,
        &p.issuing_signer,
        &[RevokedEntry {
            serial_hex: serial,
            revoked_at: now() - 10,
            reason: RevocationReason::KeyCompromise,
        }],
        7,
        now() - 5,
        now() + 86_400,
    )
    .unwrap();
    let pem = openssl::x509::X509Crl::from_der(&der)
        .unwrap()
        .to_pem()
        .unwrap();
    fs::write(t.join("issuing.crl.pem"), pem).unwrap();
    write_chain(&t, &revoked);
    fs::write(t.join("good.pem"), good.to_pem().unwrap()).unwrap();
    // The CRL itself: number, next update, reason, PSS.
    let text = sh(&t, "openssl crl -in issuing.crl.pem -noout -text");
    assert!(
        text.contains("X509v3 CRL Number") && text.contains("7"),
        "{text}"
    );
    assert!(
        text.contains("Next Update")
            && text.contains("Key Compromise")
            && text.contains("rsassaPss"),
        "{text}"
    );
    // Only the issuing CA's CRL is given, so check the leaf only (-crl_check).
    let out = Command::new("bash")
        .arg("-c")
        .arg("openssl verify -crl_check -CRLfile issuing.crl.pem -CAfile root.pem -untrusted issuing.pem leaf.pem")
        .current_dir(&t)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("certificate revoked")
            || String::from_utf8_lossy(&out.stderr).contains("certificate revoked")
    );
    let ok = sh(
        &t,
        "openssl verify -crl_check -CRLfile issuing.crl.pem -CAfile root.pem -untrusted issuing.pem good.pem",
    );
    assert!(ok.contains("good.pem: OK"));
}

#[test]
fn pkcs12_flavours_open_in_openssl_nss_and_gpgsm() {
    if !openssl_present() {
        return;
    }
    let p = pki();
    let t = tempfile_dir();
    let leaf = issue_leaf(&UserCertificate(end_entity(
        "Mette Hansen",
        "mette@advokat.dk",
    )));
    let chain = vec![p.issuing.clone(), p.root.clone()];
    let modern = export(
        &p.leaf_key,
        &leaf,
        &chain,
        "Mette Hansen (brugercertifikat)",
        "Hemmelig-42",
        Flavour::Modern,
    )
    .unwrap();
    let compat = export(
        &p.leaf_key,
        &leaf,
        &chain,
        "Mette Hansen (brugercertifikat)",
        "Hemmelig-42",
        Flavour::Compatible,
    )
    .unwrap();
    fs::write(t.join("modern.p12"), &modern).unwrap();
    fs::write(t.join("compat.p12"), &compat).unwrap();
    let info = sh(
        &t,
        "openssl pkcs12 -info -noout -in modern.p12 -passin pass:Hemmelig-42",
    );
    assert!(
        info.contains("MAC: sha256")
            && info.contains("PBES2")
            && info.contains("AES-256-CBC")
            && info.contains("hmacWithSHA256"),
        "{info}"
    );
    let info = sh(
        &t,
        "openssl pkcs12 -legacy -info -noout -in compat.p12 -passin pass:Hemmelig-42 2>&1 || openssl pkcs12 -info -noout -in compat.p12 -passin pass:Hemmelig-42",
    );
    assert!(
        info.contains("MAC: sha1") && info.contains("pbeWithSHA1And3-KeyTripleDES-CBC"),
        "{info}"
    );
    let names = sh(
        &t,
        "openssl pkcs12 -in modern.p12 -passin pass:Hemmelig-42 -nokeys | grep -c BEGIN; openssl pkcs12 -in modern.p12 -passin pass:Hemmelig-42 -nokeys | grep friendlyName | head -1",
    );
    assert!(
        names.starts_with("3\n") && names.contains("Mette Hansen (brugercertifikat)"),
        "{names}"
    );
    // Our own import reads both back.
    for der in [&modern, &compat] {
        let imp = import(der, "Hemmelig-42").unwrap();
        assert_eq!(imp.cert.to_der().unwrap(), leaf.to_der().unwrap());
        assert_eq!(imp.chain.len(), 2);
    }
    assert!(
        import(&modern, "wrong")
            .unwrap_err()
            .to_string()
            .contains("wrong password")
    );
    assert!(
        import(b"not a p12", "x")
            .unwrap_err()
            .to_string()
            .contains("not a PKCS#12")
    );
    // NSS takes the modern flavour.
    if peer("pk12util") && peer("certutil") {
        fs::create_dir(t.join("nss")).unwrap();
        sh(
            &t,
            "certutil -N -d sql:nss --empty-password && pk12util -i modern.p12 -d sql:nss -W Hemmelig-42 -K ''",
        );
        let l = sh(&t, "certutil -L -d sql:nss");
        assert!(l.contains("Mette Hansen (brugercertifikat)"), "{l}");
    }
    // gpgsm 2.2 takes the compatible flavour.
    if peer("gpgsm") {
        fs::create_dir(t.join("gnupg")).unwrap();
        fs::write(t.join("gnupg/gpg-agent.conf"), "allow-loopback-pinentry\n").unwrap();
        let out = sh(
            &t,
            "export GNUPGHOME=$PWD/gnupg; echo Hemmelig-42 | gpgsm --batch --pinentry-mode loopback --passphrase-fd 0 --import compat.p12 2>&1; gpgsm --batch --list-secret-keys 2>&1; gpgconf --kill gpg-agent",
        );
        assert!(out.contains("secret keys imported: 1"), "{out}");
        assert!(out.contains("Mette Hansen"), "{out}");
    }
}

#[test]
fn oces3_test_certificates_parse_into_the_profile_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testvectors/oces3");
    if !dir.is_dir() {
        assert!(
            std::env::var("SIKKERMAIL_REQUIRE_PEERS").as_deref() != Ok("1"),
            "test vectors missing"
        );
        eprintln!("!!! SKIPPING: {} not found", dir.display());
        return;
    }
    let parsed =
        ParsedEndEntity::from_der(&fs::read(dir.join("NemLog-in_IdP_-_Test.cer")).unwrap())
            .unwrap();
    assert_eq!(parsed.kind, Kind::Organisation);
    assert_eq!(parsed.fields.cvr.as_str(), "34051178");
    assert_eq!(
        parsed.fields.organisation.as_str(),
        "Digitaliseringsstyrelsen"
    );
    assert_eq!(parsed.fields.common_name.as_str(), "NemLog-in IdP - Test");
    assert_eq!(
        parsed.fields.uuid.to_string(),
        "a040fe26-ce78-4328-ac0e-29eeb12f46df"
    );
    let other = ParsedEndEntity::from_der(
        &fs::read(dir.join("NemLog-in_LookupService_-_Test.cer")).unwrap(),
    )
    .unwrap();
    assert_eq!(other.kind, Kind::Organisation);
    // Re-encoding the parsed fields with our profile gives the same subject DER.
    let cert = X509::from_der(&fs::read(dir.join("NemLog-in_IdP_-_Test.cer")).unwrap()).unwrap();
    let ours = ca::Profile::subject(&OrganisationCertificate(parsed.fields.clone()));
    assert_eq!(ours, cert.subject_name().to_der().unwrap());
    // A CA certificate is not an end entity of our profiles.
    assert!(
        ParsedEndEntity::from_der(&fs::read(dir.join("OCES3_ROOT_CA_-_CTI.cer")).unwrap()).is_err()
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).unwrap();
    let d = base.join(format!(
        "ca-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ));
    fs::create_dir_all(&d).unwrap();
    d
}

fn arb_name() -> impl Strategy<Value = String> {
    // Danish and other UTF-8, printable, 1-64 characters, trimmed.
    "[A-Za-zÆØÅæøå0-9 .,&()'-]{0,40}[A-Za-zÆØÅæøå0-9]"
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn profiles_round_trip_through_certificates(
        cn in arb_name(), org in arb_name(), cvr in "[0-9]{8}", local in "[a-z][a-z0-9.]{0,10}[a-z0-9]",
        user in any::<bool>(),
    ) {
        let ee = EndEntity {
            common_name: DisplayName::parse("CN", &cn).unwrap(),
            uuid: OcesUuid::new_random().unwrap(),
            organisation: DisplayName::parse("O", &org).unwrap(),
            cvr: Cvr::parse(&cvr).unwrap(),
            email: EmailAddress::parse(&format!("{}@advokat.dk", local.replace("..", "."))).ok(),
        };
        let cert = if user { issue_leaf(&UserCertificate(ee.clone())) } else { issue_leaf(&OrganisationCertificate(ee.clone())) };
        let parsed = ParsedEndEntity::from_x509(&cert).unwrap();
        prop_assert_eq!(parsed.kind, if user { Kind::User } else { Kind::Organisation });
        prop_assert_eq!(parsed.fields, ee);
    }
}

#[test]
fn nothing_outlives_its_issuer_and_bad_policies_are_refused() {
    let p = pki();
    // An issuing CA that expires in 10 days: the end entity is clamped.
    let short = CaCertificate {
        common_name: DisplayName::parse("n", "Short-lived CA").unwrap(),
        organisation: DisplayName::parse("n", "Advokatfirma Test").unwrap(),
        path_len: Some(0),
        validity_days: 10,
    };
    let signer = RsaPssSigner::new(generate_rsa(2048).unwrap()).unwrap();
    let issuing = issue(
        &short,
        &signer.public_key_info().unwrap(),
        &IssuerRef {
            cert: Some(&p.root),
            signer: &p.issuing_signer,
        },
        &p.policy,
        now(),
    )
    .map(|i| X509::from_der(&i.der).unwrap());
    // (signed by the issuing CA's key but named under the root: only the dates matter here)
    let issuing = issuing.unwrap();
    let leaf = issue(
        &OrganisationCertificate(end_entity("Clamped", "c@advokat.dk")),
        &p.leaf_key.public_key_to_der().unwrap(),
        &IssuerRef {
            cert: Some(&issuing),
            signer: &signer,
        },
        &p.policy,
        now(),
    )
    .unwrap();
    assert!(leaf.not_after <= now() + 10 * 86_400);
    assert!(leaf.not_after - leaf.not_before < 11 * 86_400);
    // Invalid policy OIDs and URLs are refused, not encoded as garbage.
    for bad in [
        IssuancePolicy {
            policy_oids: vec!["3.1".into()],
            ..IssuancePolicy::default()
        },
        IssuancePolicy {
            policy_oids: vec!["1.40".into()],
            ..IssuancePolicy::default()
        },
        IssuancePolicy {
            crl_url: Some("http://a b".into()),
            ..IssuancePolicy::default()
        },
    ] {
        let r = issue(
            &OrganisationCertificate(end_entity("X", "x@advokat.dk")),
            &p.leaf_key.public_key_to_der().unwrap(),
            &IssuerRef {
                cert: Some(&p.issuing),
                signer: &p.issuing_signer,
            },
            &bad,
            now(),
        );
        assert!(matches!(r, Err(ca::CaError::Invalid(_))), "{bad:?}");
    }
}

#[test]
fn unspecified_revocations_carry_no_reason_code() {
    let p = pki();
    let der = crl(
        &p.issuing,
        &p.issuing_signer,
        &[
            RevokedEntry {
                serial_hex: "0A".into(),
                revoked_at: now(),
                reason: RevocationReason::Unspecified,
            },
            RevokedEntry {
                serial_hex: "0B".into(),
                revoked_at: now(),
                reason: RevocationReason::Superseded,
            },
        ],
        9,
        now(),
        now() + 3600,
    )
    .unwrap();
    let c = openssl::x509::X509Crl::from_der(&der).unwrap();
    let revoked = c.get_revoked().unwrap();
    assert_eq!(revoked.len(), 2);
    // The reasonCode extension (OID 2.5.29.21) appears once: for 0B only.
    let reason_oid = [0x06, 0x03, 0x55, 0x1d, 0x15];
    assert_eq!(der.windows(5).filter(|w| *w == reason_oid).count(), 1);
    // CA certificates carry no CRL distribution point of their own.
    assert!(
        !String::from_utf8(p.issuing.to_text().unwrap())
            .unwrap()
            .contains("CRL Distribution")
    );
}
