//! The object store: objects as JSON, one global resource version, the
//! event history watches replay, label and field selectors, and the
//! `metav1.Status` errors.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The resources served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Pods,
    Secrets,
    Events,
}

impl Res {
    pub fn parse(plural: &str) -> Option<Res> {
        match plural {
            "pods" => Some(Res::Pods),
            "secrets" => Some(Res::Secrets),
            "events" => Some(Res::Events),
            _ => None,
        }
    }
    pub fn plural(self) -> &'static str {
        match self {
            Res::Pods => "pods",
            Res::Secrets => "secrets",
            Res::Events => "events",
        }
    }
    pub fn kind(self) -> &'static str {
        match self {
            Res::Pods => "Pod",
            Res::Secrets => "Secret",
            Res::Events => "Event",
        }
    }
}

/// One change, as a watch sends it.
#[derive(Clone, Debug)]
pub struct Change {
    pub rv: u64,
    pub res: Res,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
    /// The object before a `MODIFIED` (selectors decide whether a watcher
    /// sees it enter, change or leave).
    pub prev: Option<Value>,
}

pub type Key = (Res, String, String);

pub struct Store {
    pub rv: u64,
    /// Changes at or below this version are gone from the history.
    pub compacted: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: Vec<Change>,
    pub tx: broadcast::Sender<Change>,
}

impl Store {
    pub fn new() -> Store {
        Store {
            rv: 1,
            compacted: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            tx: broadcast::channel(4096).0,
        }
    }

    fn record(&mut self, res: Res, kind: &'static str, object: &Value, prev: Option<Value>) {
        let change = Change {
            rv: self.rv,
            res,
            kind,
            object: object.clone(),
            prev,
        };
        self.history.push(change.clone());
        let _ = self.tx.send(change);
    }

    /// Adds `object` (its name and namespace set), with a new version.
    pub fn insert(&mut self, res: Res, mut object: Value) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (res, namespace(&object), name(&object));
        self.objects.insert(key, object.clone());
        self.record(res, "ADDED", &object, None);
        object
    }

    pub fn get(&self, res: Res, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_owned(), name.to_owned()))
    }

    /// Changes an object (if it exists and, with `uid`, is that one) with
    /// `change`, a new version and a `MODIFIED` event.
    pub fn update(
        &mut self,
        res: Res,
        ns: &str,
        name: &str,
        uid: Option<&str>,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let key = (res, ns.to_owned(), name.to_owned());
        let object = self.objects.get_mut(&key)?;
        if uid.is_some_and(|uid| super::store::uid(object) != uid) {
            return None;
        }
        let prev = object.clone();
        change(object);
        if *object == prev {
            return Some(prev);
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = object.clone();
        self.record(res, "MODIFIED", &object, Some(prev));
        Some(object)
    }

    /// Removes an object (with `uid`, only that one): a `DELETED` event
    /// carrying its last state at a new version.
    pub fn remove(&mut self, res: Res, ns: &str, name: &str, uid: Option<&str>) -> Option<Value> {
        let key = (res, ns.to_owned(), name.to_owned());
        if uid.is_some_and(|uid| self.objects.get(&key).is_some_and(|o| super::store::uid(o) != uid)) {
            return None;
        }
        let mut object = self.objects.remove(&key)?;
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.record(res, "DELETED", &object, None);
        Some(object)
    }

    /// Every object of `res` in `ns` (all namespaces for `None`).
    pub fn list(&self, res: Res, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// An object by uid, any resource.
    pub fn exists_uid(&self, uid: &str) -> bool {
        self.objects.values().any(|o| super::store::uid(o) == uid)
    }
}

pub fn name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

pub fn namespace(object: &Value) -> String {
    object["metadata"]["namespace"].as_str().unwrap_or_default().to_owned()
}

pub fn uid(object: &Value) -> &str {
    object["metadata"]["uid"].as_str().unwrap_or_default()
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
pub fn now() -> String {
    time_in(0)
}

/// `seconds` from now, as Kubernetes writes times.
pub fn time_in(seconds: i64) -> String {
    let t = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
        .expect("a time in range");
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

// ---------------------------------------------------------------- errors

/// A failure answered as a `metav1.Status`.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }
    pub fn details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }
    pub fn not_found(res: Res, name: &str) -> ApiError {
        ApiError::new(404, "NotFound", format!("{} \"{name}\" not found", res.plural()))
            .details(json!({"name": name, "kind": res.plural()}))
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", message)
    }
    /// 422 for `kind` `name` with `causes` as (field, message).
    pub fn invalid(kind: &str, name: &str, causes: &[(String, String)]) -> ApiError {
        let text: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let text = if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| {
                let reason = if m.starts_with("Required value") {
                    "FieldValueRequired"
                } else if m.starts_with("Duplicate value") {
                    "FieldValueDuplicate"
                } else if m.starts_with("Unsupported value") {
                    "FieldValueNotSupported"
                } else {
                    "FieldValueInvalid"
                };
                json!({"reason": reason, "message": m, "field": f})
            })
            .collect();
        ApiError::new(422, "Invalid", format!("{kind} \"{name}\" is invalid: {text}"))
            .details(json!({"name": name, "kind": kind, "causes": causes}))
    }
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).expect("a status code");
        let mut response = (code, json_body(&self.status())).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header value"));
        }
        response
    }
}

/// A JSON body with the content type the apiserver sends.
pub fn json_body(value: &Value) -> impl IntoResponse + use<> {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_vec(value).expect("json"),
    )
}

// ------------------------------------------------------------- selectors

/// A parsed label selector term.
#[derive(Clone, Debug)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// A label selector (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
/// `k notin (a,b)`, comma-separated, all must hold).
#[derive(Clone, Debug, Default)]
pub struct LabelSelector(Vec<Term>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut terms = Vec::new();
        let (mut depth, mut start) = (0, 0);
        let mut parts = Vec::new();
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&text[start..]);
        for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unable to parse requirement: {part}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
            };
            let term = if let Some(k) = part.strip_prefix('!') {
                Term::Absent(k.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("!=") {
                Term::Ne(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once("==") {
                Term::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, v)) = part.split_once('=') {
                Term::Eq(k.trim().to_owned(), v.trim().to_owned())
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Term::NotIn(k.trim().to_owned(), set(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Term::In(k.trim().to_owned(), set(rest)?)
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unable to parse requirement: {part}"));
            } else {
                Term::Exists(part.to_owned())
            };
            terms.push(term);
        }
        Ok(LabelSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|term| match term {
            Term::Eq(k, v) => get(k) == Some(v.as_str()),
            Term::Ne(k, v) => get(k) != Some(v.as_str()),
            Term::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Term::NotIn(k, vs) => get(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Term::Exists(k) => get(k).is_some(),
            Term::Absent(k) => get(k).is_none(),
        })
    }
}

/// A field selector: `path=value`, `path==value`, `path!=value` on dotted
/// JSON paths (`metadata.name`, `status.phase`, `involvedObject.name`...).
#[derive(Clone, Debug, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields each resource may be selected by (others are refused, as
/// the apiserver refuses them).
fn selectable(res: Res, field: &str) -> bool {
    match res {
        Res::Pods => matches!(
            field,
            "metadata.name"
                | "metadata.namespace"
                | "spec.nodeName"
                | "spec.restartPolicy"
                | "spec.schedulerName"
                | "spec.serviceAccountName"
                | "spec.hostNetwork"
                | "status.phase"
                | "status.podIP"
                | "status.nominatedNodeName"
        ),
        Res::Secrets => matches!(field, "metadata.name" | "metadata.namespace" | "type"),
        Res::Events => {
            field.starts_with("involvedObject.")
                || matches!(
                    field,
                    "metadata.name" | "metadata.namespace" | "reason" | "reportingComponent" | "source" | "type"
                )
        }
    }
}

impl FieldSelector {
    pub fn parse(res: Res, text: &str) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{text}'; can't understand '{part}'"));
            };
            if !selectable(res, field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_owned(), eq, value.to_owned()));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let mut v = object;
            for part in field.split('.') {
                v = &v[part];
            }
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// Both selectors.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selector {
    pub fn matches(&self, object: &Value) -> bool {
        self.labels.matches(object) && self.fields.matches(object)
    }
}

// ------------------------------------------------------------ validation

/// Whether `s` is an RFC 1123 label (63 characters at most).
pub fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is an RFC 1123 subdomain of at most `max` characters.
pub fn dns_subdomain(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.split('.').all(dns_label)
}

pub const SUBDOMAIN_MESSAGE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

pub const LABEL_MESSAGE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

/// Whether `s` is a valid environment variable name.
pub fn env_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'))
}

pub const ENV_MESSAGE: &str = "a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')";

/// Fields of `request` (a JSON body) that `typed` (the same body parsed
/// into its Kubernetes type and serialized again) lost: the fields the
/// type does not have. `null` values are not fields.
pub fn unknown_fields(request: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (request, typed) {
        (Value::Object(req), Value::Object(typ)) => {
            for (k, v) in req {
                if v.is_null() {
                    continue;
                }
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match typ.get(k) {
                    Some(t) => unknown_fields(v, t, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(req), Value::Array(typ)) => {
            for (i, (r, t)) in req.iter().zip(typ).enumerate() {
                unknown_fields(r, t, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `body` parsed strictly as `T`: the typed value and the request JSON, or
/// a 400 as the apiserver's strict decoding answers.
pub fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(body: &[u8]) -> Result<(T, Value), ApiError> {
    let raw: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body: {e}")))?;
    let typed: T = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body: {e}")))?;
    let again = serde_json::to_value(&typed).expect("json");
    let mut unknown = Vec::new();
    unknown_fields(&raw, &again, "", &mut unknown);
    if !unknown.is_empty() {
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            list.join(", ")
        )));
    }
    Ok((typed, again))
}

/// A Kubernetes quantity (`6Mi`, `1G`, `500m`, `0.5`, `1e3`) in base units.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 14] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
    ];
    for (suffix, factor) in suffixes {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok()
}
