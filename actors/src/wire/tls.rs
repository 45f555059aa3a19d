//! TLS on the runner link: a certificate per endpoint, pinned by the runner.
//!
//! There is no certificate authority to run. Each [`Endpoint`] makes a key
//! pair and a self-signed certificate the first time a runner needs TLS, and
//! the runner's `FLAME_PARENT` carries the SHA-256 fingerprint of that
//! certificate: the runner accepts that certificate and no other, then proves
//! itself with its token as on a plaintext link. Only TLS 1.3 is spoken.
//!
//! After the handshake the connection is driven by [`TlsLink`]: one rustls
//! session shared by the reader and the writers under a short lock over a
//! non-blocking socket, so a lone frame is still encrypted and written from
//! the sender's own thread (the fast path of [`outbox`](super::outbox)).
//!
//! [`Endpoint`]: crate::Endpoint

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// The name the certificate is made for and the runner asks for. The name
/// proves nothing here (the fingerprint does); it only has to agree.
const SERVER_NAME: &str = "ractor-flame-parent";

/// The first byte of a TLS handshake record; a plaintext frame starts with
/// its length's high byte, which is 0 for any handshake frame.
pub(crate) const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// The SHA-256 fingerprint of a parent's certificate, carried in
/// `FLAME_PARENT`: the one certificate the runner accepts.
///
/// # Examples
///
/// ```
/// use ractor_flame_actors::Fingerprint;
///
/// let a = Fingerprint::of(b"certificate one");
/// assert_eq!(a, Fingerprint::of(b"certificate one"));
/// assert_ne!(a, Fingerprint::of(b"certificate two"));
/// assert_eq!(a.to_string().len(), 64);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The link's crypto: *ring*, this link's own (the process-wide default is
/// left to the application). rustls 0.23.48 deprecates *ring*'s provider
/// for want of post-quantum key exchange; the link authenticates a pinned
/// certificate between two copies of one binary, and moving to aws-lc-rs
/// (a C and assembly build) is a choice of its own, not a warning's.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An endpoint's certificate and the server side of its TLS.
pub(crate) struct Identity {
    pub(crate) fingerprint: Fingerprint,
    pub(crate) acceptor: tokio_rustls::TlsAcceptor,
}

impl Identity {
    /// A fresh key pair and self-signed certificate.
    pub(crate) fn generate() -> io::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(io::Error::other)?;
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(io::Error::other)?;
        Ok(Identity {
            fingerprint: Fingerprint::of(&cert),
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// The runner's side: a connector that accepts only the pinned certificate.
pub(crate) fn connector(pin: Fingerprint) -> io::Result<(tokio_rustls::TlsConnector, ServerName<'static>)> {
    let provider = provider();
    let verifier = Arc::new(Pinned {
        pin,
        provider: Arc::clone(&provider),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A failed TLS handshake in words: a pin mismatch says which certificates
/// met.
pub(crate) fn describe(err: &io::Error) -> String {
    let rustls_err = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    if let Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) = rustls_err {
        return other.0.to_string();
    }
    err.to_string()
}

/// Accepts one certificate: the one whose fingerprint `FLAME_PARENT` names.
#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

/// The certificate a runner was shown is not the pinned one.
#[derive(Debug, thiserror::Error)]
#[error("the parent's certificate {seen} is not the pinned {pinned} (FLAME_PARENT names another parent)")]
struct PinMismatch {
    seen: Fingerprint,
    pinned: Fingerprint,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity);
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch { seen, pinned: self.pin })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An established TLS connection, shared by its reader and its writers.
///
/// The socket is non-blocking and shared by reference; the rustls session
/// sits behind a lock held only to encrypt, decrypt or move bytes between it
/// and the socket, never across an await.
pub(crate) struct TlsLink {
    sock: TcpStream,
    session: Mutex<rustls::Connection>,
}

impl fmt::Debug for TlsLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsLink").finish_non_exhaustive()
    }
}

/// How much plaintext [`TlsLink::write_now`] encrypts before it offers the
/// socket what is ready (four records).
const WRITE_PIECE: usize = 64 * 1024;

/// How much ciphertext the reader takes from the socket in one read. The
/// session asks for 4 KiB at a time; a record is 16 KiB.
const READ_AHEAD: usize = 64 * 1024;

/// Non-blocking reads and writes on a shared socket, as `std::io` wants.
struct Sock<'a>(&'a TcpStream);

impl Read for Sock<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsLink {
    pub(crate) fn new(sock: TcpStream, session: impl Into<rustls::Connection>) -> Arc<Self> {
        let mut session = session.into();
        // Frames are framed by us; rustls may buffer what the socket
        // cannot take yet, however much that is.
        session.set_buffer_limit(None);
        Arc::new(TlsLink {
            sock,
            session: Mutex::new(session),
        })
    }

    pub(crate) fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// Encrypts `plain` and writes what the socket takes now. `Ok(true)`:
    /// all of it is on the socket; `Ok(false)`: some waits in the session
    /// for [`TlsLink::flush`].
    pub(crate) fn write_now(&self, plain: &[u8]) -> io::Result<bool> {
        let mut session = self.session.lock().expect("poisoned");
        Self::encrypt_and_push(&mut session, &self.sock, plain)
    }

    /// Like [`TlsLink::write_now`], but gives up at once (`None`) when
    /// another thread holds the session.
    pub(crate) fn try_write_now(&self, plain: &[u8]) -> Option<io::Result<bool>> {
        let mut session = self.session.try_lock().ok()?;
        Some(Self::encrypt_and_push(&mut session, &self.sock, plain))
    }

    /// Encrypts `plain` a piece at a time, each piece going to the socket
    /// as soon as it is encrypted: the peer decrypts the first records of a
    /// large frame while the rest is encrypted, and the records the socket
    /// takes at once are freed (not all of a frame's records held at once).
    /// What the socket cannot take yet waits in the session.
    fn encrypt_and_push(session: &mut rustls::Connection, sock: &TcpStream, plain: &[u8]) -> io::Result<bool> {
        let mut rest = plain;
        loop {
            let (piece, after) = rest.split_at(rest.len().min(WRITE_PIECE));
            session.writer().write_all(piece)?;
            let done = Self::push(session, sock)?;
            if after.is_empty() {
                return Ok(done);
            }
            rest = after;
        }
    }

    /// Writes every encrypted byte waiting in the session.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        loop {
            let done = {
                let mut session = self.session.lock().expect("poisoned");
                Self::push(&mut session, &self.sock)?
            };
            if done {
                return Ok(());
            }
            self.sock.writable().await?;
        }
    }

    /// Says goodbye (a close_notify) and shuts the write direction down.
    pub(crate) async fn close(&self) {
        self.session.lock().expect("poisoned").send_close_notify();
        let _ = self.flush().await;
        let _ = socket2::SockRef::from(&self.sock).shutdown(std::net::Shutdown::Write);
    }

    /// Moves encrypted bytes from the session to the socket until one of
    /// them runs out; `true` when nothing is left in the session.
    fn push(session: &mut rustls::Connection, sock: &TcpStream) -> io::Result<bool> {
        while session.wants_write() {
            match session.write_tls(&mut Sock(sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// The reading side, for the connection's reader.
    pub(crate) fn reader(self: &Arc<Self>) -> TlsReader {
        TlsReader {
            link: Arc::clone(self),
            ciphertext: Vec::new(),
            at: 0,
            end: 0,
        }
    }
}

/// Decrypted bytes of a [`TlsLink`].
pub(crate) struct TlsReader {
    link: Arc<TlsLink>,
    /// Room for ciphertext read from the socket ([`READ_AHEAD`] bytes,
    /// zeroed once): one read of the socket for several records, where the
    /// session alone would read 4 KiB. `at..end` is what the session has
    /// yet to take.
    ciphertext: Vec<u8>,
    at: usize,
    end: usize,
}

impl AsyncRead for TlsReader {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let link = &*this.link;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            {
                let before = buf.filled().len();
                let mut session = link.session.lock().expect("poisoned");
                loop {
                    // Called with room in `buf` only: 0 is the end.
                    match take_plaintext(&mut session, buf) {
                        // The peer said goodbye: the end of the stream.
                        Ok(0) => return Poll::Ready(Ok(())),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The peer closed without a goodbye: still the end.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    if buf.remaining() == 0 {
                        return Poll::Ready(Ok(()));
                    }
                    // Decrypt what was read ahead while `buf` has room;
                    // then read the socket, unless bytes were taken.
                    if this.at == this.end {
                        if buf.filled().len() > before {
                            return Poll::Ready(Ok(()));
                        }
                        break;
                    }
                    match session.read_tls(&mut &this.ciphertext[this.at..this.end]) {
                        Ok(n) => this.at += n,
                        Err(e) => return Poll::Ready(Err(e)),
                    }
                    session
                        .process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    // Anything the session must answer (a key update) goes
                    // out now if the socket takes it, else with the next write.
                    if session.wants_write() {
                        TlsLink::push(&mut session, &link.sock)?;
                    }
                }
            }
            ready!(link.sock.poll_read_ready(cx))?;
            if this.ciphertext.is_empty() {
                this.ciphertext = vec![0; READ_AHEAD];
            }
            match link.sock.try_read(&mut this.ciphertext) {
                Ok(n) => {
                    (this.at, this.end) = (0, n);
                    if n == 0 {
                        // The end of the stream, for the session to judge
                        // (a goodbye first, or not).
                        link.session.lock().expect("poisoned").read_tls(&mut io::empty())?;
                    }
                }
                // Readiness was stale: poll again (and register the waker).
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Copies the session's decrypted bytes into `buf` as they are: nothing of
/// `buf` is zeroed first, so reading an N-byte frame costs time linear in N.
/// (The frame's reader hands each read a fresh `ReadBuf` over the
/// uninitialised rest of the frame, and a read takes what one read of the
/// socket brought, 64 KiB at most: zeroing the rest on every read made a
/// frame cost N².)
///
/// `Ok(0)` is the end of the stream (the peer's goodbye); `WouldBlock`, that
/// no decrypted byte waits.
fn take_plaintext(session: &mut rustls::Connection, buf: &mut ReadBuf<'_>) -> io::Result<usize> {
    let mut reader = session.reader();
    let mut taken = 0;
    while buf.remaining() > 0 {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            // What was taken goes first; the error comes again on the
            // next read.
            Err(_) if taken > 0 => break,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        reader.consume(n);
        taken += n;
    }
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair(pin: Option<Fingerprint>) -> (io::Result<Arc<TlsLink>>, io::Result<Arc<TlsLink>>) {
        let identity = Identity::generate().unwrap();
        let pin = pin.unwrap_or(identity.fingerprint);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            let tls = identity.acceptor.accept(sock).await?;
            let (sock, session) = tls.into_inner();
            Ok(TlsLink::new(sock, session))
        });
        let (connector, name) = connector(pin).unwrap();
        let sock = TcpStream::connect(addr).await.unwrap();
        let client = match connector.connect(name, sock).await {
            Ok(tls) => {
                let (sock, session) = tls.into_inner();
                Ok(TlsLink::new(sock, session))
            }
            Err(e) => Err(e),
        };
        (client, server.await.unwrap())
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_the_goodbye_ends_the_stream() {
        let (client, server) = pair(None).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        let big = vec![7u8; 3 * 1024 * 1024];
        let writer = {
            let client = Arc::clone(&client);
            let big = big.clone();
            tokio::spawn(async move {
                if !client.write_now(&big).unwrap() {
                    client.flush().await.unwrap();
                }
                client.close().await;
            })
        };
        let mut got = Vec::new();
        server.reader().read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), big.len());
        assert!(got == big);
        // And back, on the same sessions.
        server.write_now(b"answer").unwrap();
        server.flush().await.unwrap();
        let mut answer = [0u8; 6];
        client.reader().read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }

    /// B49: a large frame read through the session costs time linear in
    /// its size. The frame's reader (`read_buf` into a `Vec`'s spare room)
    /// hands every read a fresh `ReadBuf` over the uninitialised rest of
    /// the frame, and a read gives what one read of the socket brought (a
    /// record or a few): a read must initialise only the bytes it fills,
    /// not the whole rest, or an N-byte frame costs about N² / 32 KiB bytes
    /// of zeroing (8 GiB for 16 MiB, a record a read).
    #[tokio::test]
    async fn b49_a_read_initialises_only_the_bytes_it_fills() {
        let (client, server) = pair(None).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        let size = 16 << 20;
        let sent: Arc<Vec<u8>> = Arc::new((0..size).map(|i| (i % 251) as u8).collect());
        let writer = {
            let (client, sent) = (Arc::clone(&client), Arc::clone(&sent));
            tokio::spawn(async move {
                if !client.write_now(&sent).unwrap() {
                    client.flush().await.unwrap();
                }
            })
        };
        let mut room = vec![std::mem::MaybeUninit::<u8>::uninit(); size];
        let mut reader = server.reader();
        let (mut at, mut initialised, mut reads) = (0, 0, 0);
        while at < size {
            let mut buf = ReadBuf::uninit(&mut room[at..]);
            std::future::poll_fn(|cx| Pin::new(&mut reader).poll_read(cx, &mut buf))
                .await
                .unwrap();
            let n = buf.filled().len();
            assert!(n > 0, "the stream ended after {at} of {size} bytes");
            assert!(buf.filled() == &sent[at..at + n], "bytes {at}..{} differ", at + n);
            initialised += buf.initialized().len();
            at += n;
            reads += 1;
        }
        writer.await.unwrap();
        assert!(reads >= 64, "the frame came in pieces, as over a socket: {reads} reads");
        assert!(
            initialised <= size + (64 << 10),
            "{initialised} bytes initialised in {reads} reads to read {size}"
        );
    }

    /// A peer gone without a goodbye ends the stream too, after its bytes.
    #[tokio::test]
    async fn a_peer_gone_without_a_goodbye_ends_the_stream_after_its_bytes() {
        let (client, server) = pair(None).await;
        let (client, server) = (client.unwrap(), server.unwrap());
        let sent = vec![9u8; 200_000];
        if !client.write_now(&sent).unwrap() {
            client.flush().await.unwrap();
        }
        socket2::SockRef::from(client.sock())
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut got = Vec::new();
        server.reader().read_to_end(&mut got).await.unwrap();
        assert!(got == sent, "{} of {} bytes", got.len(), sent.len());
    }

    #[tokio::test]
    async fn another_certificate_is_refused_by_its_fingerprint() {
        let (client, _server) = pair(Some(Fingerprint([9; 32]))).await;
        let err = describe(&client.unwrap_err());
        assert!(err.starts_with("the parent's certificate"), "{err}");
        assert!(err.contains(&Fingerprint([9; 32]).to_string()), "{err}");
    }

    #[tokio::test]
    async fn a_plaintext_writer_is_not_a_tls_peer() {
        let identity = Identity::generate().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut sock = TcpStream::connect(addr).await.unwrap();
            let _ = sock.write_all(&[0, 0, 0, 5, 1, 2, 3, 4, 5]).await;
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let (sock, _) = listener.accept().await.unwrap();
        assert!(identity.acceptor.accept(sock).await.is_err());
        client.await.unwrap();
    }
}
