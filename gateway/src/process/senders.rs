//! Who may send through the outbound listener, and as whom: the firm's keys
//! sign only for the firm's own senders (DESIGN.md, trust boundaries).
//!
//! - `MAIL FROM` must be an address of the organisation's domains
//!   ([`check_envelope`]); an SMTP AUTH account may use only the addresses
//!   it is allowed ([`service::smtp_users::SendAs`]). `<>` (a bounce from
//!   the firm's server) passes and is never signed.
//! - The `From:` field must agree with the envelope sender, and so with the
//!   key that will sign ([`check_from`]): the same address when the sender
//!   has a key of their own, else an address of exactly the same domain,
//!   whose organisation certificate signs.
//!
//! Pure functions: the caller looks the account and the keys up.

use service::MailKeys;
use service::smtp_users::SendAs;

use super::headers::field;

/// Why a sender is refused: the text after `550 5.7.1`.
pub type Refusal = String;

/// True when `address` is in one of `domains` (the domain itself or a
/// subdomain, as inbound's `is_local`).
pub fn in_domains(domains: &[String], address: &str) -> bool {
    let Some((_, d)) = address.rsplit_once('@') else {
        return false;
    };
    let d = d.to_ascii_lowercase();
    domains
        .iter()
        .any(|o| d == *o || d.ends_with(&format!(".{o}")))
}

/// The organisation's sender domains: `[organisation] domains` when
/// configured, else the domains of its own certificates' addresses (so a
/// firm that configured none still cannot sign for others).
pub fn sender_domains(configured: &[String], keys: &MailKeys) -> Vec<String> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let mut out: Vec<String> = keys
        .signers
        .iter()
        .filter_map(|k| k.email.as_deref())
        .filter_map(|e| e.rsplit_once('@'))
        .map(|(_, d)| d.to_ascii_lowercase())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `MAIL FROM` on the outbound listener. `account` is the SMTP AUTH
/// account and what it may send as, if the client authenticated.
pub fn check_envelope(
    from: &str,
    domains: &[String],
    account: Option<(&str, &SendAs)>,
) -> Result<(), Refusal> {
    if from.is_empty() {
        return Ok(());
    }
    if !in_domains(domains, from) {
        return Err(if domains.is_empty() {
            format!(
                "sender <{from}> refused: this organisation has no sender domains (set [organisation] domains)"
            )
        } else {
            format!(
                "sender <{from}> is not an address of this organisation ({}); its keys sign only for its own senders",
                domains.join(", ")
            )
        });
    }
    if let Some((name, send_as)) = account
        && !send_as.allows(from)
    {
        return Err(format!(
            "the account {name} may not send as <{from}> (sikkermail smtp-user add {name} --may-send-as ...)"
        ));
    }
    Ok(())
}

/// Every address in a `From:` value: the `<...>` parts, else the words
/// with an `@` (a bare `a@b.dk`). Quoted display names are skipped.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                chars.next();
            }
            '<' if !quoted => {
                let a: String = chars.by_ref().take_while(|c| *c != '>').collect();
                out.push(a.trim().to_ascii_lowercase());
                rest.push(' ');
            }
            _ if quoted => {}
            c => rest.push(c),
        }
    }
    if out.is_empty() {
        out.extend(
            rest.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| w.contains('@'))
                .map(|w| {
                    w.trim_matches(|c| c == '(' || c == ')')
                        .to_ascii_lowercase()
                }),
        );
    }
    out
}

/// The message's `From:` against the envelope sender, once the message is
/// in (the same rules as [`check_envelope`] for every address, plus: it
/// agrees with the key that will sign).
pub fn check_from(
    raw: &[u8],
    envelope_from: &str,
    keys: &MailKeys,
    account: Option<(&str, &SendAs)>,
    now: i64,
) -> Result<(), Refusal> {
    if envelope_from.is_empty() {
        return Ok(());
    }
    let value = field(raw, "from").unwrap_or_default();
    let from = addresses(&value);
    if from.is_empty() {
        return Err(format!(
            "the message has no From: address; it must name the sender <{envelope_from}>"
        ));
    }
    let env = envelope_from.to_ascii_lowercase();
    let env_domain = env.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    let own_key = keys
        .signer_for(&env, now)
        .is_some_and(|k| k.email.as_deref() == Some(env.as_str()) && k.kind != "organisation");
    for a in &from {
        let domain = a.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if own_key && *a != env {
            return Err(format!(
                "From: <{a}> does not agree with the envelope sender <{env}>, whose own key signs"
            ));
        }
        if !domain.eq_ignore_ascii_case(env_domain) {
            return Err(format!(
                "From: <{a}> does not agree with the envelope sender <{env}>: the signature would be {env_domain}'s"
            ));
        }
        if let Some((name, send_as)) = account
            && !send_as.allows(a)
        {
            return Err(format!("the account {name} may not send as From: <{a}>"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_addresses() {
        assert_eq!(addresses("Anna <Anna@Firma.dk>"), ["anna@firma.dk"]);
        assert_eq!(addresses("anna@firma.dk"), ["anna@firma.dk"]);
        assert_eq!(
            addresses("\"Evil <x@evil.dk>\" <anna@firma.dk>, bo@firma.dk"),
            ["anna@firma.dk"]
        );
        assert_eq!(addresses("a@x.dk, b@y.dk"), ["a@x.dk", "b@y.dk"]);
        assert_eq!(addresses("undisclosed"), Vec::<String>::new());
    }

    #[test]
    fn envelope_rules() {
        let d = vec!["firma.dk".to_string()];
        assert!(check_envelope("anna@firma.dk", &d, None).is_ok());
        assert!(check_envelope("anna@sub.firma.dk", &d, None).is_ok());
        assert!(check_envelope("", &d, None).is_ok());
        assert!(check_envelope("x@evil.dk", &d, None).is_err());
        assert!(check_envelope("x@firma.dk.evil.dk", &d, None).is_err());
        assert!(check_envelope("anna@firma.dk", &[], None).is_err());
        let relay = SendAs::from_stored("relayuser", "");
        let e = check_envelope("mette@firma.dk", &d, Some(("relayuser", &relay)));
        assert!(e.unwrap_err().contains("may not send as"));
        let anna = SendAs::from_stored("anna@firma.dk", "");
        assert!(check_envelope("anna@firma.dk", &d, Some(("anna@firma.dk", &anna))).is_ok());
        assert!(check_envelope("bo@firma.dk", &d, Some(("anna@firma.dk", &anna))).is_err());
        let all = SendAs::parse(&["@firma.dk".to_string()]).unwrap();
        assert!(check_envelope("bo@firma.dk", &d, Some(("server", &all))).is_ok());
        assert!(check_envelope("bo@sub.firma.dk", &d, Some(("server", &all))).is_err());
    }
}
