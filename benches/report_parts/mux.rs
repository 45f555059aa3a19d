//! The throughput floors: a raw multiplexed client against an echo child
//! (one connection, a writer task that batches what is queued, a buffered
//! reader task, an id -> oneshot map, rmp-serde frames with a u32 length
//! prefix), and raw one-way frames for casts. Included by `report.rs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// The id of one-way frames handed to one worker task (those of id 0 get a
/// task each).
pub(crate) const HANDED_OFF: u64 = u64::MAX;

/// One frame of the raw protocol: an id and a small body.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct MuxFrame {
    pub(crate) id: u64,
    pub(crate) value: u64,
}

fn encode(frame: &MuxFrame, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    rmp_serde::encode::write_named(out, frame).unwrap();
    let n = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&n.to_be_bytes());
}

async fn read(reader: &mut BufReader<OwnedReadHalf>, buf: &mut Vec<u8>) -> Option<MuxFrame> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await.ok()?;
    buf.resize(u32::from_be_bytes(len) as usize, 0);
    reader.read_exact(buf).await.ok()?;
    rmp_serde::from_slice(buf).ok()
}

/// Writes what the channel holds, batching everything queued into one write.
/// Under load (the last write carried several frames) it first lets the
/// tasks that are ready run once, so their frames join the write: the same
/// batching the runner link does, so this stays a floor.
async fn batch_writer(mut write: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<MuxFrame>) {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut under_load = false;
    while let Some(first) = rx.recv().await {
        encode(&first, &mut out);
        let (mut taken, mut yielded) = (1usize, !under_load);
        while out.len() < 256 * 1024 {
            match rx.try_recv() {
                Ok(frame) => {
                    encode(&frame, &mut out);
                    taken += 1;
                }
                Err(_) if !yielded => {
                    yielded = true;
                    tokio::task::yield_now().await;
                }
                Err(_) => break,
            }
        }
        under_load = taken > 1;
        if write.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
    }
}

/// The echo child: answers every frame, except one-way frames (`id` 0),
/// each of which it runs as a task of its own (as a runner runs a cast: the
/// least a cast's body needs), answering once `value` of them have run.
pub(crate) async fn echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let (stream, _) = listener.accept().await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read_half, write_half) = stream.into_split();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(batch_writer(write_half, rx));
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut buf = Vec::new();
    let one_way = Arc::new(AtomicU64::new(0));
    // One-way frames of the other kind are handed, as they come, to one
    // task of the runtime that runs their work (counting them): the least a
    // runner can do to keep function bodies off the task that reads its
    // connection.
    let (handed, mut work) = mpsc::unbounded_channel::<MuxFrame>();
    let answers = tx.clone();
    tokio::spawn(async move {
        let mut ran = 0;
        while let Some(frame) = work.recv().await {
            ran += 1;
            if ran == frame.value {
                ran = 0;
                let _ = answers.send(frame);
            }
        }
    });
    while let Some(frame) = read(&mut reader, &mut buf).await {
        if frame.id == HANDED_OFF {
            let _ = handed.send(frame);
            continue;
        }
        if frame.id == 0 {
            // A one-way frame: its work counts it; `value` says how many
            // to expect.
            let (one_way, tx) = (Arc::clone(&one_way), tx.clone());
            tokio::spawn(async move {
                let ran = one_way.fetch_add(1, Ordering::AcqRel) + 1;
                if ran == frame.value {
                    one_way.fetch_sub(ran, Ordering::AcqRel);
                    let _ = tx.send(MuxFrame { id: 0, value: ran });
                }
            });
            continue;
        }
        let _ = tx.send(frame);
    }
}

/// Starts this bench binary as an echo child (selected by the environment
/// variable `mode`), connected: the raw floors' peer, a process like a
/// runner.
pub(crate) async fn echo_child(mode: &str) -> (tokio::process::Child, TcpStream) {
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(mode, "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line)
        .await
        .unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.set_nodelay(true).unwrap();
    (child, stream)
}

/// The multiplexed client of `echo_server`, in a child process.
#[derive(Debug)]
pub(crate) struct MuxClient {
    child: tokio::process::Child,
    tx: mpsc::UnboundedSender<MuxFrame>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>>,
    next: AtomicU64,
}

impl MuxClient {
    pub(crate) async fn start() -> Arc<Self> {
        let (child, stream) = echo_child("FLAME_BENCH_RAW_MUX").await;
        let (read_half, write_half) = stream.into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(batch_writer(write_half, rx));
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<u64>>>> = Arc::default();
        let routes = Arc::clone(&waiting);
        tokio::spawn(async move {
            let mut reader = BufReader::with_capacity(64 * 1024, read_half);
            let mut buf = Vec::new();
            while let Some(frame) = read(&mut reader, &mut buf).await {
                if let Some(waiter) = routes.lock().unwrap().remove(&frame.id) {
                    let _ = waiter.send(frame.value);
                }
            }
        });
        Arc::new(MuxClient {
            child,
            tx,
            waiting,
            next: AtomicU64::new(1),
        })
    }

    /// One request/response.
    pub(crate) async fn call(&self, value: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        self.tx.send(MuxFrame { id, value }).unwrap();
        rx.await.unwrap()
    }

    /// `n` one-way frames of `id` (0: a task each on the echo child,
    /// [`HANDED_OFF`]: handed to one task), then waits for the echo child's
    /// count of them.
    pub(crate) async fn one_way(&self, id: u64, n: u64) -> Duration {
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().unwrap().insert(id, tx);
        let start = Instant::now();
        for _ in 0..n {
            self.tx.send(MuxFrame { id, value: n }).unwrap();
        }
        assert_eq!(rx.await.unwrap(), n);
        start.elapsed()
    }

    pub(crate) async fn stop(self: Arc<Self>) {
        if let Ok(mut client) = Arc::try_unwrap(self) {
            let _ = client.child.kill().await;
        }
    }
}

/// Calls per second with `callers` tasks each calling in a loop for `for_`.
pub(crate) async fn mux_throughput(client: &Arc<MuxClient>, callers: usize, for_: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (client, done) = (Arc::clone(client), Arc::clone(&done));
            tokio::spawn(async move {
                while start.elapsed() < for_ {
                    client.call(1).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}
