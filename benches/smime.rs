//! Criterion benches for the S/MIME engine, with the yardstick measured in
//! the same run: the bare RSA-3072 private-key operation of the OpenSSL
//! this project links (see `benches/README.md` for how the figures are read).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::{Padding, Rsa};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use smime::{EncryptOptions, KeyPair, MemoryKeyring, SignOptions};

fn cert_for(key: &PKey<Private>, cn: &str) -> X509 {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let n = n.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&BigNum::from_u32(7).unwrap()).unwrap())
        .unwrap();
    b.set_subject_name(&n).unwrap();
    b.set_issuer_name(&n).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(key, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A mail of about `size` bytes: headers, then CRLF text lines.
pub fn message(size: usize) -> Vec<u8> {
    let mut m = b"From: Advokat <post@advokat.example>\r\nTo: Retten <post@domstol.example>\r\n\
Subject: Processkrift\r\nDate: Sun, 22 Nov 2026 10:00:00 +0100\r\nMessage-ID: <bench@advokat.example>\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        .to_vec();
    let line =
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m.truncate(size);
    m
}

fn benches(c: &mut Criterion) {
    smime::init();
    let key = PKey::from_rsa(Rsa::generate(3072).unwrap()).unwrap();
    let cert = cert_for(&key, "bench recipient");
    let rsa = key.rsa().unwrap();

    // The yardstick: one bare RSA-3072 private-key decryption.
    let mut ct = vec![0u8; rsa.size() as usize];
    rsa.public_encrypt(&[7u8; 32], &mut ct, Padding::PKCS1)
        .unwrap();
    let mut out = vec![0u8; rsa.size() as usize];
    c.bench_function("yardstick/rsa3072_private_decrypt", |b| {
        b.iter(|| {
            rsa.private_decrypt(black_box(&ct), &mut out, Padding::PKCS1)
                .unwrap()
        })
    });

    let mut kr = MemoryKeyring::new();
    kr.add(KeyPair::new(key.clone(), cert.clone(), vec![], "bench").unwrap());
    let signer = KeyPair::new(key.clone(), cert.clone(), vec![], "bench").unwrap();
    let msg10k = message(10 * 1024);
    let enc10k = smime::encrypt(
        &msg10k,
        std::slice::from_ref(&cert),
        &EncryptOptions::default(),
    )
    .unwrap();

    let mut g = c.benchmark_group("smime_10k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decrypt", |b| {
        b.iter(|| smime::decrypt(black_box(&enc10k), &kr, None).unwrap())
    });
    // The same key as a user gives it: read from a PEM file.
    let mut pem = key.private_key_to_pem_pkcs8().unwrap();
    pem.extend(cert.to_pem().unwrap());
    let mut kr_pem = MemoryKeyring::new();
    kr_pem.add(KeyPair::from_file_bytes(&pem, None, "pem").unwrap());
    g.bench_function("decrypt_key_from_pem", |b| {
        b.iter(|| smime::decrypt(black_box(&enc10k), &kr_pem, None).unwrap())
    });

    g.bench_function("sign_then_encrypt", |b| {
        b.iter(|| {
            let s = smime::sign(black_box(&msg10k), &signer, &SignOptions::default()).unwrap();
            smime::encrypt(&s, std::slice::from_ref(&cert), &EncryptOptions::default()).unwrap()
        })
    });
    g.finish();

    let msg25m = message(25 * 1024 * 1024);
    let mut g = c.benchmark_group("smime_25mb");
    g.throughput(Throughput::Bytes(msg25m.len() as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("encrypt_aes256cbc", |b| {
        b.iter(|| {
            smime::encrypt(
                black_box(&msg25m),
                std::slice::from_ref(&cert),
                &EncryptOptions::default(),
            )
            .unwrap()
        })
    });
    let gcm = EncryptOptions {
        cipher: smime::ContentCipher::Aes256Gcm,
        ..Default::default()
    };
    g.bench_function("encrypt_aes256gcm", |b| {
        b.iter(|| smime::encrypt(black_box(&msg25m), std::slice::from_ref(&cert), &gcm).unwrap())
    });
    g.finish();
}

criterion_group!(smime_benches, benches);
criterion_main!(smime_benches);
