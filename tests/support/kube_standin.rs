//! A stand-in for the parts of the Kubernetes core/v1 API the Kubernetes
//! backend uses, for its tests: a real HTTPS server (its own CA, bearer
//! tokens with RBAC rules) whose pods become real Docker containers.
//!
//! What it serves (all errors are `metav1.Status` bodies):
//! - pods: create (validated: names, containers, images, env names,
//!   restart policy; `generateName`), get, list and watch (label and field
//!   selectors, `resourceVersion`, `timeoutSeconds`, bookmarks, `410` as an
//!   `ERROR` event for a version older than the history kept, see
//!   [`StandIn::compact`]), delete (grace period, propagation policy);
//! - secrets: create (`stringData` merged into `data`), get, list, delete;
//! - events: list (field selectors), create; the kubelet posts its own;
//! - discovery (`/api`, `/apis`, `/api/v1`, `/version`) enough for kubectl;
//! - `SelfSubjectAccessReview`, answered from the token's rules.
//!
//! Bodies are parsed strictly into the `k8s-openapi` types: a field the type
//! does not have is refused with 400 (`strict decoding error`) and recorded
//! in [`StandIn::rejected`], as is any request for a verb not served (patch,
//! update: 405).
//!
//! The "kubelet" runs each pod (except [`StandIn::add_parent_pod`]'s) as a
//! Docker container of the local image `spec.containers[0].image` (never
//! pulled) on a stand-in-owned internal bridge network, with the pod's IP
//! allocated before the container starts (so the downward API can give
//! `status.podIP`). Env in Kubernetes order: the API server's service
//! variables, `envFrom` secrets, then `env` (values, `fieldRef`,
//! `secretKeyRef`); `$(VAR)` references are not expanded. Memory and CPU
//! limits go to Docker. Unless `automountServiceAccountToken: false`, the
//! service-account directory (token, `ca.crt`, namespace) is bind-mounted at
//! the in-cluster path and `KUBERNETES_SERVICE_HOST`/`_PORT` point at the
//! stand-in on the network's gateway, so `kube::Config::incluster()` works
//! inside. Only the first container of a pod runs; every restart policy is
//! run as `Never` (a pod ends `Succeeded` or `Failed`).
//!
//! Not modelled: scheduling beyond one node (see
//! [`StandIn::set_unschedulable`]), admission (no service-account volume in
//! the spec, no LimitRanges, quotas or defaults beyond the common ones),
//! CNI (one bridge network, no network policies), image pulls, probes,
//! init and sidecar containers, volumes other than the token, patch and
//! update, finalizers (foreground deletion is run as background),
//! pagination (`limit` answers everything).

mod api;
mod kubelet;
mod store;
mod tls;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use store::{ApiError, Res};

/// The label on every container and network the stand-in makes (CI checks
/// none are left).
pub const LABEL_MANAGED: &str = "ractor-flame.managed";
/// The pod a container runs, `<namespace>/<name>`.
pub const LABEL_POD: &str = "ractor-flame.kube-pod";
/// The stand-in instance that made a container or network.
pub const LABEL_STANDIN: &str = "ractor-flame.kube-standin";
/// The one node's name.
pub const NODE: &str = "standin-node";

/// How a stand-in starts.
#[derive(Clone, Debug)]
pub struct Options {
    /// The namespace of restricted tokens ([`StandIn::token_with`]).
    pub namespace: String,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            namespace: "default".into(),
        }
    }
}

/// Who a token is, and what it may do.
#[derive(Clone, Debug)]
pub struct Identity {
    pub user: String,
    /// `(verb, resource)` pairs (`*` matches any); `None` allows everything.
    pub rules: Option<Vec<(String, String)>>,
    /// The namespace the rules hold in (a RoleBinding's); `None`: all.
    pub namespace: Option<String>,
    /// What a review's `reason` says when allowed.
    pub binding: String,
}

impl Identity {
    pub fn allows(&self, verb: &str, resource: &str, namespace: Option<&str>) -> bool {
        let Some(rules) = &self.rules else {
            return true;
        };
        if self.namespace.is_some() && self.namespace.as_deref() != namespace {
            return false;
        }
        rules
            .iter()
            .any(|(v, r)| (v == "*" || v == verb) && (r == "*" || r == resource))
    }
}

/// A request as served: method, path with query, status, and the user of
/// its token (none when it had no valid one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub user: Option<String>,
}

/// A refused request: method, path with query, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub method: String,
    pub path: String,
    pub why: String,
}

/// What the kubelet is told about a pod.
#[derive(Debug)]
pub enum Cmd {
    /// Stop the container with this grace (seconds), then remove the pod.
    Delete(i64),
    /// Kill the container and fail the pod as evicted.
    Evict,
}

/// The pod network: an internal bridge with IPs allocated by the stand-in.
pub struct Net {
    pub name: String,
    pub gateway: Ipv4Addr,
    prefix: [u8; 3],
    next: u8,
    free: Vec<Ipv4Addr>,
}

impl Net {
    fn allocate(&mut self) -> Option<Ipv4Addr> {
        if let Some(ip) = self.free.pop() {
            return Some(ip);
        }
        if self.next == 255 {
            return None;
        }
        let [a, b, c] = self.prefix;
        let ip = Ipv4Addr::new(a, b, c, self.next);
        self.next += 1;
        Some(ip)
    }
}

/// State shared by the server, the kubelet and the test.
pub struct Inner {
    pub id: String,
    pub namespace: String,
    pub store: Mutex<store::Store>,
    pub tokens: Mutex<HashMap<String, Identity>>,
    pub admin_token: String,
    pub docker: Docker,
    pub net: Mutex<Net>,
    pub gateway: Ipv4Addr,
    pub port: u16,
    pub in_cluster_port: u16,
    pub ca_pem: String,
    pub ca_der: Vec<u8>,
    pub dir: PathBuf,
    pub requests: Mutex<Vec<Request>>,
    pub rejected: Mutex<Vec<Rejected>>,
    /// The next n requests get 429 with this Retry-After.
    pub throttle: Mutex<(u32, u64)>,
    pub unschedulable: Mutex<Option<String>>,
    /// Pods the kubelet does not run (the test process's own).
    pub external: Mutex<HashSet<String>>,
    /// The kubelet's line to each pod it runs, by uid.
    pub kubelet: Mutex<HashMap<String, mpsc::UnboundedSender<Cmd>>>,
    pub tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The open watches' tasks ([`StandIn::end_watches`] ends them).
    pub watches: Mutex<Vec<tokio::task::AbortHandle>>,
}

pub type Shared = Arc<Inner>;

/// A running stand-in. [`StandIn::shutdown`] (or, best effort, drop)
/// removes every container, network and file it made.
pub struct StandIn {
    inner: Shared,
    done: bool,
}

impl StandIn {
    /// Starts a stand-in: its pod network, CA, and the HTTPS server on
    /// 127.0.0.1 and on the pod network's gateway.
    pub async fn start(options: Options) -> StandIn {
        let docker = Docker::connect_with_defaults()
            .expect("docker")
            .negotiate_version()
            .await
            .expect("a Docker engine");
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let net = kubelet::create_network(&docker, &id).await;
        let gateway = net.gateway;
        let pki = tls::pki(&[IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(gateway)]);
        let loopback = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = loopback.local_addr().unwrap().port();
        let inside = match tokio::net::TcpListener::bind(SocketAddr::new(gateway.into(), port)).await {
            Ok(l) => l,
            Err(_) => tokio::net::TcpListener::bind(SocketAddr::new(gateway.into(), 0))
                .await
                .expect("bind the pod network's gateway"),
        };
        let in_cluster_port = inside.local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("flame-kube-standin-{id}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let tokens = HashMap::from([(
            admin_token.clone(),
            Identity {
                user: "kubernetes-admin".into(),
                rules: None,
                namespace: None,
                binding:
                    "ClusterRoleBinding \"cluster-admin\" of ClusterRole \"cluster-admin\" to Group \"system:masters\""
                        .into(),
            },
        )]);
        let inner = Arc::new(Inner {
            id,
            namespace: options.namespace,
            store: Mutex::new(store::Store::new()),
            tokens: Mutex::new(tokens),
            admin_token,
            docker,
            net: Mutex::new(net),
            gateway,
            port,
            in_cluster_port,
            ca_pem: pki.ca_pem,
            ca_der: pki.ca_der,
            dir,
            requests: Mutex::new(Vec::new()),
            rejected: Mutex::new(Vec::new()),
            throttle: Mutex::new((0, 0)),
            unschedulable: Mutex::new(None),
            external: Mutex::new(HashSet::new()),
            kubelet: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            watches: Mutex::new(Vec::new()),
        });
        for tcp in [loopback, inside] {
            let listener = tls::TlsListener::new(tcp, pki.acceptor.clone());
            let router = api::router(inner.clone());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, router).await;
            });
            inner.tasks.lock().unwrap().push(task.abort_handle());
        }
        StandIn { inner, done: false }
    }

    /// The API server's URL on loopback, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.inner.port)
    }

    /// Where pods reach the API server: the pod network's gateway and a port
    /// (what `KUBERNETES_SERVICE_HOST`/`_PORT` say inside a pod).
    pub fn in_cluster_host(&self) -> (IpAddr, u16) {
        (self.inner.gateway.into(), self.inner.in_cluster_port)
    }

    /// The pod network's gateway: the host's address on it, which pods
    /// reach (the parent pod's IP).
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    /// The Docker network pods run on.
    pub fn network(&self) -> String {
        self.inner.net.lock().unwrap().name.clone()
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_pem(&self) -> String {
        self.inner.ca_pem.clone()
    }

    /// A token that may do everything.
    pub fn admin_token(&self) -> String {
        self.inner.admin_token.clone()
    }

    /// A new token of a service account of the stand-in's namespace that
    /// may do only `rules` (`(verb, resource)`, `*` for any) there.
    pub fn token_with(&self, rules: &[(&str, &str)]) -> String {
        let n = self.inner.tokens.lock().unwrap().len();
        let ns = self.inner.namespace.clone();
        self.mint(
            &format!("restricted-{n}"),
            &ns,
            rules.iter().map(|(v, r)| (v.to_string(), r.to_string())).collect(),
        )
    }

    fn mint(&self, account: &str, ns: &str, rules: Vec<(String, String)>) -> String {
        mint(&self.inner, account, ns, rules)
    }

    /// A kubeconfig file for `token` (server on loopback, CA data), for
    /// kubectl.
    pub fn kubeconfig(&self, token: &str) -> PathBuf {
        let ca = b64_encode(self.inner.ca_pem.as_bytes());
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {url}\n    certificate-authority-data: {ca}\nusers:\n- name: standin-user\n  user:\n    token: {token}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: standin-user\n    namespace: {ns}\ncurrent-context: standin\n",
            url = self.url(),
            ns = self.inner.namespace,
        );
        let path = self
            .inner
            .dir
            .join(format!("kubeconfig-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// A kube config for `token` (loopback URL, the stand-in's CA, the
    /// stand-in's namespace as the default).
    pub fn config(&self, token: &str) -> kube::Config {
        let mut config = kube::Config::new(self.url().parse().expect("url"));
        config.root_cert = Some(vec![self.inner.ca_der.clone()]);
        config.default_namespace = self.inner.namespace.clone();
        config.auth_info.token = Some(token.to_owned().into());
        config
    }

    /// A kube client for `token`.
    pub fn client(&self, token: &str) -> kube::Client {
        kube::Client::try_from(self.config(token)).expect("kube client")
    }

    /// Every pod now.
    pub fn pods(&self) -> Vec<Pod> {
        self.objects(Res::Pods)
    }

    /// Every secret now.
    pub fn secrets(&self) -> Vec<Secret> {
        self.objects(Res::Secrets)
    }

    /// Every event now.
    pub fn events(&self) -> Vec<Event> {
        self.objects(Res::Events)
    }

    fn objects<T: serde::de::DeserializeOwned>(&self, res: Res) -> Vec<T> {
        let list = self.inner.store.lock().unwrap().list(res, None);
        list.into_iter()
            .map(|o| serde_json::from_value(o).expect("a stored object parses"))
            .collect()
    }

    /// Ids of the Docker containers (any state) of pod `ns/name`.
    pub async fn containers_of(&self, ns: &str, name: &str) -> Vec<String> {
        kubelet::containers(&self.inner, Some(&format!("{ns}/{name}"))).await
    }

    /// Ids of every Docker container (any state) the stand-in made and has
    /// not removed.
    pub async fn containers(&self) -> Vec<String> {
        kubelet::containers(&self.inner, None).await
    }

    /// Requests refused for their shape (tests assert none).
    pub fn rejected(&self) -> Vec<Rejected> {
        self.inner.rejected.lock().unwrap().clone()
    }

    /// Every request served so far.
    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Drops the change history: a watch from any version before now gets
    /// `410 Expired`.
    pub fn compact(&self) {
        let mut store = self.inner.store.lock().unwrap();
        store.compacted = store.rv;
        store.history.clear();
    }

    /// Ends every open watch, as an API server does at its own request
    /// timeout or when it restarts: clients watch again from the last
    /// version they saw (a 410 after [`StandIn::compact`]).
    pub fn end_watches(&self) {
        for watch in self.inner.watches.lock().unwrap().drain(..) {
            watch.abort();
        }
    }

    /// Answers the next `n` requests 429 with `Retry-After: retry_after_secs`.
    pub fn throttle_next(&self, n: u32, retry_after_secs: u64) {
        *self.inner.throttle.lock().unwrap() = (n, retry_after_secs);
    }

    /// With a message, new pods stay Pending, unschedulable; `None`
    /// schedules those waiting.
    pub fn set_unschedulable(&self, message: Option<&str>) {
        *self.inner.unschedulable.lock().unwrap() = message.map(str::to_owned);
        if message.is_none() {
            kubelet::schedule_waiting(&self.inner);
        }
    }

    /// Evicts pod `ns/name` as a node under memory pressure would: the
    /// container is killed, the pod fails with reason `Evicted`.
    pub fn evict(&self, ns: &str, name: &str) {
        let uid = {
            let store = self.inner.store.lock().unwrap();
            store.get(Res::Pods, ns, name).map(|p| store::uid(p).to_owned())
        };
        let uid = uid.unwrap_or_else(|| panic!("no pod {ns}/{name}"));
        if let Some(tx) = self.inner.kubelet.lock().unwrap().get(&uid) {
            let _ = tx.send(Cmd::Evict);
        }
    }

    /// Registers the pod of the test process itself (the parent): Running,
    /// its IP the pod network's gateway, one container `app` of `image`,
    /// label `app=test-parent`. The kubelet runs nothing for it.
    pub fn add_parent_pod(&self, ns: &str, name: &str, image: &str) -> Pod {
        let uid = uuid::Uuid::new_v4().to_string();
        let now = store::now();
        let ip = self.inner.gateway.to_string();
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": uid,
                "creationTimestamp": now,
                "labels": {"app": "test-parent"},
            },
            "spec": {
                "containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}],
                "restartPolicy": "Always",
                "serviceAccountName": "default",
                "serviceAccount": "default",
                "terminationGracePeriodSeconds": 30,
                "nodeName": NODE,
            },
            "status": {
                "phase": "Running",
                "hostIP": ip,
                "hostIPs": [{"ip": ip}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": now,
                "qosClass": "BestEffort",
                "conditions": kubelet::conditions(true, true, &now),
                "containerStatuses": [{
                    "name": "app",
                    "image": image,
                    "imageID": "",
                    "containerID": "external://test-process",
                    "ready": true,
                    "started": true,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }],
            },
        });
        self.inner.external.lock().unwrap().insert(uid);
        let pod = self.inner.store.lock().unwrap().insert(Res::Pods, pod);
        serde_json::from_value(pod).expect("pod")
    }

    /// Removes every container, network and file the stand-in made.
    pub async fn shutdown(mut self) {
        self.done = true;
        for task in self.inner.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        cleanup(&self.inner.docker, &self.inner.id, &self.inner.dir).await;
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        for task in self.inner.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let (id, dir) = (self.inner.id.clone(), self.inner.dir.clone());
        // A runtime of its own: drop may run inside (or outside) the test's.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let (Ok(runtime), Ok(docker)) = (runtime, Docker::connect_with_defaults()) {
                runtime.block_on(cleanup(&docker, &id, &dir));
            }
        })
        .join();
    }
}

/// Mints a token for service account `account` of `ns` with `rules` there.
pub fn mint(inner: &Inner, account: &str, ns: &str, rules: Vec<(String, String)>) -> String {
    let token = format!("sa-{}", uuid::Uuid::new_v4().simple());
    let identity = Identity {
        user: format!("system:serviceaccount:{ns}:{account}"),
        rules: Some(rules),
        namespace: Some(ns.to_owned()),
        binding: format!("RoleBinding \"{account}/{ns}\" of Role \"{account}\" to ServiceAccount \"{account}/{ns}\""),
    };
    inner.tokens.lock().unwrap().insert(token.clone(), identity);
    token
}

async fn cleanup(docker: &Docker, id: &str, dir: &std::path::Path) {
    kubelet::remove_all(docker, id).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Deletes pod `ns/name` as the apiserver does: at once when it was never
/// scheduled, is not run by the kubelet, or `grace` is 0; otherwise marked
/// (`deletionTimestamp`) and left to the kubelet, which stops the container
/// with the grace and removes the pod. Returns the pod as answered.
pub fn delete_pod(inner: &Shared, ns: &str, name: &str, grace: Option<i64>, orphan: bool) -> Result<Value, ApiError> {
    let mut store = inner.store.lock().unwrap();
    let pod = store
        .get(Res::Pods, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(Res::Pods, name))?;
    let uid = store::uid(&pod).to_owned();
    let grace = grace
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30)
        .max(0);
    let external = inner.external.lock().unwrap().contains(&uid);
    let scheduled = pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let kubelet = inner.kubelet.lock().unwrap().get(&uid).cloned();
    if grace == 0 || external || !scheduled || kubelet.is_none() {
        let removed = store.remove(Res::Pods, ns, name, Some(&uid)).expect("present");
        drop(store);
        if let Some(tx) = kubelet {
            let _ = tx.send(Cmd::Delete(0));
        }
        removed_object(inner, &removed, orphan);
        return Ok(removed);
    }
    if pod["metadata"]["deletionTimestamp"].is_string() {
        // Already terminating: a shorter grace would shorten it; the
        // kubelet already has its orders.
        return Ok(pod);
    }
    let marked = store
        .update(Res::Pods, ns, name, Some(&uid), |p| {
            p["metadata"]["deletionTimestamp"] = json!(store::time_in(grace));
            p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        })
        .expect("present");
    drop(store);
    if orphan {
        orphan_dependents(inner, &uid);
    }
    if let Some(tx) = kubelet {
        let _ = tx.send(Cmd::Delete(grace));
    }
    Ok(marked)
}

/// After an object is gone: its service-account tokens go (pods), and the
/// garbage collector deletes what it owned (or orphans it).
pub fn removed_object(inner: &Shared, object: &Value, orphan: bool) {
    let uid = store::uid(object).to_owned();
    inner.external.lock().unwrap().remove(&uid);
    if orphan {
        orphan_dependents(inner, &uid);
    } else {
        collect_garbage(inner, &uid);
    }
}

fn owned_by(object: &Value, uid: &str) -> bool {
    object["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
}

fn orphan_dependents(inner: &Shared, uid: &str) {
    let mut store = inner.store.lock().unwrap();
    let keys: Vec<store::Key> = store
        .objects
        .iter()
        .filter(|(_, o)| owned_by(o, uid))
        .map(|(k, _)| k.clone())
        .collect();
    for (res, ns, name) in keys {
        store.update(res, &ns, &name, None, |o| {
            let refs = o["metadata"]["ownerReferences"].as_array_mut().expect("refs");
            refs.retain(|r| r["uid"] != uid);
            if refs.is_empty() {
                o["metadata"].as_object_mut().unwrap().remove("ownerReferences");
            }
        });
    }
}

/// Deletes (in the background) every object all of whose owners are gone,
/// one of them `uid`.
fn collect_garbage(inner: &Shared, uid: &str) {
    let dependents: Vec<(store::Key, Value)> = {
        let store = inner.store.lock().unwrap();
        store
            .objects
            .iter()
            .filter(|(_, o)| owned_by(o, uid))
            .filter(|(_, o)| {
                o["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|refs| refs.iter().all(|r| !store.exists_uid(r["uid"].as_str().unwrap_or(""))))
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect()
    };
    for ((res, ns, name), object) in dependents {
        match res {
            Res::Pods => {
                let _ = delete_pod(inner, &ns, &name, None, false);
            }
            _ => {
                let removed = inner
                    .store
                    .lock()
                    .unwrap()
                    .remove(res, &ns, &name, Some(store::uid(&object)));
                if let Some(removed) = removed {
                    removed_object(inner, &removed, false);
                }
            }
        }
    }
}

/// Base64 as Kubernetes writes `data` (through `k8s_openapi::ByteString`).
pub fn b64_encode(bytes: &[u8]) -> String {
    let value = serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())).expect("base64");
    value.as_str().expect("a string").to_owned()
}

/// Bytes of base64 `text` (empty when it is not base64).
pub fn b64_decode(text: &str) -> Vec<u8> {
    serde_json::from_value::<k8s_openapi::ByteString>(json!(text))
        .map(|b| b.0)
        .unwrap_or_default()
}
