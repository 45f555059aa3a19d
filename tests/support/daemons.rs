//! Extra Docker daemons on this machine, as stand-ins for other hosts: each
//! with its own data root, exec root, pid file and Unix socket, no bridge
//! and no iptables rules, and TLS on a loopback TCP port that requires a
//! client certificate (a CA, server and client certificates made here with
//! rcgen). Runners on them use the host network and reach the parent on
//! 127.0.0.1.
//!
//! A [`Daemon`] is stopped when dropped (SIGTERM, then SIGKILL by the pid
//! in its pid file), and whatever a killed daemon leaves behind (container
//! shims and their processes, mounts under its directories) is removed with
//! its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use ractor_flame::docker::{Engine, EngineCerts};

/// How long a daemon may take to answer after its start (a loaded 2-core
/// machine takes a few seconds).
const START: Duration = Duration::from_secs(60);

/// The `dockerd` to start: `FLAME_DOCKERD`, else the first found on `PATH`
/// or in the usual system directories.
pub fn dockerd() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FLAME_DOCKERD") {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join("dockerd"))
        .find(|p| p.is_file())
}

/// A CA with a server certificate (for 127.0.0.1 and localhost) and a client
/// certificate, as PEM files in a directory: `ca.pem`, `server-cert.pem`,
/// `server-key.pem`, and the client's `cert.pem` and `key.pem` (the layout
/// of `DOCKER_CERT_PATH`).
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn make(dir: &Path) -> Certs {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
            SanType,
        };
        std::fs::create_dir_all(dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "ractor-flame test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = ca.self_signed(&ca_key).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        server.distinguished_name.push(DnType::CommonName, "engine");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&server_key, &ca, &ca_key).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "parent");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &ca, &ca_key).unwrap();

        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        write("ca.pem", ca.pem());
        write("server-cert.pem", server.pem());
        write("server-key.pem", server_key.serialize_pem());
        write("cert.pem", client.pem());
        write("key.pem", client_key.serialize_pem());
        Certs { dir: dir.to_owned() }
    }

    /// The client side: CA, client certificate and key.
    pub fn client(&self) -> EngineCerts {
        EngineCerts::from_dir(&self.dir)
    }
}

/// One extra `dockerd`.
pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// `tcp://127.0.0.1:<port>`, TLS with client certificates required.
    pub tcp: String,
    pub certs: EngineCerts,
    child: Option<Child>,
}

impl Daemon {
    /// Starts a daemon named `name` whose TLS port trusts `certs`' CA, and
    /// waits until it answers on its socket.
    pub async fn start(name: &str, dockerd: &Path, certs: &Certs) -> Daemon {
        let dir = std::env::temp_dir().join(format!("flame-dockerd-{name}-{}", &super::key()[..8]));
        std::fs::create_dir_all(&dir).unwrap();
        // The machine's daemon.json sets a data root; a second daemon needs
        // a configuration of its own.
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let socket = dir.join("sock");
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new(dockerd)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .arg("-H")
            .arg(format!("tcp://127.0.0.1:{port}"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--shutdown-timeout=2",
            ])
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(certs.dir.join("ca.pem"))
            .arg("--tlscert")
            .arg(certs.dir.join("server-cert.pem"))
            .arg("--tlskey")
            .arg(certs.dir.join("server-key.pem"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", dockerd.display()));
        let mut daemon = Daemon {
            name: name.to_owned(),
            dir,
            socket,
            tcp: format!("tcp://127.0.0.1:{port}"),
            certs: certs.client(),
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if let Ok(docker) = daemon.client()
                && docker.ping().await.is_ok()
            {
                break;
            }
            if let Some(Ok(Some(status))) = daemon.child.as_mut().map(Child::try_wait) {
                panic!("dockerd {name} exited with {status}: {}", daemon.log_tail());
            }
            assert!(
                started.elapsed() < START,
                "dockerd {name} did not answer within {START:?}: {}",
                daemon.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        daemon
    }

    /// A client on the daemon's Unix socket (for the test's own questions).
    pub fn client(&self) -> Result<Docker, bollard::errors::Error> {
        Docker::connect_with_socket(&self.socket.to_string_lossy(), 30, bollard::API_DEFAULT_VERSION)
    }

    /// The daemon as the backend reaches it: TLS on its TCP port.
    pub fn engine(&self) -> Engine {
        Engine::tls(self.tcp.clone(), self.certs.clone())
    }

    /// The daemon's pid, from its pid file.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// SIGKILL: the daemon dies without cleaning anything up.
    pub fn kill(&mut self) {
        let pid = self.pid().expect("the daemon wrote its pid file");
        super::kill(pid, "KILL");
        if let Some(child) = self.child.as_mut() {
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<_> = log.lines().rev().take(15).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 10 s), removes what a killed
    /// daemon leaves behind, and its directory. Safe to call twice.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = self.pid().filter(|p| super::alive(*p)) {
                let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
                let deadline = Instant::now() + Duration::from_secs(10);
                while super::alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if super::alive(pid) {
                    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.dir.exists() {
            return;
        }
        leftovers(&self.dir);
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("dockerd {}: cannot remove {}: {e}", self.name, self.dir.display());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a killed daemon leaves: its containerd and container shims (named
/// by their command lines, which hold `dir`), the containers' processes
/// (the shims' children), and mounts under `dir`.
fn leftovers(dir: &Path) {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id();
    let mut owners = Vec::new();
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            owners.push(pid);
        }
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
            && let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((pid, ppid));
        }
    }
    // The shims name their containers (`-id <id>`): their cgroups go too.
    let containers: Vec<String> = owners
        .iter()
        .filter_map(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .filter_map(|cmdline| {
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter()
                .position(|a| a == "-id")
                .and_then(|i| args.get(i + 1).cloned())
        })
        .collect();
    let children: Vec<u32> = parents
        .iter()
        .filter(|(_, ppid)| owners.contains(ppid))
        .map(|(pid, _)| *pid)
        .collect();
    for pid in children.iter().chain(&owners) {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while children.iter().chain(&owners).any(|p| super::alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for id in &containers {
        for controller in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
            let _ = std::fs::remove_dir(controller.path().join("docker").join(id));
        }
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in mounts {
        let _ = Command::new("umount").args(["-l", mount]).status();
    }
}

/// The extra daemons a test needs, or `None` (with the reason printed)
/// where Docker tests may skip; a failure where `FLAME_REQUIRE_DOCKER` is set.
pub async fn start(test: &str, names: &[&str]) -> Option<(Certs, Vec<Daemon>)> {
    let Some(dockerd) = dockerd() else {
        if std::env::var_os("FLAME_REQUIRE_DOCKER").is_some() {
            panic!("{test}: FLAME_REQUIRE_DOCKER is set but no dockerd is found (set FLAME_DOCKERD)");
        }
        eprintln!("skipping {test}: no dockerd to start extra engines with");
        return None;
    };
    let certs = Certs::make(&std::env::temp_dir().join(format!("flame-certs-{}", super::key())));
    let mut daemons = Vec::new();
    for name in names {
        daemons.push(Daemon::start(name, &dockerd, &certs).await);
    }
    Some((certs, daemons))
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
