//! Black-box tests of the simulator over real HTTP on 127.0.0.1:0.

mod api;
mod cmdb;
mod control;
mod details;
mod faults;
mod population;

use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{paths, SimConfig, Simulator};

pub(super) struct Harness {
    pub sim: Arc<Simulator>,
    pub base: String,
    pub client: reqwest::Client,
    pub shutdown: CancellationToken,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub(super) fn small(agents: usize) -> SimConfig {
    SimConfig {
        agents,
        ..SimConfig::default()
    }
}

pub(super) async fn start(cfg: SimConfig) -> Harness {
    let sim = Simulator::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("local addr"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(Arc::clone(&sim).serve(listener, shutdown.clone()));
    Harness {
        sim,
        base,
        client: reqwest::Client::new(),
        shutdown,
        task: Some(task),
    }
}

pub(super) fn auth_value() -> String {
    json!({"bk_app_code": "agentwatch", "bk_app_secret": "sim-secret", "bk_username": "admin"})
        .to_string()
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POST with valid credentials; returns the status and the body parsed as JSON.
    pub async fn call(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("X-Bkapi-Authorization", auth_value())
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        let body = response.json().await.expect("json body");
        (status, body)
    }

    pub async fn list_agent_state(&self, ids: &[&str]) -> Value {
        let (status, body) = self
            .call(paths::GSE_LIST_AGENT_STATE, json!({ "agent_id_list": ids }))
            .await;
        assert_eq!(status, 200);
        body
    }

    pub async fn host_page(&self, page: i64, pagesize: i64) -> Value {
        let body = json!({"page": page, "pagesize": pagesize, "bk_biz_id": []});
        let (status, body) = self.call(paths::NODEMAN_HOST_SEARCH, body).await;
        assert_eq!(status, 200);
        body
    }

    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("control request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("control body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}
