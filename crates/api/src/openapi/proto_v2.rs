//! The protobuf encoding of the Swagger 2.0 document (gnostic's `openapi.v2.Document`,
//! google/gnostic `openapiv2/OpenAPIv2.proto`). client-go fetches `/openapi/v2` only as
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`; kubectl v1.32 needs it for
//! client-side validation of what the v3 check does not cover (files of `kind: List`) and
//! for `explain --output plaintext-openapiv2`. Encoded by hand from the JSON document: the
//! schema is fixed and small, and a code generator would be a heavier dependency.

use serde_json::{Map, Value};

/// Field numbers of the messages used, from OpenAPIv2.proto.
struct Msg(Vec<u8>);

impl Msg {
    fn new() -> Msg {
        Msg(Vec::new())
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// proto3 leaves default values out.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, v: Option<&Value>) {
        for s in v
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            self.bytes(field, s.as_bytes());
        }
    }

    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.key(field, 0);
            self.varint(v as u64);
        }
    }

    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.key(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

fn str_of<'a>(m: &'a Map<String, Value>, k: &str) -> &'a str {
    m.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn bool_of(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

/// `Any { yaml = 2 }`: JSON is YAML, and readers parse the field as YAML.
fn any(v: &Value) -> Msg {
    let mut m = Msg::new();
    m.string(2, &serde_json::to_string(v).unwrap_or_default());
    m
}

/// `repeated NamedAny vendor_extension` for every `x-` key.
fn vendor_extensions(out: &mut Msg, field: u32, m: &Map<String, Value>) {
    for (k, v) in m.iter().filter(|(k, _)| k.starts_with("x-")) {
        let mut named = Msg::new();
        named.string(1, k);
        named.message(2, any(v));
        out.message(field, named);
    }
}

/// `Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let empty = Map::new();
    let d = doc.as_object().unwrap_or(&empty);
    let mut out = Msg::new();
    out.string(1, str_of(d, "swagger"));
    if let Some(info) = d.get("info").and_then(Value::as_object) {
        let mut m = Msg::new();
        m.string(1, str_of(info, "title"));
        m.string(2, str_of(info, "version"));
        out.message(2, m);
    }
    if let Some(paths) = d.get("paths").and_then(Value::as_object) {
        let mut m = Msg::new();
        for (name, item) in paths {
            let mut named = Msg::new();
            named.string(1, name);
            named.message(2, path_item(item.as_object().unwrap_or(&empty)));
            m.message(2, named);
        }
        out.message(8, m);
    }
    if let Some(defs) = d.get("definitions").and_then(Value::as_object) {
        let mut m = Msg::new();
        for (name, s) in defs {
            let mut named = Msg::new();
            named.string(1, name);
            named.message(2, schema(s));
            m.message(1, named);
        }
        out.message(9, m);
    }
    for req in d
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut m = Msg::new();
        for (name, scopes) in req.as_object().into_iter().flatten() {
            let mut named = Msg::new();
            named.string(1, name);
            let mut arr = Msg::new();
            arr.strings(1, Some(scopes));
            named.message(2, arr);
            m.message(1, named);
        }
        out.message(12, m);
    }
    if let Some(defs) = d.get("securityDefinitions").and_then(Value::as_object) {
        let mut m = Msg::new();
        for (name, def) in defs {
            let def = def.as_object().unwrap_or(&empty);
            let mut api_key = Msg::new();
            api_key.string(1, str_of(def, "type"));
            api_key.string(2, str_of(def, "name"));
            api_key.string(3, str_of(def, "in"));
            api_key.string(4, str_of(def, "description"));
            let mut item = Msg::new();
            item.message(2, api_key);
            let mut named = Msg::new();
            named.string(1, name);
            named.message(2, item);
            m.message(1, named);
        }
        out.message(13, m);
    }
    vendor_extensions(&mut out, 16, d);
    out.0
}

fn path_item(p: &Map<String, Value>) -> Msg {
    let mut m = Msg::new();
    for (method, field) in [
        ("get", 2),
        ("put", 3),
        ("post", 4),
        ("delete", 5),
        ("options", 6),
        ("head", 7),
        ("patch", 8),
    ] {
        if let Some(op) = p.get(method).and_then(Value::as_object) {
            m.message(field, operation(op));
        }
    }
    for param in p
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameters_item(param));
    }
    vendor_extensions(&mut m, 10, p);
    m
}

fn operation(op: &Map<String, Value>) -> Msg {
    let mut m = Msg::new();
    m.strings(1, op.get("tags"));
    m.string(2, str_of(op, "summary"));
    m.string(3, str_of(op, "description"));
    m.string(5, str_of(op, "operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    for param in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameters_item(param));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Msg::new();
        for (code, r) in responses {
            let Some(r) = r.as_object() else { continue };
            let mut resp = Msg::new();
            resp.string(1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = Msg::new();
                item.message(1, schema(s));
                resp.message(2, item);
            }
            vendor_extensions(&mut resp, 5, r);
            let mut value = Msg::new();
            value.message(1, resp);
            let mut named = Msg::new();
            named.string(1, code);
            named.message(2, value);
            rs.message(1, named);
        }
        m.message(9, rs);
    }
    m.strings(10, op.get("schemes"));
    m.boolean(11, bool_of(op, "deprecated"));
    vendor_extensions(&mut m, 13, op);
    m
}

/// `ParametersItem { Parameter parameter = 1 }`.
fn parameters_item(p: &Value) -> Msg {
    let empty = Map::new();
    let p = p.as_object().unwrap_or(&empty);
    let mut param = Msg::new();
    match str_of(p, "in") {
        "body" => {
            let mut b = Msg::new();
            b.string(1, str_of(p, "description"));
            b.string(2, str_of(p, "name"));
            b.string(3, "body");
            b.boolean(4, bool_of(p, "required"));
            if let Some(s) = p.get("schema") {
                b.message(5, schema(s));
            }
            vendor_extensions(&mut b, 6, p);
            param.message(1, b);
        }
        location => {
            // Query and path sub-schemas share the head of their layout; query has
            // `allow_empty_value` at 5, which shifts the rest by one.
            let (oneof_field, shift) = match location {
                "query" => (3, 1),
                "path" => (4, 0),
                "header" => (1, 0),
                _ => (2, 1),
            };
            let mut s = Msg::new();
            s.boolean(1, bool_of(p, "required"));
            s.string(2, location);
            s.string(3, str_of(p, "description"));
            s.string(4, str_of(p, "name"));
            s.string(5 + shift, str_of(p, "type"));
            s.string(6 + shift, str_of(p, "format"));
            s.boolean(19 + shift, bool_of(p, "uniqueItems"));
            vendor_extensions(&mut s, 22 + shift, p);
            let mut non_body = Msg::new();
            non_body.message(oneof_field, s);
            param.message(2, non_body);
        }
    }
    let mut item = Msg::new();
    item.message(1, param);
    item
}

/// `Schema`.
fn schema(v: &Value) -> Msg {
    let mut m = Msg::new();
    let Some(s) = v.as_object() else { return m };
    m.string(1, str_of(s, "$ref"));
    m.string(2, str_of(s, "format"));
    m.string(3, str_of(s, "title"));
    m.string(4, str_of(s, "description"));
    if let Some(d) = s.get("default") {
        m.message(5, any(d));
    }
    let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    let i = |k: &str| s.get(k).and_then(Value::as_i64).unwrap_or(0);
    m.double(6, f("multipleOf"));
    m.double(7, f("maximum"));
    m.boolean(8, bool_of(s, "exclusiveMaximum"));
    m.double(9, f("minimum"));
    m.boolean(10, bool_of(s, "exclusiveMinimum"));
    m.int64(11, i("maxLength"));
    m.int64(12, i("minLength"));
    m.string(13, str_of(s, "pattern"));
    m.int64(14, i("maxItems"));
    m.int64(15, i("minItems"));
    m.boolean(16, bool_of(s, "uniqueItems"));
    m.int64(17, i("maxProperties"));
    m.int64(18, i("minProperties"));
    m.strings(19, s.get("required"));
    for e in s
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(20, any(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut ap = Msg::new();
            // A oneof member is written even when false.
            ap.key(2, 0);
            ap.varint(u64::from(*b));
            m.message(21, ap);
        }
        Some(other @ Value::Object(_)) => {
            let mut ap = Msg::new();
            ap.message(1, schema(other));
            m.message(21, ap);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut ti = Msg::new();
            ti.string(1, t);
            m.message(22, ti);
        }
        Some(types @ Value::Array(_)) => {
            let mut ti = Msg::new();
            ti.strings(1, Some(types));
            m.message(22, ti);
        }
        _ => {}
    }
    match s.get("items") {
        Some(Value::Array(items)) => {
            let mut it = Msg::new();
            for x in items {
                it.message(1, schema(x));
            }
            m.message(23, it);
        }
        Some(x @ Value::Object(_)) => {
            let mut it = Msg::new();
            it.message(1, schema(x));
            m.message(23, it);
        }
        _ => {}
    }
    for x in s
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(24, schema(x));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        let mut p = Msg::new();
        for (name, x) in props {
            let mut named = Msg::new();
            named.string(1, name);
            named.message(2, schema(x));
            p.message(1, named);
        }
        m.message(25, p);
    }
    m.boolean(27, bool_of(s, "readOnly"));
    if let Some(e) = s.get("example") {
        m.message(30, any(e));
    }
    vendor_extensions(&mut m, 31, s);
    m
}
