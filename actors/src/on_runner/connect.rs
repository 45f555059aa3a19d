//! The runner's way back to its parent: connect, prove the token, then hand
//! the connection to the wire driver.

use std::sync::Arc;
use std::time::Duration;

use crate::wire::outbox::Outbox;
use ractor::{ActorRef, ActorStatus};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Serve, TerminatorMessage};
use crate::flame_parent::Parent;
use crate::ids::BuildId;
use crate::wire::clock::instant_from_unix_micros;
use crate::wire::codec::{encode_frame, read_frame};
use crate::wire::connection::{self, LinkOptions, Stream};
use crate::wire::frame::{Hello, ToParent, ToRunner, ToRunnerRef, Welcome};
use crate::wire::tls::{TlsLink, connector, describe};
use crate::wire::{HANDSHAKE_DEADLINE, HANDSHAKE_MAX_FRAME, PROTOCOL_VERSION};

/// Delay between connection attempts while the parent is unreachable.
const RETRY_EVERY: Duration = Duration::from_millis(50);

pub(super) fn spawn(myself: ActorRef<TerminatorMessage>, parent: Parent, serve: Arc<Serve>) {
    // The socket belongs to the link thread's reactor.
    crate::wire::thread::spawn(async move {
        let stream = loop {
            // The failsafe timer stops the actor; stop trying then.
            if matches!(myself.get_status(), ActorStatus::Stopping | ActorStatus::Stopped) {
                return;
            }
            if let Some(stream) = try_addrs(&parent).await {
                break stream;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        };
        match join(stream, &parent, serve.registry().build_id(), serve.failure()).await {
            Ok(stream) => start(myself, &parent, serve, stream),
            Err(reason) => {
                let _ = myself.cast(TerminatorMessage::ConnectFailed(reason));
            }
        }
    });
}

async fn try_addrs(parent: &Parent) -> Option<TcpStream> {
    for addr in &parent.parent_addrs {
        if let Ok(stream) = TcpStream::connect(addr).await {
            return Some(stream);
        }
    }
    None
}

/// Sets up TLS when `FLAME_PARENT` pins a certificate, then proves the
/// runner. A parent that shows another certificate is refused before
/// anything (the token included) is sent.
async fn join(stream: TcpStream, parent: &Parent, build_id: BuildId, failed: Option<String>) -> Result<Stream, String> {
    let Some(pin) = parent.tls else {
        return Ok(Stream::Plain(handshake(stream, parent, build_id, failed).await?));
    };
    let (connector, name) = connector(pin).map_err(|e| format!("TLS: {e}"))?;
    let tls = tokio::time::timeout(HANDSHAKE_DEADLINE, connector.connect(name, stream))
        .await
        .map_err(|_| "no TLS handshake from the parent in time".to_owned())?
        .map_err(|e| format!("TLS handshake with the parent failed: {}", describe(&e)))?;
    let mut tls = handshake(tls, parent, build_id, failed).await?;
    tls.flush().await.map_err(|e| format!("handshake: {e}"))?;
    let (sock, session) = tls.into_inner();
    Ok(Stream::Tls(TlsLink::new(sock, session)))
}

/// Proves the runner to the parent. The build id is this runner's own,
/// computed from the registry it serves, never the one `FLAME_PARENT` named:
/// the parent compares them.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    parent: &Parent,
    build_id: BuildId,
    failed: Option<String>,
) -> Result<S, String> {
    let hello = ToParent::Hello(Hello {
        version: PROTOCOL_VERSION,
        runner_id: parent.runner_id,
        token: parent.token.clone(),
        build_id,
        failed,
    });
    let mut buf = Vec::new();
    encode_frame(&hello, HANDSHAKE_MAX_FRAME, &mut buf).map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| format!("handshake: {e}"))?;
    stream.flush().await.map_err(|e| format!("handshake: {e}"))?;
    let welcome = tokio::time::timeout(
        HANDSHAKE_DEADLINE,
        read_frame::<_, ToRunner>(&mut stream, &mut buf, HANDSHAKE_MAX_FRAME),
    )
    .await
    .map_err(|_| "no answer to the handshake".to_owned())?
    .map_err(|e| format!("handshake: {e}"))?;
    match welcome {
        Some(ToRunner::Welcome(Welcome::Accepted)) => Ok(stream),
        Some(ToRunner::Welcome(Welcome::Refused(reason))) => Err(format!("refused by the parent: {reason}")),
        Some(other) => Err(format!("unexpected handshake answer: {other:?}")),
        None => Err("the parent closed the connection during the handshake".to_owned()),
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
                    let deadline = call.deadline_us.map(instant_from_unix_micros);
                    serve.dispatch(call, payload, deadline, tx);
                }
            }
            ToRunnerRef::Cancel { id } => serve.cancel(id),
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
