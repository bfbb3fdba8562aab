//! See tests/hostile.rs. The pages and the JSON API of a real `serve` over
//! loopback: the security headers on every answer (a CSP without
//! `'unsafe-inline'`, no inline script in any page), CSRF tokens bound to
//! the session (another session's token, or a made-up one equal to a
//! cookie, refused on a page form and on the JSON API with the cookie; the
//! cookie without a token refused, a bearer token needs none), and the
//! public application form: off by default; when on, nothing is mailed
//! until the operator accepts with `sikkermail org accept`, a CVR that has
//! an organisation is refused, the approval mail carries none of the
//! applicant's free text, and applications and access requests are
//! rate-limited per address.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Answer, http};
use crate::common::{Sink, peer};
use crate::firm;
use crate::serve::{Serve, config_file};
use crate::site::{Site, sites};

const ADMIN: &str = "driftsadmin";
const PASSWORD: &str = "Drift-Admin-Kode-1";

fn json_post(addr: SocketAddr, path: &str, auth: &[(&str, &str)], body: &str) -> Answer {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(auth);
    http(addr, "POST", path, &h, body)
}

/// The firm, an organisation administrator, and `serve` with `extra`.
fn firm_serving(site: &Site, extra: &str) -> Serve {
    firm(site);
    let o = site
        .command(
            &[
                "admin",
                "create",
                "--role",
                "org-admin",
                "--password-env",
                "PW",
                ADMIN,
            ],
            &[("PW", PASSWORD)],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    Serve::start(site, extra)
}

/// Logs in through the login page: the session cookie (`name=value`).
fn page_login(addr: SocketAddr) -> String {
    let form = http(addr, "GET", "/admin/login", &[], "");
    let pre = form.cookie("sikkermail_csrf").unwrap();
    let r = http(
        addr,
        "POST",
        "/admin/login",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", pre.as_str()),
        ],
        &format!(
            "csrf={}&name={ADMIN}&password={PASSWORD}",
            form.csrf_field()
        ),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    r.cookie("sikkermail_session").unwrap()
}

fn check_headers(what: &str, a: &Answer) {
    assert_eq!(
        a.header("x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
    assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
    let csp = a
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    let script = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap_or_else(|| panic!("{what}: no script-src in {csp}"));
    assert!(!script.contains("unsafe-inline"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
}

/// No `<script>` with content, and no `on...=` event attribute.
fn check_no_inline_script(what: &str, html: &str) {
    let lower = html.to_ascii_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag_end = i + lower[i..].find('>').unwrap();
        let tag = &lower[i..tag_end];
        assert!(tag.contains(" src="), "{what}: inline script {tag}");
        assert!(
            lower[tag_end + 1..].starts_with("</script>"),
            "{what}: a script with content"
        );
    }
    for attr in [
        " onclick=",
        " onload=",
        " onsubmit=",
        " onchange=",
        "javascript:",
    ] {
        assert!(!lower.contains(attr), "{what}: {attr}");
    }
}

#[test]
fn every_answer_carries_the_security_headers_and_no_page_an_inline_script() {
    let site = sites().into_iter().next().unwrap();
    let serve = firm_serving(&site, "[admin]\napplications = true\n");
    let a = serve.http;
    let session = page_login(a);
    let mut pages = vec![
        ("/", None),
        ("/?lang=en", None),
        ("/admin/login", None),
        ("/apply", None),
        ("/activate/unknown", None),
        ("/certificate/unknown", None),
        ("/approve/unknown", None),
        ("/bootstrap/unknown", None),
        ("/request-access/1", None),
        ("/download/unknown", None),
        ("/no/such/page", None),
    ];
    for p in [
        "/admin/users",
        "/admin/import",
        "/admin/settings",
        "/admin/certificates",
        "/admin/audit",
    ] {
        pages.push((p, Some(session.as_str())));
    }
    for (path, cookie) in pages {
        let h: Vec<(&str, &str)> = cookie.iter().map(|c| ("Cookie", *c)).collect();
        let r = http(a, "GET", path, &h, "");
        check_headers(path, &r);
        check_no_inline_script(path, &r.body);
    }
    // The JSON API, the OpenAPI document, the CA, errors and redirects.
    for (m, path) in [
        ("GET", "/api/v1/me"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/ca.pem"),
        ("GET", "/admin/users"),
        ("DELETE", "/api/v1/login"),
    ] {
        let r = http(a, m, path, &[], "");
        check_headers(&format!("{m} {path}"), &r);
    }
    let r = json_post(
        a,
        "/api/v1/login",
        &[],
        "{\"name\":\"x\",\"password\":\"y\"}",
    );
    assert_eq!(r.status, 401);
    check_headers("POST /api/v1/login", &r);
    // The certificate page's download starter is a file of its own, as
    // JavaScript, cached.
    let r = http(a, "GET", "/static/download-1.js", &[], "");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(r.header("cache-control").unwrap().contains("max-age="));
    assert!(r.body.contains("getElementById('download')"), "{}", r.body);
    check_headers("download.js", &r);
}

#[test]
fn csrf_tokens_are_bound_to_the_session() {
    let site = sites().into_iter().next().unwrap();
    let serve = firm_serving(&site, "");
    let a = serve.http;
    let (sa, sb) = (page_login(a), page_login(a));
    let settings_form = |cookie: &str| http(a, "GET", "/admin/settings", &[("Cookie", cookie)], "");
    let (ta, tb) = (
        settings_form(&sa).csrf_field(),
        settings_form(&sb).csrf_field(),
    );
    assert_ne!(ta, tb, "two sessions, two tokens");
    let allowed = || {
        let r = http(a, "GET", "/admin/settings", &[("Cookie", sa.as_str())], "");
        r.body.contains("name=\"allow_access_requests\" checked")
            || r.body.contains("id=\"allow_access_requests\" checked")
    };
    let post_form = |cookie: &str, csrf: &str| {
        http(
            a,
            "POST",
            "/admin/settings",
            &[
                ("Cookie", cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            &format!("csrf={csrf}&allow_access_requests=on"),
        )
    };
    // A page form: B's token with A's session; a made-up token equal to a
    // CSRF cookie sent along; A's session token itself.
    let made_up = "A".repeat(43);
    let with_made_up = format!("sikkermail_csrf={made_up}; {sa}");
    let session_value = sa.split_once('=').unwrap().1.to_string();
    for (what, cookie, csrf) in [
        ("another session's token", sa.as_str(), tb.as_str()),
        (
            "a token equal to a cookie",
            with_made_up.as_str(),
            made_up.as_str(),
        ),
        ("the session token", sa.as_str(), session_value.as_str()),
    ] {
        let r = post_form(cookie, csrf);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(!allowed(), "{what} changed the settings");
    }
    let r = post_form(&sa, &ta);
    assert_eq!(r.status, 200, "{}", r.body);

    // The JSON API with the session cookie: no token, another session's, a
    // made-up one, the session token: 403 and nothing changes; its own
    // token: done. With the bearer token no CSRF token is needed.
    let (ja, jb) = (
        http(a, "GET", "/api/v1/me", &[("Cookie", sa.as_str())], "").field("csrf_token"),
        http(a, "GET", "/api/v1/me", &[("Cookie", sb.as_str())], "").field("csrf_token"),
    );
    assert_eq!(ja, ta, "the page's and the API's token of one session");
    let body = |on: bool| {
        format!(
            "{{\"allow_user_certificates\":{on},\"allow_private_mitid\":false,\"allow_access_requests\":false}}"
        )
    };
    let put = |extra: &[(&str, &str)], on: bool| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(extra);
        http(a, "PUT", "/api/v1/settings", &h, &body(on))
    };
    let user_certs = || {
        http(a, "GET", "/api/v1/settings", &[("Cookie", sa.as_str())], "")
            .field("allow_user_certificates")
            == "true"
    };
    for (what, h) in [
        ("no token", vec![("Cookie", sa.as_str())]),
        (
            "another session's token",
            vec![("Cookie", sa.as_str()), ("X-CSRF-Token", jb.as_str())],
        ),
        (
            "a made-up token",
            vec![("Cookie", sa.as_str()), ("X-CSRF-Token", made_up.as_str())],
        ),
        (
            "the session token",
            vec![
                ("Cookie", sa.as_str()),
                ("X-CSRF-Token", session_value.as_str()),
            ],
        ),
    ] {
        let r = put(&h, true);
        assert_eq!(r.status, 403, "{what}: {}", r.body);
        assert!(!user_certs(), "{what} changed the settings");
    }
    let r = put(
        &[("Cookie", sa.as_str()), ("X-CSRF-Token", ja.as_str())],
        true,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(user_certs());
    let bearer = format!("Bearer {session_value}");
    let r = put(&[("Authorization", bearer.as_str())], false);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!user_certs());
    // Logging out with the cookie needs the token too.
    let r = http(a, "POST", "/api/v1/logout", &[("Cookie", sb.as_str())], "");
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(
        a,
        "POST",
        "/api/v1/logout",
        &[("Cookie", sb.as_str()), ("X-CSRF-Token", jb.as_str())],
        "",
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

fn application(i: usize, cvr: &str) -> String {
    format!(
        "{{\"name\":\"Ansøger {i} ApS\",\"cvr\":\"{cvr}\",\
         \"representative_name\":\"Kontonr. er nu 9999-1234567\",\
         \"representative_email\":\"offer{i}@elsewhere.test\",\
         \"admin_name\":\"ansoeger{i}\",\"admin_password\":\"Ansoeger-Kode-12345\"}}"
    )
}

#[test]
fn applications_are_off_by_default() {
    let site = sites().into_iter().next().unwrap();
    let serve = firm_serving(&site, "");
    let a = serve.http;
    let r = http(a, "GET", "/apply", &[], "");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("ansøgninger"), "{}", r.body);
    let home = http(a, "GET", "/", &[], "");
    assert!(!home.body.contains("/apply"), "{}", home.body);
    let r = json_post(a, "/api/v1/organisations", &[], &application(1, "11111111"));
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.field("error").contains("applications"), "{}", r.body);
    assert!(site.ok(&["org", "pending"]).trim().is_empty());
}

#[test]
fn applications_wait_for_the_operator_and_the_mail_carries_no_applicant_text() {
    if !peer("smtp-sink") {
        return;
    }
    for site in sites() {
        let d = site.dir.parent().unwrap().to_path_buf();
        let sink = Sink::start(&d.join("sink"));
        let serve = firm_serving(
            &site,
            &format!(
                "[organisation]\ndomains = [\"advokat.test\"]\n\
                 [outbound]\nrelay = \"127.0.0.1:{}\"\nrelay_tls = \"none\"\n\
                 [admin]\napplications = true\nmail_from = \"post@advokat.test\"\n",
                sink.port
            ),
        );
        let a = serve.http;
        // Eight applications, each naming an outside "representative" and
        // carrying attacker text: recorded, nothing queued, nothing sent.
        let cvrs: Vec<String> = (1..=8).map(|i| format!("2000000{i}")).collect();
        for (i, cvr) in cvrs.iter().enumerate() {
            let r = json_post(a, "/api/v1/organisations", &[], &application(i, cvr));
            assert_eq!(r.status, 201, "{}", r.body);
            assert_eq!(r.field("status"), "applied");
        }
        // The same CVR again, and the firm's own: 409.
        for cvr in [cvrs[0].as_str(), "12345678"] {
            let r = json_post(a, "/api/v1/organisations", &[], &application(9, cvr));
            assert_eq!(r.status, 409, "{cvr}: {}", r.body);
        }
        assert!(
            site.ok(&["queue", "list", "--all"]).trim().is_empty(),
            "an application queued mail"
        );
        let pending = site.ok(&["org", "pending"]);
        let ids: Vec<String> = pending
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect();
        assert_eq!(ids.len(), 8, "{pending}");
        std::thread::sleep(Duration::from_secs(2));
        assert!(sink.messages().is_empty(), "mail before the operator");

        // The operator rejects one (nothing sent) and accepts another: one
        // mail, to that representative, without the applicant's text.
        site.ok(&["org", "reject", &ids[1]]);
        let cfg = config_file(
            &site,
            "accept",
            "[admin]\nmail_from = \"post@advokat.test\"\n",
        );
        site.ok(&[
            "org",
            "accept",
            &ids[0],
            "--config",
            &cfg.display().to_string(),
            "--public-url",
            &format!("http://{a}"),
        ]);
        let o = site.run(&["org", "accept", &ids[0]]);
        assert!(!o.status.success(), "accepted twice");
        let mails = sink.wait_for(1, 30, || serve.logs());
        std::thread::sleep(Duration::from_secs(1));
        let mails2 = sink.messages();
        assert_eq!(mails2.len(), 1, "{mails2:?}");
        let (rcpts, m) = &mails[0];
        assert_eq!(rcpts, &["offer0@elsewhere.test".to_string()]);
        assert!(!m.contains("Kontonr"), "{m}");
        assert!(!m.contains("9999"), "{m}");
        let subject = m.lines().find(|l| l.starts_with("Subject:")).unwrap();
        assert!(
            !subject.contains("Ansøger") && !subject.contains("=?"),
            "{subject}"
        );
        assert!(m.contains("multipart/signed"), "not signed: {m}");
        let audit = site.ok(&["audit"]);
        assert!(
            audit.contains("org.accept") && audit.contains("org.reject"),
            "{audit}"
        );
        serve.stop();
    }
}

#[test]
fn applications_and_access_requests_are_rate_limited() {
    let site = sites().into_iter().next().unwrap();
    let serve = firm_serving(&site, "[admin]\napplications = true\n");
    let a = serve.http;
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = json_post(
            a,
            "/api/v1/organisations",
            &[],
            &application(i, &format!("3000{i:04}")),
        );
        codes.push(r.status);
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(*codes.last().unwrap(), 429, "{codes:?}");
    // The page refuses too.
    let form = http(a, "GET", "/apply", &[], "");
    let pre = form.cookie("sikkermail_csrf").unwrap();
    let r = http(
        a,
        "POST",
        "/apply",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Cookie", pre.as_str()),
        ],
        &format!(
            "csrf={}&name=X&cvr=30009999&representative_name=X&representative_email=x%40x.test&admin_name=xx&admin_password=Xx-kodeord-123456",
            form.csrf_field()
        ),
    );
    assert_eq!(r.status, 429, "{}", r.body);

    // Access requests of an organisation that allows them.
    let login = json_post(
        a,
        "/api/v1/login",
        &[],
        &format!("{{\"name\":\"{ADMIN}\",\"password\":\"{PASSWORD}\"}}"),
    );
    let bearer = format!("Bearer {}", login.field("token"));
    let r = http(
        a,
        "PUT",
        "/api/v1/settings",
        &[
            ("Authorization", bearer.as_str()),
            ("Content-Type", "application/json"),
        ],
        "{\"allow_user_certificates\":true,\"allow_private_mitid\":false,\"allow_access_requests\":true}",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let org = http(
        a,
        "GET",
        "/api/v1/me",
        &[("Authorization", bearer.as_str())],
        "",
    )
    .field("org");
    let mut codes = Vec::new();
    for i in 0..12 {
        let r = json_post(
            a,
            "/api/v1/access-requests",
            &[],
            &format!("{{\"org\":{org},\"name\":\"Person {i}\",\"email\":\"p{i}@advokat.test\"}}"),
        );
        codes.push(r.status);
    }
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(*codes.last().unwrap(), 429, "{codes:?}");
}
