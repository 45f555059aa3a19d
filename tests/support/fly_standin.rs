//! A stand-in for the Fly Machines API, for the Fly backend's tests: a real
//! HTTP server (axum) on 127.0.0.1 implementing the calls the backend makes
//! (create, wait, stop, destroy), checking each request against the API's
//! documented shape, and running each machine as a real local process.
//!
//! - Every request must carry `Authorization: Bearer <token>`; a wrong token
//!   gets 401, a missing or malformed header 400.
//! - A request of the wrong shape (unknown route, unknown or mistyped JSON
//!   field, missing required field, unknown query parameter) gets 400 and is
//!   recorded in [`StandIn::rejected`]; tests assert that list stays empty.
//! - A created machine runs `program` with exactly the machine's
//!   `config.env` as its environment (nothing of this process's), starts in
//!   state `created`, turns `started` once its process runs, and `stopped`
//!   when the process exits; with `auto_destroy` it is then `destroyed`.
//! - `stop` sends SIGTERM (SIGKILL after a grace period); `DELETE` destroys a
//!   stopped machine, or a running one with `force=true` (SIGKILL), and
//!   answers 412 otherwise.
//! - The next N creates can be answered with a given status (422, 429,
//!   500...), after their shape was checked.
//! - `GET .../machines/{id}` answers the machine with its state, which a
//!   test can set as the platform would see a lost host ([`StandIn::lose_host`]:
//!   the process is frozen, its connection stays open).
//! - Volumes ([`StandIn::add_volume`]) are listed by `GET .../volumes`; a
//!   create that mounts one attaches it to the machine (one machine per
//!   volume: an attached or unknown volume fails the create) until the
//!   machine is destroyed.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};

/// How long a stopped machine's process has between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What one stand-in serves.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The only app that exists.
    pub app: String,
    /// The token it accepts.
    pub token: String,
    /// The only image that exists.
    pub image: String,
    /// What a machine of that image runs.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
}

/// A machine as the stand-in keeps it.
#[derive(Clone, Debug)]
pub struct MachineRecord {
    pub id: String,
    pub name: String,
    pub state: String,
    pub env: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub body: Value,
    pub pid: Option<u32>,
    /// How it was destroyed: `auto`, `delete` or `force`.
    pub destroyed_by: Option<&'static str>,
    /// The volume it mounts, and where.
    pub mount: Option<(String, String)>,
}

/// A volume as the stand-in keeps it.
#[derive(Clone, Debug)]
pub struct VolumeRecord {
    pub id: String,
    pub name: String,
    pub region: String,
    /// The machine it is attached to.
    pub attached: Option<String>,
}

#[derive(Default)]
struct Ledger {
    machines: BTreeMap<String, MachineRecord>,
    /// Signals for each machine's process task.
    signals: BTreeMap<String, mpsc::UnboundedSender<Signal>>,
    fail_next: VecDeque<u16>,
    fail_always: Option<u16>,
    /// Creates after this many are never answered.
    hang_after: Option<usize>,
    ignore_stop: bool,
    create_attempts: usize,
    unauthorized: usize,
    rejected: Vec<String>,
    requests: Vec<String>,
    next_id: u64,
    volumes: BTreeMap<String, VolumeRecord>,
    /// Creates whose machine is made but whose answer is lost (a 502).
    lose_answers: usize,
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Term,
    Kill,
}

struct Inner {
    setup: Setup,
    ledger: Mutex<Ledger>,
    changed: Notify,
}

/// A running stand-in; dropping it kills every machine's process.
pub struct StandIn {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
        let ledger = self.inner.ledger.lock().unwrap();
        for signals in ledger.signals.values() {
            let _ = signals.send(Signal::Kill);
        }
        for m in ledger.machines.values() {
            if let (Some(pid), None) = (m.pid, m.destroyed_by) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

impl StandIn {
    pub async fn start(setup: Setup) -> StandIn {
        let inner = Arc::new(Inner {
            setup,
            ledger: Mutex::default(),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/v1/apps/{app}/machines", post(create).get(list))
            .route("/v1/apps/{app}/machines/{id}/wait", get(wait))
            .route("/v1/apps/{app}/machines/{id}/stop", post(stop))
            .route("/v1/apps/{app}/machines/{id}", delete(destroy).get(show))
            .route("/v1/apps/{app}/volumes", get(volumes))
            .fallback(unknown)
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        StandIn { addr, inner, server }
    }

    /// The API's base address, for `FlyBackend::host`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` creates with `status`.
    pub fn fail_next_creates(&self, status: u16, n: usize) {
        self.inner
            .ledger
            .lock()
            .unwrap()
            .fail_next
            .extend(std::iter::repeat_n(status, n));
    }

    /// Answers every create with `status` (or normally again with `None`).
    pub fn fail_all_creates(&self, status: Option<u16>) {
        self.inner.ledger.lock().unwrap().fail_always = status;
    }

    /// Makes the machine of each of the next `n` creates, but answers 502
    /// (the answer lost on its way, as a proxy reports it).
    pub fn lose_next_create_answers(&self, n: usize) {
        self.inner.ledger.lock().unwrap().lose_answers += n;
    }

    /// Never answers a create after the first `n` (an API that stops
    /// answering mid-boot).
    pub fn hang_creates_after(&self, n: usize) {
        self.inner.ledger.lock().unwrap().hang_after = Some(n);
    }

    /// Makes `stop` answer 200 and do nothing (a machine that will not stop).
    pub fn ignore_stop(&self, ignore: bool) {
        self.inner.ledger.lock().unwrap().ignore_stop = ignore;
    }

    /// Create requests received (whatever the answer).
    pub fn create_attempts(&self) -> usize {
        self.inner.ledger.lock().unwrap().create_attempts
    }

    /// Requests refused with 401.
    pub fn unauthorized(&self) -> usize {
        self.inner.ledger.lock().unwrap().unauthorized
    }

    /// Requests refused with 400 (wrong shape), with the reason.
    pub fn rejected(&self) -> Vec<String> {
        self.inner.ledger.lock().unwrap().rejected.clone()
    }

    /// Every request, as `METHOD path?query -> status`.
    pub fn requests(&self) -> Vec<String> {
        self.inner.ledger.lock().unwrap().requests.clone()
    }

    /// Every machine ever created.
    pub fn machines(&self) -> Vec<MachineRecord> {
        self.inner.ledger.lock().unwrap().machines.values().cloned().collect()
    }

    /// Machines not destroyed.
    pub fn live(&self) -> Vec<MachineRecord> {
        self.machines()
            .into_iter()
            .filter(|m| m.destroyed_by.is_none())
            .collect()
    }

    /// Machines destroyed.
    pub fn destroyed(&self) -> Vec<MachineRecord> {
        self.machines()
            .into_iter()
            .filter(|m| m.destroyed_by.is_some())
            .collect()
    }

    /// Adds a volume named `name` in `region`, attached to `attached` (a
    /// machine of someone else's) or free; returns its id.
    pub fn add_volume(&self, name: &str, region: &str, attached: Option<&str>) -> String {
        let mut ledger = self.inner.ledger.lock().unwrap();
        ledger.next_id += 1;
        let id = format!("vol_{:016x}", ledger.next_id);
        ledger.volumes.insert(
            id.clone(),
            VolumeRecord {
                id: id.clone(),
                name: name.to_owned(),
                region: region.to_owned(),
                attached: attached.map(str::to_owned),
            },
        );
        id
    }

    /// Every volume.
    pub fn volumes(&self) -> Vec<VolumeRecord> {
        self.inner.ledger.lock().unwrap().volumes.values().cloned().collect()
    }

    /// The machine's host is lost as the platform sees it: its process is
    /// frozen (SIGSTOP: its connection stays open, nothing more is sent on
    /// it) and the API reports the machine in `state`.
    pub fn lose_host(&self, id: &str, state: &str) {
        let pid = self.inner.machine(id).and_then(|m| m.pid).expect("a running machine");
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status();
        self.inner.set_state(id, state);
    }

    /// Kills a machine's process (SIGKILL), as a crash would.
    pub fn crash(&self, id: &str) {
        let ledger = self.inner.ledger.lock().unwrap();
        let _ = ledger.signals.get(id).expect("machine").send(Signal::Kill);
    }
}

type Shared = State<Arc<Inner>>;

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

impl Inner {
    /// Records the request; checks the token, the app, and that the query
    /// holds only the route's documented parameters (`allowed`; `what`
    /// names the route in a refusal). The parameters, or the refusal to
    /// send.
    // The refusal is the answer itself, built once and sent as it is.
    #[allow(clippy::result_large_err)]
    fn admit(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        app: &str,
        allowed: &[&str],
        what: &str,
    ) -> Result<BTreeMap<String, String>, Response> {
        self.ledger.lock().unwrap().requests.push(format!("{method} {uri}"));
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        let Some(token) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
            return Err(self.reject(format!("{method} {uri}: no `Authorization: Bearer <token>` header")));
        };
        if token != self.setup.token {
            self.ledger.lock().unwrap().unauthorized += 1;
            return Err(error(StatusCode::UNAUTHORIZED, "unauthorized"));
        }
        if app != self.setup.app {
            return Err(error(StatusCode::NOT_FOUND, "app not found"));
        }
        query_params(uri.query(), allowed).map_err(|e| self.reject(format!("{what}: {e}")))
    }

    fn reject(&self, reason: String) -> Response {
        let response = error(StatusCode::BAD_REQUEST, &reason);
        self.ledger.lock().unwrap().rejected.push(reason);
        response
    }

    fn set_state(&self, id: &str, state: &str) {
        let mut ledger = self.ledger.lock().unwrap();
        if let Some(m) = ledger.machines.get_mut(id) {
            m.state = state.to_owned();
        }
        drop(ledger);
        self.changed.notify_waiters();
    }

    fn mark_destroyed(&self, id: &str, by: &'static str) {
        let mut ledger = self.ledger.lock().unwrap();
        if let Some(m) = ledger.machines.get_mut(id)
            && m.destroyed_by.is_none()
        {
            m.state = "destroyed".into();
            m.destroyed_by = Some(by);
        }
        for volume in ledger.volumes.values_mut() {
            if volume.attached.as_deref() == Some(id) {
                volume.attached = None;
            }
        }
        ledger.signals.remove(id);
        drop(ledger);
        self.changed.notify_waiters();
    }

    fn machine(&self, id: &str) -> Option<MachineRecord> {
        self.ledger.lock().unwrap().machines.get(id).cloned()
    }
}

/// The documented query parameters of each route; anything else is a 400.
fn query_params(raw: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&k) {
            return Err(format!("unknown query parameter `{k}`"));
        }
        out.insert(k.to_owned(), v.to_owned());
    }
    Ok(out)
}

async fn unknown(State(inner): Shared, method: Method, uri: Uri) -> Response {
    inner.ledger.lock().unwrap().requests.push(format!("{method} {uri}"));
    inner.reject(format!("{method} {uri}: not a Machines API route"))
}

async fn create(
    State(inner): Shared,
    Path(app): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hang = {
        let mut ledger = inner.ledger.lock().unwrap();
        ledger.create_attempts += 1;
        ledger.hang_after.is_some_and(|n| ledger.create_attempts > n)
    };
    if hang {
        return std::future::pending().await;
    }
    if let Err(refusal) = inner.admit(&method, &uri, &headers, &app, &[], "create") {
        return refusal;
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !json_type {
        return inner.reject("create: Content-Type is not application/json".into());
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => return inner.reject(format!("create: body is not JSON: {e}")),
    };
    if let Err(e) = check_create(&body) {
        return inner.reject(format!("create: {e}"));
    }
    let failure = {
        let mut ledger = inner.ledger.lock().unwrap();
        ledger.fail_next.pop_front().or(ledger.fail_always)
    };
    if let Some(status) = failure {
        let message = match status {
            409 | 412 | 422 => "insufficient resources available to fulfill request",
            429 => "rate limit exceeded",
            _ => "internal error",
        };
        return error(StatusCode::from_u16(status).unwrap(), message);
    }
    let config = &body["config"];
    if config["image"] != inner.setup.image.as_str() {
        return error(StatusCode::NOT_FOUND, "image not found");
    }
    let strings = |v: &Value| -> BTreeMap<String, String> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (env, metadata) = (strings(&config["env"]), strings(&config["metadata"]));
    let auto_destroy = config["auto_destroy"].as_bool().unwrap_or(false);
    let mount = config["mounts"].as_array().and_then(|m| m.first()).map(|m| {
        (
            m["volume"].as_str().unwrap().to_owned(),
            m["path"].as_str().unwrap().to_owned(),
        )
    });
    let (id, instance_id, rx) = {
        let mut ledger = inner.ledger.lock().unwrap();
        ledger.next_id += 1;
        let id = format!("e7843{:09x}", ledger.next_id);
        if let Some((volume, _)) = &mount {
            let region = body["region"].as_str();
            match ledger.volumes.get_mut(volume) {
                None => return error(StatusCode::NOT_FOUND, &format!("volume {volume} not found")),
                Some(v) if v.attached.is_some() => {
                    return error(
                        StatusCode::PRECONDITION_FAILED,
                        &format!("volume {volume} is already attached to a machine"),
                    );
                }
                Some(v) if region.is_some_and(|r| r != v.region) => {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        &format!("volume {volume} is in region {}, not {region:?}", v.region),
                    );
                }
                Some(v) => v.attached = Some(id.clone()),
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        ledger.signals.insert(id.clone(), tx);
        ledger.machines.insert(
            id.clone(),
            MachineRecord {
                id: id.clone(),
                name: body["name"].as_str().unwrap_or_default().to_owned(),
                state: "created".into(),
                env: env.clone(),
                metadata,
                body: body.clone(),
                pid: None,
                destroyed_by: None,
                mount,
            },
        );
        (id.clone(), format!("01J{:020}", ledger.next_id), rx)
    };
    tokio::spawn(run_machine(Arc::clone(&inner), id.clone(), env, auto_destroy, rx));
    let lost = {
        let mut ledger = inner.ledger.lock().unwrap();
        let lost = ledger.lose_answers > 0;
        ledger.lose_answers = ledger.lose_answers.saturating_sub(1);
        lost
    };
    if lost {
        return error(StatusCode::BAD_GATEWAY, "upstream connection closed before the answer");
    }
    axum::Json(json!({
        "id": id,
        "name": body["name"],
        "state": "created",
        "region": body.get("region").cloned().unwrap_or(json!("ord")),
        "instance_id": instance_id,
        "private_ip": "fdaa:0:1:a7b:1::2",
        "config": config,
        "image_ref": { "registry": "registry.fly.io", "repository": inner.setup.app, "tag": "deployment" },
        "created_at": "2026-11-29T00:00:00Z",
        "updated_at": "2026-11-29T00:00:00Z",
    }))
    .into_response()
}

/// Runs one machine's process until it exits; then the machine is
/// stopped, and destroyed when `auto_destroy` says so.
async fn run_machine(
    inner: Arc<Inner>,
    id: String,
    env: BTreeMap<String, String>,
    auto_destroy: bool,
    mut signals: mpsc::UnboundedReceiver<Signal>,
) {
    inner.set_state(&id, "starting");
    let log = std::env::var_os("FLY_STANDIN_LOG").is_some();
    let output = || if log { Stdio::inherit() } else { Stdio::null() };
    let spawned = tokio::process::Command::new(&inner.setup.program)
        .args(&inner.setup.args)
        .env_clear()
        .envs(&env)
        .stdin(Stdio::null())
        .stdout(output())
        .stderr(output())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("fly stand-in: machine {id} cannot start: {e}");
            inner.set_state(&id, "stopped");
            if auto_destroy {
                inner.mark_destroyed(&id, "auto");
            }
            return;
        }
    };
    let pid = child.id();
    {
        let mut ledger = inner.ledger.lock().unwrap();
        if let Some(m) = ledger.machines.get_mut(&id) {
            m.pid = pid;
        }
    }
    inner.set_state(&id, "started");
    let mut term_deadline: Option<tokio::time::Instant> = None;
    loop {
        let grace = async {
            match term_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = child.wait() => break,
            signal = signals.recv() => match signal {
                Some(Signal::Term) => {
                    if let Some(pid) = pid {
                        let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
                    }
                    term_deadline.get_or_insert(tokio::time::Instant::now() + STOP_GRACE);
                }
                Some(Signal::Kill) | None => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    break;
                }
            },
            _ = grace => {
                let _ = child.start_kill();
            }
        }
    }
    if inner.machine(&id).is_some_and(|m| m.destroyed_by.is_none()) {
        inner.set_state(&id, "stopped");
        if auto_destroy {
            inner.mark_destroyed(&id, "auto");
        }
    }
}

async fn wait(
    State(inner): Shared,
    Path((app, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match inner.admit(
        &method,
        &uri,
        &headers,
        &app,
        &["state", "timeout", "instance_id", "from_event_id"],
        "wait",
    ) {
        Ok(params) => params,
        Err(refusal) => return refusal,
    };
    let Some(state) = params.get("state").cloned() else {
        return inner.reject("wait: no `state`".into());
    };
    if !["started", "stopped", "suspended", "destroyed"].contains(&state.as_str()) {
        return inner.reject(format!("wait: unknown state `{state}`"));
    }
    let timeout = match params.get("timeout").map(|t| t.parse::<u64>()) {
        None => 60,
        Some(Ok(t)) if (1..=60).contains(&t) => t,
        Some(_) => {
            return inner.reject(format!(
                "wait: `timeout` must be whole seconds in 1..=60, got {params:?}"
            ));
        }
    };
    let Some(machine) = inner.machine(&id) else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    if let Some(instance) = params.get("instance_id")
        && !instance.starts_with("01J")
    {
        return inner.reject(format!("wait: malformed instance_id `{instance}`"));
    }
    if machine.destroyed_by.is_some() && state != "destroyed" && state != "stopped" {
        return error(StatusCode::NOT_FOUND, "machine not found");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    loop {
        let notified = inner.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let current = inner.machine(&id).map(|m| m.state).unwrap_or_default();
        let reached = current == state || (state == "stopped" && current == "destroyed");
        if reached {
            return axum::Json(json!({ "ok": true })).into_response();
        }
        if state == "started" && (current == "stopped" || current == "destroyed") {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("machine failed to reach desired state, current state: {current}"),
            );
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "deadline_exceeded: machine did not reach the state in time",
            );
        }
    }
}

/// `GET .../machines/{id}`: the machine and its state.
async fn show(
    State(inner): Shared,
    Path((app, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = inner.admit(&method, &uri, &headers, &app, &[], "get machine") {
        return refusal;
    }
    let Some(machine) = inner.machine(&id).filter(|m| m.destroyed_by.is_none()) else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    axum::Json(json!({
        "id": machine.id,
        "name": machine.name,
        "state": machine.state,
        "region": machine.body.get("region").cloned().unwrap_or(json!("ord")),
        "private_ip": "fdaa:0:1:a7b:1::2",
        "config": machine.body["config"],
    }))
    .into_response()
}

/// `GET .../machines`: the app's machines that are not destroyed.
async fn list(State(inner): Shared, Path(app): Path<String>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Err(refusal) = inner.admit(
        &method,
        &uri,
        &headers,
        &app,
        &["include_deleted", "region", "state", "summary"],
        "list machines",
    ) {
        return refusal;
    }
    let ledger = inner.ledger.lock().unwrap();
    let list: Vec<Value> = ledger
        .machines
        .values()
        .filter(|m| m.destroyed_by.is_none())
        .map(|m| {
            json!({
                "id": m.id,
                "name": m.name,
                "state": m.state,
                "region": m.body.get("region").cloned().unwrap_or(json!("ord")),
                // As `create` made it, from the same serial number.
                "instance_id": format!("01J{:020}", u64::from_str_radix(&m.id[5..], 16).unwrap_or(0)),
                "private_ip": "fdaa:0:1:a7b:1::2",
                "config": m.body["config"],
            })
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

/// `GET .../volumes`: every volume of the app.
async fn volumes(
    State(inner): Shared,
    Path(app): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Err(refusal) = inner.admit(&method, &uri, &headers, &app, &["summary"], "list volumes") {
        return refusal;
    }
    let ledger = inner.ledger.lock().unwrap();
    let list: Vec<Value> = ledger
        .volumes
        .values()
        .map(|v| {
            json!({
                "id": v.id,
                "name": v.name,
                "state": "created",
                "size_gb": 1,
                "region": v.region,
                "zone": "b2e4",
                "encrypted": true,
                "attached_machine_id": v.attached,
                "attached_alloc_id": null,
                "created_at": "2026-11-29T00:00:00Z",
            })
        })
        .collect();
    axum::Json(Value::Array(list)).into_response()
}

async fn stop(
    State(inner): Shared,
    Path((app, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refusal) = inner.admit(&method, &uri, &headers, &app, &[], "stop") {
        return refusal;
    }
    if !body.is_empty() {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(o)) if o.keys().all(|k| k == "signal" || k == "timeout") => {}
            _ => return inner.reject("stop: body is neither empty nor {signal, timeout}".into()),
        }
    }
    let Some(machine) = inner.machine(&id).filter(|m| m.destroyed_by.is_none()) else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    let ledger = inner.ledger.lock().unwrap();
    if !ledger.ignore_stop && machine.state != "stopped" {
        if let Some(signals) = ledger.signals.get(&id) {
            let _ = signals.send(Signal::Term);
        }
    }
    axum::Json(json!({ "ok": true })).into_response()
}

async fn destroy(
    State(inner): Shared,
    Path((app, id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let params = match inner.admit(&method, &uri, &headers, &app, &["force"], "destroy") {
        Ok(params) => params,
        Err(refusal) => return refusal,
    };
    let force = match params.get("force").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return inner.reject(format!("destroy: `force` must be true or false, got `{other}`")),
    };
    let Some(machine) = inner.machine(&id).filter(|m| m.destroyed_by.is_none()) else {
        return error(StatusCode::NOT_FOUND, "machine not found");
    };
    if machine.state != "stopped" && !force {
        return error(
            StatusCode::PRECONDITION_FAILED,
            "failed_precondition: machine still active, stop it or use force=true",
        );
    }
    if let Some(signals) = inner.ledger.lock().unwrap().signals.get(&id) {
        let _ = signals.send(Signal::Kill);
    }
    inner.mark_destroyed(&id, if force { "force" } else { "delete" });
    axum::Json(json!({ "ok": true })).into_response()
}

/// The create body's documented shape: the fields the Machines API
/// documents, typed as documented; required ones present.
fn check_create(body: &Value) -> Result<(), String> {
    let top = object(
        body,
        "body",
        &[
            "name",
            "region",
            "config",
            "skip_launch",
            "skip_service_registration",
            "lease_ttl",
        ],
    )?;
    optional(top, "name", Value::is_string, "a string")?;
    optional(top, "region", Value::is_string, "a string")?;
    optional(top, "skip_launch", Value::is_boolean, "a boolean")?;
    let config = top.get("config").ok_or("no `config`")?;
    let config = object(
        config,
        "config",
        &[
            "image",
            "init",
            "guest",
            "auto_destroy",
            "restart",
            "env",
            "services",
            "metadata",
            "checks",
            "mounts",
            "processes",
            "schedule",
            "stop_config",
            "files",
            "dns",
            "statics",
            "standbys",
        ],
    )?;
    match config.get("image") {
        Some(Value::String(s)) if !s.is_empty() => {}
        _ => return Err("`config.image` must be a non-empty string".into()),
    }
    optional(config, "auto_destroy", Value::is_boolean, "a boolean")?;
    if let Some(init) = config.get("init") {
        let init = object(
            init,
            "config.init",
            &["cmd", "entrypoint", "exec", "kernel_args", "swap_size_mb", "tty"],
        )?;
        for key in ["cmd", "entrypoint", "exec", "kernel_args"] {
            optional(init, key, is_string_array, "an array of strings")?;
        }
        optional(init, "swap_size_mb", Value::is_u64, "an integer")?;
        optional(init, "tty", Value::is_boolean, "a boolean")?;
    }
    if let Some(guest) = config.get("guest") {
        let guest = object(
            guest,
            "config.guest",
            &["cpu_kind", "cpus", "memory_mb", "gpu_kind", "gpus", "kernel_args"],
        )?;
        match guest.get("cpu_kind").and_then(Value::as_str) {
            Some("shared" | "performance") => {}
            other => {
                return Err(format!(
                    "`config.guest.cpu_kind` must be shared or performance, got {other:?}"
                ));
            }
        }
        for key in ["cpus", "memory_mb"] {
            match guest.get(key).and_then(Value::as_u64) {
                Some(n) if n > 0 => {}
                _ => return Err(format!("`config.guest.{key}` must be a positive integer")),
            }
        }
        optional(guest, "gpu_kind", Value::is_string, "a string")?;
        optional(guest, "gpus", Value::is_u64, "an integer")?;
        if guest.contains_key("gpus") != guest.contains_key("gpu_kind") {
            return Err("`config.guest.gpus` and `gpu_kind` go together".into());
        }
    }
    if let Some(restart) = config.get("restart") {
        let restart = object(restart, "config.restart", &["policy", "max_retries"])?;
        match restart.get("policy").and_then(Value::as_str) {
            Some("no" | "always" | "on-failure" | "spot-price") => {}
            other => return Err(format!("`config.restart.policy` is not a policy: {other:?}")),
        }
    }
    for key in ["env", "metadata"] {
        if let Some(map) = config.get(key) {
            let map = map.as_object().ok_or(format!("`config.{key}` must be an object"))?;
            if let Some((k, _)) = map.iter().find(|(_, v)| !v.is_string()) {
                return Err(format!("`config.{key}.{k}` must be a string"));
            }
        }
    }
    if let Some(mounts) = config.get("mounts") {
        let mounts = mounts.as_array().ok_or("`config.mounts` must be an array")?;
        if mounts.len() > 1 {
            return Err("`config.mounts`: a machine mounts at most one volume".into());
        }
        for mount in mounts {
            let mount = object(
                mount,
                "config.mounts[]",
                &[
                    "volume",
                    "path",
                    "name",
                    "size_gb",
                    "encrypted",
                    "extend_threshold_percent",
                    "add_size_gb",
                    "size_gb_limit",
                ],
            )?;
            for key in ["volume", "path"] {
                match mount.get(key) {
                    Some(Value::String(s)) if !s.is_empty() => {}
                    _ => return Err(format!("`config.mounts[].{key}` must be a non-empty string")),
                }
            }
            if !mount["path"].as_str().unwrap_or_default().starts_with('/') {
                return Err("`config.mounts[].path` must be absolute".into());
            }
        }
    }
    if let Some(services) = config.get("services") {
        let services = services.as_array().ok_or("`config.services` must be an array")?;
        if !services.iter().all(Value::is_object) {
            return Err("`config.services` must hold objects".into());
        }
    }
    Ok(())
}

fn object<'a>(v: &'a Value, what: &str, allowed: &[&str]) -> Result<&'a serde_json::Map<String, Value>, String> {
    let o = v.as_object().ok_or(format!("`{what}` must be an object"))?;
    if let Some(k) = o.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("`{what}` has an undocumented field `{k}`"));
    }
    Ok(o)
}

fn optional(
    o: &serde_json::Map<String, Value>,
    key: &str,
    check: impl Fn(&Value) -> bool,
    what: &str,
) -> Result<(), String> {
    match o.get(key) {
        Some(v) if !check(v) => Err(format!("`{key}` must be {what}, got {v}")),
        _ => Ok(()),
    }
}

fn is_string_array(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.iter().all(Value::is_string))
}
