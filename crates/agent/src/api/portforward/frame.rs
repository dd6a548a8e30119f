//! SPDY/3.1 framing: the frames `kubectl port-forward` and kubelet exchange, decoded from
//! and encoded to bytes, with the header-block compression SPDY/3 prescribes (one zlib
//! stream per direction for the whole session, primed with the spec's dictionary, each
//! block ending on a sync flush).
//!
//! Pure apart from the zlib state: no I/O here, so every frame type is tested by a round
//! trip below. The session (`session.rs`) owns one [`Decoder`] and one [`Encoder`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

pub const SPDY_VERSION: u16 = 3;
/// Every frame starts with 8 bytes: control bit + version + type (or stream id), flags,
/// 24-bit length.
const FRAME_HEADER_LEN: usize = 8;
/// The largest payload a 24-bit length can describe.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// A decompressed header block larger than this is refused (a bomb, not headers).
const MAX_HEADER_BLOCK: usize = 1 << 20;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status codes used by this server.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
pub const RST_FLOW_CONTROL_ERROR: u32 = 7;

/// SETTINGS id of the initial per-stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// SPDY/3.1's initial stream and session window.
pub const DEFAULT_WINDOW: u32 = 64 * 1024;

/// Header names (lowercase on the wire) and values (several values joined by NUL).
pub type Headers = Vec<(String, String)>;

/// The first value of header `name` (names compared without case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        settings: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type SPDY/3.1 does not define (the spec says to ignore it).
    UnknownControl {
        frame_type: u16,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("SPDY version {0} is not supported (only 3)")]
    Version(u16),
    #[error("{frame} frame: {len} payload bytes are too few")]
    Short { frame: &'static str, len: usize },
    #[error("{frame} frame: {message}")]
    Invalid {
        frame: &'static str,
        message: String,
    },
    #[error("header block: {0}")]
    HeaderBlock(String),
    #[error("header compression: {0}")]
    Compression(String),
}

/// Takes whole frames off the front of the bytes read so far.
pub struct Decoder {
    inflater: HeaderInflater,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder {
            inflater: HeaderInflater::new(),
        }
    }

    /// The next frame, if `buf` holds a whole one (it is then removed from `buf`).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if buf.len() < FRAME_HEADER_LEN + len {
            return Ok(None);
        }
        let mut head = buf.split_to(FRAME_HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        let first = head.get_u32();
        let flags = head.get_u8();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != SPDY_VERSION {
            return Err(FrameError::Version(version));
        }
        self.control((first & 0xffff) as u16, flags, payload)
            .map(Some)
    }

    fn control(&mut self, frame_type: u16, flags: u8, mut p: Bytes) -> Result<Frame, FrameError> {
        let fin = flags & FLAG_FIN != 0;
        Ok(match frame_type {
            TYPE_SYN_STREAM => {
                need(&p, 10, "SYN_STREAM")?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                let associated_to = p.get_u32() & 0x7fff_ffff;
                let priority = p.get_u8() >> 5;
                let _credential_slot = p.get_u8();
                nonzero(stream_id, "SYN_STREAM")?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers(&p)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                let name = if frame_type == TYPE_SYN_REPLY {
                    "SYN_REPLY"
                } else {
                    "HEADERS"
                };
                need(&p, 4, name)?;
                let stream_id = p.get_u32() & 0x7fff_ffff;
                nonzero(stream_id, name)?;
                let headers = self.headers(&p)?;
                if frame_type == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&p, 8, "RST_STREAM")?;
                Frame::RstStream {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    status: p.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&p, 4, "SETTINGS")?;
                let count = p.get_u32() as usize;
                if p.len() / 8 < count {
                    return Err(FrameError::Invalid {
                        frame: "SETTINGS",
                        message: format!("{count} entries announced, room for {}", p.len() / 8),
                    });
                }
                let settings = (0..count)
                    .map(|_| {
                        let flags_and_id = p.get_u32();
                        Setting {
                            flags: (flags_and_id >> 24) as u8,
                            id: flags_and_id & 0x00ff_ffff,
                            value: p.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    settings,
                }
            }
            TYPE_PING => {
                need(&p, 4, "PING")?;
                Frame::Ping { id: p.get_u32() }
            }
            TYPE_GOAWAY => {
                need(&p, 4, "GOAWAY")?;
                let last_good_stream_id = p.get_u32() & 0x7fff_ffff;
                // SPDY/2 peers omit the status.
                let status = if p.len() >= 4 { p.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&p, 8, "WINDOW_UPDATE")?;
                Frame::WindowUpdate {
                    stream_id: p.get_u32() & 0x7fff_ffff,
                    delta: p.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::UnknownControl { frame_type: other },
        })
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let block = self.inflater.inflate(compressed)?;
        parse_header_block(&block)
    }
}

fn need(p: &Bytes, n: usize, frame: &'static str) -> Result<(), FrameError> {
    if p.len() < n {
        return Err(FrameError::Short {
            frame,
            len: p.len(),
        });
    }
    Ok(())
}

fn nonzero(stream_id: u32, frame: &'static str) -> Result<(), FrameError> {
    if stream_id == 0 {
        return Err(FrameError::Invalid {
            frame,
            message: "stream id 0".into(),
        });
    }
    Ok(())
}

/// Turns frames into bytes.
pub struct Encoder {
    deflater: HeaderDeflater,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        Encoder {
            deflater: HeaderDeflater::new(),
        }
    }

    /// Appends `frame` to `out`. Data longer than [`MAX_PAYLOAD`] is the caller's to split.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        let fin_flag = |fin: bool| if fin { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_PAYLOAD {
                    return Err(FrameError::Invalid {
                        frame: "DATA",
                        message: format!("{} bytes do not fit one frame", data.len()),
                    });
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                put_flags_and_length(out, fin_flag(*fin), data.len());
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let block = self.deflater.deflate(&header_block(headers))?;
                let flags = fin_flag(*fin)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                put_control_header(out, TYPE_SYN_STREAM, flags, 10 + block.len());
                out.put_u32(*stream_id);
                out.put_u32(*associated_to);
                out.put_u8(priority << 5);
                out.put_u8(0);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            }
            | Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let frame_type = if matches!(frame, Frame::SynReply { .. }) {
                    TYPE_SYN_REPLY
                } else {
                    TYPE_HEADERS
                };
                let block = self.deflater.deflate(&header_block(headers))?;
                put_control_header(out, frame_type, fin_flag(*fin), 4 + block.len());
                out.put_u32(*stream_id);
                out.put_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                put_control_header(out, TYPE_RST_STREAM, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Settings { clear, settings } => {
                let flags = if *clear { FLAG_CLEAR_SETTINGS } else { 0 };
                put_control_header(out, TYPE_SETTINGS, flags, 4 + 8 * settings.len());
                out.put_u32(settings.len() as u32);
                for s in settings {
                    out.put_u32((u32::from(s.flags) << 24) | (s.id & 0x00ff_ffff));
                    out.put_u32(s.value);
                }
            }
            Frame::Ping { id } => {
                put_control_header(out, TYPE_PING, 0, 4);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                put_control_header(out, TYPE_GOAWAY, 0, 8);
                out.put_u32(*last_good_stream_id);
                out.put_u32(*status);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                put_control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
                out.put_u32(*stream_id);
                out.put_u32(*delta);
            }
            Frame::UnknownControl { frame_type } => {
                return Err(FrameError::Invalid {
                    frame: "control",
                    message: format!("type {frame_type} cannot be sent"),
                })
            }
        }
        Ok(())
    }
}

fn put_control_header(out: &mut BytesMut, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | SPDY_VERSION);
    out.put_u16(frame_type);
    put_flags_and_length(out, flags, len);
}

fn put_flags_and_length(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0x00ff_ffff));
}

/// The uncompressed name/value block: a count, then length-prefixed names and values.
fn header_block(headers: &Headers) -> Vec<u8> {
    let mut b = Vec::new();
    b.put_u32(headers.len() as u32);
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        b.put_u32(name.len() as u32);
        b.put_slice(name.as_bytes());
        b.put_u32(value.len() as u32);
        b.put_slice(value.as_bytes());
    }
    b
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(b: &mut &'a [u8], what: &str) -> Result<&'a [u8], FrameError> {
        if b.len() < 4 {
            return Err(FrameError::HeaderBlock(format!(
                "truncated before the {what} length"
            )));
        }
        let len = b.get_u32() as usize;
        if b.len() < len {
            return Err(FrameError::HeaderBlock(format!(
                "{what} of {len} bytes runs past the block"
            )));
        }
        let (field, rest) = b.split_at(len);
        *b = rest;
        Ok(field)
    }
    if b.len() < 4 {
        return Err(FrameError::HeaderBlock("no pair count".into()));
    }
    let count = b.get_u32() as usize;
    let mut headers = Headers::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take(&mut b, "name")?;
        let value = take(&mut b, "value")?;
        let text = |v: &[u8], what: &str| {
            String::from_utf8(v.to_vec())
                .map_err(|_| FrameError::HeaderBlock(format!("{what} is not UTF-8")))
        };
        headers.push((
            text(name, "a name")?.to_ascii_lowercase(),
            text(value, "a value")?,
        ));
    }
    Ok(headers)
}

/// The receiving half of header compression: one inflate stream for the whole session.
struct HeaderInflater {
    zlib: Decompress,
}

impl HeaderInflater {
    fn new() -> HeaderInflater {
        HeaderInflater {
            zlib: Decompress::new(true),
        }
    }

    fn inflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(input.len() * 4 + 256);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let (in_before, out_before) = (self.zlib.total_in(), out.len());
            let result = self
                .zlib
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = (self.zlib.total_in() - in_before) as usize;
            input = &input[consumed..];
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {
                    let room_left = out.len() < out.capacity();
                    if input.is_empty() && room_left {
                        break;
                    }
                    if consumed == 0 && out.len() == out_before && room_left {
                        return Err(FrameError::Compression(
                            "the compressed block ends in the middle".into(),
                        ));
                    }
                }
                // The stream's header names the preset dictionary: supply it and go on.
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib.set_dictionary(&dictionary()).map_err(|e| {
                        FrameError::Compression(format!("setting the dictionary: {e}"))
                    })?;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlock(format!(
                    "larger than {MAX_HEADER_BLOCK} bytes"
                )));
            }
        }
        Ok(out)
    }
}

/// The sending half of header compression.
struct HeaderDeflater {
    zlib: Compress,
    primed: bool,
}

impl HeaderDeflater {
    fn new() -> HeaderDeflater {
        HeaderDeflater {
            zlib: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    fn deflate(&mut self, mut input: &[u8]) -> Result<Vec<u8>, FrameError> {
        if !self.primed {
            self.zlib
                .set_dictionary(&dictionary())
                .map_err(|e| FrameError::Compression(format!("setting the dictionary: {e}")))?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(input.len() + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(1024);
            }
            let in_before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            input = &input[(self.zlib.total_in() - in_before) as usize..];
            // A sync flush is complete once it leaves output room unused.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Length-prefixed words of the SPDY/3 header dictionary (draft 3, section 2.6.10.1).
const DICTIONARY_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed tail: status codes and phrases, dates, common values.
const DICTIONARY_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information",
    "204 No Content",
    "301 Moved Permanently",
    "400 Bad Request",
    "401 Unauthorized",
    "403 Forbidden",
    "404 Not Found",
    "500 Internal Server Error",
    "501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
    " 00:00:00",
    " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
    "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header compression dictionary (1423 bytes).
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        d.put_u32(word.len() as u32);
        d.put_slice(word.as_bytes());
    }
    d.put_slice(DICTIONARY_TAIL.as_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_dictionary_is_the_specs() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(d.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn every_frame_survives_a_round_trip() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                fin: false,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                headers: h(&[("x", "a\0b")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                clear: true,
                settings: vec![Setting {
                    flags: 1,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 32768,
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.0\r\n\r\n"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
        ];
        // One encoder and one decoder for all: header compression state carries across.
        let (mut enc, mut dec) = (Encoder::new(), Decoder::new());
        let mut wire = BytesMut::new();
        for f in &frames {
            enc.encode(f, &mut wire).expect("encode");
        }
        let mut decoded = Vec::new();
        while let Some(f) = dec.decode(&mut wire).expect("decode") {
            decoded.push(f);
        }
        assert_eq!(decoded, frames);
        assert!(wire.is_empty());
    }

    #[test]
    fn waits_for_whole_frames() {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        let ping = Frame::Ping { id: 1 };
        enc.encode(&ping, &mut wire).expect("encode");
        let whole = wire.split().freeze();
        let mut dec = Decoder::new();
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            assert_eq!(
                dec.decode(&mut buf).expect("decode"),
                None,
                "after {i} bytes"
            );
            buf.put_u8(*byte);
        }
        assert_eq!(dec.decode(&mut buf).expect("decode"), Some(ping));
    }

    #[test]
    fn wire_layout_matches_the_spec() {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        enc.encode(
            &Frame::Data {
                stream_id: 5,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            &mut wire,
        )
        .expect("encode");
        assert_eq!(&wire[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
        wire.clear();
        enc.encode(
            &Frame::RstStream {
                stream_id: 5,
                status: RST_REFUSED_STREAM,
            },
            &mut wire,
        )
        .expect("encode");
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 3]
        );
    }

    #[test]
    fn header_blocks_name_the_dictionary() {
        // zlib header with FDICT set, then the dictionary's Adler-32.
        let mut deflater = HeaderDeflater::new();
        let block = deflater
            .deflate(&header_block(&Headers::new()))
            .expect("deflate");
        assert_eq!(block[1] & 0x20, 0x20, "FDICT");
        let mut fresh = Decompress::new(true);
        let err = fresh
            .decompress_vec(&block, &mut Vec::with_capacity(64), FlushDecompress::Sync)
            .expect_err("needs the dictionary");
        let want = u32::from_be_bytes([block[2], block[3], block[4], block[5]]);
        assert_eq!(err.needs_dictionary(), Some(want));
    }

    #[test]
    fn refuses_bad_input() {
        let mut dec = Decoder::new();
        // Version 2.
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert_eq!(dec.decode(&mut buf), Err(FrameError::Version(2)));
        // A PING too short.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 1][..]);
        assert!(matches!(
            dec.decode(&mut buf),
            Err(FrameError::Short { .. })
        ));
        // An unknown control type is passed up to be ignored.
        let mut buf = BytesMut::from(&[0x80, 3, 0, 0x20, 0, 0, 0, 0][..]);
        assert_eq!(
            dec.decode(&mut buf),
            Ok(Some(Frame::UnknownControl { frame_type: 0x20 }))
        );
        // A header block whose value runs past its end.
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 1, b'a', 0, 0, 0, 9, b'x']).is_err());
    }

    #[test]
    fn header_lookup_ignores_case_and_takes_the_first_value() {
        let hs = h(&[("streamtype", "data"), ("port", "80\081")]);
        assert_eq!(header(&hs, "streamType"), Some("data"));
        assert_eq!(header(&hs, "port"), Some("80"));
        assert_eq!(header(&hs, "requestid"), None);
    }
}
