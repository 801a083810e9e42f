//! The simulator's control API as the soak uses it: faults, truth, and the churn after
//! each sweep.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use rand::{rngs::SmallRng, seq::IndexedRandom as _, Rng as _};

use super::{SoakError, TruthAgent};

#[derive(Default)]
pub(super) struct ChurnRound {
    pub(super) flapped: u64,
    pub(super) versions: u64,
    pub(super) added: u64,
    pub(super) removed: u64,
}

pub(super) async fn churn(
    ctl: &Control,
    ids: &mut Vec<String>,
    rng: &mut SmallRng,
    rate: f64,
) -> Result<ChurnRound, SoakError> {
    let total = (ids.len() as f64 * rate).round() as usize;
    let versions = total / 5;
    let adds = total / 20;
    let removes = (total / 20).min(ids.len().saturating_sub(1));
    let flapped = ctl
        .post("/_sim/flap", serde_json::Value::Null)
        .await?
        .get("toggled")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    let picks: Vec<String> = ids
        .choose_multiple(rng, versions + removes)
        .cloned()
        .collect();
    let (to_version, to_remove) = picks.split_at(versions.min(picks.len()));
    let patch: Vec<(String, String)> = to_version
        .iter()
        .map(|id| {
            (
                id.clone(),
                format!("2.{}.{}", rng.random_range(1..4), rng.random_range(0..20)),
            )
        })
        .collect();
    let updated = futures::stream::iter(patch)
        .map(|(id, v)| async move {
            ctl.put(
                &format!("/_sim/agents/{}", urlencode(&id)),
                serde_json::json!({"version": v}),
            )
            .await
            .is_ok()
        })
        .buffer_unordered(16)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    let removed: Vec<String> = futures::stream::iter(to_remove.to_vec())
        .map(|id| async move {
            let url = format!("{}/_sim/agents/{}", ctl.base, urlencode(&id));
            match ctl.http.delete(url).send().await {
                Ok(r) if r.status().is_success() => Some(id),
                _ => None,
            }
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;
    let gone: std::collections::HashSet<&String> = removed.iter().collect();
    ids.retain(|id| !gone.contains(id));
    let mut added = 0;
    for _ in 0..adds {
        if let Ok(v) = ctl.post("/_sim/hosts", serde_json::json!({})).await {
            if let Some(id) = v.get("agent_id").and_then(serde_json::Value::as_str) {
                ids.push(id.to_owned());
                added += 1;
            }
        }
    }
    Ok(ChurnRound {
        flapped,
        versions: updated as u64,
        added,
        removed: removed.len() as u64,
    })
}

pub(super) fn urlencode(id: &str) -> String {
    id.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

pub(super) struct Control {
    pub(super) base: String,
    pub(super) http: reqwest::Client,
}

impl Control {
    pub(super) async fn wait_up(&self) -> Result<(), SoakError> {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self
            .http
            .get(format!("{}/_sim/stats", self.base))
            .send()
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(SoakError::Start {
                    what: "the simulator",
                    detail: "no answer within 300s".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    pub(super) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, SoakError> {
        self.send_as(req).await
    }

    pub(super) async fn send_as<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, SoakError> {
        let err = |detail: String| SoakError::Io {
            what: "simulator control call",
            detail,
        };
        let resp = req.send().await.map_err(|e| err(e.to_string()))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("{status}: {}", String::from_utf8_lossy(&body))));
        }
        serde_json::from_slice(&body).map_err(|e| err(e.to_string()))
    }

    pub(super) async fn put(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, SoakError> {
        self.send(self.http.put(format!("{}{path}", self.base)).json(&body))
            .await
    }

    pub(super) async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, SoakError> {
        let req = self.http.post(format!("{}{path}", self.base));
        let req = if body.is_null() { req } else { req.json(&body) };
        self.send(req).await
    }

    pub(super) async fn truth(&self) -> Result<Vec<TruthAgent>, SoakError> {
        // Straight into the few fields compared: 100k agents as a JSON tree would take
        // hundreds of MiB.
        self.send_as(self.http.get(format!("{}/_sim/agents", self.base)))
            .await
    }

    pub(super) async fn faults_injected(&self) -> Result<u64, SoakError> {
        let v = self
            .send(self.http.get(format!("{}/_sim/stats", self.base)))
            .await?;
        Ok(v.get("faults")
            .and_then(serde_json::Value::as_object)
            .map_or(0, |m| {
                m.values().filter_map(serde_json::Value::as_u64).sum()
            }))
    }
}
