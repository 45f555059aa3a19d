//! The engine: how to reach it (a Unix socket, plain TCP, or TCP with TLS
//! client certificates), the address this machine uses toward it, and the
//! networks runners join.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::InspectNetworkOptions;
use ractor_flame_actors::BackendError;

use super::{Engine, LABEL_MANAGED};

/// Seconds an engine request may take before it fails.
const REQUEST_TIMEOUT_S: u64 = 30;

/// The certificates for an engine reached over TLS (`dockerd --tlsverify`):
/// the certificate authority that signed the engine's certificate, and the
/// client certificate and key this backend presents.
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{Engine, EngineCerts};
///
/// // The layout of `DOCKER_CERT_PATH`: ca.pem, cert.pem, key.pem.
/// let certs = EngineCerts::from_dir("/etc/flame/engine-b");
/// let engine = Engine::tls("tcp://10.0.0.12:2376", certs);
/// # let _ = engine;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCerts {
    ca: PathBuf,
    client: Option<(PathBuf, PathBuf)>,
}

impl EngineCerts {
    /// The CA certificate, the client certificate and the client key (PEM
    /// files).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::EngineCerts;
    ///
    /// let certs = EngineCerts::new("/certs/ca.pem", "/certs/cert.pem", "/certs/key.pem");
    /// # let _ = certs;
    /// ```
    pub fn new(ca: impl Into<PathBuf>, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        EngineCerts {
            ca: ca.into(),
            client: Some((cert.into(), key.into())),
        }
    }

    /// `ca.pem`, `cert.pem` and `key.pem` in `dir` (the layout of
    /// `DOCKER_CERT_PATH` and of `docker --tlsverify`).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::EngineCerts;
    ///
    /// let certs = EngineCerts::from_dir("/root/.docker");
    /// # let _ = certs;
    /// ```
    pub fn from_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref();
        EngineCerts::new(dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
    }

    /// Only the CA: the engine's certificate is checked, and no client
    /// certificate is presented (an engine started with `--tls` but without
    /// `--tlsverify`). An engine that requires client certificates refuses
    /// this backend at its first boot.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::EngineCerts;
    ///
    /// let certs = EngineCerts::ca_only("/certs/ca.pem");
    /// # let _ = certs;
    /// ```
    pub fn ca_only(ca: impl Into<PathBuf>) -> Self {
        EngineCerts {
            ca: ca.into(),
            client: None,
        }
    }
}

impl Engine {
    /// A Unix socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::Engine;
    ///
    /// let engine = Engine::socket("/var/run/docker.sock");
    /// # let _ = engine;
    /// ```
    pub fn socket(path: impl Into<PathBuf>) -> Self {
        Engine::Socket(path.into())
    }

    /// Plain TCP (`tcp://host:port`): no encryption and no authentication,
    /// for networks where that is acceptable.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::Engine;
    ///
    /// let engine = Engine::tcp("tcp://10.0.0.12:2375");
    /// # let _ = engine;
    /// ```
    pub fn tcp(addr: impl Into<String>) -> Self {
        Engine::Tcp(addr.into())
    }

    /// TCP with TLS (`tcp://host:port`, usually port 2376), checked against
    /// `certs`.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineCerts};
    ///
    /// let engine = Engine::tls("tcp://10.0.0.12:2376", EngineCerts::from_dir("/certs/b"));
    /// # let _ = engine;
    /// ```
    pub fn tls(addr: impl Into<String>, certs: EngineCerts) -> Self {
        Engine::Tls {
            addr: addr.into(),
            certs,
        }
    }

    /// The engine the Docker CLI would use from this environment:
    /// `DOCKER_HOST` (`unix://` or `tcp://`; with `DOCKER_TLS_VERIFY` set,
    /// TLS with the certificates in `DOCKER_CERT_PATH`, else `~/.docker`),
    /// else the local socket.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::Engine;
    ///
    /// // With DOCKER_HOST unset, the local socket.
    /// let engine = Engine::from_env();
    /// # let _ = engine;
    /// ```
    pub fn from_env() -> Self {
        let host = std::env::var("DOCKER_HOST").unwrap_or_default();
        let tls = std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty());
        let cert_dir = || {
            std::env::var_os("DOCKER_CERT_PATH")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
                .unwrap_or_else(|| PathBuf::from(".docker"))
        };
        if let Some(path) = host.strip_prefix("unix://") {
            Engine::Socket(PathBuf::from(path))
        } else if host.starts_with("tcp://") || host.starts_with("https://") || host.starts_with("http://") {
            if tls || host.starts_with("https://") {
                Engine::tls(host, EngineCerts::from_dir(cert_dir()))
            } else {
                Engine::Tcp(host)
            }
        } else if host.is_empty() {
            Engine::Socket(PathBuf::from("/var/run/docker.sock"))
        } else {
            // Anything else (ssh://, npipe://) is left to bollard, which
            // names the scheme it cannot use.
            Engine::Defaults
        }
    }

    /// `Defaults` read from the environment; any other engine as it is.
    pub(super) fn resolved(&self) -> Engine {
        match self {
            Engine::Defaults => Engine::from_env(),
            other => other.clone(),
        }
    }

    /// `host` and `port` of a TCP engine.
    fn tcp_host(&self) -> Option<(String, u16)> {
        let addr = match self {
            Engine::Tcp(addr) | Engine::Tls { addr, .. } => addr,
            _ => return None,
        };
        let rest = addr.split_once("://").map_or(addr.as_str(), |(_, rest)| rest);
        let authority = rest.split('/').next().unwrap_or(rest);
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => (host, port.parse().ok()?),
            _ => (authority, if matches!(self, Engine::Tls { .. }) { 2376 } else { 2375 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        Some((host.to_owned(), port))
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Defaults => f.write_str("the default engine (DOCKER_HOST)"),
            Engine::Socket(path) => write!(f, "unix://{}", path.display()),
            Engine::Tcp(addr) | Engine::Tls { addr, .. } => f.write_str(addr),
        }
    }
}

/// Connects to `engine` (already resolved), checks that it answers and
/// agrees on an API version.
pub(super) async fn connect(engine: &Engine) -> Result<Docker, BackendError> {
    let cannot = |e: &dyn fmt::Display| BackendError::new(format!("cannot reach the Docker engine at {engine}: {e}"));
    let docker = match engine {
        Engine::Defaults => Docker::connect_with_defaults(),
        Engine::Socket(path) => {
            Docker::connect_with_socket(&path.to_string_lossy(), REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION)
        }
        Engine::Tcp(addr) => Docker::connect_with_http(addr, REQUEST_TIMEOUT_S, bollard::API_DEFAULT_VERSION),
        Engine::Tls { addr, certs } => {
            check_certs(engine, certs)?;
            install_crypto_provider();
            // No client certificate: paths that hold none, so the handshake
            // offers an empty one (the engine decides whether that will do).
            let none = PathBuf::from("/dev/null");
            let (cert, key) = certs.client.as_ref().map_or((&none, &none), |(c, k)| (c, k));
            Docker::connect_with_ssl(
                addr,
                key,
                cert,
                &certs.ca,
                REQUEST_TIMEOUT_S,
                bollard::API_DEFAULT_VERSION,
            )
        }
    }
    .map_err(|e| cannot(&e))?;
    if let Err(e) = docker.ping().await {
        let mut why = format!("{e}");
        if let Engine::Tls { certs, .. } = engine {
            if certs.client.is_none() {
                why.push_str(
                    " (this backend presents no client certificate; an engine started with --tlsverify requires one)",
                );
            } else {
                why.push_str(" (the engine may not trust this client certificate, or its own certificate is not signed by the given CA)");
            }
        }
        return Err(cannot(&why));
    }
    docker.negotiate_version().await.map_err(|e| {
        BackendError::new(format!(
            "cannot agree on an API version with the Docker engine at {engine}: {e}"
        ))
    })
}

/// Readable certificate files, checked up front: bollard reads the client
/// key only during the handshake and would hide a wrong path there.
fn check_certs(engine: &Engine, certs: &EngineCerts) -> Result<(), BackendError> {
    let mut files = vec![("CA certificate", &certs.ca)];
    if let Some((cert, key)) = &certs.client {
        files.push(("client certificate", cert));
        files.push(("client key", key));
    }
    for (what, path) in files {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BackendError::new(format!("{engine}: cannot read the {what} {}: {e}", path.display())))?;
        if !text.contains("-----BEGIN ") {
            return Err(BackendError::new(format!(
                "{engine}: the {what} {} is not a PEM file",
                path.display()
            )));
        }
    }
    Ok(())
}

/// rustls needs one process-wide crypto provider: ring, unless the
/// application installed another (rustls 0.23.48 deprecates ring's
/// provider for want of post-quantum key exchange; see `wire::tls`).
#[allow(deprecated)]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The address this machine uses toward a TCP engine's host (`None` for a
/// Unix socket): what runners on that host connect back to, unless it is
/// this machine (loopback). Found by connecting a UDP socket, which only
/// asks the routing table and sends nothing.
pub(super) async fn local_addr_toward(engine: &Engine) -> Result<Option<IpAddr>, BackendError> {
    let Some((host, port)) = engine.tcp_host() else {
        return Ok(None);
    };
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| BackendError::new(format!("{engine}: cannot resolve {host}: {e}")))?
        .next()
        .ok_or_else(|| BackendError::new(format!("{engine}: {host} has no address")))?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let route = || -> std::io::Result<IpAddr> {
        let socket = std::net::UdpSocket::bind(any)?;
        socket.connect(target)?;
        Ok(socket.local_addr()?.ip())
    };
    route()
        .map(Some)
        .map_err(|e| BackendError::new(format!("{engine}: no route toward {target}: {e}")))
}

/// The gateway address of a user-defined network.
pub(super) async fn gateway(docker: &Docker, network: &str) -> Result<IpAddr, BackendError> {
    let inspect = docker
        .inspect_network(network, None::<InspectNetworkOptions>)
        .await
        .map_err(|e| BackendError::new(format!("network {network}: {e}")))?;
    inspect
        .ipam
        .and_then(|ipam| ipam.config)
        .and_then(|configs| configs.into_iter().find_map(|c| c.gateway))
        .and_then(|gw| gw.parse().ok())
        .ok_or_else(|| BackendError::new(format!("network {network} has no gateway address")))
}

/// Creates an `internal: true` bridge network (no route leaves it) and
/// returns its gateway address: the address a parent on the host listens on
/// for runners on that network. Useful for tests and isolated deployments.
///
/// # Errors
///
/// When the engine refuses.
pub(super) async fn create_internal_network(docker: &Docker, name: &str) -> Result<IpAddr, BackendError> {
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        labels: Some(HashMap::from([(LABEL_MANAGED.to_owned(), "true".to_owned())])),
        ..NetworkCreateRequest::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(|e| BackendError::new(format!("cannot create network {name}: {e}")))?;
    gateway(docker, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_hosts_and_ports_are_read_from_the_address() {
        let host = |e: Engine| e.tcp_host();
        assert_eq!(
            host(Engine::tcp("tcp://10.0.0.5:2375")),
            Some(("10.0.0.5".into(), 2375))
        );
        assert_eq!(
            host(Engine::tls("tcp://engine.example:2376/", EngineCerts::ca_only("ca"))),
            Some(("engine.example".into(), 2376))
        );
        assert_eq!(host(Engine::tcp("tcp://[::1]:9")), Some(("::1".into(), 9)));
        assert_eq!(host(Engine::tcp("tcp://10.0.0.5")), Some(("10.0.0.5".into(), 2375)));
        assert_eq!(host(Engine::socket("/var/run/docker.sock")), None);
    }

    #[tokio::test]
    async fn the_address_toward_a_loopback_engine_is_loopback() {
        let ip = local_addr_toward(&Engine::tcp("tcp://127.0.0.1:2375")).await.unwrap();
        assert_eq!(ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(local_addr_toward(&Engine::socket("/x")).await.unwrap(), None);
    }
}
