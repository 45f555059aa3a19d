//! The TLS handshake of a link, made by rustls (its unbuffered API) over
//! the link's non-blocking socket; then rustls hands over the traffic keys
//! and keeps only the key schedule, for key updates.

use std::io;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use tokio::net::TcpStream;

use super::record::handshake_record;

/// One side of a handshake under way.
pub(super) trait Side: Sized {
    type Data;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// The traffic keys and the key schedule, once the handshake is done.
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Client(kernel)))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Kernel::Server(kernel)))
    }
}

/// rustls's key schedule of an established link: new traffic keys on a key
/// update.
pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
}

impl Kernel {
    pub(super) fn suite(&self) -> SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }

    pub(super) fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }

    pub(super) fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }

    /// A session ticket from the server (which this link's servers never
    /// send: taken, and never used).
    pub(super) fn new_session_ticket(&mut self, payload: &[u8]) -> Result<(), rustls::Error> {
        match self {
            Kernel::Client(k) => k.handle_new_session_ticket(payload),
            Kernel::Server(_) => Err(rustls::Error::General("a session ticket sent to the server".into())),
        }
    }
}

/// What the handshake left: the keys, the key schedule, and what the peer
/// sent after its last handshake record (the first protected records).
pub(super) struct Done {
    pub(super) secrets: ExtractedSecrets,
    pub(super) kernel: Kernel,
    pub(super) read_ahead: Vec<u8>,
}

/// A TLS error as an I/O error that still carries it (to tell a peer's
/// verdict from a broken connection, and to describe a pin mismatch).
pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Makes the handshake of `conn` over `sock`.
///
/// rustls is handed one whole record more each time it asks for more, never
/// all that was read: records the peer sends right after its last handshake
/// record (a runner's proof, say) are protected under the traffic keys and
/// are left for the link's reader, not taken by rustls.
pub(super) async fn drive<S: Side>(sock: &TcpStream, mut conn: S) -> io::Result<Done> {
    let mut incoming: Vec<u8> = Vec::with_capacity(16 * 1024);
    // How much of `incoming` rustls has been shown: whole records only.
    let mut shown = 0;
    let mut outgoing: Vec<u8> = Vec::new();
    loop {
        let status = conn.process(&mut incoming[..shown]);
        let discard = status.discard;
        let step = match status.state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                let at = outgoing.len();
                outgoing.resize(at + 16 * 1024, 0);
                let written = loop {
                    match data.encode(&mut outgoing[at..]) {
                        Ok(n) => break n,
                        Err(EncodeError::InsufficientSize(need)) => outgoing.resize(at + need.required_size, 0),
                        Err(EncodeError::AlreadyEncoded) => break 0,
                    }
                };
                outgoing.truncate(at + written);
                Step::Again
            }
            Ok(ConnectionState::TransmitTlsData(data)) => {
                write_all(sock, &outgoing).await?;
                outgoing.clear();
                data.done();
                Step::Again
            }
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Step::Fail(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the TLS handshake",
            )),
            Ok(state) => Step::Fail(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected during the TLS handshake: {state:?}"),
            )),
            Err(e) => Step::Fail(tls_error(e)),
        };
        incoming.drain(..discard);
        shown -= discard;
        match step {
            Step::Again => {}
            Step::Read => {
                // The next whole record, read from the socket if need be.
                loop {
                    if let Some(len) = handshake_record(&incoming[shown..]).filter(|len| *len > 0) {
                        shown += len;
                        break;
                    }
                    sock.readable().await?;
                    match sock.try_read_buf(&mut incoming) {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the peer closed the connection during the TLS handshake",
                            ));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Step::Done => {
                let (secrets, kernel) = conn.into_kernel().map_err(tls_error)?;
                return Ok(Done {
                    secrets,
                    kernel,
                    read_ahead: incoming,
                });
            }
            Step::Fail(e) => {
                // Tell the peer why, when rustls has an alert to send.
                if let Ok(ConnectionState::EncodeTlsData(mut data)) = conn.process(&mut []).state {
                    let mut alert = vec![0; 1024];
                    if let Ok(n) = data.encode(&mut alert) {
                        let _ = sock.try_write(&alert[..n]);
                    }
                }
                return Err(e);
            }
        }
    }
}

enum Step {
    Again,
    Read,
    Done,
    Fail(io::Error),
}

async fn write_all(sock: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match sock.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable().await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
