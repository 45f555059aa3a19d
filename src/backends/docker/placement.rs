//! Which engine a new runner goes to.
//!
//! The policy: among the engines that are neither full (their
//! `max_runners` reached) nor backing off (a boot failed there recently, or
//! the engine was lost), the one running the fewest of this backend's
//! runners; ties go to the engine given first. A runner counts from the
//! moment it is placed (booting) until its Runner is gone.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use ractor_flame_actors::BackendError;
use tokio::sync::OnceCell;

use super::{Engine, events};

/// One engine of a [`DockerBackend`](super::DockerBackend) pool, with its
/// own limits: what [`DockerBackend::engines`](super::DockerBackend::engines)
/// takes. An [`Engine`] converts into one with no limit.
///
/// # Examples
///
/// ```
/// use ractor_flame::docker::{DockerBackend, Engine, EngineCerts, EngineConfig};
///
/// let backend = DockerBackend::new().engines([
///     EngineConfig::new(Engine::Defaults).name("local").max_runners(2),
///     EngineConfig::new(Engine::tls("tcp://10.0.0.12:2376", EngineCerts::from_dir("/certs/b")))
///         .name("b")
///         .env("ZONE", "b"),
/// ]);
/// # let _ = backend;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub(super) engine: Engine,
    pub(super) name: Option<String>,
    pub(super) max_runners: Option<usize>,
    pub(super) env: Vec<(String, String)>,
    pub(super) parent_addr: Option<IpAddr>,
}

impl EngineConfig {
    /// `engine`, with no limit of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineConfig};
    ///
    /// let engine = EngineConfig::new(Engine::socket("/run/docker-b.sock"));
    /// # let _ = engine;
    /// ```
    pub fn new(engine: Engine) -> Self {
        EngineConfig {
            engine,
            name: None,
            max_runners: None,
            env: Vec::new(),
            parent_addr: None,
        }
    }

    /// The engine's name in errors, logs and the `ractor-flame.engine`
    /// label of its containers (default: its address).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineConfig};
    ///
    /// let engine = EngineConfig::new(Engine::tcp("tcp://10.0.0.12:2375")).name("rack-2");
    /// # let _ = engine;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// At most `n` of this backend's runners on this engine (booting ones
    /// included).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineConfig};
    ///
    /// let engine = EngineConfig::new(Engine::Defaults).max_runners(4);
    /// # let _ = engine;
    /// ```
    pub fn max_runners(mut self, n: usize) -> Self {
        self.max_runners = Some(n);
        self
    }

    /// An environment variable for the runners on this engine only (after
    /// the backend's own, so it wins over one of the same name).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineConfig};
    ///
    /// let engine = EngineConfig::new(Engine::Defaults).env("ZONE", "eu-1a");
    /// # let _ = engine;
    /// ```
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The address runners on this engine connect back to (default: the
    /// backend's [`parent_addr`](super::DockerBackend::parent_addr), else
    /// chosen per engine, see [`DockerBackend`](super::DockerBackend)).
    ///
    /// # Examples
    ///
    /// ```
    /// use ractor_flame::docker::{Engine, EngineConfig};
    ///
    /// let engine = EngineConfig::new(Engine::tcp("tcp://10.0.0.12:2375"))
    ///     .parent_addr("10.0.0.2".parse().unwrap());
    /// # let _ = engine;
    /// ```
    pub fn parent_addr(mut self, addr: IpAddr) -> Self {
        self.parent_addr = Some(addr);
        self
    }

    /// The name used in errors, logs and labels.
    pub(super) fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.engine.to_string())
    }
}

impl From<Engine> for EngineConfig {
    fn from(engine: Engine) -> Self {
        EngineConfig::new(engine)
    }
}

/// One engine as the backend uses it: its client, image, sweeps and event
/// watch, created on its first boot.
pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) config: EngineConfig,
    /// The client and the engine it reached (`Defaults` resolved).
    pub(super) docker: OnceCell<(Docker, Engine)>,
    /// The runner image's tag on this engine, once made or found.
    pub(super) image: tokio::sync::Mutex<Option<String>>,
    /// The address this engine's runners connect back to.
    pub(super) parent_ip: OnceCell<IpAddr>,
    /// Pools whose orphans were swept on this engine.
    pub(super) swept: Mutex<Vec<String>>,
    pub(super) events: events::Router,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("name", &self.name).finish_non_exhaustive()
    }
}

/// The engines of one backend value and how loaded each is.
pub(super) struct Placement {
    slots: Vec<Arc<Slot>>,
    backoff: Duration,
    load: Arc<Mutex<Vec<Load>>>,
}

#[derive(Debug, Default, Clone)]
struct Load {
    runners: usize,
    /// Skipped until then, and why.
    backing_off: Option<(Instant, String)>,
}

/// A runner's place on an engine: counted until dropped.
pub(super) struct Placed {
    pub(super) slot: Arc<Slot>,
    load: Arc<Mutex<Vec<Load>>>,
}

impl fmt::Debug for Placed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placed").field("engine", &self.slot.name).finish()
    }
}

impl Drop for Placed {
    fn drop(&mut self) {
        let mut load = self.load.lock().expect("poisoned");
        let runners = &mut load[self.slot.index].runners;
        *runners = runners.saturating_sub(1);
    }
}

/// What the policy sees of one engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) runners: usize,
    pub(super) max: Option<usize>,
    pub(super) backing_off: bool,
}

/// The policy: the least loaded engine that is neither full nor backing
/// off, the first given on a tie.
pub(super) fn choose(candidates: &[Candidate]) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.backing_off && c.max.is_none_or(|max| c.runners < max))
        .min_by_key(|(i, c)| (c.runners, *i))
        .map(|(i, _)| i)
}

impl Placement {
    pub(super) fn new(configs: &[EngineConfig], backoff: Duration) -> Self {
        let slots: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(index, config)| {
                Arc::new(Slot {
                    index,
                    name: config.label(),
                    config: config.clone(),
                    docker: OnceCell::new(),
                    image: tokio::sync::Mutex::new(None),
                    parent_ip: OnceCell::new(),
                    swept: Mutex::new(Vec::new()),
                    events: events::Router::default(),
                })
            })
            .collect();
        let load = Arc::new(Mutex::new(vec![Load::default(); slots.len()]));
        Placement { slots, backoff, load }
    }

    pub(super) fn slots(&self) -> &[Arc<Slot>] {
        &self.slots
    }

    /// Places one runner, or says why no engine can take it.
    pub(super) fn place(&self) -> Result<Placed, BackendError> {
        let now = Instant::now();
        let mut load = self.load.lock().expect("poisoned");
        let candidates: Vec<Candidate> = load
            .iter()
            .zip(&self.slots)
            .map(|(l, s)| Candidate {
                runners: l.runners,
                max: s.config.max_runners,
                backing_off: l.backing_off.as_ref().is_some_and(|(until, _)| *until > now),
            })
            .collect();
        let Some(i) = choose(&candidates) else {
            let states: Vec<String> = load
                .iter()
                .zip(&self.slots)
                .map(|(l, s)| match &l.backing_off {
                    Some((until, why)) if *until > now => format!(
                        "{} backing off for {:?} after: {why}",
                        s.name,
                        until.duration_since(now)
                    ),
                    _ => format!(
                        "{} full ({} of {} runners)",
                        s.name,
                        l.runners,
                        s.config.max_runners.unwrap_or(usize::MAX)
                    ),
                })
                .collect();
            return Err(BackendError::new(format!(
                "no Docker engine can take a runner: {}",
                states.join("; ")
            )));
        };
        load[i].runners += 1;
        Ok(Placed {
            slot: Arc::clone(&self.slots[i]),
            load: Arc::clone(&self.load),
        })
    }

    /// Skips `slot` for the back-off period.
    pub(super) fn back_off(&self, slot: &Slot, why: &str) {
        back_off(&self.load, slot, self.backoff, why);
    }

    /// A handle that puts `slot` in back-off from the event watcher.
    pub(super) fn back_off_handle(&self, slot: &Arc<Slot>) -> BackOff {
        BackOff {
            load: Arc::clone(&self.load),
            slot: Arc::clone(slot),
            period: self.backoff,
        }
    }

    /// Runners placed on each engine now, in the order given.
    pub(super) fn runners(&self) -> Vec<usize> {
        self.load.lock().expect("poisoned").iter().map(|l| l.runners).collect()
    }
}

fn back_off(load: &Mutex<Vec<Load>>, slot: &Slot, period: Duration, why: &str) {
    tracing::warn!(target: "ractor_flame::docker", engine = %slot.name, backoff = ?period, why, "engine skipped for new runners");
    load.lock().expect("poisoned")[slot.index].backing_off = Some((Instant::now() + period, why.to_owned()));
}

/// Puts one engine in back-off (for the event watcher, which outlives no
/// backend).
pub(super) struct BackOff {
    load: Arc<Mutex<Vec<Load>>>,
    slot: Arc<Slot>,
    period: Duration,
}

impl BackOff {
    pub(super) fn now(&self, why: &str) {
        back_off(&self.load, &self.slot, self.period, why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(runners: usize, max: Option<usize>, backing_off: bool) -> Candidate {
        Candidate {
            runners,
            max,
            backing_off,
        }
    }

    #[test]
    fn the_least_loaded_engine_wins_and_ties_go_to_the_first() {
        assert_eq!(choose(&[c(0, None, false), c(0, None, false)]), Some(0));
        assert_eq!(choose(&[c(1, None, false), c(0, None, false)]), Some(1));
        assert_eq!(
            choose(&[c(2, None, false), c(1, None, false), c(1, None, false)]),
            Some(1)
        );
    }

    #[test]
    fn full_and_backing_off_engines_are_skipped() {
        assert_eq!(choose(&[c(1, Some(1), false), c(5, None, false)]), Some(1));
        assert_eq!(choose(&[c(0, None, true), c(5, None, false)]), Some(1));
        assert_eq!(choose(&[c(1, Some(1), false), c(0, None, true)]), None);
        assert_eq!(choose(&[]), None);
    }

    #[test]
    fn places_spread_and_are_released_on_drop() {
        let configs: Vec<EngineConfig> = vec![
            Engine::socket("/a").into(),
            EngineConfig::new(Engine::socket("/b")).max_runners(1),
            EngineConfig::new(Engine::socket("/c")).max_runners(2),
        ];
        let placement = Placement::new(&configs, Duration::from_secs(60));
        let placed: Vec<_> = (0..5).map(|_| placement.place().unwrap()).collect();
        let names: Vec<_> = placed.iter().map(|p| p.slot.index).collect();
        assert_eq!(names, [0, 1, 2, 0, 2]);
        assert_eq!(placement.runners(), [2, 1, 2]);
        placement.back_off(&placement.slots()[0], "refused");
        drop(placed);
        assert_eq!(placement.runners(), [0, 0, 0]);
        let next: Vec<_> = (0..3).map(|_| placement.place().unwrap()).collect();
        assert_eq!(next.iter().map(|p| p.slot.index).collect::<Vec<_>>(), [1, 2, 2]);
        let err = placement.place().unwrap_err().to_string();
        assert!(err.contains("backing off") && err.contains("refused"), "{err}");
        assert!(err.contains("unix:///b full (1 of 1 runners)"), "{err}");
    }
}
