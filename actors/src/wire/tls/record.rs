//! TLS 1.3 record protection (RFC 8446, section 5) for an established link.
//!
//! rustls makes the handshake and keeps the key schedule; the records of
//! the link itself are sealed and opened here, with the traffic keys rustls
//! hands over. That is what lets a record be sealed straight into the
//! buffer that goes to the socket, and opened where it was read, with
//! sending and receiving under separate keys and locks (see
//! [`TlsLink`](super::TlsLink) for why).
//!
//! Every record on the wire is an `application_data` record; inside, its
//! real type follows the content. The nonce is the traffic IV XORed with
//! the record's sequence number, the additional data the record's header.
//!
//! The AEAD is aws-lc-rs's, not *ring*'s (which makes the handshake), for
//! two reasons that each showed in the link's cost against plain TCP:
//! aws-lc seals and opens out of place (a record is sealed from the
//! plaintext where it lies into the buffer for the socket, and opened from
//! the read buffer into the reader's; *ring* works in place only, which
//! costs a copy of every byte on each side), and its AES-GCM uses AVX-512
//! where there is some (19.6 GB/s for AES-128-GCM on 16 KiB records here,
//! against *ring*'s 12.5 with AVX2). It builds with the C compiler *ring*
//! needs already: no CMake, no NASM.

use std::io;
use std::ops::Range;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::ConnectionTrafficSecrets;

/// A record's header: type, legacy version, length.
pub(super) const HEADER: usize = 5;
/// The most plaintext one record carries (2^14 bytes).
pub(super) const MAX_PLAIN: usize = 16 * 1024;
/// The longest encrypted part of a record a peer may send (RFC 8446,
/// 5.2: 2^14 + 256).
const MAX_SEALED: usize = MAX_PLAIN + 256;
/// The AEAD tag's length (all three TLS 1.3 AEADs).
const TAG: usize = 16;

/// Content types (RFC 8446, appendix B.1).
pub(super) const ALERT: u8 = 21;
pub(super) const HANDSHAKE: u8 = 22;
pub(super) const APPLICATION_DATA: u8 = 23;

/// A handshake message's type: `key_update` (RFC 8446, 4.6.3).
pub(super) const KEY_UPDATE: u8 = 24;
/// A handshake message's type: `new_session_ticket` (RFC 8446, 4.6.1).
pub(super) const NEW_SESSION_TICKET: u8 = 4;

/// The key, IV and sequence number of one direction.
pub(super) struct Keys {
    key: LessSafeKey,
    iv: [u8; aead::NONCE_LEN],
    seq: u64,
    /// How many records these keys may seal before they are replaced (the
    /// suite's confidentiality limit).
    limit: u64,
}

impl Keys {
    /// The keys rustls derived, from record `seq` on.
    pub(super) fn new(seq: u64, secrets: ConnectionTrafficSecrets, limit: u64) -> io::Result<Self> {
        let (algorithm, key, iv) = match &secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (&aead::CHACHA20_POLY1305, key, iv),
            _ => return Err(io::Error::other("a TLS cipher suite the link does not support")),
        };
        let key =
            UnboundKey::new(algorithm, key.as_ref()).map_err(|_| io::Error::other("a TLS key of the wrong length"))?;
        let iv = iv
            .as_ref()
            .try_into()
            .map_err(|_| io::Error::other("a TLS IV of the wrong length"))?;
        Ok(Keys {
            key: LessSafeKey::new(key),
            iv,
            seq,
            limit,
        })
    }

    /// These keys have sealed as many records as they may: the next record
    /// must go under new ones.
    pub(super) fn worn_out(&self) -> bool {
        self.seq >= self.limit
    }

    #[cfg(test)]
    pub(super) fn set_limit(&mut self, limit: u64) {
        self.limit = limit;
    }

    /// The next record's nonce; counts the record.
    fn next_nonce(&mut self) -> io::Result<Nonce> {
        let mut nonce = self.iv;
        for (n, s) in nonce[aead::NONCE_LEN - 8..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or_else(|| io::Error::other("TLS record sequence exhausted"))?;
        Ok(Nonce::assume_unique_for_key(nonce))
    }

    /// Seals a record carrying `content` (at most [`MAX_PLAIN`] bytes) of
    /// type `kind` into `out`, which is [`record_len`] of it long: the
    /// content is read where it lies and its ciphertext written in place.
    pub(super) fn seal_into(&mut self, kind: u8, content: &[u8], out: &mut [u8]) -> io::Result<()> {
        debug_assert!(content.len() <= MAX_PLAIN);
        debug_assert_eq!(out.len(), record_len(content.len()));
        let sealed = content.len() + 1 + TAG;
        let header = [APPLICATION_DATA, 3, 3, (sealed >> 8) as u8, sealed as u8];
        out[..HEADER].copy_from_slice(&header);
        let (ciphertext, kind_and_tag) = out[HEADER..].split_at_mut(content.len());
        let nonce = self.next_nonce()?;
        self.key
            .seal_out_of_place_scatter(nonce, Aad::from(header), content, ciphertext, &[kind], kind_and_tag)
            .map_err(|_| io::Error::other("TLS record sealing failed"))
    }

    /// Opens the whole record `record` (header included) where it lies:
    /// its real type, and where in `record` its content now is.
    pub(super) fn open(&mut self, record: &mut [u8]) -> io::Result<(u8, Range<usize>)> {
        let header: [u8; HEADER] = record[..HEADER].try_into().expect("a whole record");
        let nonce = self.next_nonce()?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(header), &mut record[HEADER..])
            .map_err(|_| bad_record_mac())?;
        let (kind, len) = inner_type(plain)?;
        Ok((kind, HEADER..HEADER + len))
    }

    /// Opens the whole record `record` (header included) into `out`, which
    /// is [`inner_len`] of it long: its real type, and the length of its
    /// content, at the start of `out`. The record stays as it was.
    pub(super) fn open_into(&mut self, record: &[u8], out: &mut [u8]) -> io::Result<(u8, usize)> {
        let (header, sealed) = record.split_at(HEADER);
        let (ciphertext, tag) = sealed.split_at(sealed.len() - TAG);
        let nonce = self.next_nonce()?;
        self.key
            .open_separate_gather(nonce, Aad::from(header), ciphertext, tag, out)
            .map_err(|_| bad_record_mac())?;
        inner_type(out)
    }
}

/// A record's inner plaintext: its real type (the last byte that is not
/// padding), and its content's length.
fn inner_type(plain: &[u8]) -> io::Result<(u8, usize)> {
    match plain.iter().rposition(|b| *b != 0) {
        Some(end) => Ok((plain[end], end)),
        None => Err(invalid("a TLS record without a content type")),
    }
}

fn bad_record_mac() -> io::Error {
    invalid("a TLS record that does not decrypt (bad_record_mac)")
}

/// The length on the wire of a record carrying `content` bytes.
pub(super) const fn record_len(content: usize) -> usize {
    HEADER + content + 1 + TAG
}

/// The length of the inner plaintext (content, type, padding) of the whole
/// record `record`.
pub(super) fn inner_len(record: &[u8]) -> usize {
    record.len() - HEADER - TAG
}

/// The length of the record at the start of `buf`, once all of it is
/// there; `None` while it is not.
pub(super) fn whole_record(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(header) = buf.get(..HEADER) else {
        return Ok(None);
    };
    if header[0] != APPLICATION_DATA {
        return Err(invalid("an unprotected TLS record after the handshake"));
    }
    let sealed = u16::from_be_bytes([header[3], header[4]]) as usize;
    if !(1 + TAG..=MAX_SEALED).contains(&sealed) {
        return Err(invalid("a TLS record of an impossible length"));
    }
    Ok((buf.len() >= HEADER + sealed).then_some(HEADER + sealed))
}

/// How much of `buf` to show rustls during the handshake: the record at
/// its start, protected or not, once all of it is there; or all of `buf`
/// when that is no TLS record (for rustls to refuse, not to wait for).
pub(super) fn handshake_record(buf: &[u8]) -> Option<usize> {
    let plausible = |kind: &u8| (20..=23).contains(kind);
    match buf {
        [kind, ..] if !plausible(kind) => Some(buf.len()),
        [_, major, ..] if *major != 3 => Some(buf.len()),
        [_, _, _, high, low, ..] => {
            let sealed = u16::from_be_bytes([*high, *low]) as usize;
            if sealed > MAX_SEALED {
                Some(buf.len())
            } else {
                (buf.len() >= HEADER + sealed).then_some(HEADER + sealed)
            }
        }
        _ => None,
    }
}

pub(super) fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::crypto::cipher::{AeadKey, Iv};

    /// Appends a record to `out`.
    fn seal(keys: &mut Keys, kind: u8, content: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + record_len(content.len()), 0);
        keys.seal_into(kind, content, &mut out[start..]).unwrap();
    }

    fn keys() -> Keys {
        let secrets = ConnectionTrafficSecrets::Aes256Gcm {
            key: AeadKey::from([7; 32]),
            iv: Iv::from([3; 12]),
        };
        Keys::new(0, secrets, u64::MAX).unwrap()
    }

    #[test]
    fn a_sealed_record_opens_with_its_type_and_content() {
        let (mut sealer, mut open) = (keys(), keys());
        let mut wire = Vec::new();
        seal(&mut sealer, APPLICATION_DATA, b"first", &mut wire);
        seal(&mut sealer, ALERT, &[1, 0], &mut wire);
        seal(&mut sealer, APPLICATION_DATA, &[], &mut wire);
        let mut at = 0;
        let mut got = Vec::new();
        while let Some(len) = whole_record(&wire[at..]).unwrap() {
            let record = &mut wire[at..at + len];
            let (kind, content) = open.open(record).unwrap();
            got.push((kind, record[content].to_vec()));
            at += len;
        }
        assert_eq!(at, wire.len());
        assert_eq!(
            got,
            vec![
                (APPLICATION_DATA, b"first".to_vec()),
                (ALERT, vec![1, 0]),
                (APPLICATION_DATA, vec![])
            ]
        );
    }

    #[test]
    fn a_record_opens_into_another_buffer_as_in_place() {
        let (mut sealer, mut open, mut open_into) = (keys(), keys(), keys());
        let mut wire = vec![0u8; record_len(5)];
        sealer.seal_into(APPLICATION_DATA, b"fifth", &mut wire).unwrap();
        let mut out = vec![0u8; inner_len(&wire)];
        assert_eq!(open_into.open_into(&wire, &mut out).unwrap(), (APPLICATION_DATA, 5));
        assert_eq!(&out[..5], b"fifth");
        let (kind, content) = open.open(&mut wire).unwrap();
        assert_eq!((kind, &wire[content]), (APPLICATION_DATA, &b"fifth"[..]));
    }

    #[test]
    fn a_record_out_of_order_or_altered_does_not_open() {
        let (mut sealer, mut open) = (keys(), keys());
        let (mut first, mut second) = (Vec::new(), Vec::new());
        seal(&mut sealer, APPLICATION_DATA, b"one", &mut first);
        seal(&mut sealer, APPLICATION_DATA, b"two", &mut second);
        assert!(
            open.open(&mut second.clone()).is_err(),
            "its sequence number is 1, not 0"
        );
        let mut altered = keys();
        let mut bad = first.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(altered.open(&mut bad).is_err());
        assert_eq!(whole_record(&first[..first.len() - 1]).unwrap(), None);
        let mut plain = first.clone();
        plain[0] = HANDSHAKE;
        assert!(whole_record(&plain).is_err());
    }
}
