//! Describing the S/MIME layers of a message without any key: what each
//! layer is, its recipients or signers, its algorithms.

use std::fmt;

use crate::cmsinfo::{self, CmsKind, ID_SIGNING_TIME};
use crate::error::{Error, Result};
use crate::mime::Entity;
use crate::open::{Shape, replace_content, shape};

/// One layer as seen from outside.
#[derive(Debug, Clone)]
pub enum Layer {
    /// EnvelopedData or AuthEnvelopedData.
    Encrypted {
        /// True for AuthEnvelopedData.
        authenticated: bool,
        /// Content-encryption algorithm.
        content_algorithm: String,
        /// `(kind, identifier, key algorithm)` per recipient.
        recipients: Vec<(String, String, String)>,
    },
    /// SignedData.
    Signed {
        /// multipart/signed rather than opaque.
        detached: bool,
        /// Certificates carried.
        certificates: usize,
        /// `(signer identifier, digest, signature algorithm, signing time)`.
        signers: Vec<(String, String, String, Option<String>)>,
    },
    /// The layers that follow belong to this part of the outer
    /// multipart/mixed (an encrypted or signed part beside others), up to
    /// the next `Part`.
    Part {
        /// 1-based.
        index: usize,
        /// Parts in the multipart/mixed.
        total: usize,
    },
    /// The innermost content.
    Content {
        /// Its Content-Type.
        content_type: String,
        /// Its size in bytes.
        size: usize,
    },
}

/// Every layer of `message`, outside in. Fails only when the outermost
/// layer cannot be read.
pub fn inspect(message: &[u8]) -> Result<Vec<Layer>> {
    crate::init();
    // A leading mbox `From ` line or HTTP request line is not the message.
    let (skip, _) = crate::open::envelope_line(message);
    let message = &message[skip..];
    let mut out = layers_of(message)?;
    // A multipart/mixed with S/MIME parts beside others: each such part's
    // layers, after a `Part` marker.
    if let [Layer::Content { content_type, .. }] = &out[..]
        && content_type == "multipart/mixed"
    {
        let e = Entity::parse(message);
        let ct = e.content_type();
        if let Some(mp) = ct
            .param("boundary")
            .and_then(|b| crate::mime::Multipart::parse(e.body(), b).ok())
        {
            let total = mp.parts.len();
            for (i, part) in mp.parts.iter().enumerate() {
                if let Ok(inner) = layers_of(part)
                    && !matches!(inner.first(), Some(Layer::Content { .. }) | None)
                {
                    out.push(Layer::Part {
                        index: i + 1,
                        total,
                    });
                    out.extend(inner);
                }
            }
        }
    }
    Ok(out)
}

fn layers_of(message: &[u8]) -> Result<Vec<Layer>> {
    let mut out = Vec::new();
    let mut current = message.to_vec();
    for _ in 0..16 {
        let e = Entity::parse(&current);
        let next = match shape(&e) {
            Err(err) if out.is_empty() => return Err(err),
            Err(_) => break,
            Ok(Shape::Plain(ct)) => {
                out.push(Layer::Content {
                    content_type: ct,
                    size: e.body().len(),
                });
                break;
            }
            Ok(Shape::Cms(p)) => match p.kind {
                CmsKind::Enveloped | CmsKind::AuthEnveloped => {
                    let env = p.envelope()?;
                    out.push(Layer::Encrypted {
                        authenticated: env.auth,
                        content_algorithm: env.content_alg,
                        recipients: env
                            .recipients
                            .into_iter()
                            .map(|r| {
                                (
                                    r.kind.to_string(),
                                    r.rid.map_or_else(|| "-".to_string(), |x| x.to_string()),
                                    r.key_alg,
                                )
                            })
                            .collect(),
                    });
                    break;
                }
                CmsKind::Signed => {
                    let (layer, content) = signed_layer(&p, false)?;
                    out.push(layer);
                    match content {
                        Some(c) => replace_content(&e, &c),
                        None => break,
                    }
                }
                CmsKind::Other => {
                    return Err(Error::Unsupported(format!("CMS content type {}", p.oid)));
                }
            },
            Ok(Shape::Detached { content, signature }) => {
                let (layer, _) = signed_layer(&signature, true)?;
                out.push(layer);
                replace_content(&e, content)
            }
        };
        current = next;
    }
    Ok(out)
}

fn signed_layer(p: &cmsinfo::Parsed, detached: bool) -> Result<(Layer, Option<Vec<u8>>)> {
    let sd = p.signed_data()?;
    let mut signers = Vec::new();
    for si in sd.signer_infos.0.iter() {
        let id = cmsinfo::signer_id(&si.sid)?.to_string();
        let time = si.signed_attrs.as_ref().and_then(|attrs| {
            attrs
                .iter()
                .find(|a| a.oid == ID_SIGNING_TIME)
                .and_then(|a| {
                    a.values
                        .iter()
                        .next()
                        .and_then(|v| v.decode_as::<x509_cert::time::Time>().ok())
                })
        });
        signers.push((
            id,
            cmsinfo::alg_name(&si.digest_alg.oid),
            cmsinfo::alg_name(&si.signature_algorithm.oid),
            time.map(|t| t.to_date_time().to_string()),
        ));
    }
    let content = cmsinfo::econtent(&sd);
    let certificates = sd.certificates.as_ref().map_or(0, |c| c.0.len());
    Ok((
        Layer::Signed {
            detached,
            certificates,
            signers,
        },
        content,
    ))
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Encrypted {
                authenticated,
                content_algorithm,
                recipients,
            } => {
                let kind = if *authenticated {
                    "AuthEnvelopedData"
                } else {
                    "EnvelopedData"
                };
                writeln!(
                    f,
                    "encrypted ({kind}), content {content_algorithm}, {} recipient(s)",
                    recipients.len()
                )?;
                for (k, id, alg) in recipients {
                    writeln!(f, "  recipient {k} {alg}: {id}")?;
                }
                Ok(())
            }
            Layer::Signed {
                detached,
                certificates,
                signers,
            } => {
                let kind = if *detached {
                    "detached multipart/signed"
                } else {
                    "opaque"
                };
                writeln!(
                    f,
                    "signed ({kind}), {} signer(s), {certificates} certificate(s)",
                    signers.len()
                )?;
                for (id, digest, sig, time) in signers {
                    writeln!(f, "  signer {digest} {sig}: {id}")?;
                    if let Some(t) = time {
                        writeln!(f, "    signing time {t}")?;
                    }
                }
                Ok(())
            }
            Layer::Part { index, total } => {
                writeln!(f, "part {index} of {total} of the multipart/mixed:")
            }
            Layer::Content { content_type, size } => {
                writeln!(f, "content {content_type}, {size} bytes")
            }
        }
    }
}
