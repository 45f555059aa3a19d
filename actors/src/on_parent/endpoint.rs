//! The parent's side of runner connections: a TCP listener that
//! authenticates runners (remote backends), and the in-process equivalent
//! for the local backend. Both end the same way: `RemoteUp` cast to the
//! runner's Runner actor, with a [`RunnerConn`] to send calls on.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::wire::outbox::Outbox;
use ractor::ActorRef;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::error::DownReason;
use crate::flame_parent::Parent;
use crate::ids::BuildId;
use crate::ids::{RunnerId, Token};
use crate::on_parent::backend::RunnerContext;
use crate::on_parent::link::RunnerConn;
use crate::on_parent::runner::{RemoteShutdownReason, RunnerMessage};
use crate::on_runner::{SystemShutdown, TerminatorLink, spawn_terminator};
use crate::wire::codec::{FrameError, decode_body, encode_frame, read_frame};
use crate::wire::connection::{self, LinkOptions, Stream};
use crate::wire::frame::{ToParent, ToRunner, Welcome};
use crate::wire::tls::{Identity, TLS_HANDSHAKE_BYTE};
use crate::wire::{HANDSHAKE_DEADLINE, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION};

/// A runner the endpoint waits for.
struct Expected {
    token: Token,
    /// The build the runner must serve: its pool's registry's.
    build_id: BuildId,
    runner: ActorRef<RunnerMessage>,
    opts: LinkOptions,
    /// The runner was told to use TLS: a plaintext connection is refused.
    tls: bool,
}

/// What the endpoint's connections share.
#[derive(Default)]
struct Shared {
    expected: Mutex<HashMap<RunnerId, Expected>>,
    /// The endpoint's certificate, made when a runner first needs TLS.
    identity: std::sync::OnceLock<Arc<Identity>>,
}

/// A listener runners connect back to.
///
/// Before a peer has proven its token it may send one frame of at most
/// [`HANDSHAKE_MAX_FRAME`] bytes within [`HANDSHAKE_DEADLINE`] (after the TLS
/// handshake, on an encrypted link); anything else closes the connection
/// and changes no state.
///
/// # Examples
///
/// How a backend whose runners connect over TCP uses it:
///
/// ```
/// use ractor_flame_actors::{Endpoint, RunnerContext};
///
/// async fn flame_parent(endpoint: &Endpoint, ctx: &RunnerContext) -> String {
///     // Where runners reach us, and the runner's FLAME_PARENT; the
///     // endpoint now waits for that runner (over TLS, if the pool's
///     // `link_tls` says so for this address).
///     endpoint.expect(ctx, vec![endpoint.addr()], "mine").encode()
/// }
/// ```
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Arc<tokio::task::AbortHandle>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if Arc::strong_count(&self.accept) == 1 {
            self.accept.abort();
        }
    }
}

impl Endpoint {
    /// Binds `addr` (port 0 for any) and starts accepting runners. Each
    /// runner must serve the build of the pool that expects it (its
    /// context's registry), so pools with different registries can share
    /// one endpoint.
    ///
    /// The listener and every connection it accepts live on the link thread,
    /// where no function body and no busy application worker can delay them.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = crate::wire::thread::run(TcpListener::bind(addr)).await?;
        let addr = listener.local_addr()?;
        let shared: Arc<Shared> = Arc::default();
        let accept = crate::wire::thread::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Endpoint {
            addr,
            shared,
            accept: Arc::new(accept.abort_handle()),
        })
    }

    /// Where runners connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the runner of `ctx` to connect and prove its token, and
    /// returns its `FLAME_PARENT` description: `parent_addrs` are where the
    /// runner is told to connect (this endpoint's address, or one that leads
    /// to it), `backend` the backend's name.
    ///
    /// The link is TLS when the pool's [`LinkTls`](crate::LinkTls) applies
    /// to `parent_addrs` (by default: any of them is not loopback). The
    /// description then pins this endpoint's certificate, made on first use,
    /// and a plaintext connection from that runner is refused.
    ///
    /// # Panics
    ///
    /// Never for valid input; making the certificate cannot fail short of
    /// the system's random source failing, which panics.
    pub fn expect(&self, ctx: &RunnerContext, parent_addrs: Vec<SocketAddr>, backend: &str) -> Parent {
        let tls = ctx.link_tls.applies_to(&parent_addrs);
        let mut parent = ctx.parent(parent_addrs, backend);
        if tls {
            parent.tls = Some(self.identity().fingerprint);
        }
        let opts = LinkOptions {
            max_frame: ctx.settings.max_frame_size,
            heartbeat_interval: ctx.settings.heartbeat_interval,
            heartbeat_timeout: ctx.settings.heartbeat_timeout,
        };
        let expected = Expected {
            token: ctx.token.clone(),
            build_id: ctx.registry.build_id(),
            runner: ctx.runner.clone(),
            opts,
            tls,
        };
        self.shared
            .expected
            .lock()
            .expect("poisoned")
            .insert(ctx.runner_id, expected);
        parent
    }

    /// The endpoint's certificate, made on first use.
    fn identity(&self) -> Arc<Identity> {
        Arc::clone(
            self.shared
                .identity
                .get_or_init(|| Arc::new(Identity::generate().expect("a key pair and certificate"))),
        )
    }

    /// Stops waiting for a runner (its boot failed or it was reclaimed).
    pub fn forget(&self, runner: RunnerId) {
        self.shared.expected.lock().expect("poisoned").remove(&runner);
    }

    /// Runners still expected (for tests: refused peers change nothing).
    pub fn expected(&self) -> usize {
        self.shared.expected.lock().expect("poisoned").len()
    }
}

/// Most connections that may wait for their handshake at once. Past it, the
/// oldest peer that has sent nothing yet is evicted (see [`accept_loop`]).
const MAX_UNAUTHENTICATED: usize = 128;
/// Longest pause after a failed `accept` (out of file descriptors, say).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A connection waiting for its handshake.
struct Pending {
    id: u64,
    /// The peer has sent its first byte (a TLS ClientHello or a Hello frame
    /// has begun): its handshake is under way, and it is never evicted.
    started: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

/// Accepts runners' connections, each authenticated in a task of its own.
///
/// Accept errors back off (doubling from 5 ms up to a second) instead of
/// spinning a core. Connections that have not proven a token are capped in
/// time ([`HANDSHAKE_DEADLINE`] each) and in number
/// ([`MAX_UNAUTHENTICATED`]). When the cap is reached, a new connection
/// evicts the oldest peer that has sent nothing at all; a peer whose
/// handshake is under way (it sent a byte: a runner sends its TLS
/// ClientHello or its Hello the moment it connects) is never evicted: it
/// ends with its handshake or at its deadline. So a flood of idle peers
/// cannot lock a real runner out, however slow its handshake (TLS). When
/// every waiting peer is under way, the new connection is the one closed:
/// such peers hold a place for at most the deadline, and a runner whose
/// connection is closed tries again (see the runner's `connect`).
async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let handshakes: Arc<Mutex<Vec<Pending>>> = Arc::default();
    let mut backoff = Duration::from_millis(5);
    let mut next = 0u64;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = Duration::from_millis(5);
                accepted
            }
            Err(error) => {
                tracing::warn!(target: "ractor_flame::pool", %error, ?backoff, "accept failed, backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                continue;
            }
        };
        if handshakes.lock().expect("poisoned").len() >= MAX_UNAUTHENTICATED {
            // Let the waiting connections see the bytes that reached them
            // (the reactor runs before this task resumes), so a handshake
            // that has begun counts as begun.
            tokio::task::yield_now().await;
            let mut pending = handshakes.lock().expect("poisoned");
            if pending.len() >= MAX_UNAUTHENTICATED {
                // Oldest first: the earliest accepted idle peer.
                match pending.iter().position(|p| !p.started.load(Ordering::Acquire)) {
                    Some(idle) => pending.remove(idle).task.abort(),
                    None => {
                        tracing::debug!(target: "ractor_flame::pool", %peer, "every waiting peer is in its handshake: connection closed");
                        continue;
                    }
                }
            }
        }
        next += 1;
        let id = next;
        let started = Arc::new(AtomicBool::new(false));
        let (shared, pending, progress) = (Arc::clone(&shared), Arc::clone(&handshakes), Arc::clone(&started));
        let task = tokio::spawn(async move {
            let result = authenticate(stream, &shared, &progress).await;
            pending.lock().expect("poisoned").retain(|p| p.id != id);
            if let Err(reason) = result {
                tracing::warn!(target: "ractor_flame::pool", %peer, %reason, "runner refused");
            }
        });
        let mut pending = handshakes.lock().expect("poisoned");
        if !task.is_finished() {
            pending.push(Pending {
                id,
                started,
                task: task.abort_handle(),
            });
        }
    }
}

/// Takes a new connection through TLS (when it starts with a TLS handshake)
/// and the runner's proof, within [`HANDSHAKE_DEADLINE`] in all. `started`
/// is set once the peer has sent its first byte.
async fn authenticate(stream: TcpStream, shared: &Shared, started: &AtomicBool) -> Result<(), String> {
    tokio::time::timeout(HANDSHAKE_DEADLINE, async move {
        let mut first = [0u8; 1];
        let n = stream.peek(&mut first).await.map_err(|e| e.to_string())?;
        if n > 0 {
            started.store(true, Ordering::Release);
        }
        if first[0] == TLS_HANDSHAKE_BYTE {
            // Only runners told to use TLS are given our fingerprint, and
            // only they could have made us make a certificate.
            let identity = shared.identity.get().ok_or("a TLS handshake, but no runner uses TLS")?;
            let tls = identity
                .accept(stream)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let (mut tls, proven) = prove(tls, &shared.expected, true).await?;
            tls.flush().await.map_err(|e| e.to_string())?;
            up(Stream::Tls(tls), proven);
        } else {
            let (sock, proven) = prove(stream, &shared.expected, false).await?;
            up(Stream::Plain(sock), proven);
        }
        Ok(())
    })
    .await
    .map_err(|_| "no handshake in time".to_owned())?
}

/// Reads the runner's proof and answers it; the proven runner's
/// expectation on success.
async fn prove<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    table: &Mutex<HashMap<RunnerId, Expected>>,
    over_tls: bool,
) -> Result<(S, (RunnerId, Expected)), String> {
    let mut buf = Vec::new();
    let first = read_frame::<_, ToParent>(&mut stream, &mut buf, HANDSHAKE_MAX_FRAME)
        .await
        .map_err(|e| e.to_string())?;
    let Some(ToParent::Hello(hello)) = first else {
        return Err("the first frame was not a handshake".into());
    };
    let verdict = {
        let mut table = table.lock().expect("poisoned");
        match table.get(&hello.runner_id) {
            None => Err((format!("unknown runner {}", hello.runner_id), None)),
            // A wrong token proves nothing: it may not be our runner, so the
            // boot it claims is left alone.
            Some(e) if !e.token.verify(hello.token.as_bytes()) => Err(("wrong token".to_owned(), None)),
            // The right token in clear on a link that must be encrypted: it
            // may have been seen on the way, so it proves nothing any more,
            // and the runner it belongs to can never be trusted: its boot
            // fails.
            Some(e) if e.tls && !over_tls => {
                let expected = table.remove(&hello.runner_id).expect("present");
                Err((
                    "the runner connected without TLS, but its link must be encrypted (its token crossed the network in clear)".to_owned(),
                    Some(expected.runner),
                ))
            }
            // The runner proved itself but cannot serve this pool: its boot
            // fails with the reason, and it is no longer expected.
            Some(e) if hello.version != PROTOCOL_VERSION || hello.build_id != e.build_id || hello.failed.is_some() => {
                let reason = if let Some(failed) = &hello.failed {
                    failed.clone()
                } else if hello.version != PROTOCOL_VERSION {
                    format!(
                        "runner speaks protocol version {} but the parent speaks {PROTOCOL_VERSION}",
                        hello.version
                    )
                } else {
                    format!(
                        "runner serves build {} but the pool's registry is build {}: a runner of another binary or registry",
                        hello.build_id, e.build_id
                    )
                };
                let expected = table.remove(&hello.runner_id).expect("present");
                Err((reason, Some(expected.runner)))
            }
            // Proven: the runner is no longer expected (one connection each).
            Some(_) => Ok(table.remove(&hello.runner_id).expect("present")),
        }
    };
    if let Err((reason, Some(runner))) = &verdict {
        let _ = runner.cast(RunnerMessage::Refused(reason.clone()));
    }
    let verdict = verdict.map_err(|(reason, _)| reason);
    let welcome = match &verdict {
        Ok(_) => Welcome::Accepted,
        Err(reason) => Welcome::Refused(reason.clone()),
    };
    buf.clear();
    encode_frame(&ToRunner::Welcome(welcome), HANDSHAKE_MAX_FRAME, &mut buf).map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| e.to_string())?;
    let expected = verdict?;
    Ok((stream, (hello.runner_id, expected)))
}

/// Starts the driver of an authenticated connection and casts `RemoteUp`.
fn up(stream: Stream, (runner_id, expected): (RunnerId, Expected)) {
    let (tx, queue) = Outbox::<ToRunner>::wire(expected.opts.max_frame);
    let conn = RunnerConn::remote(runner_id, tx, expected.opts.max_frame);
    let runner = expected.runner;
    let (frame_conn, frame_runner) = (conn.clone(), runner.clone());
    let (close_conn, close_runner) = (conn.clone(), runner.clone());
    connection::spawn(
        stream,
        expected.opts,
        queue,
        move |body: &[u8], payload: Option<Vec<u8>>| {
            if frame_conn.is_down() {
                // The parent gave this runner up (it was told to stop):
                // its link ends at its next frame, a heartbeat at the latest.
                return Err(FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "the runner was given up",
                )));
            }
            let mut frame: ToParent = decode_body(body)?;
            if let Some(payload) = payload {
                frame.put_payload(payload)?;
            }
            on_runner_frame(frame, &frame_conn, &frame_runner);
            Ok(())
        },
        move |reason| on_runner_closed(reason, &close_conn, &close_runner),
    );
    let _ = runner.cast(RunnerMessage::RemoteUp(conn));
}

fn on_runner_frame(frame: ToParent, conn: &RunnerConn, runner: &ActorRef<RunnerMessage>) {
    let reason = match frame {
        ToParent::Reply { id, outcome, runner_us } => return conn.deliver(id, outcome, runner_us),
        ToParent::Early { id, outcome } => return conn.deliver_early(id, outcome),
        ToParent::Ended { ids } => return conn.deliver_ended(&ids),
        ToParent::ChildExited { child, reason } => return conn.child_exited(child, reason),
        ToParent::Log(record) => return conn.log(&record),
        ToParent::Item { id, bytes, bare } => return conn.deliver_item(id, bytes, bare),
        ToParent::IdleRequest => RemoteShutdownReason::Idle,
        ToParent::Stopping { reason } => RemoteShutdownReason::Stopping(reason),
        ToParent::Hello(_) | ToParent::Ping => return,
    };
    let _ = runner.cast(RunnerMessage::RemoteShutdown { reason });
}

fn on_runner_closed(reason: DownReason, conn: &RunnerConn, runner: &ActorRef<RunnerMessage>) {
    // No new work goes to a runner whose connection is gone, even while its
    // backend's account of why is awaited.
    conn.mark_lost();
    // The Runner fails the calls in flight (at once, or after its backend's
    // grace for a better reason). A Runner that is stopping (it may be
    // waiting in `post_stop` for this very close) or gone cannot: fail them
    // here.
    let sent = runner.cast(RunnerMessage::ConnectionLost(reason.clone())).is_ok();
    if !sent || runner.get_status() >= ractor::ActorStatus::Stopping {
        conn.close(reason);
    }
}

/// Boots an in-process runner for `ctx`: a Terminator in this process whose
/// frames to the parent travel on a channel, then `RemoteUp`.
///
/// # Errors
///
/// When the Terminator cannot be spawned.
///
/// # Examples
///
/// The local backend's `remote_boot` is this call:
///
/// ```
/// use ractor_flame_actors::{Backend, BackendError, RunnerContext, boot_in_process};
///
/// struct InProcess;
/// impl Backend for InProcess {
///     type State = ();
///     fn name(&self) -> &'static str { "in-process" }
///     async fn init(&self, _ctx: &RunnerContext) -> Result<(), BackendError> { Ok(()) }
///     async fn remote_boot(&self, _s: &mut (), ctx: &RunnerContext) -> Result<(), BackendError> {
///         boot_in_process(ctx, None).await.map_err(BackendError::new)?;
///         Ok(())
///     }
/// }
/// ```
pub async fn boot_in_process(
    ctx: &RunnerContext,
    system_shutdown: Option<SystemShutdown>,
) -> Result<ractor::ActorRef<crate::on_runner::TerminatorMessage>, ractor::SpawnErr> {
    let (to_parent, mut from_runner) = Outbox::<ToParent>::new();
    // Calls that run as tasks of their own (blocking functions) reply here
    // too. A weak sender: the channel must close when the Terminator ends.
    let to_parent_for_calls = to_parent.downgrade();
    let (terminator, handle, serve) = spawn_terminator(
        ctx.runner_id,
        ctx.registry.clone(),
        ctx.settings.clone(),
        TerminatorLink::Local(to_parent),
        system_shutdown,
        // Linked to its Runner: an in-process runner never outlives it.
        Some(ctx.runner.get_cell()),
    )
    .await?;
    if let Some(reason) = serve.failure() {
        terminator.stop(Some(reason.clone()));
        return Err(ractor::SpawnErr::StartupFailed(reason.into()));
    }
    let conn = RunnerConn::local(ctx.runner_id, serve, terminator.clone(), to_parent_for_calls);
    let runner = ctx.runner.clone();
    let (frame_conn, frame_runner) = (conn.clone(), runner.clone());
    tokio::spawn(async move {
        while let Some(frame) = from_runner.recv_one().await {
            on_runner_frame(frame, &frame_conn, &frame_runner);
        }
        // The channel closes when the Terminator is gone; wait for its exit
        // so its drain and shutdown hook have finished.
        let _ = handle.await;
        on_runner_closed(
            DownReason::ConnectionLost("runner stopped".into()),
            &frame_conn,
            &frame_runner,
        );
    });
    let _ = runner.cast(RunnerMessage::RemoteUp(conn));
    Ok(terminator)
}
