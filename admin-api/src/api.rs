//! The JSON API of the flows: organisations (apply, approve, bootstrap),
//! settings, administrators, users (import, activation, codes, blocking,
//! access requests), brugercertifikater (order, collect, revoke), CRLs and
//! recipients' certificates. Every handler: who (the session, scoped to
//! its organisation), what it needs ([`Need`]), the service call, JSON.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use ca::pkcs12::Flavour;
use serde::Deserialize;
use serde_json::{Value, json};
use service::users::{self, Activation, UserPatch};
use service::{Actor, Role, Settings, Status, User};

use crate::auth::{Authed, ClientIp, Need};
use crate::error::{ApiError, ApiResult};
use crate::mail::{Mail, send_opt};
use crate::{AppState, json_body, query};

/// The API routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/bootstrap", post(bootstrap))
        .route("/api/v1/organisations", post(apply))
        .route("/api/v1/organisations/approve", post(approve))
        .route("/api/v1/settings", get(settings_get).put(settings_put))
        .route("/api/v1/admins", get(admins_list).post(admins_create))
        .route("/api/v1/users", get(users_list))
        .route("/api/v1/users/import/template", get(import_template))
        .route("/api/v1/users/import", post(import))
        .route("/api/v1/users/activate", post(activate))
        .route("/api/v1/users/{id}", get(user_get).patch(user_patch))
        .route("/api/v1/users/{id}/activation-code", post(activation_code))
        .route("/api/v1/users/{id}/resend-activation", post(resend))
        .route("/api/v1/users/{id}/block", post(block))
        .route("/api/v1/users/{id}/unblock", post(unblock))
        .route("/api/v1/users/{id}/approve", post(approve_request))
        .route("/api/v1/users/{id}/reject", post(reject_request))
        .route("/api/v1/users/{id}/certificates", post(order))
        .route("/api/v1/access-requests", post(access_request))
        .route("/api/v1/activation", post(employee_activate))
        .route("/api/v1/certificate-download", post(employee_collect))
        .route("/api/v1/certificates/{id}/revoke", post(revoke))
        .route("/api/v1/certificates/{id}/renew", post(renew))
        .route("/api/v1/organisation-certificates", post(org_cert_issue))
        .route(
            "/api/v1/organisation-certificates/import",
            post(org_cert_import),
        )
        .route("/api/v1/recipients", get(recipients))
        .route("/api/v1/recipients/import", post(recipients_import))
        .route("/api/v1/recipients/{id}/pin", post(recipient_pin))
        .route("/api/v1/recipients/{id}/unpin", post(recipient_unpin))
        .route(
            "/api/v1/recipients/{id}",
            axum::routing::delete(recipient_delete),
        )
        .route("/crl/{name}", get(crl))
        .route("/ocsp/{org}", post(ocsp_post))
        .route("/ocsp/{org}/{*request}", get(ocsp_get))
}

/// A path id, or a 400.
fn id_of(p: Result<Path<i64>, PathRejection>) -> ApiResult<i64> {
    p.map(|Path(id)| id)
        .map_err(|_| ApiError::bad_request("the id in the path must be a number"))
}

/// A user as the API shows it.
pub fn user_json(u: &User) -> Value {
    json!({
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "rid": u.rid,
        "has_cpr": u.has_cpr,
        "birth_date": u.birth_date,
        "rights": u.rights,
        "status": u.status.as_str(),
        "status_label": u.status.label_da(),
        "ident_means": u.ident_means,
        "has_code": u.has_code,
        "locked": u.locked,
        "created_at": u.created_at,
    })
}

fn settings_json(s: &Settings) -> Value {
    json!({
        "allow_user_certificates": s.allow_user_certificates,
        "allow_private_mitid": s.allow_private_mitid,
        "allow_access_requests": s.allow_access_requests,
        "shared_mailboxes": s.shared_mailboxes,
    })
}

/// What happened to one e-mail: `sent`, or why not (and then the link, so
/// the administrator can hand it over, when no relay is configured).
fn mail_outcome(st: &AppState, r: Result<(), String>, link: &str) -> Value {
    match r {
        Ok(()) => json!({ "mail": "sent" }),
        Err(e) if st.config.mail.is_none() => json!({ "mail": e, "link": link }),
        Err(e) => json!({ "mail": e }),
    }
}

/// The activation e-mail.
pub fn activation_mail(st: &AppState, org: &str, a: &Activation) -> (Mail, String) {
    let link = format!("{}/activate/{}", st.config.public_url, a.token);
    let mut p = vec![
        format!("Kære {}", a.user.name),
        format!(
            "{org} har oprettet dig som bruger i sikkermail. Åbn linket herunder for at \
             aktivere din bruger. Linket kan kun bruges én gang og udløber om 30 dage."
        ),
    ];
    if a.needs_code {
        p.push(
            "Du skal bruge en aktiveringskode på 8 cifre, som din administrator giver dig.".into(),
        );
    }
    p.push(format!(
        "(English: {org} has created a user for you. Open the link to activate it.)"
    ));
    (
        Mail {
            to: a.user.email.clone(),
            to_name: a.user.name.clone(),
            subject: "Aktivér din bruger".into(),
            paragraphs: p,
            link: Some(("Aktivér din bruger".into(), link.clone())),
        },
        link,
    )
}

/// The e-mail "Hent dit brugercertifikat".
pub fn certificate_mail(st: &AppState, org: &str, u: &User, token: &str) -> (Mail, String) {
    let link = format!("{}/certificate/{token}", st.config.public_url);
    (
        Mail {
            to: u.email.clone(),
            to_name: u.name.clone(),
            subject: "Hent dit brugercertifikat".into(),
            paragraphs: vec![
                format!("Kære {}", u.name),
                format!(
                    "{org} har bestilt et brugercertifikat til dig, så du kan sende og \
                     modtage sikker mail. Åbn linket, log ind med den adgangskode du valgte \
                     ved aktiveringen, og hent certifikatet. Linket kan bruges én gang og \
                     udløber om 14 dage."
                ),
                "(English: your organisation ordered a certificate for you; open the link \
                 to download it.)"
                    .into(),
            ],
            link: Some(("Hent dit brugercertifikat".into(), link.clone())),
        },
        link,
    )
}

/// The ledelsesrepræsentant's approval e-mail, sent when the
/// installation's operator accepts an application (`sikkermail org
/// accept`). The applicant chose the address but none of the text: a fixed
/// subject, no greeting with a name, and the organisation's name and CVR
/// number only as data, quoted.
pub fn approval_mail(public_url: &str, org: &service::Organisation, token: &str) -> (Mail, String) {
    let link = format!("{public_url}/approve/{token}");
    (
        Mail {
            to: org.representative_email.clone().unwrap_or_default(),
            to_name: String::new(),
            subject: "Godkend en ny organisation i sikkermail".into(),
            paragraphs: vec![
                "Til organisationens ledelsesrepræsentant".into(),
                "Der er ansøgt om at oprette en organisation i sikkermail med denne \
                 e-mailadresse som ledelsesrepræsentant, og installationens driftsansvarlige har \
                 godkendt ansøgningen. Organisationen kan intet, før du også godkender den med \
                 linket herunder. Kender du ikke til ansøgningen, så følg ikke linket."
                    .into(),
                format!("Organisationens navn (som ansøgt): \"{}\"", org.name),
                format!("CVR-nummer (som ansøgt): {}", org.cvr),
                "(English: an organisation was applied for with this address as its \
                 representative; approve it with the link below only if you know of it.)"
                    .into(),
            ],
            link: Some(("Godkend organisationen".into(), link.clone())),
        },
        link,
    )
}

/// The answer when the installation takes no applications.
pub fn applications_off() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "this installation takes no applications for new organisations \
         ([admin] applications is off)",
    )
}

#[derive(Deserialize)]
struct BootstrapBody {
    token: String,
    name: String,
    password: String,
}

async fn bootstrap(
    State(st): State<AppState>,
    body: Result<Json<BootstrapBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b = json_body(body)?;
    let a = st.svc.bootstrap(&b.token, &b.name, &b.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": a.name, "role": a.role.as_str(), "org": a.org.0 })),
    ))
}

#[derive(Deserialize)]
struct ApplyBody {
    name: String,
    cvr: String,
    representative_name: String,
    representative_email: String,
    admin_name: String,
    admin_password: String,
}

async fn apply(
    State(st): State<AppState>,
    ip: ClientIp,
    body: Result<Json<ApplyBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !st.config.applications {
        return Err(applications_off());
    }
    crate::web::public_attempt(&st, crate::web::PublicForm::Apply, ip.0.as_deref())
        .await?
        .map_err(crate::web::too_many)?;
    let b = json_body(body)?;
    let org = st
        .svc
        .apply_organisation(&service::orgs::Application {
            name: b.name,
            cvr: b.cvr,
            representative_name: b.representative_name,
            representative_email: b.representative_email,
            admin_name: b.admin_name,
            admin_password: b.admin_password,
        })
        .await?;
    // Nothing is sent now: the operator accepts or rejects first.
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "org": org.id.0,
            "name": org.name,
            "status": org.status,
        })),
    ))
}

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

async fn approve(
    State(st): State<AppState>,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    let org = st.svc.approve_organisation(&b.token).await?;
    Ok(Json(
        json!({ "org": org.id.0, "name": org.name, "status": org.status }),
    ))
}

async fn settings_get(who: Authed) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    Ok(Json(settings_json(&svc.settings())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    allow_user_certificates: bool,
    allow_private_mitid: bool,
    allow_access_requests: bool,
    #[serde(default)]
    shared_mailboxes: Vec<String>,
}

async fn settings_put(
    who: Authed,
    body: Result<Json<SettingsBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Org)?;
    let b = json_body(body)?;
    if b.shared_mailboxes.len() > 100 {
        return Err(ApiError::bad_request("at most 100 shared mailboxes"));
    }
    let s = svc
        .set_user_settings(&Settings {
            allow_user_certificates: b.allow_user_certificates,
            allow_private_mitid: b.allow_private_mitid,
            allow_access_requests: b.allow_access_requests,
            shared_mailboxes: b.shared_mailboxes,
        })
        .await?;
    Ok(Json(settings_json(&s)))
}

async fn admins_list(who: Authed) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Org)?;
    let items: Vec<Value> = svc
        .admins()
        .await?
        .iter()
        .map(|a| json!({ "id": a.id, "name": a.name, "role": a.role.as_str(), "disabled": a.disabled }))
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(Deserialize)]
struct AdminBody {
    name: String,
    role: String,
    password: String,
}

async fn admins_create(
    who: Authed,
    body: Result<Json<AdminBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = who.need(Need::Org)?;
    let b = json_body(body)?;
    let role: Role = b.role.parse()?;
    let a = svc.admin_create(&b.name, role, &b.password).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": a.id, "name": a.name, "role": a.role.as_str() })),
    ))
}

#[derive(Deserialize)]
struct UsersQuery {
    status: Option<String>,
}

async fn users_list(
    who: Authed,
    q: Result<Query<UsersQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let q = query(q)?;
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(Status::parse(s)?),
    };
    let items: Vec<Value> = svc.users(status).await?.iter().map(user_json).collect();
    Ok(Json(json!({ "items": items })))
}

async fn import_template(who: Authed) -> ApiResult<Response> {
    who.need(Need::Read)?;
    Ok((
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
        .into_response())
}

/// The import report as JSON.
pub fn report_json(r: &users::ImportReport) -> Value {
    json!({
        "imported": r.imported.iter().map(user_json).collect::<Vec<_>>(),
        "errors": r.errors.iter().map(|e| json!({ "line": e.line, "error": e.error })).collect::<Vec<_>>(),
    })
}

/// A raw body, or a JSON 413/400.
fn raw_body(body: Result<Bytes, BytesRejection>) -> ApiResult<Bytes> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large (at most 1 MiB)",
            )
        } else {
            ApiError::bad_request("the request body could not be read")
        }
    })
}

async fn import(
    who: Authed,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    let body = raw_body(body)?;
    let ctype = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("text/csv") && !ctype.starts_with("text/plain") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the file as Content-Type: text/csv",
        ));
    }
    let r = svc.import_users(&body).await?;
    Ok(Json(report_json(&r)))
}

#[derive(Deserialize)]
struct ActivateBody {
    users: Vec<i64>,
    ident_means: String,
}

/// Activates users and e-mails each one's link; the receipt.
pub async fn activate_and_mail(
    st: &AppState,
    svc: &service::Service,
    ids: &[i64],
    means: &str,
) -> ApiResult<Value> {
    let acts = svc.activate_users(ids, means).await?;
    let mut items = Vec::new();
    for a in &acts {
        let (mail, link) = activation_mail(st, &svc.org().name, a);
        let sent = send_opt(st.config.mail.as_ref(), &mail).await;
        let mut v = user_json(&a.user);
        if let (Some(o), Value::Object(m)) = (v.as_object_mut(), mail_outcome(st, sent, &link)) {
            o.extend(m);
            o.insert("needs_code".into(), json!(a.needs_code));
        }
        items.push(v);
    }
    Ok(json!({
        "receipt": {
            "at": service::now(),
            "by": svc.actor().as_str(),
            "ident_means": means,
            "count": items.len(),
            "users": items,
        }
    }))
}

async fn activate(
    State(st): State<AppState>,
    who: Authed,
    body: Result<Json<ActivateBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    let b = json_body(body)?;
    Ok(Json(
        activate_and_mail(&st, svc, &b.users, &b.ident_means).await?,
    ))
}

async fn user_get(who: Authed, id: Result<Path<i64>, PathRejection>) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let id = id_of(id)?;
    Ok(Json(user_json(&svc.user(id).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    email: Option<String>,
    cpr: Option<String>,
    birth_date: Option<String>,
    rights: Option<Vec<String>>,
}

async fn user_patch(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<PatchBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    let id = id_of(id)?;
    let b = json_body(body)?;
    let u = svc
        .update_user(
            id,
            &UserPatch {
                name: b.name,
                email: b.email,
                cpr: b.cpr,
                birth_date: b.birth_date,
                rights: b.rights,
            },
        )
        .await?;
    Ok(Json(user_json(&u)))
}

async fn activation_code(who: Authed, id: Result<Path<i64>, PathRejection>) -> ApiResult<Response> {
    let svc = who.need(Need::Users)?;
    let id = id_of(id)?;
    let code = svc.activation_code(id).await?;
    let mut r = Json(json!({ "code": code })).into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

async fn resend(
    State(st): State<AppState>,
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    let id = id_of(id)?;
    let a = svc.resend_activation(id).await?;
    let (mail, link) = activation_mail(&st, &svc.org().name, &a);
    let sent = send_opt(st.config.mail.as_ref(), &mail).await;
    let mut v = user_json(&a.user);
    if let (Some(o), Value::Object(m)) = (v.as_object_mut(), mail_outcome(&st, sent, &link)) {
        o.extend(m);
    }
    Ok(Json(v))
}

async fn block(who: Authed, id: Result<Path<i64>, PathRejection>) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    Ok(Json(user_json(&svc.set_blocked(id_of(id)?, true).await?)))
}

async fn unblock(who: Authed, id: Result<Path<i64>, PathRejection>) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    Ok(Json(user_json(&svc.set_blocked(id_of(id)?, false).await?)))
}

async fn approve_request(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    Ok(Json(user_json(
        &svc.decide_request(id_of(id)?, true).await?,
    )))
}

async fn reject_request(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Users)?;
    Ok(Json(user_json(
        &svc.decide_request(id_of(id)?, false).await?,
    )))
}

/// Orders a brugercertifikat and e-mails the link.
pub async fn order_and_mail(st: &AppState, svc: &service::Service, id: i64) -> ApiResult<Value> {
    let (u, token) = svc.order_certificate(id).await?;
    let (mail, link) = certificate_mail(st, &svc.org().name, &u, &token);
    let sent = send_opt(st.config.mail.as_ref(), &mail).await;
    let mut v = json!({ "user": user_json(&u), "valid_days": 14 });
    if let (Some(o), Value::Object(m)) = (v.as_object_mut(), mail_outcome(st, sent, &link)) {
        o.extend(m);
    }
    Ok(v)
}

async fn order(
    State(st): State<AppState>,
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = who.need(Need::Users)?;
    let id = id_of(id)?;
    Ok((
        StatusCode::CREATED,
        Json(order_and_mail(&st, svc, id).await?),
    ))
}

#[derive(Deserialize)]
struct AccessBody {
    org: i64,
    name: String,
    email: String,
}

async fn access_request(
    State(st): State<AppState>,
    ip: ClientIp,
    body: Result<Json<AccessBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    crate::web::public_attempt(&st, crate::web::PublicForm::AccessRequest, ip.0.as_deref())
        .await?
        .map_err(crate::web::too_many)?;
    let b = json_body(body)?;
    let svc = st
        .svc
        .for_org(store_org(b.org), Actor::named("public"))
        .await
        .map_err(|_| ApiError::not_found())?;
    if svc.org().status != "active" {
        return Err(ApiError::not_found());
    }
    let u = svc.request_access(&b.name, &b.email).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": u.id, "status": u.status.as_str() })),
    ))
}

fn store_org(id: i64) -> service::OrgId {
    service::OrgId(id)
}

#[derive(Deserialize)]
struct ActivationBody {
    token: String,
    code: Option<String>,
    password: String,
    accept_terms: bool,
}

async fn employee_activate(
    State(st): State<AppState>,
    ip: ClientIp,
    body: Result<Json<ActivationBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = json_body(body)?;
    // Limited in the service: per link and per client address.
    let u = users::complete_activation(
        &st.svc,
        &b.token,
        b.code.as_deref(),
        &b.password,
        b.accept_terms,
        ip.0.as_deref(),
    )
    .await?;
    Ok(Json(user_json(&u)))
}

#[derive(Deserialize)]
struct CollectBody {
    token: String,
    password: String,
    accept_terms: bool,
    #[serde(default)]
    compatible: bool,
}

async fn employee_collect(
    State(st): State<AppState>,
    ip: ClientIp,
    body: Result<Json<CollectBody>, JsonRejection>,
) -> ApiResult<Response> {
    let b = json_body(body)?;
    let flavour = if b.compatible {
        Flavour::Compatible
    } else {
        Flavour::Modern
    };
    let c = users::collect_certificate(
        &st.svc,
        &b.token,
        &b.password,
        b.accept_terms,
        flavour,
        ip.0.as_deref(),
    )
    .await?;
    let mut r = Json(json!({
        "certificate": c.id,
        "serial": c.serial,
        "password": c.password,
        "p12": base64::engine::general_purpose::STANDARD.encode(&c.p12),
    }))
    .into_response();
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

#[derive(Deserialize)]
struct RevokeBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Json<RevokeBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = id_of(id)?;
    let svc = changeable(&who, id).await?;
    let b = json_body(body)?;
    let reason = ca::RevocationReason::parse(b.reason.as_deref().unwrap_or("unspecified"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let crls = svc.revoke(id, reason).await?;
    Ok(Json(json!({
        "id": id,
        "status": "revoked",
        "reason": reason.as_str(),
        "crl_bytes": crls.issuing.len(),
    })))
}

/// The certificate `id` of the session's organisation, checking that the
/// role may change it (user certificates: user administrators; the rest:
/// organisation administrators).
async fn changeable(who: &Authed, id: i64) -> ApiResult<&service::Service> {
    let svc = who.need(Need::Users)?;
    let c = svc.certificate(id).await?;
    if c.kind != "user" {
        who.need(Need::Org)?;
    }
    Ok(svc)
}

async fn renew(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let id = id_of(id)?;
    let svc = changeable(&who, id).await?;
    let r = svc.renew(id, None, |_| Ok(())).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": r.id, "replaces": id, "serial": service::certs::serial_hex(&r.cert) })),
    ))
}

#[derive(Deserialize)]
struct OrgCertBody {
    name: String,
    email: String,
}

async fn org_cert_issue(
    who: Authed,
    body: Result<Json<OrgCertBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = who.need(Need::Org)?;
    let b = json_body(body)?;
    let req = service::certs::IssueRequest {
        kind: ca::Kind::Organisation,
        name: ca::DisplayName::parse("certificate name", &b.name)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        email: ca::EmailAddress::parse(&b.email)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        p12: None,
    };
    let r = svc.issue(req, |_| Ok(())).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": r.id, "serial": service::certs::serial_hex(&r.cert), "email": b.email }),
        ),
    ))
}

#[derive(Deserialize)]
struct ImportBody {
    /// The PKCS#12 file, base64.
    p12: String,
    password: String,
    #[serde(default)]
    legacy: bool,
    mailbox: Option<String>,
}

async fn org_cert_import(
    who: Authed,
    body: Result<Json<ImportBody>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = who.need(Need::Org)?;
    let b = json_body(body)?;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b.p12.trim())
        .map_err(|_| ApiError::bad_request("p12 must be the PKCS#12 file in base64"))?;
    let p12 = ca::pkcs12::import(&der, &b.password)
        .map_err(|e| ApiError::bad_request(format!("the PKCS#12 file: {e}")))?;
    let mailbox = match b.mailbox.as_deref() {
        Some(m) => {
            Some(ca::EmailAddress::parse(m).map_err(|e| ApiError::bad_request(e.to_string()))?)
        }
        None => None,
    };
    let r = svc
        .import_key(service::keys::ImportRequest {
            p12,
            legacy: b.legacy,
            mailbox,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": r.id, "generation": r.generation, "source": r.source, "expired": r.expired }),
        ),
    ))
}

async fn recipients_import(
    who: Authed,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let svc = who.need(Need::Org)?;
    let body = raw_body(body)?;
    let certs = smime::keyring::certs_from_bytes(&body, "the upload")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut plan = Vec::new();
    for c in certs {
        let addrs = smime::keyring::cert_emails(&c);
        if addrs.is_empty() {
            return Err(ApiError::bad_request(format!(
                "certificate {} has no e-mail address",
                smime::keyring::name_to_string(c.subject_name())
            )));
        }
        plan.push((c, addrs));
    }
    if plan.is_empty() {
        return Err(ApiError::bad_request("no certificate in the upload"));
    }
    let items: Vec<Value> = svc
        .import_recipients(&plan)
        .await?
        .into_iter()
        .map(|(id, address, subject)| json!({ "id": id, "address": address, "subject": subject }))
        .collect();
    Ok((StatusCode::CREATED, Json(json!({ "items": items }))))
}

async fn recipient_pin(who: Authed, id: Result<Path<i64>, PathRejection>) -> ApiResult<StatusCode> {
    let svc = who.need(Need::Org)?;
    svc.pin_recipient(id_of(id)?, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn recipient_unpin(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    let svc = who.need(Need::Org)?;
    svc.pin_recipient(id_of(id)?, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn recipient_delete(
    who: Authed,
    id: Result<Path<i64>, PathRejection>,
) -> ApiResult<StatusCode> {
    let svc = who.need(Need::Org)?;
    svc.delete_recipient(id_of(id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn recipients(who: Authed) -> ApiResult<Json<Value>> {
    let svc = who.need(Need::Read)?;
    let items: Vec<Value> = svc
        .store()
        .list_recipients(svc.org().id)
        .await
        .map_err(service::Error::from)?
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "address": r.address,
                "subject": r.subject,
                "fingerprint": r.fingerprint,
                "not_after": r.not_after,
                "source": r.source,
                "pinned": r.pinned,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// `POST /ocsp/<org>`: an OCSP request (RFC 6960, DER) about the
/// organisation's internal CA's certificates; the answer is signed by the
/// CA that issued them.
async fn ocsp_post(
    State(st): State<AppState>,
    org: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let org = org.map_err(|_| ApiError::not_found())?.0;
    let body =
        body.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "unreadable request body"))?;
    ocsp_answer(&st, org, &body).await
}

/// `GET /ocsp/<org>/<base64 of the DER request>` (RFC 6960 appendix A.1).
async fn ocsp_get(
    State(st): State<AppState>,
    p: Result<Path<(i64, String)>, PathRejection>,
) -> ApiResult<Response> {
    let (org, req) = p.map_err(|_| ApiError::not_found())?.0;
    // Unreadable base64 is answered as a malformed request, like bad DER.
    let der = base64::engine::general_purpose::STANDARD
        .decode(req.trim())
        .unwrap_or_default();
    ocsp_answer(&st, org, &der).await
}

async fn ocsp_answer(st: &AppState, org: i64, der: &[u8]) -> ApiResult<Response> {
    let svc = st
        .svc
        .for_org(service::OrgId(org), Actor::named("public"))
        .await
        .map_err(|_| ApiError::not_found())?;
    let answer = svc.ocsp_response(der).await.map_err(|e| {
        tracing::warn!(error = %e, "ocsp: no answer");
        ApiError::not_found()
    })?;
    Ok((
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/ocsp-response"),
            ),
            (CACHE_CONTROL, HeaderValue::from_static("max-age=300")),
        ],
        answer,
    )
        .into_response())
}

/// `/crl/<org>.crl` (the issuing CA's CRL) and `/crl/<org>-root.crl` (the
/// root's ARL); `issuing.crl` and `root.crl` name the first organisation's.
async fn crl(
    State(st): State<AppState>,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult<Response> {
    let Ok(Path(name)) = name else {
        return Err(ApiError::not_found());
    };
    let stem = name.strip_suffix(".crl").ok_or_else(ApiError::not_found)?;
    let (org, root) = match stem {
        "issuing" => (st.svc.org().id.0, false),
        "root" => (st.svc.org().id.0, true),
        s => match s.strip_suffix("-root") {
            Some(n) => (n.parse().map_err(|_| ApiError::not_found())?, true),
            None => (s.parse().map_err(|_| ApiError::not_found())?, false),
        },
    };
    let svc = st
        .svc
        .for_org(service::OrgId(org), Actor::named("public"))
        .await
        .map_err(|_| ApiError::not_found())?;
    let (issuing, arl) = svc
        .current_crls()
        .await
        .map_err(|_| ApiError::not_found())?;
    let der = if root { arl } else { issuing }.ok_or_else(ApiError::not_found)?;
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/pkix-crl"),
        )],
        der,
    )
        .into_response())
}
