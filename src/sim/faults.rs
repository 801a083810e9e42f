//! Fault injection: the transport and envelope failures a client must survive without
//! reporting a single false status change.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Deserializer, Serialize};

use super::config::probability;
use super::reply::{self, codes};

/// One way a polling request can fail.
///
/// GSE code 1011003 is deliberately absent: it means "none of these ids are known", which is
/// data about the agents, not a failure (CLARIFICATIONS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 500 with an HTML body, as from a crashed backend behind a plain proxy.
    ServerError,
    /// HTTP 502 gateway envelope, code 1650200.
    BadGateway,
    /// HTTP 429 gateway envelope, code 1642903, with `Retry-After: 1` and
    /// `X-Bkapi-RateLimit-Reset: 1`.
    RateLimited,
    /// The normal answer, but only after [`FaultConfig::slow_delay`] (30 s by default), so the
    /// client's timeout must fire. Cut short when the simulator shuts down.
    Slow,
    /// HTTP 200 whose body is not JSON.
    Malformed,
    /// HTTP 200 whose body is the first half of the normal answer.
    Truncated,
    /// HTTP 200 envelope, `result: false`, gateway code 1640301 (no permission).
    NoPermission,
    /// HTTP 200 envelope, `result: false`, the backend's generic internal error code.
    BackendError,
}

impl FaultKind {
    /// In declaration order: `kind as usize` indexes it.
    pub const ALL: [FaultKind; 8] = [
        FaultKind::ServerError,
        FaultKind::BadGateway,
        FaultKind::RateLimited,
        FaultKind::Slow,
        FaultKind::Malformed,
        FaultKind::Truncated,
        FaultKind::NoPermission,
        FaultKind::BackendError,
    ];
}

/// An error the API gateway answers by itself, before auth, faults or any backend
/// (bk-api.md §0.3). Set per endpoint with `Simulator::set_gateway_error`, it answers every
/// request on that endpoint until cleared: a misconfigured deployment rather than a random
/// fault, which is why it is not a [`FaultKind`] (random faults stay transport faults a
/// client must ride out). `agentwatch doctor` and its tests use it.
///
/// JSON form: `"invalid_args"`, `"no_permission"`, `"ip_not_allowed"`, `"api_not_found"`,
/// or `{"rate_limited": {"reset_secs": 30}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GatewayError {
    /// HTTP 400, 1640001 `INVALID_ARGS` (what a wrong app secret gets).
    InvalidArgs,
    /// HTTP 403, 1640301 `APP_NO_PERMISSION`: the app may not call this resource.
    NoPermission,
    /// HTTP 403, 1640302 `IP_NOT_ALLOWED`: the caller's IP is not whitelisted.
    IpNotAllowed,
    /// HTTP 404, 1640401 `API_NOT_FOUND`: no such (published) resource.
    ApiNotFound,
    /// HTTP 429, 1642903 `RATE_LIMIT_RESTRICTION` with `X-Bkapi-RateLimit-Reset` (and
    /// `Retry-After`) set to `reset_secs`.
    RateLimited { reset_secs: u64 },
}

impl GatewayError {
    pub(crate) fn response(self, request_id: &str) -> Response {
        let (status, code, name, message) = match self {
            GatewayError::InvalidArgs => (
                StatusCode::BAD_REQUEST,
                codes::GW_INVALID_ARGS,
                "INVALID_ARGS",
                "App authentication failed, bk_app_code or bk_app_secret is incorrect",
            ),
            GatewayError::NoPermission => (
                StatusCode::FORBIDDEN,
                codes::GW_APP_NO_PERMISSION,
                "APP_NO_PERMISSION",
                "App has no permission to the resource",
            ),
            GatewayError::IpNotAllowed => (
                StatusCode::FORBIDDEN,
                codes::GW_IP_NOT_ALLOWED,
                "IP_NOT_ALLOWED",
                "Request rejected by ip restriction",
            ),
            GatewayError::ApiNotFound => (
                StatusCode::NOT_FOUND,
                codes::GW_API_NOT_FOUND,
                "API_NOT_FOUND",
                "API not found: wrong method or path, or the resource is not published",
            ),
            GatewayError::RateLimited { reset_secs } => {
                // The random fault's answer (the endpoint does not matter for a 429), with
                // the chosen reset.
                let mut response = canned(
                    FaultKind::RateLimited,
                    Endpoint::GseListAgentState,
                    request_id,
                );
                let reset = HeaderValue::from(reset_secs);
                let headers = response.headers_mut();
                headers.insert(header::RETRY_AFTER, reset.clone());
                headers.insert(HeaderName::from_static("x-bkapi-ratelimit-reset"), reset);
                return response;
            }
        };
        reply::gateway_error(status, code, name, message, request_id)
    }
}

/// A polling endpoint of the simulator (the control API is never faulted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// NodeMan `api/host/search/`.
    NodemanHostSearch,
    /// GSE 2.0 `cluster/list_agent_state`.
    GseListAgentState,
    /// GSE 1.x ESB `gse/get_agent_status/`.
    GseGetAgentStatus,
    /// NodeMan `api/plugin/search/`.
    NodemanPluginSearch,
    /// GSE 2.0 `cluster/list_agent_info`.
    GseListAgentInfo,
    /// GSE 1.x ESB `gse/get_agent_info/`.
    GseGetAgentInfo,
    /// CMDB `list_hosts_without_biz` and `list_biz_hosts`, gateway and ESB.
    CmdbListHosts,
}

impl Endpoint {
    pub const ALL: [Endpoint; 7] = [
        Endpoint::NodemanHostSearch,
        Endpoint::GseListAgentState,
        Endpoint::GseGetAgentStatus,
        Endpoint::NodemanPluginSearch,
        Endpoint::GseListAgentInfo,
        Endpoint::GseGetAgentInfo,
        Endpoint::CmdbListHosts,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    fn internal_error_code(self) -> i64 {
        match self {
            Endpoint::NodemanHostSearch | Endpoint::NodemanPluginSearch => codes::NODEMAN_INTERNAL,
            Endpoint::GseListAgentState | Endpoint::GseListAgentInfo => codes::GSE_INTERNAL,
            Endpoint::GseGetAgentStatus | Endpoint::GseGetAgentInfo => codes::ESB_COMPONENT_ERROR,
            Endpoint::CmdbListHosts => super::cmdb::codes::INTERNAL,
        }
    }
}

/// Which faults to inject, where, and how often.
///
/// JSON form (`PUT /_sim/faults`): `{"rate": 0.2, "kinds": ["slow", "truncated"],
/// "endpoints": ["gse_list_agent_state"], "slow_delay": "30s"}`; `kinds` and `endpoints`
/// may also be `"all"`, and an empty or missing list means all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Probability (0..=1) that a request on a selected endpoint gets a fault.
    #[serde(default)]
    pub rate: f64,
    /// Kinds to choose from, uniformly; empty means every kind.
    #[serde(default, deserialize_with = "all_or_list")]
    pub kinds: Vec<FaultKind>,
    /// Endpoints to fault; empty means every polling endpoint.
    #[serde(default, deserialize_with = "all_or_list")]
    pub endpoints: Vec<Endpoint>,
    /// How long a [`FaultKind::Slow`] answer is held back.
    #[serde(default = "default_slow_delay", with = "humantime_serde")]
    pub slow_delay: Duration,
}

fn default_slow_delay() -> Duration {
    Duration::from_secs(30)
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            rate: 0.0,
            kinds: Vec::new(),
            endpoints: Vec::new(),
            slow_delay: default_slow_delay(),
        }
    }
}

impl FaultConfig {
    /// Every kind on every polling endpoint with probability `rate`.
    pub fn with_rate(rate: f64) -> Self {
        Self {
            rate,
            ..Self::default()
        }
    }

    /// Only `kind`, on every polling endpoint, with probability `rate`.
    pub fn only(kind: FaultKind, rate: f64) -> Self {
        Self {
            rate,
            kinds: vec![kind],
            ..Self::default()
        }
    }

    fn applies_to(&self, endpoint: Endpoint) -> bool {
        self.endpoints.is_empty() || self.endpoints.contains(&endpoint)
    }
}

fn all_or_list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr<T> {
        Word(String),
        List(Vec<T>),
    }
    match Repr::deserialize(deserializer)? {
        Repr::Word(word) if word == "all" => Ok(Vec::new()),
        Repr::Word(word) => Err(serde::de::Error::custom(format!(
            "expected \"all\" or a list, got {word:?}"
        ))),
        Repr::List(list) => Ok(list),
    }
}

/// The live fault settings plus their random source.
pub(crate) struct Faults {
    inner: Mutex<Inner>,
}

struct Inner {
    config: FaultConfig,
    rng: SmallRng,
    /// Inventory page number → (failures left, how to fail).
    page_failures: HashMap<u32, (u32, FaultKind)>,
    /// Endpoints the gateway refuses outright, until cleared.
    gateway_errors: HashMap<Endpoint, GatewayError>,
}

impl Faults {
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                config: FaultConfig::with_rate(rate),
                // Distinct stream from the population generator, still reproducible.
                rng: SmallRng::seed_from_u64(seed ^ 0x6661_756c_7473),
                page_failures: HashMap::new(),
                gateway_errors: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    pub fn set(&self, config: FaultConfig) {
        self.lock().config = config;
    }

    pub fn set_rate(&self, rate: f64) {
        self.lock().config.rate = rate;
    }

    pub fn slow_delay(&self) -> Duration {
        self.lock().config.slow_delay
    }

    /// Draws whether this request on `endpoint` fails, and how.
    pub fn pick(&self, endpoint: Endpoint) -> Option<FaultKind> {
        let mut inner = self.lock();
        let Inner { config, rng, .. } = &mut *inner;
        let rate = probability(config.rate);
        if rate == 0.0 || !config.applies_to(endpoint) || !rng.random_bool(rate) {
            return None;
        }
        let kinds: &[FaultKind] = if config.kinds.is_empty() {
            &FaultKind::ALL
        } else {
            &config.kinds
        };
        Some(kinds[rng.random_range(0..kinds.len())])
    }

    pub fn fail_page(&self, page: u32, times: u32, kind: FaultKind) {
        let mut inner = self.lock();
        if times == 0 {
            inner.page_failures.remove(&page);
        } else {
            inner.page_failures.insert(page, (times, kind));
        }
    }

    pub fn set_gateway_error(&self, endpoint: Endpoint, error: Option<GatewayError>) {
        let mut inner = self.lock();
        match error {
            Some(e) => inner.gateway_errors.insert(endpoint, e),
            None => inner.gateway_errors.remove(&endpoint),
        };
    }

    pub fn gateway_error(&self, endpoint: Endpoint) -> Option<GatewayError> {
        self.lock().gateway_errors.get(&endpoint).copied()
    }

    pub fn gateway_errors(&self) -> Vec<(Endpoint, GatewayError)> {
        let mut all: Vec<_> = self
            .lock()
            .gateway_errors
            .iter()
            .map(|(e, g)| (*e, *g))
            .collect();
        all.sort_by_key(|(e, _)| *e);
        all
    }

    /// Consumes one scheduled failure of inventory page `page`, if any is left.
    pub fn take_page_failure(&self, page: u32) -> Option<FaultKind> {
        let mut inner = self.lock();
        let (left, kind) = inner.page_failures.get_mut(&page)?;
        let kind = *kind;
        *left -= 1;
        if *left == 0 {
            inner.page_failures.remove(&page);
        }
        Some(kind)
    }
}

/// The canned response for a fault that replaces the answer outright. `Slow` and `Truncated`
/// need the real answer and are handled by the caller; they fall back to a 500 here.
pub(crate) fn canned(kind: FaultKind, endpoint: Endpoint, request_id: &str) -> Response {
    match kind {
        FaultKind::BadGateway => reply::gateway_error(
            StatusCode::BAD_GATEWAY,
            codes::GW_BAD_GATEWAY,
            "BAD_GATEWAY",
            "Bad Gateway: backend connection failed",
            request_id,
        ),
        FaultKind::RateLimited => {
            let mut response = reply::gateway_error(
                StatusCode::TOO_MANY_REQUESTS,
                codes::GW_RATE_LIMITED,
                "RATE_LIMIT_RESTRICTION",
                "API rate limit exceeded by resource strategy",
                request_id,
            );
            let headers = response.headers_mut();
            let one = HeaderValue::from_static("1");
            headers.insert(header::RETRY_AFTER, one.clone());
            headers.insert(HeaderName::from_static("x-bkapi-ratelimit-reset"), one);
            headers.insert(
                HeaderName::from_static("x-bkapi-ratelimit-limit"),
                HeaderValue::from_static("100"),
            );
            headers.insert(
                HeaderName::from_static("x-bkapi-ratelimit-remaining"),
                HeaderValue::from_static("0"),
            );
            headers.insert(
                HeaderName::from_static("x-bkapi-ratelimit-plugin"),
                HeaderValue::from_static("bk-resource-ratelimit"),
            );
            response
        }
        FaultKind::Malformed => reply::json(
            StatusCode::OK,
            br#"{"result": true, "code": 0, "data": [{"bk_agent_id": }"#.to_vec(),
            request_id,
        ),
        FaultKind::NoPermission => reply::json(
            StatusCode::OK,
            reply::gateway_error_body(
                codes::GW_APP_NO_PERMISSION,
                "APP_NO_PERMISSION",
                "App has no permission to the resource",
            ),
            request_id,
        ),
        FaultKind::BackendError => reply::json(
            StatusCode::OK,
            reply::business_error(
                endpoint.internal_error_code(),
                "internal error, please try again later",
                request_id,
            ),
            request_id,
        ),
        FaultKind::ServerError | FaultKind::Slow | FaultKind::Truncated => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><body><h1>500 Internal Server Error</h1></body></html>",
        )
            .into_response(),
    }
}

/// A strict prefix of a JSON document that has no trailing whitespace is never valid JSON.
pub(crate) fn truncate(mut body: Vec<u8>) -> Vec<u8> {
    body.truncate(body.len() / 2);
    body
}
