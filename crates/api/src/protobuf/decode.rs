//! The walk over protobuf wire data: the `runtime.Unknown` envelope, messages described by
//! the schema table, and the apimachinery types whose JSON form is not an object (Time,
//! Quantity, IntOrString, RawExtension, ...). Strictly proto2 wire format: varint (0),
//! 64-bit (1) and length-delimited (2) fields; groups and 32-bit fields appear in no
//! Kubernetes message and are rejected.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::schema::{Card, Field, Schema, Special, Ty};
use super::ProtobufError;

/// Objects nest this deep at most (messages, plus objects embedded in RawExtensions).
const MAX_DEPTH: u32 = 100;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;

/// A decoding failure below the top-level message: the JSON path is collected on the
/// way out, so the success path never builds it.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Wire {
        path: Vec<&'static str>,
        detail: String,
    },
    /// An embedded protobuf object failed on its own terms.
    Nested(Box<ProtobufError>),
}

impl DecodeError {
    fn new(detail: impl Into<String>) -> Self {
        DecodeError::Wire {
            path: Vec::new(),
            detail: detail.into(),
        }
    }

    fn within(mut self, field: &'static str) -> Self {
        if let DecodeError::Wire { path, .. } = &mut self {
            if !field.is_empty() {
                path.push(field);
            }
        }
        self
    }

    pub fn into_error(self, schema: &Schema, msg: u32) -> ProtobufError {
        match self {
            DecodeError::Nested(e) => *e,
            DecodeError::Wire { mut path, detail } => {
                path.reverse();
                let message = schema
                    .messages
                    .get(msg as usize)
                    .map(|m| m.name)
                    .unwrap_or("?");
                ProtobufError::Malformed {
                    message: message.to_string(),
                    path: path.join("."),
                    detail,
                }
            }
        }
    }
}

type Result<T> = std::result::Result<T, DecodeError>;

/// A cursor over wire data.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| DecodeError::new("truncated varint"))?;
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(DecodeError::new("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(DecodeError::new("varint longer than 10 bytes"))
    }

    /// The next field's number and wire type.
    fn key(&mut self) -> Result<(u32, u8)> {
        let k = self.varint()?;
        let tag = k >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::new(format!("invalid field number {tag}")));
        }
        Ok((tag as u32, (k & 7) as u8))
    }

    fn len_delimited(&mut self) -> Result<&'a [u8]> {
        let n = self.varint()?;
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| DecodeError::new("truncated length-delimited field"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn fixed64(&mut self) -> Result<u64> {
        let end = self.pos + 8;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| DecodeError::new("truncated 64-bit field"))?;
        self.pos = end;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn wire_name(w: u8) -> &'static str {
    match w {
        WIRE_VARINT => "varint",
        WIRE_FIXED64 => "64-bit",
        WIRE_LEN => "length-delimited",
        3 | 4 => "group",
        5 => "32-bit",
        _ => "invalid",
    }
}

fn expect_wire(tag: u32, got: u8, want: u8) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(DecodeError::new(format!(
            "field {tag} has wire type {}, expected {}",
            wire_name(got),
            wire_name(want)
        )))
    }
}

/// The `runtime.Unknown` envelope.
pub(crate) struct Envelope<'a> {
    pub api_version: String,
    pub kind: String,
    pub raw: &'a [u8],
    pub content_encoding: String,
    pub content_type: String,
}

pub(crate) fn envelope(buf: &[u8]) -> std::result::Result<Envelope<'_>, String> {
    let describe = |e: DecodeError| match e {
        DecodeError::Wire { detail, .. } => detail,
        DecodeError::Nested(e) => e.to_string(),
    };
    let mut env = Envelope {
        api_version: String::new(),
        kind: String::new(),
        raw: &[],
        content_encoding: String::new(),
        content_type: String::new(),
    };
    let mut r = Reader::new(buf);
    while !r.done() {
        let (tag, wire) = r.key().map_err(describe)?;
        expect_wire(tag, wire, WIRE_LEN).map_err(describe)?;
        let data = r.len_delimited().map_err(describe)?;
        match tag {
            1 => {
                let mut t = Reader::new(data);
                while !t.done() {
                    let (tag, wire) = t.key().map_err(describe)?;
                    expect_wire(tag, wire, WIRE_LEN).map_err(describe)?;
                    let s = string(t.len_delimited().map_err(describe)?);
                    match tag {
                        1 => env.api_version = s,
                        2 => env.kind = s,
                        _ => return Err(format!("unknown typeMeta field {tag}")),
                    }
                }
            }
            2 => env.raw = data,
            3 => env.content_encoding = string(data),
            4 => env.content_type = string(data),
            _ => return Err(format!("unknown field {tag}")),
        }
    }
    Ok(env)
}

/// Go's protobuf decoder does not check UTF-8 and its JSON encoder replaces invalid
/// sequences with U+FFFD; so does this.
fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub(crate) struct Decoder<'s> {
    pub schema: &'s Schema,
    /// Objects enclosing the current one (see MAX_DEPTH).
    pub depth: u32,
}

impl Decoder<'_> {
    /// Decode the fields of message `msg` into `out` (an object, or the parent object of an
    /// inlined struct). Repeated occurrences of a singular message merge, as in protobuf.
    pub fn message_into(&self, msg: u32, buf: &[u8], out: &mut Map<String, Value>) -> Result<()> {
        if self.depth > MAX_DEPTH {
            return Err(DecodeError::new("objects nested too deeply"));
        }
        let m = &self.schema.messages[msg as usize];
        let deeper = Decoder {
            schema: self.schema,
            depth: self.depth + 1,
        };
        let mut r = Reader::new(buf);
        while !r.done() {
            let (tag, wire) = r.key()?;
            let f = m
                .field(tag)
                .ok_or_else(|| DecodeError::new(format!("unknown field {tag} in {}", m.name)))?;
            deeper
                .field(f, tag, wire, &mut r, out)
                .map_err(|e| e.within(f.json))?;
        }
        Ok(())
    }

    fn field(
        &self,
        f: &Field,
        tag: u32,
        wire: u8,
        r: &mut Reader<'_>,
        out: &mut Map<String, Value>,
    ) -> Result<()> {
        match f.card {
            Card::Single => {
                if let Ty::Message(sub) = f.ty {
                    expect_wire(tag, wire, WIRE_LEN)?;
                    let data = r.len_delimited()?;
                    if self.schema.messages[sub as usize].special == Special::None {
                        let obj = if f.json.is_empty() {
                            out
                        } else {
                            let slot = out
                                .entry(f.json)
                                .or_insert_with(|| Value::Object(Map::new()));
                            if !slot.is_object() {
                                *slot = Value::Object(Map::new());
                            }
                            match slot {
                                Value::Object(o) => o,
                                _ => return Err(DecodeError::new("internal: not an object")),
                            }
                        };
                        return self.message_into(sub, data, obj);
                    }
                    let v = self.special(sub, data)?;
                    out.insert(f.json.to_string(), v);
                    return Ok(());
                }
                let v = self.scalar(f.ty, tag, wire, r)?;
                if f.omit_zero && is_zero(&v) {
                    // Zero means unset for this Go field: upstream's JSON omits it.
                    out.remove(f.json);
                } else {
                    out.insert(f.json.to_string(), v);
                }
            }
            Card::Repeated => {
                let slot = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !slot.is_array() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(items) = slot else {
                    return Err(DecodeError::new("internal: not an array"));
                };
                self.repeated(f.ty, tag, wire, r, items)?;
            }
            Card::Map => {
                expect_wire(tag, wire, WIRE_LEN)?;
                let (k, v) = self.map_entry(f.ty, r.len_delimited()?)?;
                let slot = out
                    .entry(f.json)
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(o) = slot {
                    o.insert(k, v);
                }
            }
        }
        Ok(())
    }

    /// One element of a repeated field, or all of them for a packed scalar field.
    fn repeated(
        &self,
        ty: Ty,
        tag: u32,
        wire: u8,
        r: &mut Reader<'_>,
        items: &mut Vec<Value>,
    ) -> Result<()> {
        let packable = matches!(ty, Ty::Bool | Ty::Int32 | Ty::Int64 | Ty::Double);
        if packable && wire == WIRE_LEN {
            let mut p = Reader::new(r.len_delimited()?);
            let elem_wire = if ty == Ty::Double {
                WIRE_FIXED64
            } else {
                WIRE_VARINT
            };
            while !p.done() {
                items.push(self.scalar(ty, tag, elem_wire, &mut p)?);
            }
            return Ok(());
        }
        items.push(self.value(ty, tag, wire, r)?);
        Ok(())
    }

    /// A map entry {key = 1, value = 2}; either may be absent (proto default).
    fn map_entry(&self, ty: Ty, buf: &[u8]) -> Result<(String, Value)> {
        let mut r = Reader::new(buf);
        let mut key = String::new();
        let mut value = None;
        while !r.done() {
            let (tag, wire) = r.key()?;
            match tag {
                1 => {
                    expect_wire(tag, wire, WIRE_LEN)?;
                    key = string(r.len_delimited()?);
                }
                2 => value = Some(self.value(ty, tag, wire, &mut r)?),
                _ => return Err(DecodeError::new(format!("unknown map entry field {tag}"))),
            }
        }
        let value = match value {
            Some(v) => v,
            None => self.zero(ty)?,
        };
        Ok((key, value))
    }

    /// A map value that was left out: the zero value of its type.
    fn zero(&self, ty: Ty) -> Result<Value> {
        Ok(match ty {
            Ty::String | Ty::Bytes => Value::String(String::new()),
            Ty::Bool => Value::Bool(false),
            Ty::Int32 | Ty::Int64 => Value::from(0),
            Ty::Double => Value::from(0.0),
            Ty::Message(m) => self.message_value(m, &[])?,
        })
    }

    /// A value of any type (messages as their JSON form).
    fn value(&self, ty: Ty, tag: u32, wire: u8, r: &mut Reader<'_>) -> Result<Value> {
        match ty {
            Ty::Message(m) => {
                expect_wire(tag, wire, WIRE_LEN)?;
                self.message_value(m, r.len_delimited()?)
            }
            _ => self.scalar(ty, tag, wire, r),
        }
    }

    fn message_value(&self, m: u32, data: &[u8]) -> Result<Value> {
        if self.schema.messages[m as usize].special == Special::None {
            let mut o = Map::new();
            self.message_into(m, data, &mut o)?;
            Ok(Value::Object(o))
        } else {
            self.special(m, data)
        }
    }

    fn scalar(&self, ty: Ty, tag: u32, wire: u8, r: &mut Reader<'_>) -> Result<Value> {
        Ok(match ty {
            Ty::String => {
                expect_wire(tag, wire, WIRE_LEN)?;
                Value::String(string(r.len_delimited()?))
            }
            Ty::Bytes => {
                expect_wire(tag, wire, WIRE_LEN)?;
                // Go's encoding/json writes []byte as standard padded base64.
                Value::String(base64::engine::general_purpose::STANDARD.encode(r.len_delimited()?))
            }
            Ty::Bool => {
                expect_wire(tag, wire, WIRE_VARINT)?;
                Value::Bool(r.varint()? != 0)
            }
            // Negative int32s travel sign-extended to 64 bits; Go truncates.
            Ty::Int32 => {
                expect_wire(tag, wire, WIRE_VARINT)?;
                Value::from(r.varint()? as i64 as i32)
            }
            Ty::Int64 => {
                expect_wire(tag, wire, WIRE_VARINT)?;
                Value::from(r.varint()? as i64)
            }
            Ty::Double => {
                expect_wire(tag, wire, WIRE_FIXED64)?;
                let f = f64::from_bits(r.fixed64()?);
                Value::Number(Number::from_f64(f).ok_or_else(|| {
                    DecodeError::new(format!("field {tag}: {f} is not a JSON number"))
                })?)
            }
            Ty::Message(_) => return Err(DecodeError::new("internal: message read as a scalar")),
        })
    }

    /// Messages with a non-object JSON form.
    fn special(&self, m: u32, data: &[u8]) -> Result<Value> {
        let msg = &self.schema.messages[m as usize];
        let mut r = Reader::new(data);
        match msg.special {
            Special::Time | Special::MicroTime => {
                // An empty message is Go's zero time, which marshals as null.
                if data.is_empty() {
                    return Ok(Value::Null);
                }
                let (mut secs, mut nanos) = (0i64, 0i64);
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    expect_wire(tag, wire, WIRE_VARINT)?;
                    let v = r.varint()?;
                    match tag {
                        1 => secs = v as i64,
                        2 => nanos = i64::from(v as i64 as i32),
                        _ => {
                            return Err(DecodeError::new(format!(
                                "unknown field {tag} in {}",
                                msg.name
                            )))
                        }
                    }
                }
                Ok(Value::String(format_time(
                    secs,
                    nanos,
                    msg.special == Special::MicroTime,
                )?))
            }
            Special::Duration => {
                let mut nanos = 0i64;
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    if tag != 1 {
                        return Err(DecodeError::new(format!(
                            "unknown field {tag} in {}",
                            msg.name
                        )));
                    }
                    expect_wire(tag, wire, WIRE_VARINT)?;
                    nanos = r.varint()? as i64;
                }
                Ok(Value::String(go_duration(nanos)))
            }
            Special::Quantity => {
                // Go's zero Quantity marshals as "0".
                let mut s = String::from("0");
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    if tag != 1 {
                        return Err(DecodeError::new(format!(
                            "unknown field {tag} in {}",
                            msg.name
                        )));
                    }
                    expect_wire(tag, wire, WIRE_LEN)?;
                    s = string(r.len_delimited()?);
                }
                Ok(Value::String(s))
            }
            Special::IntOrString => {
                let (mut kind, mut int, mut s) = (0i64, 0i32, String::new());
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    match tag {
                        1 | 2 => {
                            expect_wire(tag, wire, WIRE_VARINT)?;
                            let v = r.varint()? as i64;
                            if tag == 1 {
                                kind = v;
                            } else {
                                int = v as i32;
                            }
                        }
                        3 => {
                            expect_wire(tag, wire, WIRE_LEN)?;
                            s = string(r.len_delimited()?);
                        }
                        _ => {
                            return Err(DecodeError::new(format!(
                                "unknown field {tag} in {}",
                                msg.name
                            )))
                        }
                    }
                }
                match kind {
                    0 => Ok(Value::from(int)),
                    1 => Ok(Value::String(s)),
                    k => Err(DecodeError::new(format!(
                        "IntOrString type {k} is neither 0 (int) nor 1 (string)"
                    ))),
                }
            }
            Special::RawJson => {
                let mut raw: Option<&[u8]> = None;
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    if tag != 1 {
                        return Err(DecodeError::new(format!(
                            "unknown field {tag} in {}",
                            msg.name
                        )));
                    }
                    expect_wire(tag, wire, WIRE_LEN)?;
                    raw = Some(r.len_delimited()?);
                }
                match raw {
                    None | Some([]) => Ok(Value::Null),
                    // An object the client encoded as protobuf too.
                    Some(b) if b.starts_with(super::MAGIC) => {
                        super::decode_object(b, self.depth + 1)
                            .map_err(|e| DecodeError::Nested(Box::new(e)))
                    }
                    Some(b) => serde_json::from_slice(b).map_err(|e| {
                        DecodeError::new(format!("embedded JSON in {} is invalid: {e}", msg.name))
                    }),
                }
            }
            Special::Array => {
                let f = msg
                    .field(1)
                    .ok_or_else(|| DecodeError::new("internal: array without items"))?;
                let mut items = Vec::new();
                while !r.done() {
                    let (tag, wire) = r.key()?;
                    if tag != 1 {
                        return Err(DecodeError::new(format!(
                            "unknown field {tag} in {}",
                            msg.name
                        )));
                    }
                    self.repeated(f.ty, tag, wire, &mut r, &mut items)?;
                }
                Ok(Value::Array(items))
            }
            Special::None => self.message_value(m, data),
        }
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

/// meta/v1 Time (`2006-01-02T15:04:05Z`) or MicroTime (`2006-01-02T15:04:05.000000Z`), in
/// UTC. Nanoseconds outside 0..1e9 carry into the seconds, as Go's `time.Unix` does.
fn format_time(secs: i64, nanos: i64, micro: bool) -> Result<String> {
    let secs = secs.checked_add(nanos.div_euclid(1_000_000_000));
    let nanos = nanos.rem_euclid(1_000_000_000) as u32;
    let t = secs
        .and_then(|s| chrono::DateTime::from_timestamp(s, nanos))
        .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| DecodeError::new("timestamp out of range"))?;
    Ok(if micro {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    })
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(crate) fn go_duration(d: i64) -> String {
    // `digits / 10^prec` with the fraction's trailing zeros (and a bare point) dropped.
    fn frac(v: u64, prec: u32) -> (u64, String) {
        let p = 10u64.pow(prec);
        let f = v % p;
        if f == 0 {
            return (v / p, String::new());
        }
        let s = format!("{f:0width$}", width = prec as usize);
        (v / p, format!(".{}", s.trim_end_matches('0')))
    }
    let u = d.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    let sign = if d < 0 { "-" } else { "" };
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (int, f) = frac(u, prec);
        return format!("{sign}{int}{f}{unit}");
    }
    let (secs, f) = frac(u, 9);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}{f}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}{f}s")
    } else {
        format!("{sign}{s}{f}s")
    }
}
