//! Differential verification: the engine (`smime::verify`, chain to the
//! fuzz CA) against the OpenSSL it links (`SMIME_read_CMS` with the
//! detached part, or DER, then `CMS_verify` against the same anchor), on
//! the same bytes. Disagreements are written to `findings/diff_verify/`.
#![no_main]

#[path = "diff_common.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use openssl::cms::{CMSOptions, CmsContentInfo};

fuzz_target!(|data: &[u8]| {
    let c = common::ctx();
    let ossl_valid = match common::read_with_content(data)
        .or_else(|| CmsContentInfo::from_der(data).ok().map(|c| (c, None)))
    {
        Some((mut cms, content)) => {
            let mut out = Vec::new();
            cms.verify(
                None,
                Some(&c.store),
                content.as_deref(),
                Some(&mut out),
                CMSOptions::BINARY,
            )
            .is_ok()
        }
        None => false,
    };
    let ours = smime::verify(data, &c.trust, None);
    let ours_valid = ours.as_ref().is_ok_and(|o| o.all_signatures_valid());
    if ossl_valid && !ours_valid {
        let kind = match &ours {
            Ok(o) => common::reason_class(
                &o.signatures()
                    .find(|s| !s.valid)
                    .and_then(|s| s.reason.clone())
                    .unwrap_or_default(),
            )
            .to_string(),
            Err(e) => common::class(e),
        };
        common::finding("diff_verify", &format!("openssl-valid-engine-not-{kind}"), data);
    } else if !ossl_valid && ours_valid {
        let canon = ours
            .as_ref()
            .is_ok_and(|o| o.signatures().any(|s| s.canonicalised));
        common::finding(
            "diff_verify",
            if canon {
                "engine-valid-openssl-not-canonicalised"
            } else {
                "engine-valid-openssl-not"
            },
            data,
        );
    }
});
