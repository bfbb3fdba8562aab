//! SASL `PLAIN` (RFC 4616) and `LOGIN` exchanges for `AUTH` (RFC 4954):
//! base64 responses in, the next challenge or the credentials out. The
//! password never leaves this module other than to the handler, and
//! nothing here logs or formats it.

/// Where an `AUTH` exchange stands: what the next client response is.
pub(super) enum AuthStep {
    /// `PLAIN`: `authzid NUL authcid NUL passwd`.
    Plain,
    /// `LOGIN`: the user name.
    LoginUser,
    /// `LOGIN`: the password for `user`.
    LoginPassword { user: String },
}

impl std::fmt::Debug for AuthStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Plain => "Plain",
            Self::LoginUser => "LoginUser",
            Self::LoginPassword { .. } => "LoginPassword",
        })
    }
}

/// What a response amounted to.
pub(super) enum Decoded {
    /// Ask for the next response.
    Next(AuthStep),
    /// Check these.
    Credentials { user: String, password: String },
    /// `PLAIN` asked to act as another identity: refused without checking.
    Refused,
}

impl AuthStep {
    /// The 334 challenge text (base64) that asks for this step's response.
    pub(super) fn challenge(&self) -> &'static str {
        match self {
            Self::Plain => "",
            Self::LoginUser => "VXNlcm5hbWU6", // "Username:"
            Self::LoginPassword { .. } => "UGFzc3dvcmQ6", // "Password:"
        }
    }

    /// Decodes the client's base64 `response` to this step. `Err` is the
    /// reply text for a `501 5.5.2`.
    pub(super) fn decode(self, response: &[u8]) -> Result<Decoded, &'static str> {
        let bytes = base64_decode(response).ok_or("Invalid base64 data")?;
        let text = String::from_utf8(bytes).map_err(|_| "Invalid UTF-8 in response")?;
        match self {
            Self::Plain => {
                let mut parts = text.splitn(3, '\0');
                let (Some(authz), Some(user), Some(password)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err("Malformed PLAIN response");
                };
                if user.is_empty() {
                    return Err("Malformed PLAIN response");
                }
                if !authz.is_empty() && authz != user {
                    return Ok(Decoded::Refused);
                }
                Ok(Decoded::Credentials {
                    user: user.to_owned(),
                    password: password.to_owned(),
                })
            }
            Self::LoginUser => Ok(Decoded::Next(Self::LoginPassword { user: text })),
            Self::LoginPassword { user } => Ok(Decoded::Credentials {
                user,
                password: text,
            }),
        }
    }
}

/// Strict base64 (RFC 4648 §4, padded); `None` if anything is off. An
/// empty input decodes to nothing.
pub(super) fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    }
    if !input.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (i, quad) in input.chunks_exact(4).enumerate() {
        let pad = match quad {
            [_, _, b'=', b'='] => 2,
            [_, _, _, b'='] => 1,
            _ => 0,
        };
        if pad > 0 && i + 1 != quads {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c)?;
        }
        n <<= 6 * pad;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(base64_decode(b"").as_deref(), Some(&b""[..]));
        assert_eq!(base64_decode(b"Zg==").as_deref(), Some(&b"f"[..]));
        assert_eq!(base64_decode(b"Zm8=").as_deref(), Some(&b"fo"[..]));
        assert_eq!(base64_decode(b"Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(
            base64_decode(b"AGFsaWNlAHNlY3JldA==").as_deref(),
            Some(&b"\0alice\0secret"[..])
        );
        for bad in [
            &b"Zg="[..],
            b"Z===",
            b"Zg==Zm9v",
            b"Zm9v!",
            b"Zm 9v",
            b"====",
        ] {
            assert_eq!(base64_decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain() {
        let ok = |s: &[u8]| match AuthStep::Plain.decode(s) {
            Ok(Decoded::Credentials { user, password }) => Some((user, password)),
            _ => None,
        };
        assert_eq!(
            ok(b"AGFsaWNlAHNlY3JldA=="),
            Some(("alice".into(), "secret".into()))
        );
        // authzid = authcid is fine; another identity is refused.
        assert_eq!(
            ok(b"YWxpY2UAYWxpY2UAc2VjcmV0"),
            Some(("alice".into(), "secret".into()))
        );
        assert!(matches!(
            AuthStep::Plain.decode(b"Ym9iAGFsaWNlAHNlY3JldA=="),
            Ok(Decoded::Refused)
        ));
        assert!(AuthStep::Plain.decode(b"YWxpY2U=").is_err());
        assert!(AuthStep::Plain.decode(b"").is_err());
    }
}
