//! Floors that only the kernel bounds: a blocking std TCP ping-pong with a
//! blocking echo child (no async runtime, no thread but the one reading),
//! and plain bytes moved on a connection with a small answer read back (no
//! encoding at all). Included by `report.rs`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// The blocking echo child: each request is a u32 length and that many
/// bytes; a request of up to 64 bytes is echoed, a larger one answered with
/// its length (8 bytes), like a call that returns a length. A request of 9
/// bytes, `b'R'` and a big-endian u64 `n`, is answered with `n` bytes made
/// for it, like a call that returns a byte string.
pub(crate) fn std_echo_server() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap().port());
    let (mut stream, _) = listener.accept().unwrap();
    stream.set_nodelay(true).unwrap();
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        buf.resize(n, 0);
        if stream.read_exact(&mut buf).is_err() {
            return;
        }
        if n == 9 && buf[0] == b'R' {
            // Made with its length in front: one buffer written as it is.
            let want = u64::from_be_bytes(buf[1..].try_into().unwrap()) as usize;
            let mut made = vec![0xA5u8; 4 + want];
            made[..4].copy_from_slice(&(want as u32).to_be_bytes());
            if stream.write_all(&made).is_err() {
                return;
            }
            continue;
        }
        let answer: &[u8] = if n <= 64 { &buf } else { &(n as u64).to_be_bytes() };
        let mut out = Vec::with_capacity(4 + answer.len());
        out.extend_from_slice(&(answer.len() as u32).to_be_bytes());
        out.extend_from_slice(answer);
        if stream.write_all(&out).is_err() {
            return;
        }
    }
}

/// A blocking client of `std_echo_server` in a child process, driven from
/// a thread of its own (the bench's async tasks ask it over a channel and
/// are told the time the exchange took on that thread).
pub(crate) struct StdClient {
    child: std::process::Child,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl StdClient {
    pub(crate) fn start(mode: &str) -> Self {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .env(mode, "1")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap();
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        StdClient {
            child,
            stream,
            buf: Vec::new(),
        }
    }

    /// A request for `n` bytes, and the bytes: the time it took.
    pub(crate) fn fetch(&mut self, n: usize) -> Duration {
        let mut body = [b'R'; 9];
        body[1..].copy_from_slice(&(n as u64).to_be_bytes());
        let took = self.exchange(&body);
        assert_eq!(self.buf.len(), n);
        took
    }

    /// One request of `body` and its answer: the time it took.
    pub(crate) fn exchange(&mut self, body: &[u8]) -> Duration {
        let t = Instant::now();
        self.stream.write_all(&(body.len() as u32).to_be_bytes()).unwrap();
        self.stream.write_all(body).unwrap();
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).unwrap();
        self.buf.resize(u32::from_be_bytes(len) as usize, 0);
        self.stream.read_exact(&mut self.buf).unwrap();
        t.elapsed()
    }
}

impl Drop for StdClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
