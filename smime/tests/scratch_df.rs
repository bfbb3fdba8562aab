#[test]
fn scratch() {
    smime::init();
    let pem = std::fs::read("/tmp/fk.pem").unwrap();
    let key = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    let cert = openssl::x509::X509::stack_from_pem(&pem)
        .unwrap()
        .into_iter()
        .find(|c| c.public_key().unwrap().public_eq(&key))
        .unwrap();
    let mut kr = smime::MemoryKeyring::new();
    kr.add(smime::KeyPair::new(key.clone(), cert.clone(), vec![], "fuzz").unwrap());
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    let dir = std::env::var("DIR").unwrap();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        let ossl = read(&data)
            .or_else(|| {
                let r = openssl::cms::CmsContentInfo::from_der(&data).ok();
                unsafe { openssl_sys::ERR_clear_error() };
                r
            })
            .and_then(|mut c| {
                let a = c.decrypt(&key, &cert).ok()?;
                let b = c.decrypt(&key, &cert).ok()?;
                (a == b).then_some(a)
            });
        unsafe { openssl_sys::ERR_clear_error() };
        unsafe { openssl_sys::ERR_clear_error() };
        let ours = smime::decrypt(&data, &kr, None);
        let class = match (&ossl, &ours) {
            (None, Ok(o)) => {
                let head_end = data
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .or_else(|| data.windows(4).position(|w| w == b"\r\n\r\n"))
                    .unwrap_or(data.len());
                let head = &data[..head_end];
                if o.notes
                    .iter()
                    .any(|n| n.contains("mbox") || n.contains("HTTP"))
                {
                    "engine-opens: envelope line".to_string()
                } else if o.notes.iter().any(|n| n.contains("multipart/mixed")) {
                    "engine-opens: mixed part".to_string()
                } else if head.iter().any(|&b| {
                    b == 0 || b >= 0x80 || (b < 0x20 && b != b'\r' && b != b'\n' && b != b'\t')
                }) {
                    "engine-opens: binary in header".to_string()
                } else {
                    println!("OTHER {}", p.display());
                    "engine-opens: OTHER".to_string()
                }
            }
            (Some(_), Err(e)) => {
                let k = format!("{e:?}")
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .next()
                    .unwrap()
                    .to_string();
                std::fs::create_dir_all("/tmp/oo").unwrap();
                std::fs::write(
                    format!(
                        "/tmp/oo/openssl-opens-engine-refuses-{k}-{}",
                        p.file_name().unwrap().to_string_lossy()
                    ),
                    &data,
                )
                .unwrap();
                format!("openssl-opens: {k}")
            }
            _ => continue,
        };
        *counts.entry(class).or_default() += 1;
    }
    println!("{counts:#?}");
}

fn read(data: &[u8]) -> Option<openssl::cms::CmsContentInfo> {
    use foreign_types_shared::ForeignType;
    unsafe {
        let bio = openssl_sys::BIO_new_mem_buf(data.as_ptr() as *const _, data.len() as _);
        let mut bcont: *mut openssl_sys::BIO = std::ptr::null_mut();
        let cms = openssl_sys::SMIME_read_CMS(bio, &mut bcont);
        openssl_sys::BIO_free_all(bio);
        if !bcont.is_null() {
            openssl_sys::BIO_free_all(bcont);
        }
        if cms.is_null() {
            openssl_sys::ERR_clear_error();
            return None;
        }
        Some(openssl::cms::CmsContentInfo::from_ptr(cms))
    }
}
