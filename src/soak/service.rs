//! The service under test: `agentwatch run` as a child process, its `/metrics` and RSS.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio_util::sync::CancellationToken;

use super::{
    broker::{signal, start_err},
    SoakError, SECRET,
};
use crate::config::Config;

/// `agentwatch run` as a child process.
pub(super) struct Service {
    /// The soak's own stop signal, checked with the child's health.
    pub(super) stop: CancellationToken,
    pub(super) child: Option<Child>,
    pub(super) http: String,
    pub(super) client: reqwest::Client,
}

impl Service {
    pub(super) fn spawn(
        exe: &Path,
        cfg: &Config,
        dir: &Path,
        stop: CancellationToken,
    ) -> Result<Service, SoakError> {
        let path = dir.join("agentwatch.toml");
        std::fs::write(&path, cfg.to_masked_toml()).map_err(start_err("the service config"))?;
        let log =
            std::fs::File::create(dir.join("agentwatch.log")).map_err(start_err("service log"))?;
        let child = Command::new(exe)
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env_remove("AGENTWATCH_CONFIG")
            .env("AGENTWATCH__BK__APP_SECRET", SECRET)
            .env("RUST_LOG", "warn,agentwatch=info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(start_err("the service"))?;
        Ok(Service {
            stop,
            child: Some(child),
            http: cfg.http.listen.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| SoakError::Start {
                    what: "HTTP client",
                    detail: e.to_string(),
                })?,
        })
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub(super) fn check_alive(&mut self) -> Result<(), SoakError> {
        if self.stop.is_cancelled() {
            return Err(SoakError::Failed("interrupted".into()));
        }
        if let Some(c) = &mut self.child {
            if let Ok(Some(status)) = c.try_wait() {
                return Err(SoakError::Failed(format!(
                    "the service exited during the run ({status})"
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn metrics(&self) -> Option<String> {
        let r = self
            .client
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    pub(super) async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        f: impl Fn(&str) -> bool,
    ) -> Result<(), SoakError> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive()?;
            if let Some(m) = self.metrics().await {
                if f(&m) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(SoakError::Failed(format!("timed out waiting for {what}")));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub(super) fn status_kib(&self, field: &str) -> Option<u64> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()?
            .lines()
            .find(|l| l.starts_with(field))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub(super) fn rss(&self) -> Result<u64, SoakError> {
        self.status_kib("VmRSS:")
            .map(|kb| kb * 1024)
            .ok_or_else(|| SoakError::Io {
                what: "reading the service's RSS",
                detail: format!("/proc/{}/status", self.pid()),
            })
    }

    pub(super) fn rss_peak(&self) -> u64 {
        self.status_kib("VmHWM:").map_or(0, |kb| kb * 1024)
    }

    /// SIGTERM and wait up to 60 s; true when it exited with status 0.
    pub(super) async fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(super) struct ChildGuard(pub(super) Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
