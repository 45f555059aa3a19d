//! The part of the Fly Machines REST API the backend uses: create a machine,
//! wait for a state, read its state, stop, destroy, list volumes. Request and answer types follow the API's
//! documented JSON; retries follow FLAME's FlyBackend.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::error::{FlyError, cut};
use super::init::MachineInit;

/// Create attempts after the first on a no-capacity answer (FLAME: 10).
pub(super) const CAPACITY_RETRIES: u32 = 10;
/// Back-off for 429 and 5xx answers doubles up to this many retry delays.
const MAX_BACKOFF_FACTOR: u32 = 8;
/// Longest `timeout` the wait endpoint takes, in seconds.
const MAX_WAIT_SECS: u64 = 60;

/// The API token: shown nowhere.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct ApiToken(String);

impl ApiToken {
    pub(super) fn new(token: String) -> Option<Self> {
        (!token.is_empty()).then_some(ApiToken(token))
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// `POST /v1/apps/{app}/machines`.
#[derive(Debug, Serialize)]
pub(super) struct CreateMachine<'a> {
    pub(super) name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) region: Option<&'a str>,
    pub(super) config: MachineConfig<'a>,
}

/// The machine's `config` object.
#[derive(Serialize)]
pub(super) struct MachineConfig<'a> {
    pub(super) image: &'a str,
    pub(super) init: &'a MachineInit,
    pub(super) guest: Guest<'a>,
    pub(super) auto_destroy: bool,
    pub(super) restart: Restart,
    pub(super) env: BTreeMap<&'a str, &'a str>,
    pub(super) services: &'a [serde_json::Value],
    pub(super) metadata: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) mounts: Vec<MountRef<'a>>,
}

/// One entry of the machine's `mounts`: a volume by id, at a path.
#[derive(Debug, Serialize)]
pub(super) struct MountRef<'a> {
    pub(super) volume: &'a str,
    pub(super) path: &'a str,
}

/// The fields of a Volume answer the backend reads.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Volume {
    pub(super) id: String,
    pub(super) name: String,
    #[serde(default)]
    pub(super) region: Option<String>,
    #[serde(default)]
    pub(super) state: Option<String>,
    #[serde(default)]
    pub(super) attached_machine_id: Option<String>,
}

/// What a look at a machine found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seen {
    /// The machine is in this state.
    State(String),
    /// The API no longer knows it (404).
    Gone,
}

impl fmt::Debug for MachineConfig<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Env values may be secrets (and FLAME_PARENT holds the runner's).
        let env: Vec<_> = self.env.keys().collect();
        f.debug_struct("MachineConfig")
            .field("image", &self.image)
            .field("guest", &self.guest)
            .field("env", &env)
            .field("metadata", &self.metadata)
            .field("mounts", &self.mounts)
            .finish_non_exhaustive()
    }
}

/// The machine's size.
#[derive(Debug, Serialize)]
pub(super) struct Guest<'a> {
    pub(super) cpu_kind: &'a str,
    pub(super) cpus: u32,
    pub(super) memory_mb: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gpu_kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) gpus: Option<u32>,
}

/// The restart policy: runners are never restarted.
#[derive(Debug, Serialize)]
pub(super) struct Restart {
    pub(super) policy: &'static str,
}

/// The fields of a Machine answer the backend reads.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Machine {
    pub(super) id: String,
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) instance_id: Option<String>,
    #[serde(default)]
    pub(super) private_ip: Option<String>,
    #[serde(default)]
    pub(super) state: Option<String>,
}

/// A client for one app, with the token.
#[derive(Clone)]
pub(super) struct Api {
    pub(super) client: reqwest::Client,
    pub(super) host: String,
    pub(super) app: String,
    pub(super) token: ApiToken,
    /// First delay between retries (FLAME: 1 s).
    pub(super) retry_delay: Duration,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("host", &self.host)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

/// An answer: status and body.
struct Answer {
    status: StatusCode,
    body: String,
}

impl Answer {
    fn describe(&self) -> String {
        format!("{} {}", self.status.as_u16(), cut(&self.body))
    }
}

/// The outcome of stopping or destroying: done, or the machine is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gone {
    Yes,
    No,
}

impl Api {
    /// The error for a 401 or 403 answer.
    fn token_rejected(&self, status: u16) -> FlyError {
        FlyError::TokenRejected {
            status,
            app: self.app.clone(),
        }
    }

    fn machines_url(&self) -> String {
        format!("{}/v1/apps/{}/machines", self.host.trim_end_matches('/'), self.app)
    }

    /// One request, bounded by `timeout`. The token goes only into the
    /// `Authorization` header.
    async fn send<B: Serialize + ?Sized>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Answer, reqwest::Error> {
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(&self.token.0)
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body = response.text().await?;
        Ok(Answer { status, body })
    }

    /// Creates a machine (which the API also starts). Retries no-capacity
    /// answers as FLAME does (up to [`CAPACITY_RETRIES`] more, one retry
    /// delay apart) and 429, 5xx and transport errors with a doubling
    /// back-off, all before `deadline`. Returns the machine and the number
    /// of requests sent.
    pub(super) async fn create(&self, body: &CreateMachine<'_>, deadline: Instant) -> Result<(Machine, u32), FlyError> {
        let url = self.machines_url();
        let started = Instant::now();
        let mut attempts = 0u32;
        let mut capacity_retries = 0u32;
        let mut backoff = self.retry_delay;
        // The last answer the API gave, kept for the error when a final
        // attempt is cut off by the deadline: that says more than a timeout.
        let mut answered: Option<String> = None;
        // Whether an earlier request may have created the machine although
        // its answer was lost (a 5xx, a transport error): before sending
        // again, look for it by its name, and adopt it if it is there.
        let mut maybe_created = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if maybe_created && let Some(machine) = self.named(&body.name, left).await {
                tracing::info!(target: "ractor_flame::fly", machine = %machine.id, attempts, "a create whose answer was lost made the machine; adopting it");
                return Ok((machine, attempts));
            }
            attempts += 1;
            let sent = self.send(Method::POST, &url, Some(body), left).await;
            // What went wrong, how long to wait, and whether the back-off grows.
            let (last, retry_in, busy) = match sent {
                Ok(answer) => match answer.status.as_u16() {
                    200 | 201 => {
                        let machine = serde_json::from_str::<Machine>(&answer.body).map_err(|e| FlyError::Decode {
                            action: "create machine",
                            reason: e.to_string(),
                        })?;
                        return Ok((machine, attempts));
                    }
                    status @ (401 | 403) => {
                        return Err(self.token_rejected(status));
                    }
                    404 => {
                        return Err(FlyError::NotFound {
                            app: self.app.clone(),
                            image: body.config.image.to_owned(),
                            body: cut(&answer.body),
                        });
                    }
                    status @ (409 | 412 | 422) => {
                        let now = Instant::now();
                        if capacity_retries >= CAPACITY_RETRIES || now + self.retry_delay >= deadline {
                            return Err(FlyError::NoCapacity {
                                region: body.region.unwrap_or("(any)").to_owned(),
                                attempts,
                                status,
                                body: cut(&answer.body),
                            });
                        }
                        capacity_retries += 1;
                        tracing::warn!(target: "ractor_flame::fly", status, attempts, "no capacity, retrying");
                        (answer.describe(), self.retry_delay, false)
                    }
                    429 => {
                        tracing::warn!(target: "ractor_flame::fly", status = 429, attempts, ?backoff, "fly api busy, retrying");
                        (answer.describe(), backoff, true)
                    }
                    500..=599 => {
                        maybe_created = true;
                        tracing::warn!(target: "ractor_flame::fly", status = answer.status.as_u16(), attempts, ?backoff, "fly api busy, retrying");
                        (answer.describe(), backoff, true)
                    }
                    status => {
                        return Err(FlyError::Api {
                            action: "create machine",
                            status,
                            body: cut(&answer.body),
                        });
                    }
                },
                Err(e) if e.is_timeout() && Instant::now() >= deadline => {
                    let last = match answered.take() {
                        Some(earlier) => format!("{earlier} (the last attempt was cut off by the boot timeout)"),
                        None => format!("no answer from {} within the boot timeout", self.host),
                    };
                    return Err(FlyError::Unavailable {
                        attempts,
                        waited: started.elapsed(),
                        last,
                    });
                }
                Err(e) => {
                    maybe_created = true;
                    tracing::warn!(target: "ractor_flame::fly", error = %e, attempts, "fly api unreachable, retrying");
                    (format!("no answer from {}: {e}", self.host), backoff, true)
                }
            };
            if Instant::now() + retry_in >= deadline {
                return Err(FlyError::Unavailable {
                    attempts,
                    waited: started.elapsed(),
                    last,
                });
            }
            answered = Some(last);
            tokio::time::sleep(retry_in).await;
            if busy {
                backoff = (backoff * 2).min(self.retry_delay * MAX_BACKOFF_FACTOR);
            }
        }
    }

    /// Waits until the machine is in `state` (`started`, `stopped`), or
    /// `deadline`. `Ok(false)` when the deadline passed first.
    pub(super) async fn wait(&self, machine: &Machine, state: &str, deadline: Instant) -> Result<bool, FlyError> {
        let mut backoff = self.retry_delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let secs = left.as_secs_f64().ceil().clamp(1.0, MAX_WAIT_SECS as f64) as u64;
            let mut url = format!(
                "{}/{}/wait?state={state}&timeout={secs}",
                self.machines_url(),
                machine.id
            );
            if let Some(instance) = &machine.instance_id {
                url.push_str("&instance_id=");
                url.push_str(instance);
            }
            let answer = match self.send::<()>(Method::GET, &url, None, left).await {
                Ok(answer) => answer,
                Err(e) if e.is_timeout() => return Ok(false),
                Err(e) => {
                    tracing::warn!(target: "ractor_flame::fly", error = %e, "fly api unreachable while waiting, retrying");
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(self.retry_delay * MAX_BACKOFF_FACTOR);
                    continue;
                }
            };
            match answer.status.as_u16() {
                200 => return Ok(true),
                // The wait's own timeout: ask again while time is left.
                408 => {}
                status @ (401 | 403) => {
                    return Err(self.token_rejected(status));
                }
                429 | 500..=599 => {
                    tokio::time::sleep(backoff.min(left)).await;
                    backoff = (backoff * 2).min(self.retry_delay * MAX_BACKOFF_FACTOR);
                }
                status => {
                    return Err(FlyError::Api {
                        action: "wait for machine",
                        status,
                        body: cut(&answer.body),
                    });
                }
            }
        }
    }

    /// The app's machine named `name`, if the API lists one (a lookup that
    /// fails counts as none: the create is then sent again).
    async fn named(&self, name: &str, timeout: Duration) -> Option<Machine> {
        let answer = self
            .send::<()>(Method::GET, &self.machines_url(), None, timeout)
            .await
            .ok()
            .filter(|a| a.status == StatusCode::OK)?;
        let machines: Vec<Machine> = serde_json::from_str(&answer.body).ok()?;
        machines.into_iter().find(|m| m.name.as_deref() == Some(name))
    }

    /// The app's volumes (`GET /v1/apps/{app}/volumes`), tried until
    /// `deadline` on 429, 5xx and transport errors.
    pub(super) async fn volumes(&self, deadline: Instant) -> Result<Vec<Volume>, FlyError> {
        let url = format!("{}/v1/apps/{}/volumes", self.host.trim_end_matches('/'), self.app);
        let started = Instant::now();
        let mut backoff = self.retry_delay;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let last = match self.send::<()>(Method::GET, &url, None, left).await {
                Ok(answer) if answer.status == StatusCode::OK => {
                    return serde_json::from_str(&answer.body).map_err(|e| FlyError::Decode {
                        action: "list volumes",
                        reason: e.to_string(),
                    });
                }
                Ok(answer) => match answer.status.as_u16() {
                    status @ (401 | 403) => {
                        return Err(self.token_rejected(status));
                    }
                    429 | 500..=599 => answer.describe(),
                    status => {
                        return Err(FlyError::Api {
                            action: "list volumes",
                            status,
                            body: cut(&answer.body),
                        });
                    }
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() + backoff >= deadline {
                return Err(FlyError::Unavailable {
                    attempts,
                    waited: started.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry_delay * MAX_BACKOFF_FACTOR);
        }
    }

    /// One look at the machine (`GET .../machines/{id}`), bounded by
    /// `timeout`; `Err` with what went wrong when the API gave no usable
    /// answer (the next look may).
    pub(super) async fn look(&self, id: &str, timeout: Duration) -> Result<Seen, String> {
        let url = format!("{}/{id}", self.machines_url());
        let answer = self
            .send::<()>(Method::GET, &url, None, timeout)
            .await
            .map_err(|e| e.to_string())?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(Seen::Gone),
            StatusCode::OK => serde_json::from_str::<Machine>(&answer.body)
                .map_err(|e| e.to_string())?
                .state
                .map(Seen::State)
                .ok_or_else(|| "an answer with no state".to_owned()),
            _ => Err(answer.describe()),
        }
    }

    /// Stops the machine, waits up to `budget` for it to stop, and destroys
    /// it (forced when it will not stop). A machine that is already gone
    /// (destroyed on its own: runners' machines auto-destroy when they exit)
    /// is fine. Errors are logged, never returned: this runs on the way out.
    pub(super) async fn stop_and_destroy(&self, machine: &Machine, budget: Duration) {
        let deadline = Instant::now() + budget;
        let id = &machine.id;
        if self.stop(machine, deadline).await == Gone::Yes {
            return;
        }
        let stopped = self.wait(machine, "stopped", deadline).await.unwrap_or(false);
        let url = format!("{}/{id}", self.machines_url());
        if stopped {
            match self.destroy(&url, deadline).await {
                Ok(()) => return,
                Err(status) => {
                    tracing::debug!(target: "ractor_flame::fly", machine = %id, status, "destroy refused, forcing it")
                }
            }
        }
        if let Err(status) = self.destroy(&format!("{url}?force=true"), deadline).await {
            tracing::warn!(target: "ractor_flame::fly", machine = %id, status, "cannot destroy the runner's machine");
        }
    }

    /// `POST .../stop`.
    async fn stop(&self, machine: &Machine, deadline: Instant) -> Gone {
        let url = format!("{}/{}/stop", self.machines_url(), machine.id);
        let left = deadline.saturating_duration_since(Instant::now());
        match self.send::<()>(Method::POST, &url, None, left).await {
            Ok(answer) if answer.status == StatusCode::NOT_FOUND => Gone::Yes,
            Ok(answer) if answer.status.is_success() => Gone::No,
            Ok(answer) => {
                tracing::debug!(target: "ractor_flame::fly", machine = %machine.id, answer = %answer.describe(), "stop refused");
                Gone::No
            }
            Err(e) => {
                tracing::debug!(target: "ractor_flame::fly", machine = %machine.id, error = %e, "stop failed");
                Gone::No
            }
        }
    }

    /// `DELETE` on `url`; `Err(status)` unless destroyed or already gone.
    async fn destroy(&self, url: &str, deadline: Instant) -> Result<(), String> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        match self.send::<()>(Method::DELETE, url, None, left).await {
            Ok(answer) if answer.status.is_success() || answer.status == StatusCode::NOT_FOUND => Ok(()),
            Ok(answer) => Err(answer.describe()),
            Err(e) => Err(e.to_string()),
        }
    }
}
