//! App authentication as the API gateway does it (bk-api.md §0.1, §0.3).

use std::borrow::Cow;

use axum::http::HeaderMap;
use serde::Deserialize;

use super::config::SimConfig;

pub(crate) const AUTH_HEADER: &str = "x-bkapi-authorization";

#[derive(Deserialize)]
struct Credentials<'a> {
    #[serde(borrow, default)]
    bk_app_code: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    bk_app_secret: Option<Cow<'a, str>>,
}

/// Checks the app credentials; `Err` carries the gateway's message for code 1640001.
///
/// `body_fallback` is for ESB routes, which historically took `bk_app_code` and
/// `bk_app_secret` in the JSON body; the header still wins when present.
pub(crate) fn check(
    cfg: &SimConfig,
    headers: &HeaderMap,
    body: &[u8],
    body_fallback: bool,
) -> Result<(), &'static str> {
    let Some(value) = headers.get(AUTH_HEADER) else {
        if body_fallback {
            if let Ok(creds) = serde_json::from_slice::<Credentials>(body) {
                if creds.bk_app_code.is_some() {
                    return verify(cfg, &creds);
                }
            }
        }
        return Err(
            "Please provide X-Bkapi-Authorization in the request header \
                    with bk_app_code and bk_app_secret",
        );
    };
    let creds = value
        .to_str()
        .ok()
        .and_then(|text| serde_json::from_str::<Credentials>(text).ok())
        .ok_or("Parameter X-Bkapi-Authorization is not a valid JSON object")?;
    verify(cfg, &creds)
}

fn verify(cfg: &SimConfig, creds: &Credentials) -> Result<(), &'static str> {
    let code = creds.bk_app_code.as_deref().unwrap_or_default();
    if code.is_empty() {
        return Err("App authentication failed, please provide a valid bk_app_code");
    }
    let secret = creds.bk_app_secret.as_deref().unwrap_or_default();
    if code != cfg.app_code || !constant_time_eq(secret.as_bytes(), cfg.app_secret.as_bytes()) {
        return Err("App authentication failed, bk_app_code or bk_app_secret is incorrect");
    }
    Ok(())
}

// Cheap to do right, and keeps the simulator from teaching timing-leaky habits.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
