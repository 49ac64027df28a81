//! WebSocket framing (RFC 6455 §5) without I/O: headers of the frames we send, and an
//! incremental parser of the frames a client sends.
//!
//! Why our own instead of tungstenite's session: every byte the daemon holds for a client must
//! be bounded whatever the client does. The parser keeps no payload but a control frame's or a
//! short command's (at most 125 bytes each: an unfragmented text message such as `clock:…`,
//! see `super::ws`); other data payloads are counted and skipped as they arrive, so a
//! client's messages cost no memory however large they claim to be, and the session decides
//! what to answer (at most one pong and one clock reply, the latest) and when.
#![forbid(unsafe_code)]

/// Opcode of a continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Opcode of a text frame.
pub const OP_TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Opcode of a close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Opcode of a ping frame.
pub const OP_PING: u8 = 0x9;
/// Opcode of a pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;
/// Longest client command (an unfragmented text message the session reads): what a control
/// frame may carry, so the read buffer's bound stays the same.
pub const MAX_COMMAND_LEN: usize = MAX_CONTROL_PAYLOAD;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The header of an unmasked, final server frame: the buffer and how many bytes of it count.
pub fn header(opcode: u8, payload_len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = 0x80 | (opcode & 0x0f);
    if payload_len < 126 {
        h[1] = payload_len as u8;
        (h, 2)
    } else if let Ok(len) = u16::try_from(payload_len) {
        h[1] = 126;
        h[2..4].copy_from_slice(&len.to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        (h, 10)
    }
}

/// A masked frame as a client sends it (RFC 6455 §5.3): `first_byte` is FIN, the RSV bits and
/// the opcode as they go on the wire (`0x80 | OP_PING` for a final ping). For programs that
/// talk to the daemon, and for tests of the parser.
pub fn masked_frame(first_byte: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let (h, n) = header(0, payload.len());
    let mut out = Vec::with_capacity(n + 4 + payload.len());
    out.push(first_byte);
    out.push(h[1] | 0x80);
    out.extend_from_slice(&h[2..n]);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A whole small server frame (control frames): header + payload.
pub fn control_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let (h, n) = header(opcode, payload.len());
    let mut out = Vec::with_capacity(n + payload.len());
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(payload);
    out
}

/// A close frame with `code` and a reason cut to what fits (§5.5.1).
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    control_frame(OP_CLOSE, &payload)
}

/// Something the client sent that the session acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A ping with its payload, to be echoed in a pong.
    Ping(Vec<u8>),
    /// A pong (an answer to our ping, or unsolicited: both count as signs of life).
    Pong,
    /// A close frame with its status code, if it carried one.
    Close(Option<u16>),
    /// A whole, unfragmented text message of at most [`MAX_COMMAND_LEN`] bytes: a command.
    Command(Vec<u8>),
    /// The header of a data frame (text, binary or continuation) whose payload is skipped.
    Data {
        /// Its payload length.
        len: u64,
    },
}

/// Why a client's frames end the session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A frame broke RFC 6455: close with 1002.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// A data message longer than the limit: close with 1009.
    #[error("message of more than {limit} bytes")]
    TooBig {
        /// The limit in bytes.
        limit: u64,
    },
}

/// Parses a client's frames from successive byte slices, keeping only the state between them.
#[derive(Debug)]
pub struct ClientFrames {
    max_message: u64,
    /// Payload bytes of the current data frame still to skip.
    skip: u64,
    /// Bytes of the data message (all its fragments) so far.
    message_len: u64,
    /// A fragmented data message is open (a non-final text/binary frame came).
    in_message: bool,
}

impl ClientFrames {
    /// A parser refusing data messages longer than `max_message` bytes.
    pub fn new(max_message: u64) -> ClientFrames {
        ClientFrames {
            max_message,
            skip: 0,
            message_len: 0,
            in_message: false,
        }
    }

    /// Consumes what it can from the front of `buf`: the bytes consumed and the event they
    /// completed, if any. `(0, None)` means a header or control frame is incomplete: call
    /// again with more bytes (never more than [`MAX_HEADER_LEN`] + 125 are needed).
    pub fn next(&mut self, buf: &[u8]) -> Result<(usize, Option<ClientEvent>), FrameError> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len() as u64);
            self.skip -= n;
            return Ok((n as usize, None));
        }
        if buf.len() < 2 {
            return Ok((0, None));
        }
        let (b0, b1) = (buf[0], buf[1]);
        let fin = b0 & 0x80 != 0;
        if b0 & 0x70 != 0 {
            return Err(FrameError::Protocol("reserved bits set"));
        }
        let opcode = b0 & 0x0f;
        if b1 & 0x80 == 0 {
            return Err(FrameError::Protocol("unmasked client frame"));
        }
        let (len, mut at) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok((0, None));
                };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok((0, None));
                };
                let mut be = [0u8; 8];
                be.copy_from_slice(ext);
                let len = u64::from_be_bytes(be);
                if len >> 63 != 0 {
                    return Err(FrameError::Protocol("frame length with its top bit set"));
                }
                (len, 10)
            }
            short => (u64::from(short), 2),
        };
        let Some(mask) = buf.get(at..at + 4) else {
            return Ok((0, None));
        };
        let mask = [mask[0], mask[1], mask[2], mask[3]];
        at += 4;
        match opcode {
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err(FrameError::Protocol("fragmented control frame"));
                }
                if len > MAX_CONTROL_PAYLOAD as u64 {
                    return Err(FrameError::Protocol("control frame longer than 125 bytes"));
                }
                let end = at + len as usize;
                let Some(masked) = buf.get(at..end) else {
                    return Ok((0, None));
                };
                let payload = unmask(masked, mask);
                let event = match opcode {
                    OP_PING => ClientEvent::Ping(payload),
                    OP_PONG => ClientEvent::Pong,
                    _ => ClientEvent::Close(close_code(&payload)?),
                };
                Ok((end, Some(event)))
            }
            OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                match (opcode, self.in_message) {
                    (OP_CONTINUATION, false) => {
                        return Err(FrameError::Protocol("continuation without a message"))
                    }
                    (OP_TEXT | OP_BINARY, true) => {
                        return Err(FrameError::Protocol("new message inside a fragmented one"))
                    }
                    (OP_TEXT | OP_BINARY, false) => self.message_len = 0,
                    _ => {}
                }
                self.message_len = self.message_len.saturating_add(len);
                if self.message_len > self.max_message {
                    return Err(FrameError::TooBig {
                        limit: self.max_message,
                    });
                }
                if opcode == OP_TEXT && fin && len <= MAX_COMMAND_LEN as u64 {
                    let end = at + len as usize;
                    let Some(masked) = buf.get(at..end) else {
                        return Ok((0, None));
                    };
                    return Ok((end, Some(ClientEvent::Command(unmask(masked, mask)))));
                }
                self.in_message = !fin;
                self.skip = len;
                Ok((at, Some(ClientEvent::Data { len })))
            }
            _ => Err(FrameError::Protocol("unknown opcode")),
        }
    }
}

fn unmask(masked: &[u8], mask: [u8; 4]) -> Vec<u8> {
    masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ mask[i % 4])
        .collect()
}

/// The status code of a close frame's payload, checked as §7.4 asks.
fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::Protocol("close frame with a one-byte payload")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::Protocol("close reason is not UTF-8"));
            }
            Ok(Some(code))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame, as a browser would send it.
    fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        masked_frame(b0, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    /// Feeds `bytes` in pieces of `step`, as reads would deliver them; the events in order.
    fn parse_all(
        parser: &mut ClientFrames,
        bytes: &[u8],
        step: usize,
    ) -> Result<Vec<ClientEvent>, FrameError> {
        let mut pending: Vec<u8> = Vec::new();
        let mut events = Vec::new();
        for piece in bytes.chunks(step) {
            pending.extend_from_slice(piece);
            loop {
                let (n, event) = parser.next(&pending)?;
                pending.drain(..n);
                events.extend(event);
                if n == 0 {
                    break;
                }
            }
        }
        Ok(events)
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        assert_eq!(header(OP_TEXT, 5).1, 2);
        assert_eq!(&header(OP_TEXT, 5).0[..2], &[0x81, 5]);
        let (h, n) = header(OP_BINARY, 300);
        assert_eq!(&h[..n], &[0x82, 126, 1, 44]);
        let (h, n) = header(OP_BINARY, 70_000);
        assert_eq!(&h[..n], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
    }

    #[test]
    fn server_frames_parse_back_with_tungstenite() {
        use tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 125, 126, 65_535, 65_536, 200_000] {
            let (h, n) = header(OP_BINARY, len);
            let mut cursor = std::io::Cursor::new(h[..n].to_vec());
            let (parsed, payload_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(parsed.is_final);
            assert_eq!(payload_len, len as u64, "length {len}");
        }
    }

    #[test]
    fn pings_pongs_commands_and_closes_are_read_in_any_split() {
        let mut bytes = client_frame(0x89, b"hello");
        bytes.extend(client_frame(0x8A, b""));
        bytes.extend(client_frame(0x82, &[7; 300]));
        bytes.extend(client_frame(0x81, b"clock:1712.5"));
        // Long or fragmented text is not a command: skipped like any data.
        bytes.extend(client_frame(0x81, &[b'a'; 126]));
        bytes.extend(client_frame(0x01, b"key"));
        bytes.extend(client_frame(0x80, b"frame"));
        bytes.extend(client_frame(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        for step in [1, 2, 3, 7, 64, 4096] {
            let events = parse_all(&mut ClientFrames::new(1 << 16), &bytes, step).unwrap();
            assert_eq!(
                events,
                vec![
                    ClientEvent::Ping(b"hello".to_vec()),
                    ClientEvent::Pong,
                    ClientEvent::Data { len: 300 },
                    ClientEvent::Command(b"clock:1712.5".to_vec()),
                    ClientEvent::Data { len: 126 },
                    ClientEvent::Data { len: 3 },
                    ClientEvent::Data { len: 5 },
                    ClientEvent::Close(Some(1000)),
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_its_payload_arrives() {
        let frame = client_frame(0x82, &vec![0; 70_000]);
        let mut parser = ClientFrames::new(65_536);
        // The header alone decides: the payload is never buffered.
        assert_eq!(
            parser.next(&frame[..14]),
            Err(FrameError::TooBig { limit: 65_536 })
        );
    }

    #[test]
    fn fragments_count_towards_one_message() {
        let mut bytes = client_frame(0x01, &[b'a'; 40_000]);
        bytes.extend(client_frame(0x00, &[b'a'; 40_000]));
        assert_eq!(
            parse_all(&mut ClientFrames::new(65_536), &bytes, 1000),
            Err(FrameError::TooBig { limit: 65_536 })
        );
        // The same bytes in two separate messages are fine.
        let mut two = client_frame(0x81, &[b'a'; 40_000]);
        two.extend(client_frame(0x81, &[b'a'; 40_000]));
        assert_eq!(
            parse_all(&mut ClientFrames::new(65_536), &two, 1000)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn broken_frames_are_protocol_errors() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0x82, 0x00], "unmasked client frame"),
            (client_frame(0xC2, b"x"), "reserved bits set"),
            (client_frame(0x83, b"x"), "unknown opcode"),
            (client_frame(0x09, b"x"), "fragmented control frame"),
            (
                client_frame(0x89, &[0; 126]),
                "control frame longer than 125 bytes",
            ),
            (client_frame(0x80, b"x"), "continuation without a message"),
            (
                client_frame(0x88, &[3]),
                "close frame with a one-byte payload",
            ),
            (client_frame(0x88, &[0x03, 0xed]), "invalid close code"),
            (
                client_frame(0x88, &[0x03, 0xe8, 0xff]),
                "close reason is not UTF-8",
            ),
        ];
        for (bytes, why) in cases {
            assert_eq!(
                parse_all(&mut ClientFrames::new(1 << 16), &bytes, 4096),
                Err(FrameError::Protocol(why))
            );
        }
        let mut nested = client_frame(0x01, b"a");
        nested.extend(client_frame(0x81, b"b"));
        assert_eq!(
            parse_all(&mut ClientFrames::new(1 << 16), &nested, 4096),
            Err(FrameError::Protocol("new message inside a fragmented one"))
        );
    }

    #[test]
    fn close_frames_keep_their_reason_within_125_bytes() {
        let frame = close_frame(1009, &"é".repeat(100));
        assert!(frame.len() <= 2 + MAX_CONTROL_PAYLOAD);
        assert_eq!(&frame[..4], &[0x88, frame.len() as u8 - 2, 0x03, 0xf1]);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
