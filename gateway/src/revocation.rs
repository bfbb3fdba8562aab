//! Revocation data fetched as a mail client does (issue 9 §3): for each
//! certificate of a valid signer's chain, the OCSP responder its
//! authorityInfoAccess names (a request with a nonce; the signed answer
//! checked, `nextUpdate` respected), else the CRL its distribution point
//! names, over plain HTTP. Answers are cached in the store until their
//! `nextUpdate`, shared by every node.
//!
//! Bounded: every fetch has a deadline for the whole exchange (connect,
//! send, read), a size limit (CRLs 10 MiB, OCSP 64 KiB), at most three
//! redirects and only to `http://`; a slow or hostile responder costs a
//! message at most the deadline per address, never the queue.

use std::time::{Duration, Instant};

use openssl::x509::X509;
use smime::TrustStore;
use smime::revocation::{self, Checked, OcspQuery, Status};
use store::{CachedRevocation, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The limits of one fetch.
#[derive(Debug, Clone)]
pub struct Limits {
    /// For the whole exchange with one address.
    pub timeout: Duration,
    /// Largest CRL accepted.
    pub max_crl: usize,
    /// Largest OCSP response accepted.
    pub max_ocsp: usize,
    /// Redirects followed (to `http://` only).
    pub redirects: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(5),
            max_crl: 10 * 1024 * 1024,
            max_ocsp: 64 * 1024,
            redirects: 3,
        }
    }
}

/// What the revocation check of one chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every certificate below the anchor is known not revoked (or the
    /// chain is the anchor alone); how each was learnt.
    Good(Vec<String>),
    /// A certificate of the chain is revoked (which, why, per what).
    Revoked(String),
    /// For at least one certificate no usable answer was found (why).
    Unavailable(String),
}

/// How long an address that failed is not asked again: a responder that is
/// down or hangs costs one deadline a minute, not one per message.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// Fetches and caches revocation data. Cheap to clone (clones share the
/// memory of recent failures).
#[derive(Debug, Clone)]
pub struct Fetcher {
    store: Option<Store>,
    limits: Limits,
    handle: tokio::runtime::Handle,
    failed: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (Instant, String)>>>,
}

impl Fetcher {
    /// A fetcher caching in `store` (none: no cache), running its I/O on
    /// the current runtime.
    pub fn new(store: Option<Store>, limits: Limits) -> Self {
        Fetcher {
            store,
            limits,
            handle: tokio::runtime::Handle::current(),
            failed: Default::default(),
        }
    }

    /// Checks a valid chain (DER, signer first, anchor last), from a
    /// blocking thread (it waits for the network).
    pub fn check_chain_blocking(&self, chain: &[Vec<u8>], trust: &TrustStore) -> Verdict {
        self.handle.block_on(self.check_chain(chain, trust))
    }

    /// Checks a valid chain (DER, signer first, anchor last).
    pub async fn check_chain(&self, chain: &[Vec<u8>], trust: &TrustStore) -> Verdict {
        let certs: Vec<X509> = match chain.iter().map(|d| X509::from_der(d)).collect() {
            Ok(c) => c,
            Err(_) => return Verdict::Unavailable("the chain cannot be read".into()),
        };
        // Every level is asked even when one has no answer: a revoked CA
        // above a certificate nobody answers for is still revoked.
        let mut notes = Vec::new();
        let mut unavailable = None;
        for pair in certs.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            let who = smime::keyring::name_to_string(cert.subject_name());
            match self.status_of(cert, issuer, trust).await {
                Ok((Status::Revoked(why), source)) => {
                    return Verdict::Revoked(format!(
                        "certificate of {who} revoked ({why}; {source})"
                    ));
                }
                Ok((_, source)) => notes.push(format!("{who}: not revoked ({source})")),
                Err(why) => {
                    unavailable.get_or_insert(format!("no revocation data for {who}: {why}"));
                }
            }
        }
        match unavailable {
            None => Verdict::Good(notes),
            Some(why) if notes.is_empty() => Verdict::Unavailable(why),
            Some(why) => Verdict::Unavailable(format!("{why} ({})", notes.join("; "))),
        }
    }

    /// One certificate: OCSP first, then CRLs. `Err` says why neither gave
    /// an answer.
    async fn status_of(
        &self,
        cert: &X509,
        issuer: &X509,
        trust: &TrustStore,
    ) -> Result<(Status, String), String> {
        // Certificates of this installation's own CAs: its records are the
        // answer (no round trip to itself; the issuing CA made at `init`
        // names no responder).
        if let Some(own) = self.own_records(cert, issuer).await {
            return Ok(own);
        }
        let (ocsp, crls) = revocation::urls(cert);
        if ocsp.is_empty() && crls.is_empty() {
            return Err("the certificate names no OCSP responder or CRL (http)".into());
        }
        let mut why = Vec::new();
        for url in &ocsp {
            match self.ocsp(url, cert, issuer, trust).await {
                Ok(Status::Unknown) => {
                    why.push(format!("OCSP {url}: the responder does not know it"))
                }
                Ok(s) => return Ok((s, format!("OCSP {url}"))),
                Err(e) => why.push(format!("OCSP {url}: {e}")),
            }
        }
        for url in &crls {
            match self.crl(url, cert, issuer).await {
                Ok(s) => return Ok((s, format!("CRL {url}"))),
                Err(e) => why.push(format!("CRL {url}: {e}")),
            }
        }
        Err(why.join("; "))
    }

    /// When `issuer` is one of the internal CAs' certificates (byte for
    /// byte, not only by name), the status of `cert` in the store.
    async fn own_records(&self, cert: &X509, issuer: &X509) -> Option<(Status, String)> {
        let store = self.store.as_ref()?;
        let name = smime::keyring::name_to_string(issuer.subject_name());
        let der = issuer.to_der().ok()?;
        let cas = store.ca_certificates_named(&name).await.ok()?;
        let (org, _) = cas.into_iter().find(|(_, c)| {
            X509::from_pem(c.pem.as_bytes())
                .and_then(|x| x.to_der())
                .is_ok_and(|d| d == der)
        })?;
        let serial = service::certs::serial_hex(cert);
        let row = store
            .certificate_by_serial(org, &name, &serial)
            .await
            .ok()??;
        let status = if row.status == "revoked" {
            Status::Revoked(
                row.revocation_reason
                    .unwrap_or_else(|| "unspecified".into()),
            )
        } else {
            Status::Good
        };
        Some((status, "the internal CA's own records".into()))
    }

    async fn ocsp(
        &self,
        url: &str,
        cert: &X509,
        issuer: &X509,
        trust: &TrustStore,
    ) -> Result<Status, String> {
        let now = store::now();
        let key = revocation::ocsp_key(cert, issuer)?;
        if let Some(c) = self.cached("ocsp", &key, now).await
            && let Ok(ok) = revocation::check_ocsp_cached(&c.body, cert, issuer, trust, now)
        {
            return Ok(ok.status);
        }
        let q = OcspQuery::new(cert, issuer)?;
        let body = self
            .fetch(
                url,
                Some(("application/ocsp-request", &q.der)),
                self.limits.max_ocsp,
            )
            .await?;
        let checked = q.check(&body, trust, now)?;
        self.remember("ocsp", &key, url, body, &checked, now).await;
        Ok(checked.status)
    }

    async fn crl(&self, url: &str, cert: &X509, issuer: &X509) -> Result<Status, String> {
        let now = store::now();
        if let Some(c) = self.cached("crl", url, now).await
            && let Ok(ok) = revocation::check_crl(&c.body, cert, issuer, now)
        {
            return Ok(ok.status);
        }
        let body = self.fetch(url, None, self.limits.max_crl).await?;
        let checked = revocation::check_crl(&body, cert, issuer, now)?;
        self.remember("crl", url, url, body, &checked, now).await;
        Ok(checked.status)
    }

    async fn cached(&self, kind: &str, key: &str, now: i64) -> Option<CachedRevocation> {
        let st = self.store.as_ref()?;
        match st.revocation_get(kind, key, now).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "revocation cache: read failed");
                None
            }
        }
    }

    /// Caches an answer that says until when it holds.
    async fn remember(
        &self,
        kind: &str,
        key: &str,
        url: &str,
        body: Vec<u8>,
        checked: &Checked,
        now: i64,
    ) {
        let (Some(st), Some(next)) = (&self.store, checked.next_update) else {
            return;
        };
        let entry = CachedRevocation {
            url: url.to_string(),
            body,
            fetched_at: now,
            next_update: next,
        };
        if let Err(e) = st.revocation_put(kind, key, &entry).await {
            tracing::warn!(error = %e, "revocation cache: write failed");
        }
    }

    /// GET (or POST `body` as `content type`) `url`, bounded. An address
    /// that failed less than [`RETRY_AFTER`] ago fails at once, saying so.
    pub async fn fetch(
        &self,
        url: &str,
        post: Option<(&str, &[u8])>,
        max: usize,
    ) -> Result<Vec<u8>, String> {
        let recent = self
            .failed
            .lock()
            .ok()
            .and_then(|f| f.get(url).cloned())
            .filter(|(at, _)| at.elapsed() < RETRY_AFTER);
        if let Some((at, why)) = recent {
            return Err(format!(
                "{why} (failed {} s ago; asked again after {} s)",
                at.elapsed().as_secs(),
                RETRY_AFTER.as_secs()
            ));
        }
        let r = self.fetch_now(url, post, max).await;
        if let Ok(mut f) = self.failed.lock() {
            match &r {
                Ok(_) => {
                    f.remove(url);
                }
                Err(why) => {
                    f.retain(|_, (at, _)| at.elapsed() < RETRY_AFTER);
                    f.insert(url.to_string(), (Instant::now(), why.clone()));
                }
            }
        }
        r
    }

    async fn fetch_now(
        &self,
        url: &str,
        post: Option<(&str, &[u8])>,
        max: usize,
    ) -> Result<Vec<u8>, String> {
        let mut url = url.to_string();
        for _ in 0..=self.limits.redirects {
            let exchange = http_exchange(&url, post, max);
            let (code, location, body) = tokio::time::timeout(self.limits.timeout, exchange)
                .await
                .map_err(|_| {
                    format!("no answer within {} s", self.limits.timeout.as_secs_f64())
                })??;
            match code {
                200 => return Ok(body),
                301 | 302 | 303 | 307 | 308 => {
                    let loc = location.ok_or(format!("HTTP {code} without a Location"))?;
                    if !loc.to_ascii_lowercase().starts_with("http://") {
                        return Err(format!("redirect to another scheme refused: {loc}"));
                    }
                    url = loc;
                }
                c => return Err(format!("HTTP {c}")),
            }
        }
        Err(format!("more than {} redirects", self.limits.redirects))
    }
}

/// `http://host[:port]/path` -> (host, port, path).
fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .get(..7)
        .filter(|s| s.eq_ignore_ascii_case("http://"))
        .map(|_| &url[7..])
        .ok_or_else(|| format!("not an http:// address: {url}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']'),
            p.parse::<u16>().map_err(|_| format!("bad port in {url}"))?,
        ),
        _ => (authority, 80),
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '@') {
        return Err(format!("bad host in {url}"));
    }
    if path.contains(|c: char| c.is_control() || c == ' ') {
        return Err(format!("bad path in {url}"));
    }
    Ok((host.to_string(), port, path.to_string()))
}

/// One HTTP/1.0 exchange: (status, Location, body). Reads at most `max`
/// body bytes (and 16 KiB of header).
async fn http_exchange(
    url: &str,
    post: Option<(&str, &[u8])>,
    max: usize,
) -> Result<(u16, Option<String>, Vec<u8>), String> {
    let (host, port, path) = parse_http_url(url)?;
    let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let mut req = match post {
        None => format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n"),
        Some((ct, body)) => format!(
            "POST {path} HTTP/1.0\r\nHost: {host}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n",
            body.len()
        ),
    }
    .into_bytes();
    req.extend_from_slice(b"User-Agent: sikkermail\r\nConnection: close\r\n\r\n");
    if let Some((_, body)) = post {
        req.extend_from_slice(body);
    }
    s.write_all(&req)
        .await
        .map_err(|e| format!("sending to {host}:{port}: {e}"))?;
    const HEAD_MAX: usize = 16 * 1024;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut head_end = None;
    loop {
        let n = s
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading from {host}:{port}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if head_end.is_none() {
            head_end = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            if head_end.is_none() && buf.len() > HEAD_MAX {
                return Err("the answer's header is too long".into());
            }
        }
        if let Some(h) = head_end
            && buf.len() - h > max
        {
            return Err(format!("the answer is larger than {max} bytes"));
        }
    }
    let h = head_end.ok_or("the answer ended inside its header")?;
    let head = String::from_utf8_lossy(&buf[..h]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|_| status.starts_with("HTTP/"))
        .ok_or_else(|| {
            format!(
                "not an HTTP answer: {:?}",
                status.chars().take(40).collect::<String>()
            )
        })?;
    let mut location = None;
    let mut length = None;
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            if n.trim().eq_ignore_ascii_case("location") {
                location = Some(v.trim().to_string());
            } else if n.trim().eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = buf.split_off(h);
    if let Some(n) = length
        && body.len() > n
    {
        body.truncate(n);
    }
    Ok((code, location, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_http_url("http://ca.example:8080/crl/1.crl").unwrap(),
            ("ca.example".into(), 8080, "/crl/1.crl".into())
        );
        assert_eq!(
            parse_http_url("HTTP://ocsp.example").unwrap(),
            ("ocsp.example".into(), 80, "/".into())
        );
        assert_eq!(
            parse_http_url("http://[::1]:81/x").unwrap(),
            ("::1".into(), 81, "/x".into())
        );
        for bad in [
            "https://x/",
            "ldap://x/",
            "http://:80/",
            "http://a b/",
            "http://x/a b",
            "http://u@x/",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad}");
        }
    }
}
