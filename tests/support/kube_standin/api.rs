//! The HTTP side: authentication, RBAC, throttling, the request log, and
//! the handlers of pods, secrets, events, discovery and access reviews.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use serde_json::{Value, json};

use super::store::{self, ApiError, FieldSelector, LabelSelector, Res, Selector, json_body};
use super::{Identity, Rejected, Shared, kubelet};

type Query_ = Query<HashMap<String, String>>;

pub fn router(inner: Shared) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/v1", get(core_resources))
        .route("/apis/authorization.k8s.io", get(authorization_group))
        .route("/apis/authorization.k8s.io/v1", get(authorization_resources))
        .route(
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            post(access_review),
        )
        .route("/api/v1/{resource}", get(list_all))
        .route(
            "/api/v1/namespaces/{ns}/{resource}",
            get(list_or_watch).post(create).fallback(unsupported),
        )
        .route(
            "/api/v1/namespaces/{ns}/{resource}/{name}",
            get(get_one).delete(delete_one).fallback(unsupported),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(inner.clone(), authenticate))
        .layer(middleware::from_fn_with_state(inner.clone(), throttle))
        .layer(middleware::from_fn_with_state(inner.clone(), log))
        .with_state(inner)
}

// ------------------------------------------------------------ middleware

fn path_of(request: &Request) -> String {
    request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default()
}

async fn log(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let (method, path) = (request.method().to_string(), path_of(&request));
    // Who asked (the token's user), for tests that tell the parent's
    // requests from a runner's.
    let user = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| inner.tokens.lock().unwrap().get(t.trim()).map(|i| i.user.clone()));
    let response = next.run(request).await;
    let status = response.status().as_u16();
    if status == 400 || status == 405 {
        // Refused for its shape: the body says why.
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        let why = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        inner.rejected.lock().unwrap().push(Rejected {
            method: method.clone(),
            path: path.clone(),
            why,
        });
        inner.requests.lock().unwrap().push(super::Request {
            method,
            path,
            status,
            user,
        });
        return Response::from_parts(parts, Body::from(bytes));
    }
    inner.requests.lock().unwrap().push(super::Request {
        method,
        path,
        status,
        user,
    });
    response
}

async fn throttle(State(inner): State<Shared>, request: Request, next: Next) -> Response {
    let retry_after = {
        let mut throttle = inner.throttle.lock().unwrap();
        if throttle.0 > 0 {
            throttle.0 -= 1;
            Some(throttle.1)
        } else {
            None
        }
    };
    match retry_after {
        Some(secs) => {
            let mut error = ApiError::new(429, "TooManyRequests", "Too many requests, please try again later.")
                .details(json!({"retryAfterSeconds": secs}));
            error.retry_after = Some(secs);
            error.into_response()
        }
        None => next.run(request).await,
    }
}

/// 415 for a body that is not JSON (kubectl may try protobuf first; the
/// stand-in speaks JSON only, and client-go falls back to it).
fn json_only(request: &Request) -> Option<Response> {
    let has_body = matches!(*request.method(), Method::POST | Method::PUT | Method::PATCH);
    let content_type = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if has_body && !content_type.starts_with("application/json") {
        let message = format!(
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml; received {content_type}"
        );
        return Some(ApiError::new(415, "UnsupportedMediaType", message).into_response());
    }
    None
}

async fn authenticate(State(inner): State<Shared>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let identity = token.and_then(|t| inner.tokens.lock().unwrap().get(t).cloned());
    match identity {
        Some(identity) => {
            if let Some(refused) = json_only(&request) {
                return refused;
            }
            request.extensions_mut().insert(identity);
            next.run(request).await
        }
        None => ApiError::new(401, "Unauthorized", "Unauthorized").into_response(),
    }
}

/// 403 unless `identity` may `verb` `res` in `ns`.
fn authorize(identity: &Identity, verb: &str, res: Res, ns: Option<&str>, name: Option<&str>) -> Result<(), ApiError> {
    if identity.allows(verb, res.plural(), ns) {
        return Ok(());
    }
    let subject = match name {
        Some(name) => format!("{} \"{name}\"", res.plural()),
        None => res.plural().to_owned(),
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_owned(),
    };
    let mut details = json!({"kind": res.plural()});
    if let Some(name) = name {
        details["name"] = json!(name);
    }
    Err(ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User \"{}\" cannot {verb} resource \"{}\" in API group \"\" {scope}",
            identity.user,
            res.plural()
        ),
    )
    .details(details))
}

fn resource(plural: &str) -> Result<Res, ApiError> {
    Res::parse(plural).ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"))
}

async fn not_found() -> ApiError {
    ApiError::new(404, "NotFound", "the server could not find the requested resource")
}

async fn unsupported(method: Method) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the stand-in does not serve {method} here"),
    )
}

// ------------------------------------------------------------- discovery

async fn version() -> impl IntoResponse {
    json_body(&json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-ractor-flame-standin",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

async fn api_versions(State(inner): State<Shared>) -> impl IntoResponse {
    json_body(&json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{
            "clientCIDR": "0.0.0.0/0",
            "serverAddress": format!("{}:{}", inner.gateway, inner.in_cluster_port),
        }],
    }))
}

fn authorization_group_json() -> Value {
    json!({
        "name": "authorization.k8s.io",
        "versions": [{"groupVersion": "authorization.k8s.io/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "authorization.k8s.io/v1", "version": "v1"},
    })
}

async fn api_groups() -> impl IntoResponse {
    json_body(&json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [authorization_group_json()],
    }))
}

async fn authorization_group() -> impl IntoResponse {
    let mut group = authorization_group_json();
    group["kind"] = json!("APIGroup");
    group["apiVersion"] = json!("v1");
    json_body(&group)
}

async fn authorization_resources() -> impl IntoResponse {
    json_body(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "authorization.k8s.io/v1",
        "resources": [{
            "name": "selfsubjectaccessreviews",
            "singularName": "selfsubjectaccessreview",
            "namespaced": false,
            "kind": "SelfSubjectAccessReview",
            "verbs": ["create"],
        }],
    }))
}

async fn core_resources() -> impl IntoResponse {
    let verbs = json!(["create", "delete", "get", "list", "watch"]);
    json_body(&json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
             "verbs": verbs, "shortNames": ["ev"]},
            {"name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
             "verbs": verbs, "shortNames": ["po"], "categories": ["all"]},
            {"name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
             "verbs": verbs},
        ],
    }))
}

// --------------------------------------------------------- access review

async fn access_review(
    State(_inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_review, mut raw): (SelfSubjectAccessReview, Value) = store::strict(&body)?;
    let attributes = &raw["spec"]["resourceAttributes"];
    let group = attributes["group"].as_str().unwrap_or("");
    let verb = attributes["verb"].as_str().unwrap_or("");
    let resource = attributes["resource"].as_str().unwrap_or("");
    let ns = attributes["namespace"].as_str().filter(|n| !n.is_empty());
    let allowed = group.is_empty()
        && Res::parse(resource).is_some()
        && attributes["subresource"].as_str().is_none_or(str::is_empty)
        && identity.allows(verb, resource, ns);
    raw["status"] = if allowed {
        json!({"allowed": true, "reason": format!("RBAC: allowed by {}", identity.binding)})
    } else {
        json!({"allowed": false})
    };
    raw["metadata"] = json!({"creationTimestamp": null});
    Ok((StatusCode::CREATED, json_body(&raw)).into_response())
}

// ------------------------------------------------------------------ read

fn selector(res: Res, query: &HashMap<String, String>) -> Result<Selector, ApiError> {
    let labels =
        LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str)).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(res, query.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(Selector { labels, fields })
}

fn list_json(inner: &Shared, res: Res, ns: Option<&str>, selector: &Selector) -> Value {
    let store = inner.store.lock().unwrap();
    let items: Vec<Value> = store
        .list(res, ns)
        .into_iter()
        .filter(|o| selector.matches(o))
        .map(|mut o| {
            // Items of a list carry no kind of their own.
            let m = o.as_object_mut().unwrap();
            m.remove("kind");
            m.remove("apiVersion");
            o
        })
        .collect();
    json!({
        "kind": format!("{}List", res.kind()),
        "apiVersion": "v1",
        "metadata": {"resourceVersion": store.rv.to_string()},
        "items": items,
    })
}

async fn list_all(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path(resource_): Path<String>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let res = resource(&resource_)?;
    let verb = if is_watch(&query) { "watch" } else { "list" };
    authorize(&identity, verb, res, None, None)?;
    let selector = selector(res, &query)?;
    if is_watch(&query) {
        return watch(inner, res, None, selector, &query);
    }
    let list = list_json(&inner, res, None, &selector);
    if wants_table(&headers) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        return Ok(json_body(&table(res, &items, &list["metadata"]["resourceVersion"])).into_response());
    }
    Ok(json_body(&list).into_response())
}

fn is_watch(query: &HashMap<String, String>) -> bool {
    matches!(query.get("watch").map(String::as_str), Some("true" | "1"))
}

async fn list_or_watch(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path((ns, resource_)): Path<(String, String)>,
    Query(query): Query_,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let res = resource(&resource_)?;
    let verb = if is_watch(&query) { "watch" } else { "list" };
    authorize(&identity, verb, res, Some(&ns), None)?;
    let selector = selector(res, &query)?;
    if is_watch(&query) {
        return watch(inner, res, Some(ns), selector, &query);
    }
    let list = list_json(&inner, res, Some(&ns), &selector);
    if wants_table(&headers) {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        return Ok(json_body(&table(res, &items, &list["metadata"]["resourceVersion"])).into_response());
    }
    Ok(json_body(&list).into_response())
}

async fn get_one(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path((ns, resource_, name)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let res = resource(&resource_)?;
    authorize(&identity, "get", res, Some(&ns), Some(&name))?;
    let object = inner.store.lock().unwrap().get(res, &ns, &name).cloned();
    let object = object.ok_or_else(|| ApiError::not_found(res, &name))?;
    if wants_table(&headers) {
        let rv = object["metadata"]["resourceVersion"].clone();
        return Ok(json_body(&table(res, &[object], &rv)).into_response());
    }
    Ok(json_body(&object).into_response())
}

// ----------------------------------------------------------------- watch

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

fn watch(
    inner: Shared,
    res: Res,
    ns: Option<String>,
    selector: Selector,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let bookmarks = query.get("allowWatchBookmarks").is_some_and(|b| b == "true");
    let since = query.get("resourceVersion").filter(|v| !v.is_empty() && *v != "0");
    let in_ns = move |o: &Value| ns.as_deref().is_none_or(|ns| store::namespace(o) == ns);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    let (mut live, first, start_rv) = {
        let store = inner.store.lock().unwrap();
        let live = store.tx.subscribe();
        let mut first = Vec::new();
        let start_rv = match since {
            None => {
                // No version: the current state as ADDED events, then changes.
                for o in store.objects.iter().filter(|((r, _, _), _)| *r == res).map(|(_, o)| o) {
                    if in_ns(o) && selector.matches(o) {
                        first.push(event_line("ADDED", o));
                    }
                }
                store.rv
            }
            Some(v) => {
                let v: u64 = v
                    .parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?;
                if v < store.compacted {
                    let status = ApiError::new(
                        410,
                        "Expired",
                        format!("too old resource version: {v} ({})", store.compacted + 1),
                    )
                    .status();
                    first.push(event_line("ERROR", &status));
                    u64::MAX
                } else {
                    for change in store.history.iter().filter(|c| c.rv > v && c.res == res) {
                        if let Some(line) = visible(change, &selector, &in_ns) {
                            first.push(line);
                        }
                    }
                    store.rv
                }
            }
        };
        (live, first, start_rv)
    };
    let kind = res.kind();
    let inner2 = inner.clone();
    let task = tokio::spawn(async move {
        for line in first {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if start_rv == u64::MAX {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let rv = inner2.store.lock().unwrap().rv;
                    let bookmark = json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
                    if tx.send(event_line("BOOKMARK", &bookmark)).await.is_err() {
                        return;
                    }
                }
                change = live.recv() => match change {
                    Ok(change) => {
                        if change.rv <= start_rv || change.res != res {
                            continue;
                        }
                        if let Some(line) = visible(&change, &selector, &in_ns) && tx.send(line).await.is_err() {
                            return;
                        }
                    }
                    // Lagged or closed: end the watch (the client watches again).
                    Err(_) => return,
                },
            }
        }
    });
    inner.tasks.lock().unwrap().push(task.abort_handle());
    inner.watches.lock().unwrap().push(task.abort_handle());
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-cache, private"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The line a watcher with `selector` sees for `change`: objects entering
/// the selection are ADDED, leaving it DELETED.
fn visible(change: &store::Change, selector: &Selector, in_ns: &impl Fn(&Value) -> bool) -> Option<Bytes> {
    if !in_ns(&change.object) {
        return None;
    }
    let now = selector.matches(&change.object);
    let before = change.prev.as_ref().map(|p| selector.matches(p));
    let kind = match (change.kind, before, now) {
        ("MODIFIED", Some(true), true) => "MODIFIED",
        ("MODIFIED", Some(false), true) => "ADDED",
        ("MODIFIED", Some(true), false) => "DELETED",
        ("MODIFIED", _, _) => return None,
        (kind, _, true) => kind,
        _ => return None,
    };
    Some(event_line(kind, &change.object))
}

// ---------------------------------------------------------------- create

async fn create(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path((ns, resource_)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let res = resource(&resource_)?;
    authorize(&identity, "create", res, Some(&ns), None)?;
    let mut object = match res {
        Res::Pods => store::strict::<Pod>(&body)?.1,
        Res::Secrets => store::strict::<Secret>(&body)?.1,
        Res::Events => store::strict::<Event>(&body)?.1,
    };
    let body_ns = object["metadata"]["namespace"].as_str().unwrap_or(&ns);
    if body_ns != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if !object["metadata"]["name"].is_string() {
        let Some(prefix) = object["metadata"]["generateName"].as_str() else {
            return Err(ApiError::invalid(
                res.kind(),
                "",
                &[(
                    "metadata.name".into(),
                    "Required value: name or generateName is required".into(),
                )],
            ));
        };
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .map(|c| {
                const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                ALPHABET[c.to_digit(16).unwrap() as usize % ALPHABET.len()] as char
            })
            .take(5)
            .collect();
        object["metadata"]["name"] = json!(format!("{prefix}{suffix}"));
    }
    let name = store::name(&object);
    match res {
        Res::Pods => validate_pod(&object, &name)?,
        Res::Secrets => validate_secret(&mut object, &name)?,
        Res::Events => {
            if !store::dns_subdomain(&name, 253) {
                return Err(ApiError::invalid("Event", &name, &[name_cause(&name)]));
            }
        }
    }
    let now = store::now();
    let meta = &mut object["metadata"];
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uuid::Uuid::new_v4().to_string());
    meta["creationTimestamp"] = json!(now);
    if res == Res::Pods {
        default_pod(&mut object, &inner);
    }
    let stored = {
        let mut store = inner.store.lock().unwrap();
        if store.get(res, &ns, &name).is_some() {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", res.plural()),
            )
            .details(json!({"name": name, "kind": res.plural()})));
        }
        store.insert(res, object)
    };
    if res == Res::Pods {
        kubelet::admit(&inner, &stored);
    }
    let stored = inner
        .store
        .lock()
        .unwrap()
        .get(res, &ns, &name)
        .cloned()
        .unwrap_or(stored);
    Ok((StatusCode::CREATED, json_body(&stored)).into_response())
}

fn name_cause(name: &str) -> (String, String) {
    (
        "metadata.name".into(),
        format!("Invalid value: \"{name}\": {}", store::SUBDOMAIN_MESSAGE),
    )
}

fn validate_pod(pod: &Value, name: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if !store::dns_subdomain(name, 63) {
        causes.push(if name.len() > 63 {
            (
                "metadata.name".into(),
                format!("Invalid value: \"{name}\": must be no more than 63 characters"),
            )
        } else {
            name_cause(name)
        });
    }
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        causes.push(("spec.containers".into(), "Required value".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        let cname = c["name"].as_str().unwrap_or("");
        if cname.is_empty() {
            causes.push((format!("spec.containers[{i}].name"), "Required value".into()));
        } else if !store::dns_label(cname) {
            causes.push((
                format!("spec.containers[{i}].name"),
                format!("Invalid value: \"{cname}\": {}", store::LABEL_MESSAGE),
            ));
        } else if !seen.insert(cname.to_owned()) {
            causes.push((
                format!("spec.containers[{i}].name"),
                format!("Duplicate value: \"{cname}\""),
            ));
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            causes.push((format!("spec.containers[{i}].image"), "Required value".into()));
        }
        for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
            let ename = e["name"].as_str().unwrap_or("");
            if ename.is_empty() {
                causes.push((format!("spec.containers[{i}].env[{j}].name"), "Required value".into()));
            } else if !store::env_name(ename) {
                causes.push((
                    format!("spec.containers[{i}].env[{j}].name"),
                    format!("Invalid value: \"{ename}\": {}", store::ENV_MESSAGE),
                ));
            }
        }
        if let Some(policy) = c["imagePullPolicy"].as_str()
            && !matches!(policy, "Always" | "IfNotPresent" | "Never")
        {
            causes.push((
                format!("spec.containers[{i}].imagePullPolicy"),
                format!("Unsupported value: \"{policy}\": supported values: \"Always\", \"IfNotPresent\", \"Never\""),
            ));
        }
    }
    if let Some(policy) = spec["restartPolicy"].as_str()
        && !matches!(policy, "Always" | "OnFailure" | "Never")
    {
        causes.push((
            "spec.restartPolicy".into(),
            format!("Unsupported value: \"{policy}\": supported values: \"Always\", \"OnFailure\", \"Never\""),
        ));
    }
    if let Some(grace) = spec["terminationGracePeriodSeconds"].as_i64()
        && grace < 0
    {
        causes.push((
            "spec.terminationGracePeriodSeconds".into(),
            format!("Invalid value: {grace}: must be greater than or equal to 0"),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("Pod", name, &causes))
    }
}

/// The apiserver's defaults for a new pod.
fn default_pod(pod: &mut Value, _inner: &Shared) {
    let spec = &mut pod["spec"];
    let set = |v: &mut Value, key: &str, default: Value| {
        if v[key].is_null() {
            v[key] = default;
        }
    };
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "serviceAccountName", json!("default"));
    let account = spec["serviceAccountName"].clone();
    set(spec, "serviceAccount", account);
    set(spec, "securityContext", json!({}));
    set(spec, "enableServiceLinks", json!(true));
    set(spec, "priority", json!(0));
    let mut requests = false;
    let mut guaranteed = true;
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        let image = c["image"].as_str().unwrap_or("").to_owned();
        let tagged = image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        let latest = !tagged || image.ends_with(":latest");
        set(
            c,
            "imagePullPolicy",
            json!(if latest { "Always" } else { "IfNotPresent" }),
        );
        set(c, "terminationMessagePath", json!("/dev/termination-log"));
        set(c, "terminationMessagePolicy", json!("File"));
        if c["resources"].is_null() {
            c["resources"] = json!({});
        }
        // Limits without requests: requests default to the limits.
        if let Some(limits) = c["resources"]["limits"].as_object().cloned()
            && c["resources"]["requests"].is_null()
        {
            c["resources"]["requests"] = json!(limits);
        }
        let resources = &c["resources"];
        requests |= resources["requests"].as_object().is_some_and(|r| !r.is_empty());
        guaranteed &= ["cpu", "memory"]
            .iter()
            .all(|k| resources["limits"][k].is_string() && resources["limits"][k] == resources["requests"][k]);
    }
    let qos = if !requests {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    };
    pod["status"] = json!({"phase": "Pending", "qosClass": qos});
}

fn validate_secret(secret: &mut Value, name: &str) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if !store::dns_subdomain(name, 253) {
        causes.push(name_cause(name));
    }
    if let Some(string_data) = secret.as_object_mut().unwrap().remove("stringData") {
        for (k, v) in string_data.as_object().into_iter().flatten() {
            let encoded = super::b64_encode(v.as_str().unwrap_or("").as_bytes());
            secret["data"][k] = json!(encoded);
        }
    }
    for k in secret["data"].as_object().into_iter().flatten().map(|(k, _)| k) {
        let ok = !k.is_empty()
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
        if !ok {
            causes.push((
                format!("data[{k}]"),
                format!("Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
            ));
        }
    }
    if secret["type"].is_null() {
        secret["type"] = json!("Opaque");
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("Secret", name, &causes))
    }
}

// ---------------------------------------------------------------- delete

async fn delete_one(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path((ns, resource_, name)): Path<(String, String, String)>,
    Query(query): Query_,
    body: Bytes,
) -> Result<Response, ApiError> {
    let res = resource(&resource_)?;
    authorize(&identity, "delete", res, Some(&ns), Some(&name))?;
    let options: DeleteOptions = if body.iter().all(u8::is_ascii_whitespace) {
        DeleteOptions::default()
    } else {
        store::strict::<DeleteOptions>(&body)?.0
    };
    let grace = match query.get("gracePeriodSeconds") {
        Some(g) => Some(
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds: {g}")))?,
        ),
        None => options.grace_period_seconds,
    };
    let policy = query.get("propagationPolicy").cloned().or(options.propagation_policy);
    let orphan = match policy.as_deref() {
        None | Some("Background" | "Foreground") => options.orphan_dependents == Some(true),
        Some("Orphan") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                "DeleteOptions",
                "",
                &[(
                    "propagationPolicy".into(),
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                )],
            ));
        }
    };
    let object = match res {
        Res::Pods => super::delete_pod(&inner, &ns, &name, grace, orphan)?,
        _ => {
            let removed = inner.store.lock().unwrap().remove(res, &ns, &name, None);
            let removed = removed.ok_or_else(|| ApiError::not_found(res, &name))?;
            super::removed_object(&inner, &removed, orphan);
            // Objects without graceful deletion answer a Success Status.
            json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "kind": res.plural(), "uid": store::uid(&removed)},
            })
        }
    };
    Ok(json_body(&object).into_response())
}

// ------------------------------------------------------------------ logs

/// `GET .../pods/{name}/log`: the container's output, as text.
async fn pod_log(
    State(inner): State<Shared>,
    axum::Extension(identity): axum::Extension<Identity>,
    Path((ns, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if !identity.allows("get", "pods/log", Some(&ns)) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "pods \"{name}\" is forbidden: User \"{}\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"{ns}\"",
                identity.user
            ),
        ));
    }
    if inner.store.lock().unwrap().get(Res::Pods, &ns, &name).is_none() {
        return Err(ApiError::not_found(Res::Pods, &name));
    }
    let ids = kubelet::containers(&inner, Some(&format!("{ns}/{name}"))).await;
    let Some(id) = ids.first() else {
        return Err(ApiError::bad_request(format!(
            "container in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        kubelet::logs(&inner, id).await,
    )
        .into_response())
}

// ----------------------------------------------------------------- table

/// Whether the client asks for the server-side printing (`kubectl get`
/// without `-o`).
fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|v| v.contains("as=Table")))
}

/// How long ago `time` (RFC 3339) was, as kubectl prints ages.
fn age(time: &Value) -> String {
    let Some(t) = time
        .as_str()
        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return "<unknown>".into();
    };
    let secs = (k8s_openapi::jiff::Timestamp::now().as_second() - t.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// The status kubectl shows for a pod.
fn pod_status(pod: &Value) -> String {
    if pod["metadata"]["deletionTimestamp"].is_string() {
        return "Terminating".into();
    }
    if let Some(reason) = pod["status"]["reason"].as_str() {
        return reason.into();
    }
    let state = &pod["status"]["containerStatuses"][0]["state"];
    if let Some(reason) = state["waiting"]["reason"].as_str() {
        return reason.into();
    }
    if let Some(reason) = state["terminated"]["reason"].as_str() {
        return reason.into();
    }
    pod["status"]["phase"].as_str().unwrap_or("Unknown").into()
}

fn column(name: &str, format: &str, priority: u8, description: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": description, "priority": priority})
}

/// A `meta.k8s.io/v1` Table of `items`, with the columns the apiserver
/// prints for `res`.
fn table(res: Res, items: &[Value], rv: &Value) -> Value {
    let name = column("Name", "name", 0, "Name must be unique within a namespace.");
    let age_column = column(
        "Age",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    );
    let columns = match res {
        Res::Pods => vec![
            name,
            column(
                "Ready",
                "",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            column("Status", "", 0, "The aggregate status of the containers in this pod."),
            column(
                "Restarts",
                "",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age_column,
            column(
                "IP",
                "",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            column(
                "Node",
                "",
                1,
                "NodeName is a request to schedule this pod onto a specific node.",
            ),
            column(
                "Nominated Node",
                "",
                1,
                "nominatedNodeName is set when this pod preempts other pods on the node.",
            ),
            column(
                "Readiness Gates",
                "",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Res::Secrets => vec![
            name,
            column(
                "Type",
                "",
                0,
                "Used to facilitate programmatic handling of secret data.",
            ),
            column("Data", "", 0, "Data contains the secret data."),
            age_column,
        ],
        Res::Events => vec![
            column("Last Seen", "", 0, "Time of the last occurrence."),
            column("Type", "", 0, "Type of this event."),
            column("Reason", "", 0, "Why the action was taken."),
            column("Object", "", 0, "The object this event is about."),
            column("Message", "", 0, "A human-readable description."),
        ],
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells = match res {
                Res::Pods => {
                    let statuses = o["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
                    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
                    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
                    let ip = o["status"]["podIP"].as_str().unwrap_or("<none>");
                    let node = o["spec"]["nodeName"].as_str().unwrap_or("<none>");
                    json!([
                        store::name(o),
                        format!("{ready}/{total}"),
                        pod_status(o),
                        "0",
                        age(&o["metadata"]["creationTimestamp"]),
                        ip,
                        node,
                        "<none>",
                        "<none>"
                    ])
                }
                Res::Secrets => json!([
                    store::name(o),
                    o["type"].as_str().unwrap_or("Opaque"),
                    o["data"].as_object().map_or(0, |d| d.len()),
                    age(&o["metadata"]["creationTimestamp"])
                ]),
                Res::Events => json!([
                    age(&o["lastTimestamp"]),
                    o["type"],
                    o["reason"],
                    format!(
                        "{}/{}",
                        o["involvedObject"]["kind"].as_str().unwrap_or("").to_lowercase(),
                        o["involvedObject"]["name"].as_str().unwrap_or("")
                    ),
                    o["message"]
                ]),
            };
            json!({
                "cells": cells,
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    })
}
