//! `/v1/inbound`: the user's inbound e-mail address, who may send to it, and what its mail
//! means (`/v1/inbound/rules`).

use crate::auth::authenticate;
use crate::client::{command, refusal};
use crate::routes::{parse_body, parse_body_strict};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::Command;

pub(crate) async fn get_inbound(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({
        "domain": state.cfg.inbound_domain,
        "enabled": !u.inbound_token_hash.is_empty(),
        "allowed_senders": u.allowed_senders,
        "require_authenticated": u.require_authenticated_mail,
        "rules": u.mail_rules,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutInbound {
    allowed_senders: Vec<String>,
    /// Take only mail that passes SPF or DKIM.
    #[serde(default)]
    require_authenticated: bool,
}

pub(crate) async fn put_inbound(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: PutInbound = parse_body(&body)?;
    let senders = tocsin_model::validate_allowed_senders(&req.allowed_senders).map_err(|e| {
        ApiError::bad_request(
            format!("allowed_senders: {e}"),
            Some("allowed_senders".into()),
        )
    })?;
    let reply = command(
        &state,
        &u.id,
        Command::SetAllowedSenders {
            senders: senders.clone(),
            require_authenticated: req.require_authenticated,
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(
        json!({ "allowed_senders": senders, "require_authenticated": req.require_authenticated }),
    ))
}

/// `GET /v1/inbound/rules`: the e-mail rules, first match first.
pub(crate) async fn get_mail_rules(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({ "rules": u.mail_rules })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutRules {
    rules: Vec<tocsin_model::MailRule>,
}

/// `PUT /v1/inbound/rules {rules: [...]}`: replace them (an empty list: none).
pub(crate) async fn put_mail_rules(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: PutRules = parse_body_strict(&body)?;
    tocsin_model::mail_rules::validate(&req.rules)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let reply = command(
        &state,
        &u.id,
        Command::SetMailRules {
            rules: req.rules.clone(),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(json!({ "rules": req.rules })))
}

/// `POST /v1/inbound/address`: a new inbound address, shown this once (only its secret's
/// hash is kept); the old address stops taking mail.
pub(crate) async fn new_address(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let secret = crate::routes::users::inbound_secret();
    let reply = command(
        &state,
        &u.id,
        Command::SetInboundAddress {
            inbound_token_hash: tocsin_model::hash_token(&secret),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(json!({
        "inbound_address": crate::routes::users::inbound_address(&state, &u.id, &secret),
    })))
}
