//! The MIME layer: header splitting, Content-Type parameters, multipart
//! boundaries, transfer decoding, canonicalisation. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smime::mime::{ContentType, Entity, Multipart, decode_base64, decode_transfer, to_crlf, to_lf};

fuzz_target!(|data: &[u8]| {
    let e = Entity::parse(data);
    let _ = e.header_bytes();
    let ct = e.content_type();
    let _ = e.decoded_body();
    if let Some(b) = ct.param("boundary") {
        if let Ok(mp) = Multipart::parse(e.body(), b) {
            for p in mp.parts {
                let _ = Entity::parse(p).content_type();
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = ContentType::parse(s);
    }
    let _ = decode_base64(data);
    let _ = decode_transfer("quoted-printable", data);
    let crlf = to_crlf(data);
    assert!(smime::mime::count_bare_lf(&crlf) == 0);
    let _ = to_lf(&crlf);
});
