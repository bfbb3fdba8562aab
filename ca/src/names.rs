//! Parse, don't validate: the values that go into certificates, checked
//! once when they are made.

use std::fmt;

use crate::error::CaError;

/// A Danish CVR number: exactly 8 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cvr(String);

impl Cvr {
    /// Parses `s` (spaces allowed, e.g. "12 34 56 78").
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        if digits.len() != 8 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(CaError::Invalid(format!(
                "CVR must be exactly 8 digits, got {s:?}"
            )));
        }
        Ok(Cvr(digits))
    }

    /// The 8 digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cvr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address as MitID Erhverv accepts it: ASCII `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    /// Parses and checks `s`. Æ, Ø and Å (and any other non-ASCII letter)
    /// are refused with a message saying so, as MitID Erhverv does.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let s = s.trim();
        if let Some(c) = s.chars().find(|c| "æøåÆØÅ".contains(*c)) {
            return Err(CaError::Invalid(format!(
                "e-mail address {s:?} contains '{c}': MitID Erhverv does not accept Æ, Ø or Å in e-mail addresses; use ae, oe, aa"
            )));
        }
        if !s.is_ascii() {
            return Err(CaError::Invalid(format!(
                "e-mail address {s:?} must be plain ASCII"
            )));
        }
        let Some((local, domain)) = s.rsplit_once('@') else {
            return Err(CaError::Invalid(format!("e-mail address {s:?} has no '@'")));
        };
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && domain.len() <= 253
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !local_ok || !domain_ok {
            return Err(CaError::Invalid(format!(
                "{s:?} is not a valid e-mail address"
            )));
        }
        Ok(EmailAddress(format!(
            "{local}@{}",
            domain.to_ascii_lowercase()
        )))
    }

    /// The address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A non-empty UTF-8 name (person, organisation, certificate), trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DisplayName(String);

impl DisplayName {
    /// Parses `s`: trimmed, non-empty, at most 64 characters (the X.520
    /// upper bound for commonName and organizationName), no control characters.
    pub fn parse(what: &str, s: &str) -> Result<Self, CaError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(CaError::Invalid(format!("{what} must not be empty")));
        }
        if t.chars().count() > 64 {
            return Err(CaError::Invalid(format!(
                "{what} is longer than 64 characters"
            )));
        }
        if t.chars().any(char::is_control) {
            return Err(CaError::Invalid(format!(
                "{what} contains control characters"
            )));
        }
        Ok(DisplayName(t.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The UUID in an OCES3 `serialNumber` (`UI:DK-O:G:<uuid>`), kept across renewals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OcesUuid([u8; 16]);

impl OcesUuid {
    /// A fresh random (version 4) UUID.
    pub fn new_random() -> Result<Self, CaError> {
        let mut b = [0u8; 16];
        openssl::rand::rand_bytes(&mut b).map_err(|e| CaError::Crypto(e.to_string()))?;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Ok(OcesUuid(b))
    }

    /// Parses the canonical 8-4-4-4-12 hex form.
    pub fn parse(s: &str) -> Result<Self, CaError> {
        let bad = || CaError::Invalid(format!("{s:?} is not a UUID"));
        let parts: Vec<&str> = s.split('-').collect();
        if parts.iter().map(|p| p.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(bad());
        }
        let hex: String = parts.concat();
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(OcesUuid(b))
    }
}

impl fmt::Display for OcesUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cvr() {
        assert_eq!(Cvr::parse("12 34 56 78").unwrap().as_str(), "12345678");
        for bad in ["1234567", "123456789", "1234567a", ""] {
            assert!(Cvr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn email() {
        assert_eq!(
            EmailAddress::parse("Post@Advokat.DK").unwrap().as_str(),
            "Post@advokat.dk"
        );
        let e = EmailAddress::parse("søren@advokat.dk")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Æ, Ø or Å"), "{e}");
        for bad in ["a", "a@b", "@b.dk", "a..b@c.dk", "a@-b.dk", "a b@c.dk"] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uuid_round_trip() {
        let u = OcesUuid::new_random().unwrap();
        assert_eq!(OcesUuid::parse(&u.to_string()).unwrap(), u);
        assert!(OcesUuid::parse("a040fe26-ce78-4328-ac0e-29eeb12f46df").is_ok());
        assert!(OcesUuid::parse("a040fe26ce78-4328-ac0e-29eeb12f46df").is_err());
    }
}
