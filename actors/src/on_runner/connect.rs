//! The runner's way back to its parent: connect, prove the token, then hand
//! the connection to the wire driver.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::wire::outbox::Outbox;
use ractor::{ActorRef, ActorStatus};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Serve, TerminatorMessage};
use crate::flame_parent::Parent;
use crate::ids::BuildId;
use crate::wire::codec::{FrameError, encode_frame, read_frame};
use crate::wire::connection::{self, LinkOptions, Stream};
use crate::wire::frame::{Hello, ToParent, ToRunner, ToRunnerRef, Welcome};
use crate::wire::tls::{Connector, describe};
use crate::wire::{HANDSHAKE_DEADLINE, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION};

/// First pause after a round in which no parent address let the runner in.
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// Longest pause between rounds (the pause doubles after each failed round).
const MAX_RETRY_EVERY: Duration = Duration::from_millis(500);

/// How one attempt to join the parent at one address ended, when it did
/// not.
enum Failed {
    /// Worth another try: nothing answered, the connection closed or broke
    /// before the parent's answer (an endpoint flooded by strangers closes
    /// connections), or no answer came in time.
    Retry(String),
    /// This address is not our parent: it showed a certificate other than
    /// the pinned one, failed TLS otherwise, or answered with something
    /// that is not a handshake answer. The other addresses are still tried,
    /// but not this one again.
    NotOurs(String),
    /// The parent has spoken (it refused us: wrong token, another build,
    /// ...) or the runner cannot join at all: the boot is over.
    Final(String),
}

/// Joins the parent: tries each of its addresses in turn; when none lets
/// the runner in, pauses (50 ms, doubling up to 500 ms) and tries them all
/// again, until the Terminator stops (its failsafe timer, the runner's boot
/// budget, stops it). A refusal by the parent ends the boot at once, as
/// does finding that no address is our parent (each showed another
/// certificate or answered nonsense).
pub(super) fn spawn(myself: ActorRef<TerminatorMessage>, parent: Parent, serve: Arc<Serve>) {
    // The socket belongs to the link thread's reactor.
    crate::wire::thread::spawn(async move {
        let stopping = || matches!(myself.get_status(), ActorStatus::Stopping | ActorStatus::Stopped);
        let build_id = serve.registry().build_id();
        let failed = serve.failure();
        let mut pause = RETRY_EVERY;
        let mut not_ours: Vec<Option<String>> = vec![None; parent.parent_addrs.len()];
        // The failsafe timer stops the actor; stop trying then.
        while !stopping() {
            for (addr, not_ours) in parent.parent_addrs.iter().zip(&mut not_ours) {
                if not_ours.is_some() {
                    continue;
                }
                if stopping() {
                    return;
                }
                match attempt(*addr, &parent, build_id, failed.clone()).await {
                    Ok(stream) => return start(myself, &parent, serve, stream),
                    Err(Failed::Final(reason)) => {
                        let _ = myself.cast(TerminatorMessage::ConnectFailed(reason));
                        return;
                    }
                    Err(Failed::NotOurs(reason)) => {
                        tracing::warn!(target: "ractor_flame::terminator", %addr, %reason, "not our parent");
                        *not_ours = Some(reason);
                    }
                    Err(Failed::Retry(reason)) => {
                        tracing::debug!(target: "ractor_flame::terminator", %addr, %reason, "no way in yet");
                    }
                }
            }
            // No address is our parent: nothing to wait for.
            if let Some(Some(reason)) = not_ours.first()
                && not_ours.iter().all(Option::is_some)
            {
                let _ = myself.cast(TerminatorMessage::ConnectFailed(reason.clone()));
                return;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_EVERY);
        }
    });
}

/// One attempt at `addr`: connect (within [`HANDSHAKE_DEADLINE`]), then
/// [`join`].
async fn attempt(
    addr: SocketAddr,
    parent: &Parent,
    build_id: BuildId,
    failed: Option<String>,
) -> Result<Stream, Failed> {
    let stream = match tokio::time::timeout(HANDSHAKE_DEADLINE, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(Failed::Retry(format!("connect: {e}"))),
        Err(_) => return Err(Failed::Retry("connect: no answer in time".to_owned())),
    };
    join(stream, parent, build_id, failed).await
}

/// Sets up TLS when `FLAME_PARENT` pins a certificate, then proves the
/// runner. A parent that shows another certificate is refused before
/// anything (the token included) is sent.
async fn join(stream: TcpStream, parent: &Parent, build_id: BuildId, failed: Option<String>) -> Result<Stream, Failed> {
    let Some(pin) = parent.tls else {
        return Ok(Stream::Plain(handshake(stream, parent, build_id, failed).await?));
    };
    let connector = Connector::new(pin).map_err(|e| Failed::Final(format!("TLS: {e}")))?;
    let tls = tokio::time::timeout(HANDSHAKE_DEADLINE, connector.connect(stream))
        .await
        .map_err(|_| Failed::Retry("no TLS handshake from the parent in time".to_owned()))?
        .map_err(|e| {
            let reason = format!("TLS handshake with the parent failed: {}", describe(&e));
            // A TLS error (a certificate other than the pinned one, an alert)
            // is the peer's answer; a closed or broken connection is not.
            let tls_error = e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>());
            if tls_error {
                Failed::NotOurs(reason)
            } else {
                Failed::Retry(reason)
            }
        })?;
    let mut tls = handshake(tls, parent, build_id, failed).await?;
    tls.flush()
        .await
        .map_err(|e| Failed::Retry(format!("handshake: {e}")))?;
    Ok(Stream::Tls(tls))
}

/// Proves the runner to the parent. The build id is this runner's own,
/// computed from the registry it serves, never the one `FLAME_PARENT` named:
/// the parent compares them.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    parent: &Parent,
    build_id: BuildId,
    failed: Option<String>,
) -> Result<S, Failed> {
    let hello = ToParent::Hello(Hello {
        version: PROTOCOL_VERSION,
        runner_id: parent.runner_id,
        token: parent.token.clone(),
        build_id,
        failed,
    });
    let mut buf = Vec::new();
    encode_frame(&hello, HANDSHAKE_MAX_FRAME, &mut buf).map_err(|e| Failed::Final(e.to_string()))?;
    let broken = |e: std::io::Error| Failed::Retry(format!("handshake: {e}"));
    stream.write_all(&buf).await.map_err(broken)?;
    stream.flush().await.map_err(broken)?;
    let welcome = tokio::time::timeout(
        HANDSHAKE_DEADLINE,
        read_frame::<_, ToRunner>(&mut stream, &mut buf, HANDSHAKE_MAX_FRAME),
    )
    .await
    .map_err(|_| Failed::Retry("no answer to the handshake".to_owned()))?
    .map_err(|e| match e {
        // Closed or broken on the way: try again.
        FrameError::Io(e) => broken(e),
        // An answer that is not a frame of ours: not our parent.
        other => Failed::NotOurs(format!("handshake: {other}")),
    })?;
    match welcome {
        Some(ToRunner::Welcome(Welcome::Accepted)) => Ok(stream),
        // The parent's verdict (wrong token, another build, ...) is final.
        Some(ToRunner::Welcome(Welcome::Refused(reason))) => {
            Err(Failed::Final(format!("refused by the parent: {reason}")))
        }
        Some(other) => Err(Failed::NotOurs(format!("unexpected handshake answer: {other:?}"))),
        None => Err(Failed::Retry(
            "the parent closed the connection during the handshake".to_owned(),
        )),
    }
}

fn start(myself: ActorRef<TerminatorMessage>, parent: &Parent, serve: Arc<Serve>, stream: Stream) {
    let settings = &parent.settings;
    let opts = LinkOptions {
        max_frame: settings.max_frame_size,
        heartbeat_interval: settings.heartbeat_interval,
        heartbeat_timeout: settings.heartbeat_timeout,
    };
    let (tx, queue) = Outbox::<ToParent>::wire(opts.max_frame);
    // The reader holds only a weak sender: when the Terminator drops its own,
    // the writer flushes and closes even while the reader still runs.
    let weak = tx.downgrade();
    // This process's own `tracing` events go to the parent too, from before
    // the first call can arrive.
    crate::observe::logs::set_sink(tx.downgrade());
    let control = myself.clone();
    let on_body = move |body: &[u8], payload: Option<Vec<u8>>| {
        // Calls are decoded in place: their arguments go from the read
        // buffer (a split frame's: from a buffer of their own) straight to
        // the function's decoder.
        let frame: ToRunnerRef<'_> =
            rmp_serde::from_slice(body).map_err(|e| crate::wire::FrameError::Decode(e.to_string()))?;
        if payload.is_some() && !matches!(frame, ToRunnerRef::Call(_)) {
            return Err(crate::wire::frame::misplaced_payload());
        }
        match frame {
            ToRunnerRef::Call(call) => {
                if let Some(tx) = weak.upgrade() {
                    // One clock read: the deadline's start and the start
                    // of the time the reply reports.
                    let arrived = Instant::now();
                    let deadline = call.deadline_from(arrived);
                    serve.dispatch(call, payload, deadline, arrived, tx);
                }
            }
            ToRunnerRef::Cancel { id } => serve.cancel(id),
            ToRunnerRef::Credit { id, items } => serve.credit(id, items),
            ToRunnerRef::Ping | ToRunnerRef::Welcome(_) => {}
            ToRunnerRef::IdleVerdict { granted } => {
                let _ = control.cast(TerminatorMessage::FromParent(ToRunner::IdleVerdict { granted }));
            }
            ToRunnerRef::Shutdown => {
                let _ = control.cast(TerminatorMessage::FromParent(ToRunner::Shutdown));
            }
        }
        Ok(())
    };
    let lost = myself.clone();
    let writer = connection::spawn(stream, opts, queue, on_body, move |reason| {
        let _ = lost.cast(TerminatorMessage::ParentLost(reason));
    });
    let _ = myself.cast(TerminatorMessage::Connected(tx, writer));
}
