//! Differential decryption: the engine (`smime::decrypt`) against the
//! OpenSSL it links (`SMIME_read_CMS` or DER, then `CMS_decrypt` with the
//! same key and certificate), on the same bytes. Disagreements are written
//! to `findings/diff_decrypt/` (see `fuzz/README.md`), not raised: one run
//! collects them all.
#![no_main]

#[path = "diff_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use openssl::cms::CmsContentInfo;

fuzz_target!(|data: &[u8]| {
    let c = common::ctx();
    let cms = common::read_with_content(data)
        .map(|(cms, _)| cms)
        .or_else(|| CmsContentInfo::from_der(data).ok());
    // OpenSSL's CMS answers a key it cannot decrypt with a random one (the
    // MMA countermeasure), and 1 in 256 of those passes CBC padding: an
    // "open" counts only when two decryptions agree.
    let ossl = cms.and_then(|cms| {
        let a = cms.decrypt(&c.key, &c.cert).ok()?;
        let b = cms.decrypt(&c.key, &c.cert).ok()?;
        (a == b).then_some(a)
    });
    let ours = smime::decrypt(data, &c.keyring, None);
    match (ossl, ours) {
        (Some(_), Err(e)) => {
            let kind = format!("openssl-opens-engine-refuses-{}", common::class(&e));
            common::finding("diff_decrypt", &kind, data);
        }
        (None, Ok(_)) => common::finding("diff_decrypt", "engine-opens-openssl-refuses", data),
        (Some(plain), Ok(o)) => {
            // The engine returns the whole message (outer fields + inner
            // entity, bare content given a Content-Type); OpenSSL the inner
            // content. They must agree on it.
            let e = smime::mime::Entity::parse(&o.message);
            let decoded = e.decoded_body().map(|b| b.into_owned()).unwrap_or_default();
            if !contains(&o.message, &plain) && decoded != plain && !contains(&decoded, &plain) {
                common::finding("diff_decrypt", "different-content", data);
            }
        }
        (None, Err(_)) => {}
    }
});

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}
