//! The web pages: server-rendered HTML, Danish (English with `?lang=en`),
//! plain HTML and a little CSS, no scripts but one file that starts the
//! certificate download (`/static/`, see [`crate::web`]: no inline script).
//!
//! - Employees, from the e-mailed links: `/activate/{token}` (activation
//!   code, password, terms), `/certificate/{token}` (password, terms,
//!   modern or compatible file; shows the generated password once and
//!   starts the download from `/download/{ticket}`), and
//!   `/request-access/{org}` when the organisation allows it.
//! - The ledelsesrepræsentant: `/approve/{token}`. Applicants: `/apply`.
//!   The first administrator: `/bootstrap/{token}`.
//! - Administrators, under `/admin/`: login, users (status filter, bulk
//!   activation with a receipt), import with a row-by-row report, one user
//!   (edit, activation code, resend, block, order a certificate), settings,
//!   certificates (revoke), audit.
//!
//! Every form carries a CSRF token derived from the session (logged in) or
//! from the random `sikkermail_csrf` cookie (before login; HttpOnly,
//! SameSite=Strict), never equal to a cookie ([`crate::web`]), so another
//! site cannot post a form here.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::header::{
    ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION, SET_COOKIE,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use ca::pkcs12::Flavour;
use serde::Deserialize;
use service::users::{self, IDENT_MEANS, UserPatch};
use service::{Actor, Service, Settings, Status};

use crate::AppState;
use crate::auth::{Need, allows, client_ip, session_of, token_of};
use crate::error::ApiError;

/// The page routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/activate/{token}", get(activate_form).post(activate_post))
        .route("/certificate/{token}", get(cert_form).post(cert_post))
        .route("/download/{ticket}", get(download))
        .route("/approve/{token}", get(approve_form).post(approve_post))
        .route(
            "/bootstrap/{token}",
            get(bootstrap_form).post(bootstrap_post),
        )
        .route("/apply", get(apply_form).post(apply_post))
        .route(
            "/request-access/{org}",
            get(request_form).post(request_post),
        )
        .route("/admin", get(admin_home))
        .route("/admin/", get(admin_home))
        .route("/admin/login", get(login_form).post(login_post))
        .route("/admin/logout", post(logout_post))
        .route("/admin/users", get(users_page))
        .route("/admin/users/activate", post(bulk_activate))
        .route("/admin/import", get(import_form).post(import_post))
        .route("/admin/import/template", get(page_template))
        .route("/admin/users/{id}", get(user_page).post(user_post))
        .route("/admin/users/{id}/action", post(user_action))
        .route("/admin/settings", get(settings_page).post(settings_post))
        .route("/admin/certificates", get(certs_page).post(certs_post))
        .route("/admin/audit", get(audit_page))
}

/// HTML-escapes text.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Danish or English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Danish (the default).
    Da,
    /// English.
    En,
}

impl Lang {
    fn t<'a>(self, da: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Da => da,
            Lang::En => en,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Da => "da",
            Lang::En => "en",
        }
    }

    /// `?lang=en` added to a link when English.
    fn q(self) -> &'static str {
        match self {
            Lang::Da => "",
            Lang::En => "?lang=en",
        }
    }
}

#[derive(Debug, Deserialize, Default)]
struct LangQuery {
    lang: Option<String>,
    status: Option<String>,
}

fn lang_of(q: &LangQuery, headers: &HeaderMap) -> Lang {
    match q.lang.as_deref() {
        Some("en") => return Lang::En,
        Some("da") => return Lang::Da,
        _ => {}
    }
    let al = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if al.trim_start().starts_with("en") {
        Lang::En
    } else {
        Lang::Da
    }
}

const CSS: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
nav a{margin-right:1rem}table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.3rem;text-align:left}\
.err{background:#fdd;border:1px solid #c00;padding:.5rem}.ok{background:#dfd;border:1px solid #080;padding:.5rem}\
.secret{font-family:monospace;font-size:1.4rem;background:#ffd;padding:.5rem;border:1px dashed #aa0}\
label{display:block;margin:.5rem 0}input[type=text],input[type=password],input[type=email]{width:20rem}";

const CSRF_COOKIE: &str = "sikkermail_csrf";

/// A page, with the CSRF cookie when `csrf` is new.
fn page(
    lang: Lang,
    title: &str,
    nav: bool,
    body: &str,
    status: StatusCode,
    csrf: &Csrf,
) -> Response {
    let nav = if nav {
        format!(
            "<nav><a href=\"/admin/users{q}\">{}</a><a href=\"/admin/import{q}\">{}</a>\
             <a href=\"/admin/settings{q}\">{}</a><a href=\"/admin/certificates{q}\">{}</a>\
             <a href=\"/admin/audit{q}\">{}</a>\
             <form method=\"post\" action=\"/admin/logout\" style=\"display:inline\">{}\
             <button id=\"logout\">{}</button></form></nav>",
            lang.t("Brugere", "Users"),
            lang.t("Importér", "Import"),
            lang.t("Indstillinger", "Settings"),
            lang.t("Certifikater", "Certificates"),
            lang.t("Log", "Audit"),
            csrf.field(),
            lang.t("Log ud", "Log out"),
            q = lang.q(),
        )
    } else {
        String::new()
    };
    let other = match lang {
        Lang::Da => "<a href=\"?lang=en\">English</a>",
        Lang::En => "<a href=\"?lang=da\">Dansk</a>",
    };
    let html = format!(
        "<!doctype html><html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} - sikkermail</title>\
         <style>{CSS}</style></head><body>{nav}<h1>{}</h1>{body}<hr><small>sikkermail · {other}</small></body></html>",
        lang.code(),
        esc(title),
        esc(title)
    );
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    // The security headers (CSP, nosniff, ...) come from one layer:
    // crate::web::security_headers.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(cookie) = &csrf.new_cookie
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{CSRF_COOKIE}={cookie}; HttpOnly; SameSite=Strict; Path=/"
        ))
    {
        h.append(SET_COOKIE, v);
    }
    r
}

/// The CSRF token of this browser: derived from its session when it has
/// one, else from its `sikkermail_csrf` cookie (made when missing).
#[derive(Debug, Clone)]
struct Csrf {
    value: String,
    /// The new cookie to set (and then no form can pass yet).
    new_cookie: Option<String>,
}

/// The value of cookie `name` (non-empty).
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_string())
}

impl Csrf {
    fn of(headers: &HeaderMap) -> Csrf {
        if let Some(session) = cookie_value(headers, crate::auth::COOKIE_NAME) {
            return Csrf {
                value: crate::web::session_csrf(&session),
                new_cookie: None,
            };
        }
        match cookie_value(headers, CSRF_COOKIE).filter(|v| v.len() == 43) {
            Some(c) => Csrf {
                value: crate::web::pre_session_csrf(&c),
                new_cookie: None,
            },
            None => {
                let mut b = [0u8; 32];
                let _ = openssl::rand::rand_bytes(&mut b);
                let c = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
                Csrf {
                    value: crate::web::pre_session_csrf(&c),
                    new_cookie: Some(c),
                }
            }
        }
    }

    fn field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            esc(&self.value)
        )
    }

    /// True when the form's token is this browser's (constant time).
    fn check(&self, form: &Form) -> bool {
        self.new_cookie.is_none()
            && form
                .get("csrf")
                .is_some_and(|v| crate::web::same(v, &self.value))
    }
}

/// A urlencoded form (repeated keys kept).
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(body: &[u8]) -> Form {
        Form(form_urlencoded::parse(body).into_owned().collect())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    fn text(&self, k: &str) -> String {
        self.get(k).unwrap_or("").to_string()
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("on" | "true" | "1" | "yes"))
    }
}

fn msg(kind: &str, text: &str) -> String {
    format!("<p class=\"{kind}\" id=\"{kind}\">{}</p>", esc(text))
}

fn error_text(e: &ApiError) -> String {
    e.message.clone()
}

fn bad_csrf(lang: Lang, csrf: &Csrf) -> Response {
    page(
        lang,
        lang.t("Formularen er udløbet", "The form has expired"),
        false,
        &msg(
            "err",
            lang.t(
                "Formularen kunne ikke godkendes (CSRF). Gå tilbage, genindlæs siden og prøv igen.",
                "The form could not be verified (CSRF). Go back, reload the page and try again.",
            ),
        ),
        StatusCode::FORBIDDEN,
        csrf,
    )
}

fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn token_path(p: Result<Path<String>, PathRejection>) -> String {
    p.map(|Path(t)| t).unwrap_or_default()
}

// ---------------------------------------------------------------- public

async fn home(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let apply = if st.config.applications {
        format!(
            "<li><a href=\"/apply{}\">{}</a></li>",
            lang.q(),
            lang.t("Opret en organisation", "Apply for an organisation")
        )
    } else {
        String::new()
    };
    page(
        lang,
        "sikkermail",
        false,
        &format!(
            "<ul><li><a href=\"/admin/login{q}\">{}</a></li>{apply}\
             <li><a href=\"/ca.pem\">{}</a></li></ul>",
            lang.t("Log ind som administrator", "Administrator login"),
            lang.t("CA-certifikater", "CA certificates"),
            q = lang.q()
        ),
        StatusCode::OK,
        &csrf,
    )
}

fn activation_body(lang: Lang, info: &users::LinkInfo, csrf: &Csrf, error: Option<&str>) -> String {
    let code = if info.user.has_code {
        format!(
            "<label>{} <input type=\"text\" name=\"code\" id=\"code\" inputmode=\"numeric\" autocomplete=\"off\" maxlength=\"9\"></label>",
            lang.t(
                "Aktiveringskode (8 cifre fra din administrator)",
                "Activation code (8 digits from your administrator)"
            )
        )
    } else {
        String::new()
    };
    format!(
        "{}<p>{} <b>{}</b> ({}), {}</p><form method=\"post\">{}{code}\
         <label>{} <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"new-password\"></label>\
         <label>{} <input type=\"password\" name=\"password2\" id=\"password2\" autocomplete=\"new-password\"></label>\
         <label><input type=\"checkbox\" name=\"accept\" id=\"accept\"> {}</label>\
         <button id=\"submit\">{}</button></form>",
        error.map(|e| msg("err", e)).unwrap_or_default(),
        lang.t("Aktivering af", "Activating"),
        esc(&info.user.name),
        esc(&info.user.email),
        esc(&info.org.name),
        csrf.field(),
        lang.t("Vælg en adgangskode (mindst 10 tegn)", "Choose a password (at least 10 characters)"),
        lang.t("Gentag adgangskoden", "Repeat the password"),
        lang.t(
            "Jeg accepterer vilkårene for brug af sikkermail og, hvis organisationen tillader det, privat MitID",
            "I accept the terms of use of sikkermail and, where the organisation allows it, private MitID"
        ),
        lang.t("Aktivér", "Activate"),
    )
}

fn gone(lang: Lang, csrf: &Csrf) -> Response {
    page(
        lang,
        lang.t("Linket kan ikke bruges", "The link cannot be used"),
        false,
        &msg(
            "err",
            lang.t(
                "Linket er ukendt, allerede brugt eller udløbet. Bed din administrator om et nyt.",
                "The link is unknown, already used or expired. Ask your administrator for a new one.",
            ),
        ),
        StatusCode::NOT_FOUND,
        csrf,
    )
}

async fn activate_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let token = token_path(token);
    match users::peek_link(&st.svc, &token, "activation").await {
        Ok(Some(info)) => page(
            lang,
            lang.t("Aktivér din bruger", "Activate your user"),
            false,
            &activation_body(lang, &info, &csrf, None),
            StatusCode::OK,
            &csrf,
        ),
        _ => gone(lang, &csrf),
    }
}

async fn activate_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    ip: crate::auth::ClientIp,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let token = token_path(token);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    let Ok(Some(info)) = users::peek_link(&st.svc, &token, "activation").await else {
        return gone(lang, &csrf);
    };
    let again = |e: &str, status| {
        page(
            lang,
            lang.t("Aktivér din bruger", "Activate your user"),
            false,
            &activation_body(lang, &info, &csrf, Some(e)),
            status,
            &csrf,
        )
    };
    if form.text("password") != form.text("password2") {
        return again(
            lang.t(
                "De to adgangskoder er ikke ens.",
                "The two passwords differ.",
            ),
            StatusCode::BAD_REQUEST,
        );
    }
    let code = form.get("code").filter(|c| !c.is_empty());
    match users::complete_activation(
        &st.svc,
        &token,
        code,
        &form.text("password"),
        form.flag("accept"),
        ip.0.as_deref(),
    )
    .await {
        Ok(u) => page(
            lang,
            lang.t("Din bruger er aktiveret", "Your user is active"),
            false,
            &msg(
                "ok",
                &format!(
                    "{} {}. {}",
                    u.name,
                    lang.t("er nu aktiv", "is now active"),
                    lang.t(
                        "Husk din adgangskode: du skal bruge den, når du henter dit brugercertifikat.",
                        "Keep your password: you need it to download your certificate."
                    )
                ),
            ),
            StatusCode::OK,
            &csrf,
        ),
        Err(e) => {
            let e = ApiError::from(e);
            again(&error_text(&e), e.status)
        }
    }
}

fn cert_body(lang: Lang, info: &users::LinkInfo, csrf: &Csrf, error: Option<&str>) -> String {
    format!(
        "{}<p>{} <b>{}</b> ({}), {}</p><form method=\"post\">{}\
         <label>{} <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label>\
         <fieldset><legend>{}</legend>\
         <label><input type=\"radio\" name=\"flavour\" value=\"modern\" id=\"modern\" checked> {}</label>\
         <label><input type=\"radio\" name=\"flavour\" value=\"compatible\" id=\"compatible\"> {}</label></fieldset>\
         <label><input type=\"checkbox\" name=\"accept\" id=\"accept\"> {}</label>\
         <button id=\"submit\">{}</button></form>",
        error.map(|e| msg("err", e)).unwrap_or_default(),
        lang.t("Brugercertifikat til", "Certificate for"),
        esc(&info.user.name),
        esc(&info.user.email),
        esc(&info.org.name),
        csrf.field(),
        lang.t("Din adgangskode (valgt ved aktiveringen)", "Your password (chosen at activation)"),
        lang.t("Filformat", "File format"),
        lang.t("Moderne (AES-256): Outlook 365, Apple Mail, Thunderbird", "Modern (AES-256): Outlook 365, Apple Mail, Thunderbird"),
        lang.t("Kompatibel med ældre mailprogrammer (3DES)", "Compatible with older mail programs (3DES)"),
        lang.t(
            "Jeg accepterer vilkårene for brugercertifikater: jeg passer på certifikatet og adgangskoden og giver dem ikke videre",
            "I accept the terms for user certificates: I keep the certificate and its password safe and share neither"
        ),
        lang.t("Hent certifikat", "Get certificate"),
    )
}

const INSTRUCTIONS_DA: &str = "<h2>Sådan installerer du certifikatet</h2>\
<h3>Outlook (Windows)</h3><ol><li>Dobbeltklik på .p12-filen og indtast adgangskoden ovenfor.</li>\
<li>Outlook: Filer &gt; Indstillinger &gt; Sikkerhedscenter &gt; Indstillinger for Sikkerhedscenter &gt; Mailsikkerhed: vælg certifikatet under Indstillinger.</li></ol>\
<h3>Apple Mail (macOS)</h3><ol><li>Dobbeltklik på .p12-filen; Nøglering spørger om adgangskoden.</li>\
<li>Genstart Mail: knapperne for signering og kryptering vises, når du skriver en ny mail.</li></ol>\
<h3>Thunderbird</h3><ol><li>Indstillinger &gt; Privatliv og sikkerhed &gt; Certifikater &gt; Håndter certifikater &gt; Dine certifikater &gt; Importér.</li>\
<li>Kontoindstillinger &gt; End-to-end-kryptering &gt; S/MIME: vælg certifikatet til signering og kryptering.</li></ol>\
<p>Ældre programmer (Outlook 2013 og før, Windows 7) kan kun åbne den kompatible fil.</p>";

const INSTRUCTIONS_EN: &str = "<h2>Installing the certificate</h2>\
<h3>Outlook (Windows)</h3><ol><li>Double-click the .p12 file and enter the password above.</li>\
<li>Outlook: File &gt; Options &gt; Trust Center &gt; Trust Center Settings &gt; Email Security: choose the certificate under Settings.</li></ol>\
<h3>Apple Mail (macOS)</h3><ol><li>Double-click the .p12 file; Keychain Access asks for the password.</li>\
<li>Restart Mail: the sign and encrypt buttons appear when you write a new message.</li></ol>\
<h3>Thunderbird</h3><ol><li>Settings &gt; Privacy &amp; Security &gt; Certificates &gt; Manage Certificates &gt; Your Certificates &gt; Import.</li>\
<li>Account Settings &gt; End-To-End Encryption &gt; S/MIME: choose the certificate for signing and encryption.</li></ol>\
<p>Older programs (Outlook 2013 and earlier, Windows 7) open only the compatible file.</p>";

async fn cert_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let token = token_path(token);
    match users::peek_link(&st.svc, &token, "certificate").await {
        Ok(Some(info)) => page(
            lang,
            lang.t("Hent dit brugercertifikat", "Get your user certificate"),
            false,
            &format!(
                "{}{}",
                cert_body(lang, &info, &csrf, None),
                lang.t(INSTRUCTIONS_DA, INSTRUCTIONS_EN)
            ),
            StatusCode::OK,
            &csrf,
        ),
        _ => gone(lang, &csrf),
    }
}

async fn cert_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    ip: crate::auth::ClientIp,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let token = token_path(token);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    let Ok(Some(info)) = users::peek_link(&st.svc, &token, "certificate").await else {
        return gone(lang, &csrf);
    };
    let flavour = if form.get("flavour") == Some("compatible") {
        Flavour::Compatible
    } else {
        Flavour::Modern
    };
    match users::collect_certificate(
        &st.svc,
        &token,
        &form.text("password"),
        form.flag("accept"),
        flavour,
        ip.0.as_deref(),
    )
    .await
    {
        Ok(c) => {
            let name = format!(
                "{}{}.p12",
                info.user.email.split('@').next().unwrap_or("certifikat"),
                if flavour == Flavour::Compatible {
                    "-kompatibel"
                } else {
                    ""
                }
            );
            let ticket = match st.downloads.put(c.p12, name.clone()) {
                Ok(t) => t,
                Err(e) => {
                    return page(
                        lang,
                        "Fejl",
                        false,
                        &msg("err", &e.message),
                        e.status,
                        &csrf,
                    );
                }
            };
            page(
                lang,
                lang.t("Dit brugercertifikat er klar", "Your user certificate is ready"),
                false,
                &format!(
                    "<p>{}</p><p class=\"secret\" id=\"p12-password\">{}</p>\
                     <p>{}</p><p><a id=\"download\" href=\"/download/{}\" download=\"{}\">{} {}</a></p>\
                     <script src=\"{}\" defer></script>{}",
                    lang.t(
                        "Adgangskoden til certifikatfilen vises kun denne ene gang. Skriv den ned, eller gem den i din adgangskodemanager:",
                        "The password of the certificate file is shown this once only. Write it down or keep it in your password manager:"
                    ),
                    esc(&c.password),
                    lang.t("Hentningen starter af sig selv. Ellers:", "The download starts by itself. Otherwise:"),
                    esc(&ticket),
                    esc(&name),
                    lang.t("Hent", "Download"),
                    esc(&name),
                    crate::web::DOWNLOAD_JS_PATH,
                    lang.t(INSTRUCTIONS_DA, INSTRUCTIONS_EN),
                ),
                StatusCode::OK,
                &csrf,
            )
        }
        Err(e) => {
            let e = ApiError::from(e);
            page(
                lang,
                lang.t("Hent dit brugercertifikat", "Get your user certificate"),
                false,
                &cert_body(lang, &info, &csrf, Some(&error_text(&e))),
                e.status,
                &csrf,
            )
        }
    }
}

async fn download(
    State(st): State<AppState>,
    ticket: Result<Path<String>, PathRejection>,
) -> Response {
    let ticket = token_path(ticket);
    match st.downloads.take(&ticket) {
        Some((bytes, name)) => {
            let disp = format!("attachment; filename=\"{}\"", name.replace(['"', '\\'], ""));
            let mut r = bytes.into_response();
            let h = r.headers_mut();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-pkcs12"),
            );
            if let Ok(v) = HeaderValue::from_str(&disp) {
                h.insert(CONTENT_DISPOSITION, v);
            }
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "the download is gone (used or expired)",
        )
        .into_response(),
    }
}

async fn approve_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let token = token_path(token);
    match st.svc.approval_info(&token).await {
        Ok(Some(org)) => page(
            lang,
            lang.t("Godkend organisationen", "Approve the organisation"),
            false,
            &format!(
                "<p>{} <b>{}</b> (CVR {}). {}: {}</p><form method=\"post\">{}\
                 <label><input type=\"checkbox\" name=\"confirm\" id=\"confirm\"> {}</label>\
                 <button id=\"submit\">{}</button></form>",
                lang.t(
                    "Der er ansøgt om at oprette",
                    "An application was made to create"
                ),
                esc(&org.name),
                esc(&org.cvr),
                lang.t("Ledelsesrepræsentant", "Representative"),
                esc(&org.representative_name.unwrap_or_default()),
                csrf.field(),
                lang.t(
                    "Jeg er ledelsesrepræsentant og godkender, at organisationen oprettes",
                    "I am the representative and approve the organisation"
                ),
                lang.t("Godkend", "Approve"),
            ),
            StatusCode::OK,
            &csrf,
        ),
        _ => gone(lang, &csrf),
    }
}

async fn approve_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    if !form.flag("confirm") {
        return page(
            lang,
            lang.t("Godkend organisationen", "Approve the organisation"),
            false,
            &msg(
                "err",
                lang.t("Sæt kryds for at godkende.", "Tick the box to approve."),
            ),
            StatusCode::BAD_REQUEST,
            &csrf,
        );
    }
    match st.svc.approve_organisation(&token_path(token)).await {
        Ok(org) => page(
            lang,
            lang.t("Organisationen er godkendt", "The organisation is approved"),
            false,
            &msg("ok", &format!("{} (CVR {})", org.name, org.cvr)),
            StatusCode::OK,
            &csrf,
        ),
        Err(_) => gone(lang, &csrf),
    }
}

async fn bootstrap_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    if !st
        .svc
        .bootstrap_valid(&token_path(token))
        .await
        .unwrap_or(false)
    {
        return gone(lang, &csrf);
    }
    page(
        lang,
        lang.t(
            "Opret den første administrator",
            "Create the first administrator",
        ),
        false,
        &admin_account_form(lang, &csrf),
        StatusCode::OK,
        &csrf,
    )
}

fn admin_account_form(lang: Lang, csrf: &Csrf) -> String {
    format!(
        "<p>{}</p><form method=\"post\">{}<label>{} <input type=\"text\" name=\"name\" id=\"name\"></label>\
         <label>{} <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"new-password\"></label>\
         <button id=\"submit\">{}</button></form>",
        esc(&format!(
            "{} {}",
            lang.t(
                "Organisationsadministrator for",
                "Organisation administrator of"
            ),
            lang.t("denne installation", "this installation")
        )),
        csrf.field(),
        lang.t("Brugernavn", "Login name"),
        lang.t(
            "Adgangskode (mindst 12 tegn)",
            "Password (at least 12 characters)"
        ),
        lang.t("Opret", "Create"),
    )
}

async fn bootstrap_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    match st
        .svc
        .bootstrap(
            &token_path(token),
            &form.text("name"),
            &form.text("password"),
        )
        .await
    {
        Ok(a) => page(
            lang,
            lang.t(
                "Administratoren er oprettet",
                "The administrator is created",
            ),
            false,
            &format!(
                "{}<p><a href=\"/admin/login{}\">{}</a></p>",
                msg("ok", &a.name),
                lang.q(),
                lang.t("Log ind", "Log in")
            ),
            StatusCode::OK,
            &csrf,
        ),
        Err(e) => {
            let e = ApiError::from(e);
            page(
                lang,
                "sikkermail",
                false,
                &msg("err", &e.message),
                e.status,
                &csrf,
            )
        }
    }
}

fn apply_body(lang: Lang, csrf: &Csrf, error: Option<&str>) -> String {
    let f = |id: &str, label: &str, kind: &str| {
        format!(
            "<label>{} <input type=\"{kind}\" name=\"{id}\" id=\"{id}\"></label>",
            esc(label)
        )
    };
    format!(
        "{}<form method=\"post\">{}{}{}{}{}{}{}<button id=\"submit\">{}</button></form>",
        error.map(|e| msg("err", e)).unwrap_or_default(),
        csrf.field(),
        f(
            "name",
            lang.t("Organisationens navn", "Organisation name"),
            "text"
        ),
        f("cvr", "CVR", "text"),
        f(
            "representative_name",
            lang.t("Ledelsesrepræsentantens navn", "Representative's name"),
            "text"
        ),
        f(
            "representative_email",
            lang.t("Ledelsesrepræsentantens e-mail", "Representative's e-mail"),
            "email"
        ),
        f(
            "admin_name",
            lang.t(
                "Dit brugernavn som administrator",
                "Your administrator login name"
            ),
            "text"
        ),
        f(
            "admin_password",
            lang.t(
                "Din adgangskode (mindst 12 tegn)",
                "Your password (at least 12 characters)"
            ),
            "password"
        ),
        lang.t("Ansøg", "Apply"),
    )
}

/// The page of a public form sent too often from here.
fn too_many(lang: Lang, csrf: &Csrf, wait: u64) -> Response {
    let text = match lang {
        Lang::Da => format!("For mange anmodninger herfra. Prøv igen om {wait} sekunder."),
        Lang::En => format!("Too many requests from here. Try again in {wait} seconds."),
    };
    page(
        lang,
        "sikkermail",
        false,
        &msg("err", &text),
        StatusCode::TOO_MANY_REQUESTS,
        csrf,
    )
}

/// The page when the installation takes no applications.
fn applications_off(lang: Lang, csrf: &Csrf) -> Response {
    page(
        lang,
        lang.t("Ingen ansøgninger", "No applications"),
        false,
        &msg(
            "err",
            lang.t(
                "Denne installation tager ikke imod ansøgninger om nye organisationer. \
                 Kontakt installationens driftsansvarlige.",
                "This installation takes no applications for new organisations. \
                 Contact the installation's operator.",
            ),
        ),
        StatusCode::NOT_FOUND,
        csrf,
    )
}

async fn apply_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    if !st.config.applications {
        return applications_off(lang, &csrf);
    }
    page(
        lang,
        lang.t("Opret en organisation", "Apply for an organisation"),
        false,
        &apply_body(lang, &csrf, None),
        StatusCode::OK,
        &csrf,
    )
}

async fn apply_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    ip: crate::auth::ClientIp,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    if !st.config.applications {
        return applications_off(lang, &csrf);
    }
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    match crate::web::public_attempt(&st, crate::web::PublicForm::Apply, ip.0.as_deref()).await {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return too_many(lang, &csrf, wait),
        Err(e) => {
            return page(
                lang,
                "sikkermail",
                false,
                &msg("err", &e.message),
                e.status,
                &csrf,
            );
        }
    }
    let app = service::orgs::Application {
        name: form.text("name"),
        cvr: form.text("cvr"),
        representative_name: form.text("representative_name"),
        representative_email: form.text("representative_email"),
        admin_name: form.text("admin_name"),
        admin_password: form.text("admin_password"),
    };
    match st.svc.apply_organisation(&app).await {
        Ok(_) => page(
            lang,
            lang.t("Ansøgningen er modtaget", "The application is received"),
            false,
            &msg(
                "ok",
                lang.t(
                    "Installationens driftsansvarlige behandler ansøgningen. Først når den er \
                     godkendt, får ledelsesrepræsentanten en e-mail med et link til godkendelse.",
                    "The installation's operator handles the application. Only once it is \
                     accepted is the representative e-mailed a link to approve.",
                ),
            ),
            StatusCode::CREATED,
            &csrf,
        ),
        Err(e) => {
            let e = ApiError::from(e);
            page(
                lang,
                lang.t("Opret en organisation", "Apply for an organisation"),
                false,
                &apply_body(lang, &csrf, Some(&e.message)),
                e.status,
                &csrf,
            )
        }
    }
}

async fn request_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    org: Result<Path<i64>, PathRejection>,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let Some(svc) = public_org(&st, org).await else {
        return gone(lang, &csrf);
    };
    if !svc.settings().allow_access_requests {
        return gone(lang, &csrf);
    }
    page(
        lang,
        &format!(
            "{} {}",
            lang.t("Anmod om adgang til", "Request access to"),
            svc.org().name
        ),
        false,
        &format!(
            "<form method=\"post\">{}<label>{} <input type=\"text\" name=\"name\" id=\"name\"></label>\
             <label>{} <input type=\"email\" name=\"email\" id=\"email\"></label><button id=\"submit\">{}</button></form>",
            csrf.field(),
            lang.t("Dit navn", "Your name"),
            lang.t("Din arbejdsmail", "Your work e-mail"),
            lang.t("Anmod", "Request"),
        ),
        StatusCode::OK,
        &csrf,
    )
}

async fn public_org(st: &AppState, org: Result<Path<i64>, PathRejection>) -> Option<Service> {
    let Ok(Path(id)) = org else { return None };
    let svc = st
        .svc
        .for_org(service::OrgId(id), Actor::named("public"))
        .await
        .ok()?;
    (svc.org().status == "active").then_some(svc)
}

async fn request_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    org: Result<Path<i64>, PathRejection>,
    ip: crate::auth::ClientIp,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    match crate::web::public_attempt(&st, crate::web::PublicForm::AccessRequest, ip.0.as_deref())
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(wait)) => return too_many(lang, &csrf, wait),
        Err(e) => {
            return page(
                lang,
                "sikkermail",
                false,
                &msg("err", &e.message),
                e.status,
                &csrf,
            );
        }
    }
    let Some(svc) = public_org(&st, org).await else {
        return gone(lang, &csrf);
    };
    match svc
        .request_access(&form.text("name"), &form.text("email"))
        .await
    {
        Ok(_) => page(
            lang,
            lang.t("Anmodningen er sendt", "The request is sent"),
            false,
            &msg(
                "ok",
                lang.t(
                    "En administrator behandler din anmodning.",
                    "An administrator will handle your request.",
                ),
            ),
            StatusCode::CREATED,
            &csrf,
        ),
        Err(e) => {
            let e = ApiError::from(e);
            page(
                lang,
                "sikkermail",
                false,
                &msg("err", &e.message),
                e.status,
                &csrf,
            )
        }
    }
}

// ---------------------------------------------------------------- admin

/// The logged-in administrator of a page request, or a redirect to login.
struct PageAdmin {
    svc: Service,
    role: service::Role,
    name: String,
}

#[allow(clippy::result_large_err)]
async fn page_admin(st: &AppState, headers: &HeaderMap) -> Result<PageAdmin, Response> {
    let (parts, ()) = axum::http::Request::builder()
        .body(())
        .map(|r| r.into_parts())
        .map_err(|_| redirect("/admin/login"))?;
    let mut parts: Parts = parts;
    parts.headers = headers.clone();
    let Some(token) = token_of(&parts) else {
        return Err(redirect("/admin/login"));
    };
    match session_of(st, &token, client_ip(&parts).as_deref()).await {
        Ok(Some((s, svc))) => Ok(PageAdmin {
            svc,
            role: s.role,
            name: s.admin.name,
        }),
        _ => Err(redirect("/admin/login")),
    }
}

impl PageAdmin {
    #[allow(clippy::result_large_err)] // a page is the error, returned at once
    fn need(&self, need: Need, lang: Lang, csrf: &Csrf) -> Result<&Service, Response> {
        let why = if self.svc.org().status != "active" {
            Some(lang.t(
                "Organisationen afventer godkendelse fra sin ledelsesrepræsentant.",
                "The organisation awaits approval by its representative.",
            ))
        } else if !allows(self.role, need) {
            Some(lang.t("Din rolle må ikke dette.", "Your role may not do this."))
        } else {
            None
        };
        match why {
            Some(w) => Err(page(
                lang,
                "sikkermail",
                true,
                &msg("err", w),
                StatusCode::FORBIDDEN,
                csrf,
            )),
            None => Ok(&self.svc),
        }
    }
}

/// Runs `$body` with the administrator and the CSRF token of a page
/// request (redirecting to the login page when not logged in).
macro_rules! admin_page {
    ($st:expr, $headers:expr, $q:expr, |$adm:ident, $lang:ident, $csrf:ident| $body:block) => {{
        let $lang = lang_of(&$q, &$headers);
        let $csrf = Csrf::of(&$headers);
        let $adm = match page_admin(&$st, &$headers).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        $body
    }};
}

async fn admin_home() -> Response {
    redirect("/admin/users")
}

fn login_body(lang: Lang, csrf: &Csrf, error: Option<&str>) -> String {
    format!(
        "{}<form method=\"post\" action=\"/admin/login{}\">{}<label>{} <input type=\"text\" name=\"name\" id=\"name\" autocomplete=\"username\"></label>\
         <label>{} <input type=\"password\" name=\"password\" id=\"password\" autocomplete=\"current-password\"></label>\
         <button id=\"submit\">{}</button></form>",
        error.map(|e| msg("err", e)).unwrap_or_default(),
        lang.q(),
        csrf.field(),
        lang.t("Brugernavn", "Login name"),
        lang.t("Adgangskode", "Password"),
        lang.t("Log ind", "Log in"),
    )
}

async fn login_form(Query(q): Query<LangQuery>, headers: HeaderMap) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    page(
        lang,
        lang.t("Log ind", "Log in"),
        false,
        &login_body(lang, &csrf, None),
        StatusCode::OK,
        &csrf,
    )
}

async fn login_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    ip: crate::auth::ClientIp,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let lang = lang_of(&q, &headers);
    let csrf = Csrf::of(&headers);
    let form = Form::parse(&body);
    if !csrf.check(&form) {
        return bad_csrf(lang, &csrf);
    }
    let device = crate::device_of(&headers);
    match crate::do_login(
        &st,
        ip.0.as_deref(),
        device.as_deref(),
        &form.text("name"),
        &form.text("password"),
    )
    .await
    {
        Ok((s, set_device)) => {
            let mut r = redirect(&format!("/admin/users{}", lang.q()));
            let max_age = (s.expires_at - service::now()).max(0);
            if let Ok(c) = crate::cookie(&st, &s.token, max_age) {
                r.headers_mut().insert(SET_COOKIE, c);
            }
            if let Some(d) = set_device {
                r.headers_mut().append(SET_COOKIE, d);
            }
            r
        }
        Err(e) => {
            let mut r = page(
                lang,
                lang.t("Log ind", "Log in"),
                false,
                &login_body(lang, &csrf, Some(&e.message)),
                e.status,
                &csrf,
            );
            // Slow down (429) or busy (503): when to try again.
            if let Some(s) = e.retry_after {
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(s),
                );
            }
            r
        }
    }
}

async fn logout_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        if !csrf.check(&Form::parse(&body)) {
            return bad_csrf(lang, &csrf);
        }
        let mut parts = axum::http::Request::new(()).into_parts().0;
        parts.headers = headers.clone();
        if let Some(t) = token_of(&parts) {
            let _ = adm.svc.admin_logout(&t).await;
        }
        let mut r = redirect("/admin/login");
        if let Ok(c) = crate::cookie(&st, "", 0) {
            r.headers_mut().insert(SET_COOKIE, c);
        }
        r
    })
}

fn status_label(lang: Lang, s: Status) -> &'static str {
    lang.t(s.label_da(), s.label_en())
}

fn means_select(lang: Lang, svc: &Service) -> String {
    let allow_private = svc.settings().allow_private_mitid;
    let mut o = format!(
        "<label>{} <select name=\"means\" id=\"means\">",
        lang.t("Identifikationsmiddel", "Identification means")
    );
    for m in IDENT_MEANS {
        if *m == "private-mitid" && !allow_private {
            continue;
        }
        o.push_str(&format!("<option value=\"{m}\">{m}</option>"));
    }
    o.push_str("</select></label>");
    o
}

async fn users_page(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let svc = match adm.need(Need::Read, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let status = match q.status.as_deref() {
            None | Some("") => None,
            Some(s) => match Status::parse(s) {
                Ok(s) => Some(s),
                Err(e) => {
                    return page(
                        lang,
                        "sikkermail",
                        true,
                        &msg("err", &e.to_string()),
                        StatusCode::BAD_REQUEST,
                        &csrf,
                    );
                }
            },
        };
        let list = match svc.users(status).await {
            Ok(l) => l,
            Err(e) => {
                let e = ApiError::from(e);
                return page(
                    lang,
                    "sikkermail",
                    true,
                    &msg("err", &e.message),
                    e.status,
                    &csrf,
                );
            }
        };
        let mut filter = format!(
            "<form method=\"get\"><select name=\"status\" id=\"status-filter\"><option value=\"\">{}</option>",
            lang.t("Alle", "All")
        );
        for s in Status::ALL {
            let sel = if status == Some(s) { " selected" } else { "" };
            filter.push_str(&format!(
                "<option value=\"{}\"{sel}>{}</option>",
                s.as_str(),
                status_label(lang, s)
            ));
        }
        filter.push_str(&format!(
            "</select>{}<button id=\"filter\">{}</button></form>",
            if lang == Lang::En {
                "<input type=\"hidden\" name=\"lang\" value=\"en\">"
            } else {
                ""
            },
            lang.t("Vis", "Show")
        ));
        let mut rows = String::new();
        for u in &list {
            rows.push_str(&format!(
                "<tr><td><input type=\"checkbox\" name=\"user\" value=\"{id}\" id=\"select-{id}\"></td>\
                 <td><a href=\"/admin/users/{id}{q}\">{}</a></td><td>{}</td><td class=\"status\">{}</td></tr>",
                esc(&u.name),
                esc(&u.email),
                status_label(lang, u.status),
                id = u.id,
                q = lang.q()
            ));
        }
        let bulk = if allows(adm.role, Need::Users) {
            format!(
                "{}<button id=\"activate\">{}</button>",
                means_select(lang, svc),
                lang.t("Aktivér valgte brugere", "Activate selected users")
            )
        } else {
            String::new()
        };
        let body = format!(
            "<p>{}: {}</p>{filter}<form method=\"post\" action=\"/admin/users/activate{}\">{}\
             <table id=\"users\"><tr><th></th><th>{}</th><th>E-mail</th><th>Status</th></tr>{rows}</table>{bulk}</form>",
            esc(&adm.name),
            esc(&svc.org().name),
            lang.q(),
            csrf.field(),
            lang.t("Navn", "Name"),
        );
        page(
            lang,
            lang.t("Brugere", "Users"),
            true,
            &body,
            StatusCode::OK,
            &csrf,
        )
    })
}

async fn bulk_activate(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let form = Form::parse(&body);
        if !csrf.check(&form) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Users, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let ids: Vec<i64> = form
            .all("user")
            .iter()
            .filter_map(|v| v.parse().ok())
            .collect();
        if ids.is_empty() {
            return page(
                lang,
                lang.t("Aktivering", "Activation"),
                true,
                &msg(
                    "err",
                    lang.t("Vælg mindst én bruger.", "Select at least one user."),
                ),
                StatusCode::BAD_REQUEST,
                &csrf,
            );
        }
        match crate::api::activate_and_mail(&st, svc, &ids, &form.text("means")).await {
            Ok(v) => {
                let r = &v["receipt"];
                let mut rows = String::new();
                for u in r["users"].as_array().into_iter().flatten() {
                    rows.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(u["name"].as_str().unwrap_or("")),
                        esc(u["email"].as_str().unwrap_or("")),
                        esc(u["mail"].as_str().unwrap_or("")),
                        if u["needs_code"].as_bool().unwrap_or(false) {
                            lang.t("Skal have aktiveringskode", "Needs an activation code")
                        } else {
                            ""
                        }
                    ));
                }
                page(
                    lang,
                    lang.t("Kvittering for aktivering", "Activation receipt"),
                    true,
                    &format!(
                        "<p id=\"receipt\">{} {} · {} {}</p><table>{rows}</table>",
                        r["count"],
                        lang.t("brugere aktiveret med", "users activated with"),
                        esc(r["ident_means"].as_str().unwrap_or("")),
                        esc(&adm.name),
                    ),
                    StatusCode::OK,
                    &csrf,
                )
            }
            Err(e) => page(
                lang,
                lang.t("Aktivering", "Activation"),
                true,
                &msg("err", &e.message),
                e.status,
                &csrf,
            ),
        }
    })
}

async fn import_form(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        if let Err(r) = adm.need(Need::Users, lang, &csrf) {
            return r;
        }
        page(
            lang,
            lang.t("Importér brugere", "Import users"),
            true,
            &format!(
                "<p>{} <a href=\"/admin/import/template\" id=\"template\">{}</a></p>\
                 <form method=\"post\" enctype=\"multipart/form-data\" action=\"/admin/import{}\">{}\
                 <label>{} <input type=\"file\" name=\"file\" id=\"file\" accept=\".csv,text/csv\"></label>\
                 <button id=\"submit\">{}</button></form>",
                lang.t(
                    "CSV-fil som eksporteret fra NemID medarbejdersignatur.",
                    "CSV file as exported from NemID medarbejdersignatur."
                ),
                lang.t("Hent skabelonen", "Get the template"),
                lang.q(),
                csrf.field(),
                lang.t("Fil", "File"),
                lang.t("Importér", "Import"),
            ),
            StatusCode::OK,
            &csrf,
        )
    })
}

async fn import_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let mut fields = Vec::new();
        let mut file = Vec::new();
        loop {
            match multipart.next_field().await {
                Ok(Some(f)) => {
                    let name = f.name().unwrap_or("").to_string();
                    match f.bytes().await {
                        Ok(b) if name == "file" => file = b.to_vec(),
                        Ok(b) => fields.push((name, String::from_utf8_lossy(&b).into_owned())),
                        Err(_) => break,
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    return page(
                        lang,
                        "sikkermail",
                        true,
                        &msg(
                            "err",
                            lang.t(
                                "Upload fejlede (for stor fil?).",
                                "The upload failed (file too large?).",
                            ),
                        ),
                        StatusCode::BAD_REQUEST,
                        &csrf,
                    );
                }
            }
        }
        if !csrf.check(&Form(fields)) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Users, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        match svc.import_users(&file).await {
            Ok(rep) => {
                let mut rows = String::new();
                for u in &rep.imported {
                    rows.push_str(&format!(
                        "<tr class=\"imported\"><td>{}</td><td>{}</td><td>{}</td></tr>",
                        esc(&u.name),
                        esc(&u.email),
                        status_label(lang, u.status)
                    ));
                }
                let mut errs = String::new();
                for e in &rep.errors {
                    errs.push_str(&format!(
                        "<tr class=\"row-error\"><td>{} {}</td><td>{}</td></tr>",
                        lang.t("Linje", "Line"),
                        e.line,
                        esc(&e.error)
                    ));
                }
                page(
                    lang,
                    lang.t("Importrapport", "Import report"),
                    true,
                    &format!(
                        "<p id=\"summary\">{} {}, {} {}</p><table id=\"imported\">{rows}</table><h2>{}</h2><table id=\"errors\">{errs}</table>",
                        rep.imported.len(),
                        lang.t("importeret", "imported"),
                        rep.errors.len(),
                        lang.t("afvist", "refused"),
                        lang.t("Afviste rækker", "Refused rows"),
                    ),
                    StatusCode::OK,
                    &csrf,
                )
            }
            Err(e) => {
                let e = ApiError::from(e);
                page(
                    lang,
                    lang.t("Importrapport", "Import report"),
                    true,
                    &msg("err", &e.message),
                    e.status,
                    &csrf,
                )
            }
        }
    })
}

async fn user_page(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let svc = match adm.need(Need::Read, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let Ok(Path(id)) = id else {
            return ApiError::not_found().into_response();
        };
        render_user(&adm, svc, id, lang, &csrf, None).await
    })
}

async fn render_user(
    adm: &PageAdmin,
    svc: &Service,
    id: i64,
    lang: Lang,
    csrf: &Csrf,
    note: Option<String>,
) -> Response {
    let u = match svc.user(id).await {
        Ok(u) => u,
        Err(e) => {
            let e = ApiError::from(e);
            return page(
                lang,
                "sikkermail",
                true,
                &msg("err", &e.message),
                e.status,
                csrf,
            );
        }
    };
    let mut body = note.unwrap_or_default();
    body.push_str(&format!(
        "<table><tr><th>E-mail</th><td>{}</td></tr><tr><th>Status</th><td id=\"status\">{}</td></tr>\
         <tr><th>RID</th><td>{}</td></tr><tr><th>CPR</th><td>{}</td></tr><tr><th>{}</th><td>{}</td></tr>\
         <tr><th>{}</th><td>{}</td></tr></table>",
        esc(&u.email),
        status_label(lang, u.status),
        esc(u.rid.as_deref().unwrap_or("")),
        if u.has_cpr { lang.t("registreret", "recorded") } else { "" },
        lang.t("Fødselsdato", "Birth date"),
        esc(u.birth_date.as_deref().unwrap_or("")),
        lang.t("Rettigheder", "Rights"),
        esc(&u.rights.join(", ")),
    ));
    if allows(adm.role, Need::Users) {
        let action = |name: &str, label: &str| {
            format!(
                "<form method=\"post\" action=\"/admin/users/{}/action{}\" style=\"display:inline\">{}\
                 <input type=\"hidden\" name=\"action\" value=\"{name}\"><button id=\"{name}\">{}</button></form> ",
                u.id,
                lang.q(),
                csrf.field(),
                esc(label)
            )
        };
        body.push_str("<h2>Handlinger</h2><p>");
        match u.status {
            Status::Ready => body.push_str(&format!(
                "<form method=\"post\" action=\"/admin/users/{}/action{}\">{}<input type=\"hidden\" name=\"action\" value=\"activate\">{}<button id=\"activate\">{}</button></form>",
                u.id,
                lang.q(),
                csrf.field(),
                means_select(lang, svc),
                lang.t("Aktivér", "Activate")
            )),
            Status::ActivationSent => {
                if u.has_code {
                    body.push_str(&action("code", lang.t("Vis aktiveringskode", "Show activation code")));
                }
                body.push_str(&action("resend", lang.t("Send aktivering igen", "Resend activation")));
            }
            Status::Active => body.push_str(&action("order", lang.t("Bestil brugercertifikat", "Order user certificate"))),
            Status::Requested => {
                body.push_str(&action("approve", lang.t("Godkend anmodning", "Approve request")));
                body.push_str(&action("reject", lang.t("Afvis anmodning", "Reject request")));
            }
            _ => {}
        }
        match u.status {
            Status::Blocked => {
                body.push_str(&action("unblock", lang.t("Ophæv spærring", "Unblock")))
            }
            Status::Requested | Status::Rejected => {}
            _ => body.push_str(&action("block", lang.t("Spær", "Block"))),
        }
        body.push_str("</p>");
        body.push_str(&format!(
            "<h2>{}</h2><form method=\"post\" action=\"/admin/users/{}{}\">{}\
             <label>{} <input type=\"text\" name=\"name\" value=\"{}\"></label>\
             <label>E-mail <input type=\"email\" name=\"email\" value=\"{}\"></label>\
             <label>CPR <input type=\"text\" name=\"cpr\" id=\"cpr\" autocomplete=\"off\" placeholder=\"DDMMÅÅ-XXXX\"></label>\
             <label>{} <input type=\"text\" name=\"birth_date\" id=\"birth_date\" value=\"{}\" placeholder=\"ÅÅÅÅ-MM-DD\"></label>\
             <label>{} <input type=\"text\" name=\"rights\" value=\"{}\"></label><button id=\"save\">{}</button></form>",
            lang.t("Redigér", "Edit"),
            u.id,
            lang.q(),
            csrf.field(),
            lang.t("Navn", "Name"),
            esc(&u.name),
            esc(&u.email),
            lang.t("Fødselsdato", "Birth date"),
            esc(u.birth_date.as_deref().unwrap_or("")),
            lang.t("Rettigheder (kommasepareret)", "Rights (comma-separated)"),
            esc(&u.rights.join(",")),
            lang.t("Gem", "Save"),
        ));
    }
    page(lang, &u.name, true, &body, StatusCode::OK, csrf)
}

async fn user_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let form = Form::parse(&body);
        if !csrf.check(&form) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Users, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let Ok(Path(id)) = id else {
            return ApiError::not_found().into_response();
        };
        let opt = |k: &str| {
            form.get(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let patch = UserPatch {
            name: opt("name"),
            email: opt("email"),
            cpr: opt("cpr"),
            birth_date: opt("birth_date"),
            rights: form.get("rights").map(|r| {
                r.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            }),
        };
        let note = match svc.update_user(id, &patch).await {
            Ok(_) => msg("ok", lang.t("Gemt.", "Saved.")),
            Err(e) => msg("err", &ApiError::from(e).message),
        };
        render_user(&adm, svc, id, lang, &csrf, Some(note)).await
    })
}

async fn user_action(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let form = Form::parse(&body);
        if !csrf.check(&form) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Users, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let Ok(Path(id)) = id else {
            return ApiError::not_found().into_response();
        };
        let outcome: Result<String, ApiError> = match form.get("action").unwrap_or("") {
            "activate" => crate::api::activate_and_mail(&st, svc, &[id], &form.text("means"))
                .await
                .map(|v| {
                    format!(
                        "{}: {}",
                        lang.t("Aktiveret", "Activated"),
                        v["receipt"]["users"][0]["mail"].as_str().unwrap_or("")
                    )
                }),
            "code" => svc
                .activation_code(id)
                .await
                .map(|c| {
                    format!(
                        "{} <span class=\"secret\" id=\"activation-code\">{}</span>",
                        lang.t(
                            "Aktiveringskode (giv den sikkert videre):",
                            "Activation code (hand it over securely):"
                        ),
                        esc(&c)
                    )
                })
                .map_err(ApiError::from),
            "resend" => match svc.resend_activation(id).await {
                Ok(a) => {
                    let (mail, _) = crate::api::activation_mail(&st, &svc.org().name, &a);
                    Ok(crate::mail::send_opt(st.config.mail.as_ref(), &mail)
                        .await
                        .map(|()| {
                            lang.t(
                                "Aktiveringen er sendt igen.",
                                "The activation was sent again.",
                            )
                            .to_string()
                        })
                        .unwrap_or_else(|e| esc(&e)))
                }
                Err(e) => Err(e.into()),
            },
            "order" => crate::api::order_and_mail(&st, svc, id).await.map(|v| {
                format!(
                    "{}: {}",
                    lang.t(
                        "Brugercertifikat bestilt; e-mail",
                        "User certificate ordered; e-mail"
                    ),
                    esc(v["mail"].as_str().unwrap_or(""))
                )
            }),
            "block" => svc
                .set_blocked(id, true)
                .await
                .map(|_| lang.t("Spærret.", "Blocked.").into())
                .map_err(ApiError::from),
            "unblock" => svc
                .set_blocked(id, false)
                .await
                .map(|_| lang.t("Spærring ophævet.", "Unblocked.").into())
                .map_err(ApiError::from),
            "approve" => svc
                .decide_request(id, true)
                .await
                .map(|_| lang.t("Godkendt.", "Approved.").into())
                .map_err(ApiError::from),
            "reject" => svc
                .decide_request(id, false)
                .await
                .map(|_| lang.t("Afvist.", "Rejected.").into())
                .map_err(ApiError::from),
            _ => Err(ApiError::bad_request("unknown action")),
        };
        let note = match outcome {
            Ok(html) => format!("<p class=\"ok\" id=\"ok\">{html}</p>"),
            Err(e) => msg("err", &e.message),
        };
        render_user(&adm, svc, id, lang, &csrf, Some(note)).await
    })
}

fn settings_body(lang: Lang, s: &Settings, csrf: &Csrf, editable: bool) -> String {
    let cb = |name: &str, on: bool, label: &str| {
        format!(
            "<label><input type=\"checkbox\" name=\"{name}\" id=\"{name}\"{}{}> {}</label>",
            if on { " checked" } else { "" },
            if editable { "" } else { " disabled" },
            esc(label)
        )
    };
    format!(
        "<form method=\"post\">{}{}{}{}<label>{} <input type=\"text\" name=\"shared_mailboxes\" id=\"shared_mailboxes\" value=\"{}\"></label>{}</form>",
        csrf.field(),
        cb(
            "allow_user_certificates",
            s.allow_user_certificates,
            lang.t("Tillad brugercertifikater", "Allow user certificates")
        ),
        cb(
            "allow_private_mitid",
            s.allow_private_mitid,
            lang.t("Tillad privat MitID", "Allow private MitID")
        ),
        cb(
            "allow_access_requests",
            s.allow_access_requests,
            lang.t(
                "Medarbejdere må anmode om adgang",
                "Employees may request access"
            )
        ),
        lang.t(
            "Funktionspostkasser (kommasepareret)",
            "Shared mailboxes (comma-separated)"
        ),
        esc(&s.shared_mailboxes.join(", ")),
        if editable {
            format!("<button id=\"save\">{}</button>", lang.t("Gem", "Save"))
        } else {
            String::new()
        },
    )
}

async fn settings_page(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let svc = match adm.need(Need::Read, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        page(
            lang,
            lang.t("Indstillinger", "Settings"),
            true,
            &settings_body(lang, &svc.settings(), &csrf, allows(adm.role, Need::Org)),
            StatusCode::OK,
            &csrf,
        )
    })
}

async fn settings_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let form = Form::parse(&body);
        if !csrf.check(&form) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Org, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let s = Settings {
            allow_user_certificates: form.flag("allow_user_certificates"),
            allow_private_mitid: form.flag("allow_private_mitid"),
            allow_access_requests: form.flag("allow_access_requests"),
            shared_mailboxes: form
                .text("shared_mailboxes")
                .split(',')
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .collect(),
        };
        match svc.set_user_settings(&s).await {
            Ok(s) => page(
                lang,
                lang.t("Indstillinger", "Settings"),
                true,
                &format!(
                    "{}{}",
                    msg("ok", lang.t("Gemt.", "Saved.")),
                    settings_body(lang, &s, &csrf, true)
                ),
                StatusCode::OK,
                &csrf,
            ),
            Err(e) => {
                let e = ApiError::from(e);
                page(
                    lang,
                    lang.t("Indstillinger", "Settings"),
                    true,
                    &format!(
                        "{}{}",
                        msg("err", &e.message),
                        settings_body(lang, &s, &csrf, true)
                    ),
                    e.status,
                    &csrf,
                )
            }
        }
    })
}

async fn certs_page(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let svc = match adm.need(Need::Read, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        render_certs(&adm, svc, lang, &csrf, None).await
    })
}

async fn render_certs(
    adm: &PageAdmin,
    svc: &Service,
    lang: Lang,
    csrf: &Csrf,
    note: Option<String>,
) -> Response {
    let certs = match svc.certificates().await {
        Ok(c) => c,
        Err(e) => {
            let e = ApiError::from(e);
            return page(
                lang,
                "sikkermail",
                true,
                &msg("err", &e.message),
                e.status,
                csrf,
            );
        }
    };
    let mut rows = String::new();
    for c in certs {
        let can = c.status == "active"
            && !c.kind.ends_with("-ca")
            && allows(
                adm.role,
                if c.kind == "user" {
                    Need::Users
                } else {
                    Need::Org
                },
            );
        let revoke = if can {
            format!(
                "<form method=\"post\">{}<input type=\"hidden\" name=\"id\" value=\"{}\"><button id=\"revoke-{}\">{}</button></form>",
                csrf.field(),
                c.id,
                c.id,
                lang.t("Spær", "Revoke")
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{revoke}</td></tr>",
            c.id,
            esc(&c.kind),
            esc(&c.subject),
            esc(c.email.as_deref().unwrap_or("")),
            esc(&c.status)
        ));
    }
    page(
        lang,
        lang.t("Certifikater", "Certificates"),
        true,
        &format!(
            "{}<table id=\"certificates\">{rows}</table>",
            note.unwrap_or_default()
        ),
        StatusCode::OK,
        csrf,
    )
}

async fn certs_post(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let form = Form::parse(&body);
        if !csrf.check(&form) {
            return bad_csrf(lang, &csrf);
        }
        let svc = match adm.need(Need::Users, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let id: i64 = form.text("id").parse().unwrap_or(-1);
        let kind = svc.certificate(id).await.ok().map(|c| c.kind);
        let note = match kind {
            None => msg("err", "not found"),
            Some(k) if k != "user" && !allows(adm.role, Need::Org) => msg(
                "err",
                lang.t("Din rolle må ikke dette.", "Your role may not do this."),
            ),
            Some(_) => match svc.revoke(id, ca::RevocationReason::Unspecified).await {
                Ok(_) => msg(
                    "ok",
                    lang.t(
                        "Spærret; spærrelisten er opdateret.",
                        "Revoked; the CRL is updated.",
                    ),
                ),
                Err(e) => msg("err", &ApiError::from(e).message),
            },
        };
        render_certs(&adm, svc, lang, &csrf, Some(note)).await
    })
}

async fn audit_page(
    State(st): State<AppState>,
    Query(q): Query<LangQuery>,
    headers: HeaderMap,
) -> Response {
    admin_page!(st, headers, q, |adm, lang, csrf| {
        let svc = match adm.need(Need::Read, lang, &csrf) {
            Ok(s) => s,
            Err(r) => return r,
        };
        let events = svc.audit_events(200).await.unwrap_or_default();
        let mut rows = String::new();
        for a in events {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&utc(a.at)),
                esc(&a.actor),
                esc(&a.action),
                esc(&a.subject),
                esc(&a.detail)
            ));
        }
        page(
            lang,
            lang.t("Log", "Audit"),
            true,
            &format!("<table id=\"audit\">{rows}</table>"),
            StatusCode::OK,
            &csrf,
        )
    })
}

/// Serves the import template under the pages too (session cookie).
pub async fn page_template(State(st): State<AppState>, headers: HeaderMap) -> Response {
    match page_admin(&st, &headers).await {
        Ok(_) => (
            [
                (
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (
                    CONTENT_DISPOSITION,
                    HeaderValue::from_static("attachment; filename=\"brugere-skabelon.csv\""),
                ),
            ],
            users::IMPORT_TEMPLATE,
        )
            .into_response(),
        Err(r) => r,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` of seconds since the epoch.
pub fn utc(at: i64) -> String {
    let days = at.div_euclid(86_400);
    let secs = at.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
