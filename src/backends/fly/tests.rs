use super::*;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn complete() -> FlyBackend {
    FlyBackend::with_env(env(&[
        ("FLY_API_TOKEN", "tok-secret-123"),
        ("FLY_APP_NAME", "media"),
        ("FLY_IMAGE_REF", "registry.fly.io/media:deployment-1"),
        ("FLY_PRIVATE_IP", "fdaa:0:1:a7b::3"),
    ]))
}

fn labels() -> Labels {
    Labels {
        pool: "thumbs".into(),
        runner: "r1".into(),
        parent_ip: "fdaa:0:1:a7b::3".into(),
    }
}

fn request_json(backend: &FlyBackend, flame_parent: &str) -> serde_json::Value {
    let labels = labels();
    let request = backend
        .create_request(RunnerId::new(), flame_parent, &labels, None)
        .unwrap();
    serde_json::to_value(&request).unwrap()
}

#[test]
fn required_options_are_checked_in_flames_order() {
    let mut backend = FlyBackend::with_env(|_| None).host("");
    let mut seen = Vec::new();
    loop {
        match backend.validate() {
            Err(FlyError::Missing { option, .. }) => seen.push(option),
            Err(FlyError::NoParentAddress) => break,
            other => panic!("unexpected {other:?}"),
        }
        backend = match seen.last().copied() {
            Some("token") => backend.token("t"),
            Some("image") => backend.image("img"),
            Some("host") => backend.host(DEFAULT_HOST),
            Some("app") => backend.app("a"),
            other => panic!("unexpected {other:?}"),
        };
    }
    assert_eq!(seen, ["token", "image", "host", "app"]);
    assert!(backend.parent_addr("127.0.0.1:0".parse().unwrap()).validate().is_ok());
}

#[test]
fn defaults_are_flames_and_come_from_the_environment() {
    let backend = complete();
    assert!(backend.validate().is_ok());
    assert_eq!(backend.host, "https://api.machines.dev");
    assert_eq!(backend.cpu_kind, "performance");
    assert_eq!(backend.memory_mb, 4096);
    assert_eq!(backend.boot_timeout, Duration::from_secs(30));
    assert_eq!(backend.retry_delay, Duration::from_secs(1));
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(backend.cpus, cpus);
    assert_eq!(backend.parent_addr, Some("[fdaa:0:1:a7b::3]:0".parse().unwrap()));
    assert_eq!(backend.region, None);
    let with_region = FlyBackend::with_env(env(&[("FLY_REGION", "ams")]));
    assert_eq!(with_region.region.as_deref(), Some("ams"));
    let bad_ip = FlyBackend::with_env(env(&[("FLY_PRIVATE_IP", "not-an-ip")]));
    assert_eq!(bad_ip.parent_addr, None);
}

#[test]
fn the_token_shows_nowhere() {
    let backend = complete();
    let shown = format!("{backend:?} {:?}", backend.api_for_tests());
    assert!(!shown.contains("tok-secret-123"), "{shown}");
    assert!(shown.contains("redacted"), "{shown}");
    let errors = [
        FlyError::TokenRejected {
            status: 401,
            app: "media".into(),
        },
        backend.clone().image("").validate().unwrap_err(),
    ];
    for e in errors {
        assert!(!e.to_string().contains("tok-secret-123"));
        assert!(!format!("{e:?}").contains("tok-secret-123"));
    }
}

#[test]
fn the_create_request_has_the_documented_shape() {
    let backend = complete().env("RUST_LOG", "info").metadata("team", "media");
    let body = request_json(&backend, "encoded-parent");
    let name = body["name"].as_str().unwrap();
    assert!(
        name.starts_with("media-flame-") && name.len() == "media-flame-".len() + 20,
        "{name}"
    );
    assert!(body.get("region").is_none(), "no region: Fly picks");
    let config = &body["config"];
    assert_eq!(config["image"], "registry.fly.io/media:deployment-1");
    assert_eq!(config["auto_destroy"], true);
    assert_eq!(config["restart"]["policy"], "no");
    assert_eq!(config["init"], serde_json::json!({}));
    assert_eq!(config["services"], serde_json::json!([]));
    assert_eq!(
        config["guest"],
        serde_json::json!({"cpu_kind": "performance", "cpus": backend.cpus, "memory_mb": 4096})
    );
    assert_eq!(
        config["env"],
        serde_json::json!({"RUST_LOG": "info", "FLAME_PARENT": "encoded-parent"})
    );
    let metadata = &config["metadata"];
    assert_eq!(metadata["team"], "media");
    assert_eq!(metadata[META_POOL], "thumbs");
    assert_eq!(metadata[META_RUNNER], "r1");
    assert_eq!(metadata[META_PARENT], backend.instance());
    assert_eq!(metadata[META_PARENT_IP], "fdaa:0:1:a7b::3");
}

#[test]
fn users_cannot_override_flame_parent_or_the_backends_metadata() {
    let backend = complete()
        .env(FLAME_PARENT, "forged")
        .metadata(META_RUNNER, "forged")
        .metadata(META_POOL, "forged");
    let body = request_json(&backend, "real");
    assert_eq!(body["config"]["env"][FLAME_PARENT], "real");
    assert_eq!(body["config"]["metadata"][META_RUNNER], "r1");
    assert_eq!(body["config"]["metadata"][META_POOL], "thumbs");
}

#[test]
fn a_gpu_kind_reserves_one_gpu_unless_told_more() {
    let one = request_json(&complete().gpu_kind("l40s").region("ord"), "p");
    assert_eq!(one["region"], "ord");
    assert_eq!(one["config"]["guest"]["gpu_kind"], "l40s");
    assert_eq!(one["config"]["guest"]["gpus"], 1);
    let two = request_json(&complete().gpu_kind("l40s").gpus(2), "p");
    assert_eq!(two["config"]["guest"]["gpus"], 2);
    let none = request_json(&complete().gpus(2), "p");
    assert!(none["config"]["guest"].get("gpus").is_none(), "gpus only with a kind");
}

#[test]
fn init_and_services_are_sent_as_given() {
    #[derive(Serialize)]
    struct Service {
        protocol: &'static str,
        internal_port: u16,
    }
    let backend = complete()
        .init(MachineInit::new().cmd(["/app/server", "--runner"]).swap_size_mb(512))
        .services(vec![Service {
            protocol: "tcp",
            internal_port: 9000,
        }]);
    let body = request_json(&backend, "p");
    assert_eq!(
        body["config"]["init"],
        serde_json::json!({"cmd": ["/app/server", "--runner"], "swap_size_mb": 512})
    );
    assert_eq!(
        body["config"]["services"],
        serde_json::json!([{"protocol": "tcp", "internal_port": 9000}])
    );
}

#[test]
fn invalid_values_are_reported_by_validate() {
    assert!(matches!(complete().cpus(0).validate(), Err(FlyError::Invalid(_))));
    assert!(matches!(complete().memory_mb(0).validate(), Err(FlyError::Invalid(_))));
    let mut bad_key = std::collections::HashMap::new();
    bad_key.insert((1, 2), "x");
    let err = complete().services(vec![bad_key]).validate().unwrap_err();
    assert!(err.to_string().contains("services"), "{err}");
}

#[test]
fn error_bodies_are_cut() {
    let long = "é".repeat(1000);
    let cut = error::cut(&long);
    assert!(cut.len() <= 520 && cut.ends_with("..."));
}

impl FlyBackend {
    fn api_for_tests(&self) -> Api {
        let (token, _, host, app) = self.required().unwrap();
        Api {
            client: reqwest::Client::new(),
            host: host.to_owned(),
            app: app.to_owned(),
            token: token.clone(),
            retry_delay: self.retry_delay,
        }
    }
}
