//! [`BkClient`]: the one HTTP loop every BlueKing API call goes through — auth headers,
//! bounded concurrency, per-attempt timeout, capped body, envelope check, retries with
//! back-off and jitter, and the per-attempt metrics.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use reqwest::{
    header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE},
    Url,
};
use secrecy::ExposeSecret;
use serde::{de::DeserializeOwned, Serialize};
use tokio::{sync::Semaphore, time::Instant};

use super::{backoff, envelope, ApiError, BkConfig, RetryConfig};
use crate::{
    config::FieldErrors,
    metrics::{Metrics, UPSTREAM_OUTCOMES},
    tls::ClientTlsConfig,
};

/// Which BlueKing system a client talks to (the `upstream` metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upstream {
    Gse,
    Nodeman,
    Cmdb,
}

impl Upstream {
    pub fn label(self) -> &'static str {
        match self {
            Upstream::Gse => "gse",
            Upstream::Nodeman => "nodeman",
            Upstream::Cmdb => "cmdb",
        }
    }

    /// The config key of this upstream's response size limit.
    pub fn max_response_bytes_field(self) -> &'static str {
        match self {
            Upstream::Gse => "gse.max_response_bytes",
            Upstream::Nodeman => "nodeman.max_response_bytes",
            Upstream::Cmdb => "cmdb.max_response_bytes",
        }
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

const AUTH_HEADER: &str = "x-bkapi-authorization";
const TENANT_HEADER: &str = "x-bk-tenant-id";

/// A client for one upstream. Cheap to clone; clones share the connection pool and
/// the concurrency limit.
#[derive(Clone)]
pub struct BkClient {
    inner: Arc<Inner>,
}

struct Inner {
    upstream: Upstream,
    /// Carries the auth, tenant and content-type headers as defaults.
    http: reqwest::Client,
    timeout: Duration,
    retry: RetryConfig,
    /// One permit per attempt in flight; not held while backing off.
    permits: Semaphore,
    max_response_bytes: usize,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for BkClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Deliberately omits the headers.
        f.debug_struct("BkClient")
            .field("upstream", &self.inner.upstream)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry)
            .field("max_response_bytes", &self.inner.max_response_bytes)
            .finish_non_exhaustive()
    }
}

/// The response of one attempt, before the envelope is looked at.
struct Raw {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl BkClient {
    pub fn new(
        upstream: Upstream,
        bk: &BkConfig,
        timeout: Duration,
        retry: RetryConfig,
        concurrency: usize,
        max_response_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ApiError> {
        let build = |detail: String| ApiError::Build {
            upstream: upstream.label(),
            detail,
        };
        let mut builder = reqwest::Client::builder()
            .default_headers(default_headers(upstream, bk)?)
            .timeout(timeout)
            .connect_timeout(timeout)
            // A redirect would carry the auth header to wherever it points (reqwest
            // only strips the standard credential headers); report it instead.
            .redirect(reqwest::redirect::Policy::none());
        if !bk.tls.is_default() {
            builder = builder.use_preconfigured_tls(tls_config(&bk.tls).map_err(build)?);
        }
        let http = builder.build().map_err(|e| build(error_chain(&e)))?;
        // Dashboards see every outcome of this upstream from the start, at zero.
        for outcome in UPSTREAM_OUTCOMES {
            metrics
                .upstream_requests_total
                .with_label_values(&[upstream.label(), outcome]);
        }
        Ok(BkClient {
            inner: Arc::new(Inner {
                upstream,
                http,
                timeout,
                retry,
                permits: Semaphore::new(concurrency.max(1)),
                max_response_bytes,
                metrics,
            }),
        })
    }

    pub fn upstream(&self) -> Upstream {
        self.inner.upstream
    }

    /// POST JSON `body` to `url`, check the envelope, return `data` decoded as `T`
    /// (`data` null or absent decodes as JSON null, so use `Option<T>` to accept it).
    ///
    /// Timeouts, connection errors, HTTP 5xx and 429 are retried up to
    /// `retry.max_retries` times; everything else fails at once.
    pub async fn post<B, T>(&self, url: &str, body: &B) -> Result<T, ApiError>
    where
        B: Serialize + ?Sized,
        T: DeserializeOwned,
    {
        let inner = &*self.inner;
        let label = inner.upstream.label();
        let build = |detail: String| ApiError::Build {
            upstream: label,
            detail,
        };
        let url = Url::parse(url).map_err(|e| build(format!("invalid URL {url:?}: {e}")))?;
        let endpoint = endpoint(inner.upstream, &url);
        let body = Bytes::from(
            serde_json::to_vec(body)
                .map_err(|e| build(format!("cannot encode the body for {endpoint}: {e}")))?,
        );

        let mut retry = 0;
        loop {
            let attempt = retry + 1;
            let err = match self.attempt(&url, &endpoint, body.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if !err.is_retryable() || retry >= inner.retry.max_retries {
                if err.is_retryable() {
                    tracing::warn!(
                        upstream = label,
                        attempts = attempt,
                        error = %err,
                        "BlueKing API call failed after all retries"
                    );
                }
                return Err(err);
            }
            retry += 1;
            let server_wait = match &err {
                ApiError::RateLimited { retry_after, .. } => *retry_after,
                _ => None,
            };
            let wait = backoff::delay(&inner.retry, retry, server_wait);
            tracing::debug!(
                upstream = label,
                attempt,
                error = %err,
                backoff_ms = wait.as_millis() as u64,
                "retrying BlueKing API call"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt: send, read the capped body, decode, count.
    async fn attempt<T: DeserializeOwned>(
        &self,
        url: &Url,
        endpoint: &str,
        body: Bytes,
    ) -> Result<T, ApiError> {
        let inner = &*self.inner;
        let label = inner.upstream.label();
        let raw = {
            // The semaphore is never closed, so acquiring only waits.
            let _permit = inner
                .permits
                .acquire()
                .await
                .expect("the concurrency semaphore is never closed");
            let started = Instant::now();
            let raw = self.send(url, endpoint, body).await;
            inner
                .metrics
                .upstream_request_duration_seconds
                .with_label_values(&[label])
                .observe(started.elapsed().as_secs_f64());
            raw
        };
        let result = raw.and_then(|raw| {
            if (200..300).contains(&raw.status) {
                envelope::decode(endpoint, &raw.body)
            } else {
                let wait = (raw.status == 429)
                    .then(|| backoff::server_wait(&raw.headers))
                    .flatten();
                Err(envelope::http_error(endpoint, raw.status, &raw.body, wait))
            }
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.metric_label(),
        };
        inner
            .metrics
            .upstream_requests_total
            .with_label_values(&[label, outcome])
            .inc();
        result
    }

    async fn send(&self, url: &Url, endpoint: &str, body: Bytes) -> Result<Raw, ApiError> {
        let inner = &*self.inner;
        let mut resp = inner
            .http
            .post(url.clone())
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(endpoint, e))?;
        let status = resp.status().as_u16();
        let headers = std::mem::take(resp.headers_mut());
        let success = (200..300).contains(&status);
        let limit = inner.max_response_bytes;
        let too_large = || ApiError::TooLarge {
            endpoint: endpoint.to_owned(),
            limit,
            field: inner.upstream.max_response_bytes_field(),
        };

        if resp.content_length().is_some_and(|n| n > limit as u64) {
            if success {
                return Err(too_large());
            }
            // The status alone says what went wrong.
            return Ok(Raw {
                status,
                headers,
                body: Bytes::new(),
            });
        }
        let capacity = resp.content_length().map_or(8 * 1024, |n| n as usize);
        let mut buf = Vec::with_capacity(capacity);
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > limit {
                        if success {
                            return Err(too_large());
                        }
                        break;
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if success => return Err(self.transport_error(endpoint, e)),
                // An error status with a broken body is still that error status.
                Err(_) => break,
            }
        }
        Ok(Raw {
            status,
            headers,
            body: Bytes::from(buf),
        })
    }

    /// Classifies a reqwest error by its type, never by its text.
    fn transport_error(&self, endpoint: &str, e: reqwest::Error) -> ApiError {
        let endpoint = endpoint.to_owned();
        let e = e.without_url();
        if e.is_timeout() {
            ApiError::Timeout {
                endpoint,
                after: self.inner.timeout,
            }
        } else if e.is_connect() {
            ApiError::Connect {
                endpoint,
                detail: root_cause(&e),
                source: e,
            }
        } else if e.is_builder() {
            ApiError::Build {
                upstream: self.inner.upstream.label(),
                detail: format!("{endpoint}: {}", error_chain(&e)),
            }
        } else {
            ApiError::Transport {
                endpoint,
                detail: error_chain(&e),
                source: e,
            }
        }
    }
}

/// The rustls config of `[bk.tls]`; validation already reported bad fields, so this
/// only fails for a config that skipped it.
pub(crate) fn tls_config(tls: &ClientTlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut errs = FieldErrors::default();
    tls.build("bk.tls", &mut errs)
        .ok_or_else(|| errs.to_string().trim().to_owned())
}

/// Auth (sensitive), optional tenant, and content type, built once.
fn default_headers(upstream: Upstream, bk: &BkConfig) -> Result<HeaderMap, ApiError> {
    let build = |detail: &str| ApiError::Build {
        upstream: upstream.label(),
        detail: detail.to_owned(),
    };
    let secret = bk
        .app_secret
        .as_ref()
        .ok_or_else(|| build("bk.app_secret is not set"))?;
    #[derive(Serialize)]
    struct Auth<'a> {
        bk_app_code: &'a str,
        bk_app_secret: &'a str,
        bk_username: &'a str,
    }
    let json = serde_json::to_vec(&Auth {
        bk_app_code: &bk.app_code,
        bk_app_secret: secret.expose_secret(),
        bk_username: &bk.username,
    })
    .map_err(|_| build("cannot encode the auth header"))?;
    // JSON escapes control characters, so only the (allowed) non-ASCII bytes remain.
    let mut auth = HeaderValue::from_bytes(&json)
        .map_err(|_| build("bk.app_code / bk.app_secret / bk.username cannot form a header"))?;
    auth.set_sensitive(true);

    let mut headers = HeaderMap::new();
    headers.insert(HeaderName::from_static(AUTH_HEADER), auth);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(tenant) = bk.tenant_id.as_deref().filter(|t| !t.is_empty()) {
        let value = HeaderValue::from_str(tenant)
            .map_err(|_| build("bk.tenant_id is not a valid header value"))?;
        headers.insert(HeaderName::from_static(TENANT_HEADER), value);
    }
    Ok(headers)
}

/// `"<upstream> <scheme://host:port/path>"`: no user info, query or fragment.
fn endpoint(upstream: Upstream, url: &Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    format!("{upstream} {shown}")
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(s) = cur.source() {
        cur = s;
    }
    cur.to_string()
}
