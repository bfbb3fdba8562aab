//! What the hostile tests share to talk to `serve` and watch it: raw HTTP
//! requests (from any loopback address: 127.0.0.0/8 gives many clients)
//! and the process's memory from /proc.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// One HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `name=value` of a Set-Cookie named `name`.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.all("set-cookie")
            .into_iter()
            .map(|c| c.split(';').next().unwrap().to_string())
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of the form's hidden `csrf` field.
    pub fn csrf_field(&self) -> String {
        let v = self
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        v[..v.find('"').unwrap()].to_string()
    }

    /// A top-level field of the JSON body (a string's text, or a number or
    /// boolean as written).
    pub fn field(&self, key: &str) -> String {
        let at = self
            .body
            .find(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("no {key} in {}", self.body));
        let rest = &self.body[at + key.len() + 3..];
        match rest.strip_prefix('"') {
            Some(s) => s[..s.find('"').unwrap()].to_string(),
            None => rest[..rest.find([',', '}']).unwrap()].to_string(),
        }
    }

    /// The body as JSON (Null when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A TCP connection to `to` from the local address `from`.
pub fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let s = rt
        .block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
            sock.connect(to).await?.into_std()
        })
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

/// One HTTP/1.1 request with `Connection: close` and extra header lines,
/// from `from` when given. A connection closed without an answer is
/// status 0 with what came as the body.
pub fn http_from(
    from: Option<Ipv4Addr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut s = match from {
        None => TcpStream::connect(addr).unwrap(),
        Some(ip) => connect_from(ip, addr),
    };
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: gw.test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Answer {
            status: 0,
            headers: Vec::new(),
            body: text,
        };
    };
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.get(9..12))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

/// [`http_from`] the default loopback address.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    http_from(None, addr, method, path, headers, body)
}

/// A field of /proc/<pid>/status in kB (`VmRSS`, `VmHWM`); 0 when the
/// process is gone.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The token of the first `/{kind}/TOKEN` link in a mail (its text may be
/// quoted-printable or base64).
pub fn link_token(mail: &str, kind: &str) -> Option<String> {
    let mut text = mail.replace("=\n", "").replace("=3D", "=");
    for part in mail.split("\n\n") {
        let b64: String = part.split_whitespace().collect();
        if let Ok(d) = openssl::base64::decode_block(&b64) {
            text.push_str(&String::from_utf8_lossy(&d));
        }
    }
    let pat = format!("/{kind}/");
    let at = text.find(&pat)?;
    let rest = &text[at + pat.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    Some(rest[..end].to_string())
}
