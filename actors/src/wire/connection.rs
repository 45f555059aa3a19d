//! Drives one authenticated TCP connection: a writer task that batches
//! outgoing frames and sends heartbeats, and a reader task that decodes
//! incoming frames, enforces the heartbeat timeout and reports the close.
//!
//! Both sides of the protocol use it; they differ only in frame types.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::codec::{Body, FrameError, read_body_with};
use super::frame::{Heartbeat, Outcome, ToParent, ToRunner};
use super::outbox::{Queue, Sink, Splice};
use super::payload::Payload;
use super::tls::TlsStream;
use crate::error::DownReason;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An authenticated connection, ready to be driven.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP, the handshake done.
    Tls(TlsStream),
}

impl Stream {
    fn set_nodelay(&self) {
        let sock = match self {
            Stream::Plain(sock) => sock,
            Stream::Tls(tls) => tls.link().sock(),
        };
        let _ = sock.set_nodelay(true);
    }
}

/// Limits and timers of one connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkOptions {
    pub(crate) max_frame: usize,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_timeout: Duration,
}

/// A frame type the driver can send.
pub(crate) trait OutFrame: Heartbeat + Serialize + Send + 'static {
    /// What to send instead of a frame that is too large, if anything.
    fn oversized(self, err: &FrameError) -> Option<Self>
    where
        Self: Sized;

    /// Takes out this frame's large byte string (a call's arguments, a
    /// result), when it is `at_least` bytes long: it is then written from
    /// where it lies rather than copied into the frame, and read into a
    /// buffer of its own (see [`encode_frame_split`](super::codec::encode_frame_split)).
    fn take_payload(&mut self, at_least: usize) -> Option<Payload>;

    /// An empty frame of call ends, if this side sends such (see
    /// [`Outbox::send_ended`](super::outbox::Outbox::send_ended)).
    fn ended() -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// The ids of a frame made by [`OutFrame::ended`]: filled in with every
    /// end noted so far when the frame leaves the queue.
    fn ended_ids(&mut self) -> Option<&mut Vec<u64>> {
        None
    }
}

impl OutFrame for ToParent {
    fn ended() -> Option<Self> {
        Some(ToParent::Ended { ids: Vec::new() })
    }

    fn ended_ids(&mut self) -> Option<&mut Vec<u64>> {
        match self {
            ToParent::Ended { ids } => Some(ids),
            _ => None,
        }
    }

    fn take_payload(&mut self, at_least: usize) -> Option<Payload> {
        self.result_bytes()
            .filter(|bytes| bytes.len() >= at_least)
            .map(|bytes| Payload::Owned(std::mem::take(bytes)))
    }

    fn oversized(self, err: &FrameError) -> Option<Self> {
        match self {
            ToParent::Reply { id, runner_us, .. } => Some(ToParent::Reply {
                id,
                outcome: Outcome::Codec(format!("result: {err}")),
                runner_us,
            }),
            ToParent::Early { id, .. } => Some(ToParent::Early {
                id,
                outcome: Outcome::Codec(format!("result: {err}")),
            }),
            _ => None,
        }
    }
}

impl OutFrame for ToRunner {
    fn take_payload(&mut self, at_least: usize) -> Option<Payload> {
        match self {
            ToRunner::Call(call) if call.args.len() >= at_least => Some(std::mem::take(&mut call.args)),
            _ => None,
        }
    }

    fn oversized(self, _err: &FrameError) -> Option<Self> {
        // Calls are size-checked by the caller before they are queued.
        None
    }
}

/// Starts the reader and writer of `stream`. `on_body` gets the body of every
/// frame, heartbeats included, to decode as it likes (in place, even), and a
/// split frame's payload, to put in the decoded message; an error from it
/// ends the connection. `on_close` runs once with the reason
/// the connection ended.
/// Outgoing frames come from `queue`'s outboxes (written straight out, or
/// batched by the writer): once every outbox is dropped, the queued frames
/// are written and the connection closes. The returned handle ends when the
/// writer has flushed (or was aborted because the reader ended).
pub(crate) fn spawn<Out>(
    stream: Stream,
    opts: LinkOptions,
    queue: Queue<Out>,
    mut on_body: impl FnMut(&[u8], Option<Vec<u8>>) -> Result<(), FrameError> + Send + 'static,
    on_close: impl FnOnce(DownReason) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    Out: OutFrame,
{
    stream.set_nodelay();
    // A TLS reader opens records straight into the payload's buffer.
    let zeroed = matches!(stream, Stream::Tls(_));
    let (read, sink): (Box<dyn AsyncRead + Send + Unpin>, Sink) = match stream {
        Stream::Plain(sock) => {
            let (read, write) = sock.into_split();
            (Box::new(read), Sink::Plain(Arc::new(write)))
        }
        Stream::Tls(tls) => {
            let (link, reader) = tls.split();
            (Box::new(reader), Sink::Tls(link))
        }
    };
    // Both halves run on the link thread, where the stream was opened.
    let writer = crate::wire::thread::spawn(write_loop(sink, queue, opts));
    let abort = writer.abort_handle();
    crate::wire::thread::spawn(async move {
        let reason = read_loop(read, opts, zeroed, &mut on_body).await;
        // The reader owns the connection's fate: once it ends, the writer has
        // nobody to talk to.
        abort.abort();
        on_close(reason);
    });
    writer
}

/// The most room a connection's read buffer keeps for good.
const KEEP_READ_BUFFER: usize = 4 << 20;
/// How long more room is kept after the last frame that needed it.
const KEEP_LARGE_FOR: Duration = Duration::from_secs(1);

/// Reads frames until the connection ends; a split frame's payload goes
/// into zeroed memory when `zeroed` (see [`read_body_with`]).
async fn read_loop<R: AsyncRead + Unpin>(
    read: R,
    opts: LinkOptions,
    zeroed: bool,
    on_body: &mut impl FnMut(&[u8], Option<Vec<u8>>) -> Result<(), FrameError>,
) -> DownReason {
    let (read, alive) = Watched::new(read);
    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let mut buf = Vec::new();
    // When the last frame larger than `KEEP_READ_BUFFER` arrived.
    let mut large_at: Option<Instant> = None;
    // One watchdog timer for the connection's life, not one per frame: it
    // fires at most once per `heartbeat_timeout` while frames flow, and is
    // then moved on to the last byte's time.
    let watchdog = tokio::time::sleep(opts.heartbeat_timeout);
    let mut watchdog = std::pin::pin!(watchdog);
    loop {
        let read = {
            let frame = read_body_with(&mut reader, &mut buf, opts.max_frame, zeroed);
            let mut frame = std::pin::pin!(frame);
            // Any byte, heartbeat or not, proves the peer alive: a large
            // frame arriving slowly is not silence.
            loop {
                tokio::select! {
                    // A frame already buffered is taken without a look at
                    // the timer.
                    biased;
                    read = &mut frame => break read,
                    () = &mut watchdog => {
                        let last = alive.last();
                        if last.elapsed() >= opts.heartbeat_timeout {
                            return DownReason::HeartbeatLost(opts.heartbeat_timeout);
                        }
                        watchdog.as_mut().reset((last + opts.heartbeat_timeout).into());
                    }
                }
            }
        };
        let payload = match read {
            Ok(Body::Whole) => None,
            Ok(Body::Split(payload)) => Some(payload),
            Ok(Body::Closed) => return DownReason::ConnectionLost("closed by peer".into()),
            Err(e) => return DownReason::ConnectionLost(e.to_string()),
        };
        if let Err(e) = on_body(&buf, payload) {
            return DownReason::ConnectionLost(e.to_string());
        }
        // Room for large frames is kept while they keep coming, and
        // given back a while after the last (an idle runner would
        // hold it for its life). Heartbeats bring the check round.
        if buf.len() > KEEP_READ_BUFFER {
            large_at = Some(Instant::now());
        } else if let Some(at) = large_at
            && at.elapsed() > KEEP_LARGE_FOR
        {
            buf = Vec::new();
            large_at = None;
        }
    }
}

/// A reader that notes when bytes last arrived.
struct Watched<R> {
    inner: R,
    alive: Alive,
}

/// When bytes last arrived, shared with the reader's watchdog.
#[derive(Clone)]
struct Alive {
    since: Instant,
    last_us: Arc<AtomicU64>,
}

impl Alive {
    fn last(&self) -> Instant {
        self.since + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }
}

impl<R> Watched<R> {
    fn new(inner: R) -> (Self, Alive) {
        let alive = Alive {
            since: Instant::now(),
            last_us: Arc::default(),
        };
        (
            Watched {
                inner,
                alive: alive.clone(),
            },
            alive,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Watched<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.alive.since.elapsed().as_micros() as u64;
            self.alive.last_us.store(now, Ordering::Relaxed);
        }
        polled
    }
}

/// The link thread's writer: takes queued frames, batches them into one
/// write, sends heartbeats, and sends what a sender's straight write left
/// over. See [`outbox`](super::outbox) for the fast path beside it.
async fn write_loop<Out: OutFrame>(sink: Sink, queue: Queue<Out>, opts: LinkOptions) {
    queue.drive(sink.clone());
    // The batch being written; the senders fill the other buffer meanwhile.
    let mut bytes = Vec::with_capacity(64 * 1024);
    let mut ticker = tokio::time::interval(opts.heartbeat_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut under_load = false;
    loop {
        // The heartbeat first: a queue that never empties must not starve it.
        let ping = tokio::select! {
            biased;
            _ = ticker.tick() => true,
            () = queue.wait() => false,
        };
        // Under load (the last write carried several frames), first let
        // the tasks that are ready run once, so their frames join this
        // write: one syscall for many. A lone frame goes out at once.
        if under_load {
            tokio::task::yield_now().await;
        }
        let Some(mut batch) = queue.take(ping, &mut bytes) else {
            // Every sender is gone and everything is written: close our half.
            break;
        };
        if sink.write_chunks(&batch.leftover).await.is_err() {
            return;
        }
        queue.fill_ended(&mut bytes, &mut batch.splices);
        // Large payloads follow their frame's head straight from where they
        // lie.
        let mut at = 0;
        for (until, splice) in &batch.splices {
            if let Splice::Payload(payload) = splice {
                if (at < *until && sink.write_all(&bytes[at..*until]).await.is_err())
                    || sink.write_all(payload).await.is_err()
                {
                    return;
                }
                at = *until;
            }
        }
        if at < bytes.len() && sink.write_all(&bytes[at..]).await.is_err() {
            return;
        }
        under_load = batch.frames > 1;
        drop(batch);
        bytes.clear();
        if bytes.capacity() > 4 << 20 {
            bytes = Vec::with_capacity(64 * 1024);
        }
        queue.written();
    }
    match sink {
        // The last handle of the half shuts its direction down when dropped.
        Sink::Plain(half) => {
            if let Ok(mut half) = Arc::try_unwrap(half) {
                let _ = half.shutdown().await;
            }
        }
        Sink::Tls(link) => link.close().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::{decode_body, encode_frame, read_body};
    use crate::wire::outbox::Outbox;
    use tokio::net::TcpListener;

    /// The options of a link with these limits (its peer never goes
    /// silent), an outbox on one end of a loopback connection, a start for
    /// its writer (not running yet: frames sent before it are queued), and
    /// the other end, to read what the writer writes.
    async fn wired(
        max_frame: usize,
        heartbeat_interval: Duration,
    ) -> (
        LinkOptions,
        Outbox<ToParent>,
        impl FnOnce() -> tokio::task::JoinHandle<()>,
        TcpStream,
    ) {
        let opts = LinkOptions {
            max_frame,
            heartbeat_interval,
            heartbeat_timeout: Duration::from_secs(60),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let end = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        let (outbox, queue) = Outbox::<ToParent>::wire(opts.max_frame);
        let start = move || {
            let (read, write) = end.into_split();
            tokio::spawn(async move {
                let _read = read;
                write_loop(Sink::Plain(Arc::new(write)), queue, opts).await;
            })
        };
        (opts, outbox, start, peer)
    }

    /// Frames queued together leave in one go, in the order they were
    /// sent: a large payload right after its frame's head, and a frame of
    /// ends where the first of its ends was noted, holding every end noted
    /// before the writer took it. Once the last outbox is gone, what was
    /// queued is written and the connection closes.
    #[tokio::test]
    async fn queued_frames_leave_in_order_with_payloads_and_ends_in_place() {
        let (opts, outbox, start, mut server) = wired(64 << 20, Duration::from_secs(60)).await;
        let large: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert!(outbox.send(ToParent::Reply {
            id: 1,
            outcome: Outcome::Ok(vec![1; 10]),
            runner_us: 0,
        }));
        assert!(outbox.send_ended(2));
        assert!(outbox.send(ToParent::Reply {
            id: 3,
            outcome: Outcome::Ok(large.clone()),
            runner_us: 0,
        }));
        assert!(outbox.send_ended(4));
        assert!(outbox.send(ToParent::IdleRequest));
        let writer = start();
        drop(outbox);
        let mut frames = Vec::new();
        let mut buf = Vec::new();
        loop {
            let body = read_body(&mut server, &mut buf, opts.max_frame).await.unwrap();
            let payload = match body {
                Body::Closed => break,
                Body::Whole => None,
                Body::Split(payload) => Some(payload),
            };
            let mut frame: ToParent = decode_body(&buf).unwrap();
            if let Some(payload) = payload {
                frame.put_payload(payload).unwrap();
            }
            frames.push(frame);
        }
        writer.await.unwrap();
        assert_eq!(
            frames,
            vec![
                ToParent::Reply {
                    id: 1,
                    outcome: Outcome::Ok(vec![1; 10]),
                    runner_us: 0,
                },
                ToParent::Ended { ids: vec![2, 4] },
                ToParent::Reply {
                    id: 3,
                    outcome: Outcome::Ok(large),
                    runner_us: 0,
                },
                ToParent::IdleRequest,
            ]
        );
    }

    /// A queue that never empties does not starve the heartbeats: they go
    /// out on time between the batches.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heartbeats_go_out_while_frames_keep_coming() {
        let (opts, outbox, start, mut server) = wired(1 << 20, Duration::from_millis(20)).await;
        let writer = start();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                // Never empty, never long: the writer takes batches of at
                // most 16 frames of 16 KiB (the reader keeps up), and finds
                // the next one waiting each time it looks.
                let record = crate::wire::frame::LogRecord {
                    level: 3,
                    target: "t".into(),
                    message: "m".repeat(16 * 1024),
                    fields: String::new(),
                    call: None,
                    dropped: 0,
                };
                let waiting = outbox.downgrade();
                while !stop.load(Ordering::Relaxed) {
                    if waiting.queued() < 16 {
                        outbox.send(ToParent::Log(record.clone()));
                    }
                }
            })
        };
        // Everything the writer sends, read as it comes, until it closes.
        let reader = tokio::spawn(async move {
            let (mut pings, mut frames) = (0, 0);
            let mut buf = Vec::new();
            while let Body::Whole = read_body(&mut server, &mut buf, opts.max_frame).await.unwrap() {
                // Only heartbeats are small.
                if buf.len() < 16 {
                    assert_eq!(decode_body::<ToParent>(&buf).unwrap(), ToParent::Ping);
                    pings += 1;
                } else {
                    frames += 1;
                }
            }
            (pings, frames)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        // The last outbox goes with the sender: the writer flushes and closes.
        sender.join().unwrap();
        writer.await.unwrap();
        let (pings, frames) = reader.await.unwrap();
        assert!(frames > 1000, "the queue kept filling: {frames} frames");
        assert!(pings >= 8, "{pings} heartbeats in 300 ms at one per 20 ms");
    }

    /// A large frame that trickles in for several heartbeat timeouts, with
    /// no heartbeat between its bytes, is not a lost peer; silence is.
    #[tokio::test]
    async fn b40_liveness_counts_bytes_not_just_heartbeats() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let opts = LinkOptions {
            max_frame: 64 * 1024 * 1024,
            heartbeat_interval: Duration::from_millis(100),
            heartbeat_timeout: Duration::from_millis(300),
        };
        let sender = tokio::spawn(async move {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            let mut frame = Vec::new();
            encode_frame(&ToParent::Ping, 1024, &mut frame).unwrap();
            // A frame of 4 MiB (its body not a valid message: the reader
            // hands it over undecoded), written in 256 KiB pieces every
            // 100 ms: 1.6 s, more than five heartbeat timeouts.
            let size: u32 = 4 * 1024 * 1024;
            peer.write_all(&size.to_be_bytes()).await.unwrap();
            for _ in 0..16 {
                peer.write_all(&vec![0xc0; 256 * 1024]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Then silence, with the connection open.
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(peer);
        });
        let (stream, _) = listener.accept().await.unwrap();
        let (read, _write) = stream.into_split();
        let mut sizes = Vec::new();
        let started = Instant::now();
        let reason = read_loop(read, opts, false, &mut |body: &[u8], _| {
            sizes.push(body.len());
            Ok(())
        })
        .await;
        assert_eq!(sizes, vec![4 * 1024 * 1024], "the whole frame arrived");
        assert_eq!(
            reason,
            DownReason::HeartbeatLost(opts.heartbeat_timeout),
            "silence is loss"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        sender.abort();
    }
}
