//! TLS on the runner link: a certificate per endpoint, pinned by the runner.
//!
//! There is no certificate authority to run. Each [`Endpoint`] makes a key
//! pair and a self-signed certificate the first time a runner needs TLS, and
//! the runner's `FLAME_PARENT` carries the SHA-256 fingerprint of that
//! certificate: the runner accepts that certificate and no other, then proves
//! itself with its token as on a plaintext link. Only TLS 1.3 is spoken.
//!
//! rustls makes the handshake (its unbuffered API, over the link's own
//! non-blocking socket, in [`handshake`]) and keeps the key schedule; the
//! records that follow are sealed and opened by the link itself
//! ([`record`]), with the traffic keys rustls hands over, the way kernel TLS
//! would. rustls's own record layer copies every byte two or three times
//! between its buffers and serialises reading and writing behind one lock;
//! here a record is sealed where it goes to the socket and opened where it
//! was read, and the reader and the writers each have their own keys (see
//! [`TlsLink`]). A lone frame is still sealed and written from the sender's
//! own thread (the fast path of [`outbox`](super::outbox)).
//!
//! [`Endpoint`]: crate::Endpoint

mod handshake;
mod link;
mod record;

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, UnbufferedClientConnection};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::UnbufferedServerConnection;
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

pub(crate) use link::{TlsLink, TlsStream};

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

/// The handshake's crypto: *ring*, this link's own (the process-wide
/// default is left to the application). rustls 0.23.48 deprecates *ring*'s
/// provider for want of post-quantum key exchange; the link authenticates a
/// pinned certificate between two copies of one binary, and moving the
/// handshake to aws-lc-rs is a choice of its own, not a warning's. (The
/// records that follow are sealed with aws-lc-rs: see [`record`].)
///
/// AES-128-GCM comes first: with AES instructions it is the fastest of the
/// three, and every byte of every frame goes through it twice (16 KiB
/// records on one core of this machine, AVX-512: AES-128-GCM 19.6 GB/s,
/// AES-256-GCM 16.1, with aws-lc-rs; ChaCha20-Poly1305 2.5 with *ring*).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite::{
        TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
    };
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            TLS13_AES_128_GCM_SHA256,
            TLS13_AES_256_GCM_SHA384,
            TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// An endpoint's certificate and the server side of its TLS.
pub(crate) struct Identity {
    pub(crate) fingerprint: Fingerprint,
    config: Arc<rustls::ServerConfig>,
}

impl Identity {
    /// A fresh key pair and self-signed certificate.
    pub(crate) fn generate() -> io::Result<Self> {
        let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()]).map_err(io::Error::other)?;
        let cert = certified.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .map_err(io::Error::other)?;
        // The link seals its own records with the keys rustls hands over.
        config.enable_secret_extraction = true;
        // A runner connects once and never resumes: no tickets to send.
        // (Nor data before the client's Finished: `send_half_rtt_data`
        // stays off, so the handshake is done once the link takes over.)
        config.send_tls13_tickets = 0;
        Ok(Identity {
            fingerprint: Fingerprint::of(&cert),
            config: Arc::new(config),
        })
    }

    /// The server's side of the handshake on a new connection.
    pub(crate) async fn accept(&self, sock: TcpStream) -> io::Result<TlsStream> {
        let conn = UnbufferedServerConnection::new(Arc::clone(&self.config)).map_err(handshake::tls_error)?;
        let done = handshake::drive(&sock, conn).await?;
        TlsLink::start(sock, done)
    }
}

/// The runner's side: accepts only the pinned certificate.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Arc<rustls::ClientConfig>,
}

impl Connector {
    pub(crate) fn new(pin: Fingerprint) -> io::Result<Self> {
        let provider = provider();
        let verifier = Arc::new(Pinned {
            pin,
            provider: Arc::clone(&provider),
        });
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(io::Error::other)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.enable_secret_extraction = true;
        config.resumption = Resumption::disabled();
        Ok(Connector {
            config: Arc::new(config),
        })
    }

    /// The client's side of the handshake on a new connection. A TLS error
    /// (the parent's certificate is not the pinned one, an alert) comes as
    /// an [`io::Error`] carrying the [`rustls::Error`].
    pub(crate) async fn connect(&self, sock: TcpStream) -> io::Result<TlsStream> {
        let name = ServerName::try_from(SERVER_NAME).map_err(io::Error::other)?;
        let conn = UnbufferedClientConnection::new(Arc::clone(&self.config), name).map_err(handshake::tls_error)?;
        let done = handshake::drive(&sock, conn).await?;
        TlsLink::start(sock, done)
    }
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

#[cfg(test)]
mod tests {
    use super::link::TlsReader;
    use super::*;
    use std::pin::Pin;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpListener;

    /// The client's and the server's end of a fresh TLS connection.
    async fn pair(pin: Option<Fingerprint>) -> (io::Result<TlsStream>, io::Result<TlsStream>) {
        let identity = Identity::generate().unwrap();
        let pin = pin.unwrap_or(identity.fingerprint);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            identity.accept(sock).await
        });
        let sock = TcpStream::connect(addr).await.unwrap();
        let client = Connector::new(pin).unwrap().connect(sock).await;
        (client, server.await.unwrap())
    }

    async fn linked() -> ((Arc<TlsLink>, TlsReader), (Arc<TlsLink>, TlsReader)) {
        let (client, server) = pair(None).await;
        (client.unwrap().split(), server.unwrap().split())
    }

    fn pattern(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn bytes_cross_both_ways_and_the_goodbye_ends_the_stream() {
        let ((client, mut client_reader), (server, mut server_reader)) = linked().await;
        assert_eq!(client.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let big = pattern(3 * 1024 * 1024 + 17);
        let writer = {
            let client = Arc::clone(&client);
            let big = big.clone();
            tokio::spawn(async move {
                client.write_all(&big).await.unwrap();
                client.close().await;
            })
        };
        let mut got = Vec::new();
        server_reader.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got.len(), big.len());
        assert!(got == big);
        // And back, on the same keys.
        let wrote = server.write_now(b"answer", usize::MAX).unwrap();
        assert_eq!(wrote.taken, 6);
        server.flush().await.unwrap();
        let mut answer = [0u8; 6];
        client_reader.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"answer");
    }

    /// What the client sends the moment its handshake is done (a runner's
    /// proof) arrives, though it may reach the server with the client's
    /// last handshake record: rustls is shown one record at a time and
    /// leaves it to the link.
    #[tokio::test]
    async fn the_first_records_after_the_handshake_reach_the_reader() {
        for _ in 0..20 {
            let identity = Identity::generate().unwrap();
            let pin = identity.fingerprint;
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = tokio::spawn(async move {
                let sock = TcpStream::connect(addr).await.unwrap();
                let mut tls = Connector::new(pin).unwrap().connect(sock).await.unwrap();
                tls.write_all(b"hello at once").await.unwrap();
                tls.flush().await.unwrap();
                let mut answer = [0u8; 2];
                tls.read_exact(&mut answer).await.unwrap();
                answer
            });
            let (sock, _) = listener.accept().await.unwrap();
            // The client's Finished and its first record, most likely in
            // one read.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let mut tls = identity.accept(sock).await.unwrap();
            let mut hello = [0u8; 13];
            tls.read_exact(&mut hello).await.unwrap();
            assert_eq!(&hello, b"hello at once");
            tls.write_all(b"ok").await.unwrap();
            tls.flush().await.unwrap();
            assert_eq!(&client.await.unwrap(), b"ok");
        }
    }

    /// Keys are replaced before they seal more records than the suite
    /// allows (a key update, RFC 8446 4.6.3): both ways, many times over,
    /// with nothing lost.
    #[tokio::test]
    async fn keys_are_updated_when_worn_out() {
        let ((client, mut client_reader), (server, mut server_reader)) = linked().await;
        client.wear_keys_after(3);
        server.wear_keys_after(5);
        let sent = pattern(2 * 1024 * 1024 + 5);
        for (link, reader) in [(&client, &mut server_reader), (&server, &mut client_reader)] {
            let writer = {
                let (link, sent) = (Arc::clone(link), sent.clone());
                tokio::spawn(async move { link.write_all(&sent).await.unwrap() })
            };
            let mut got = vec![0u8; sent.len()];
            reader.read_exact(&mut got).await.unwrap();
            writer.await.unwrap();
            assert!(got == sent);
        }
    }

    /// A writer whose peer does not read stops sealing once a bounded
    /// amount of records waits for the socket, and says how much it took.
    #[tokio::test]
    async fn records_waiting_for_a_full_socket_are_bounded() {
        let ((client, _client_reader), (_server, _server_reader)) = linked().await;
        let huge = vec![1u8; 64 << 20];
        let wrote = client.write_now(&huge, usize::MAX).unwrap();
        assert!(wrote.taken < huge.len(), "{} bytes taken", wrote.taken);
        assert!(!wrote.clear);
        assert!(
            client.unsent() <= link::UNSENT_MAX + link::BATCH,
            "{} bytes wait",
            client.unsent()
        );
        let more = client.write_now(&huge[wrote.taken..], usize::MAX).unwrap();
        assert_eq!(more.taken, 0, "the socket is still full");
    }

    /// The room a burst of large frames took is given back a while after
    /// the burst: an idle link does not hold it for its life.
    #[tokio::test]
    async fn an_idle_link_gives_back_the_room_of_large_frames() {
        let ((client, _), (_server, mut reader)) = linked().await;
        let sent = pattern(8 << 20);
        let writer = {
            let (client, sent) = (Arc::clone(&client), sent.clone());
            tokio::spawn(async move { client.write_all(&sent).await.unwrap() })
        };
        let mut got = vec![0u8; sent.len()];
        reader.read_exact(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(client.write_room() > link::KEEP, "{}", client.write_room());
        assert!(reader.read_room() > 2 * link::KEEP, "{}", reader.read_room());
        tokio::time::sleep(link::KEEP_FOR + std::time::Duration::from_millis(100)).await;
        // A heartbeat's worth each way brings the check round.
        client.write_all(b"ping").await.unwrap();
        let mut ping = [0u8; 4];
        reader.read_exact(&mut ping).await.unwrap();
        assert!(client.write_room() <= link::KEEP, "{}", client.write_room());
        assert!(reader.read_room() <= 2 * link::KEEP, "{}", reader.read_room());
    }

    /// B49: a large frame read through the link costs time linear in its
    /// size. The frame's reader (`read_buf` into a `Vec`'s spare room)
    /// hands every read a fresh `ReadBuf` over the uninitialised rest of
    /// the frame, and a read gives what one read of the socket brought (a
    /// record or a few): a read must initialise only the bytes it fills,
    /// not the whole rest, or an N-byte frame costs about N² / 32 KiB bytes
    /// of zeroing (8 GiB for 16 MiB, a record a read).
    #[tokio::test]
    async fn b49_a_read_initialises_only_the_bytes_it_fills() {
        let ((client, _), (_server, mut reader)) = linked().await;
        let size = 16 << 20;
        let sent: Arc<Vec<u8>> = Arc::new(pattern(size));
        let writer = {
            let (client, sent) = (Arc::clone(&client), Arc::clone(&sent));
            tokio::spawn(async move { client.write_all(&sent).await.unwrap() })
        };
        let mut room = vec![std::mem::MaybeUninit::<u8>::uninit(); size];
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
        let ((client, _), (_server, mut reader)) = linked().await;
        let sent = pattern(200_000);
        client.write_all(&sent).await.unwrap();
        socket2::SockRef::from(client.sock())
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert!(got == sent, "{} of {} bytes", got.len(), sent.len());
    }

    /// The link's records are TLS 1.3 records as rustls's own record layer
    /// writes and reads them: our client against a rustls server that
    /// sends session tickets, asks for a key update mid-stream (which our
    /// writer answers before its next record) and says goodbye; a rustls
    /// client against our server, whose keys are replaced every few
    /// records.
    #[tokio::test]
    async fn the_link_speaks_tls_with_rustls_record_layer() {
        let sent = pattern((1 << 20) + 3);
        // Our client, rustls's server.
        let identity = Identity::generate().unwrap();
        let pin = identity.fingerprint;
        let mut config = (*identity.config).clone();
        config.send_tls13_tickets = 2;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let (sock, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(sock).await.unwrap();
                let mut got = vec![0u8; sent.len()];
                tls.read_exact(&mut got).await.unwrap();
                assert!(got == sent);
                tls.get_mut().1.refresh_traffic_keys().unwrap();
                tls.write_all(&sent).await.unwrap();
                tls.flush().await.unwrap();
                tls.read_exact(&mut got).await.unwrap();
                assert!(got == sent);
                tls.shutdown().await.unwrap();
            })
        };
        let sock = TcpStream::connect(addr).await.unwrap();
        let (link, mut reader) = Connector::new(pin).unwrap().connect(sock).await.unwrap().split();
        link.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        reader.read_exact(&mut got).await.unwrap();
        assert!(got == sent);
        link.write_all(&sent).await.unwrap();
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{} bytes after the goodbye", rest.len());
        server.await.unwrap();

        // rustls's client, our server.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connector = Connector::new(identity.fingerprint).unwrap();
        let rustls_connector = tokio_rustls::TlsConnector::from(Arc::clone(&connector.config));
        let client = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let sock = TcpStream::connect(addr).await.unwrap();
                let name = ServerName::try_from(SERVER_NAME).unwrap();
                let mut tls = rustls_connector.connect(name, sock).await.unwrap();
                let mut got = vec![0u8; sent.len()];
                tls.read_exact(&mut got).await.unwrap();
                assert!(got == sent);
                tls.write_all(&sent).await.unwrap();
                tls.flush().await.unwrap();
                let mut rest = Vec::new();
                tls.read_to_end(&mut rest).await.unwrap();
                assert!(rest.is_empty());
            })
        };
        let (sock, _) = listener.accept().await.unwrap();
        let (link, mut reader) = identity.accept(sock).await.unwrap().split();
        link.wear_keys_after(7);
        link.write_all(&sent).await.unwrap();
        let mut got = vec![0u8; sent.len()];
        reader.read_exact(&mut got).await.unwrap();
        assert!(got == sent);
        link.close().await;
        client.await.unwrap();
    }

    #[tokio::test]
    async fn another_certificate_is_refused_by_its_fingerprint() {
        let (client, server) = pair(Some(Fingerprint([9; 32]))).await;
        let err = client.unwrap_err();
        assert!(err.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()), "{err}");
        let err = describe(&err);
        assert!(err.starts_with("the parent's certificate"), "{err}");
        assert!(err.contains(&Fingerprint([9; 32]).to_string()), "{err}");
        // The server hears why.
        let server = server.unwrap_err().to_string();
        assert!(
            server.contains("BadCertificate") || server.contains("alert"),
            "{server}"
        );
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
        assert!(identity.accept(sock).await.is_err());
        client.await.unwrap();
    }
}
