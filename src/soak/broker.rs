//! The soak's broker: tansu on a persistent engine, so a restart loses nothing.
//!
//! tansu 0.6.0 as shipped here has only the object-store engine besides memory
//! (`postgres://` answers "feature not enabled"), so the broker keeps its log in S3 on a
//! local S3 stand-in (`python3 -m moto.server`, PyPI `moto[server]`) that outlives every
//! broker restart. `--outage pause` instead SIGSTOPs / SIGCONTs a memory-engine broker:
//! an outage, but not a restart.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::SoakError;

/// How the broker outage is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outage {
    /// Kill tansu (TERM, then KILL) and start it again on the same S3 bucket.
    Restart,
    /// SIGSTOP tansu (memory engine) for `--outage-length`, then SIGCONT.
    Pause,
    /// Negative control: restart a memory-engine tansu, which loses the whole log; the
    /// soak must then fail (proves its checks can see a loss).
    RestartMemory,
}

pub struct Broker {
    bin: PathBuf,
    port: u16,
    outage: Outage,
    /// `http://127.0.0.1:PORT` of the S3 stand-in, with [`Outage::Restart`].
    s3: Option<String>,
    s3_child: Option<Child>,
    child: Option<Child>,
    log: PathBuf,
}

const BUCKET: &str = "tansu";

impl Broker {
    pub async fn start(bin: &Path, outage: Outage, dir: &Path) -> Result<Broker, SoakError> {
        let port = free_port()?;
        let mut broker = Broker {
            bin: bin.to_owned(),
            port,
            outage,
            s3: None,
            s3_child: None,
            child: None,
            log: dir.join("tansu.log"),
        };
        if outage == Outage::Restart {
            let s3_port = free_port()?;
            let log = std::fs::File::create(dir.join("s3.log")).map_err(start_err("s3 log"))?;
            let child = Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
                .arg(s3_port.to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::from(log))
                .spawn()
                .map_err(start_err("S3 stand-in (python3 -m moto.server)"))?;
            broker.s3_child = Some(child);
            let url = format!("http://127.0.0.1:{s3_port}");
            // Create the bucket, retrying while the server starts.
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match http.put(format!("{url}/{BUCKET}")).send().await {
                    Ok(r) if r.status().is_success() => break,
                    _ if Instant::now() > deadline => {
                        return Err(SoakError::Start {
                            what: "S3 stand-in",
                            detail: "python3 -m moto.server did not create the bucket within \
                                     60s; install it with pip install 'moto[server]'"
                                .into(),
                        })
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            broker.s3 = Some(url);
        }
        broker.spawn()?;
        Ok(broker)
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kind(&self) -> &'static str {
        match self.outage {
            Outage::Restart => "tansu s3 (moto), restarted",
            Outage::Pause => "tansu memory, SIGSTOP/SIGCONT",
            Outage::RestartMemory => "tansu memory, restarted (loses the log)",
        }
    }

    fn spawn(&mut self) -> Result<(), SoakError> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(start_err("tansu log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        match &self.s3 {
            Some(endpoint) => {
                cmd.args(["--storage-engine", &format!("s3://{BUCKET}/")])
                    .env("AWS_ENDPOINT", endpoint)
                    .env("AWS_ALLOW_HTTP", "true")
                    .env("AWS_ACCESS_KEY_ID", "soak")
                    .env("AWS_SECRET_ACCESS_KEY", "soak")
                    .env("AWS_DEFAULT_REGION", "us-east-1");
            }
            None => {
                cmd.args(["--storage-engine", "memory://tansu/"]);
            }
        }
        let child = cmd.spawn().map_err(start_err("tansu"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                return Err(SoakError::Start {
                    what: "tansu",
                    detail: format!("not listening on port {} within 30s", self.port),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// One outage: a restart (TERM, up to 3 s, KILL, start again) or a pause of `length`.
    pub async fn outage(&mut self, length: Duration) -> Result<(), SoakError> {
        let Some(pid) = self.child.as_ref().map(Child::id) else {
            return self.spawn();
        };
        match self.outage {
            Outage::Restart | Outage::RestartMemory => {
                // tansu ignores SIGTERM while clients are connected (CLARIFICATIONS.md).
                signal(pid, "TERM");
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    if let Some(c) = &mut self.child {
                        if matches!(c.try_wait(), Ok(Some(_))) {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                self.stop_child();
                tokio::time::sleep(length).await;
                self.spawn()
            }
            Outage::Pause => {
                signal(pid, "STOP");
                tokio::time::sleep(length).await;
                signal(pid, "CONT");
                Ok(())
            }
        }
    }

    fn stop_child(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            signal(c.id(), "CONT");
        }
        self.stop_child();
        if let Some(mut c) = self.s3_child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends `SIGsig` to `pid` with kill(1) (the crate forbids `unsafe`, so no libc call).
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn free_port() -> Result<u16, SoakError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(start_err("a free port"))
}

pub fn start_err(what: &'static str) -> impl Fn(std::io::Error) -> SoakError {
    move |e| SoakError::Start {
        what,
        detail: e.to_string(),
    }
}
