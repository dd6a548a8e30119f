//! A stored object's JSON bytes turned into its bytes as an item of a JSON list, without
//! building a `serde_json::Value`: the top-level `apiVersion` and `kind` are dropped
//! (typed list items carry none, as upstream serves them) and `metadata.resourceVersion`
//! is set to the object's mod revision (the store never holds it; see `objects`).
//!
//! Everything else is copied byte for byte, so the result is the same JSON object that
//! decoding the value and serialising it again would give (member order aside: this keeps
//! the stored order). That only holds for kinds stored in their served version; a caller
//! must check `api::conversion::storage_version` first. Anything this scanner does not
//! expect (no `metadata` object, escaped or repeated member names, a non-object value)
//! returns `None` and the caller falls back to the `Value` path, which handles it.
//!
//! Why: a list of 10,000 pods spent most of its time and memory building, converting
//! and re-serialising one `Value` tree per item.

use std::ops::Range;

/// One member of a JSON object: where it starts (its name's opening quote), the name
/// between the quotes, and its value.
struct Member {
    start: usize,
    name: Range<usize>,
    value: Range<usize>,
}

/// Append `stored` as a list item at `revision` to `out`. Returns false (leaving `out`
/// as it was) if the bytes are not of the shape this fast path handles.
///
/// The bytes must be valid JSON (the caller checks; the scanner only finds boundaries).
pub fn append_list_item(stored: &[u8], revision: i64, out: &mut Vec<u8>) -> bool {
    let mark = out.len();
    if write_list_item(stored, revision, out).is_none() {
        out.truncate(mark);
        return false;
    }
    true
}

fn write_list_item(b: &[u8], revision: i64, out: &mut Vec<u8>) -> Option<()> {
    let start = skip_ws(b, 0);
    let (members, end) = object_members(b, start)?;
    if skip_ws(b, end) != b.len() {
        return None;
    }
    let mut metadata = None;
    for m in &members {
        let name = &b[m.name.clone()];
        if name.contains(&b'\\') {
            return None;
        }
        if name == b"metadata" {
            if metadata.is_some() || b.get(m.value.start) != Some(&b'{') {
                return None;
            }
            metadata = Some(m);
        } else if members_named(b, &members, name) > 1 {
            return None;
        }
    }
    let metadata = metadata?;
    let (meta_members, _) = object_members(b, metadata.value.start)?;
    let mut rv_members = 0;
    for m in &meta_members {
        let name = &b[m.name.clone()];
        if name.contains(&b'\\') {
            return None;
        }
        if name == b"resourceVersion" {
            rv_members += 1;
        }
    }
    if rv_members > 1 {
        return None;
    }
    let rv = revision.to_string();

    out.push(b'{');
    let mut first = true;
    for m in &members {
        let name = &b[m.name.clone()];
        if name == b"apiVersion" || name == b"kind" {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        if !std::ptr::eq(m, metadata) {
            out.extend_from_slice(&b[m.start..m.value.end]);
            continue;
        }
        // The member name and colon as stored, then the metadata with the revision.
        out.extend_from_slice(&b[m.start..m.value.start]);
        out.push(b'{');
        let mut first_meta = true;
        for mm in &meta_members {
            if !first_meta {
                out.push(b',');
            }
            first_meta = false;
            if &b[mm.name.clone()] == b"resourceVersion" {
                // Replaced where it stands, as inserting into the decoded map would.
                out.extend_from_slice(&b[mm.start..mm.value.start]);
                push_json_string(out, &rv);
            } else {
                out.extend_from_slice(&b[mm.start..mm.value.end]);
            }
        }
        if rv_members == 0 {
            if !first_meta {
                out.push(b',');
            }
            out.extend_from_slice(b"\"resourceVersion\":");
            push_json_string(out, &rv);
        }
        out.push(b'}');
    }
    out.push(b'}');
    Some(())
}

fn members_named(b: &[u8], members: &[Member], name: &[u8]) -> usize {
    members
        .iter()
        .filter(|m| &b[m.name.clone()] == name)
        .count()
}

/// A decimal revision as a JSON string (digits and '-' need no escaping).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The members of the object whose `{` is at `i`, and the index just past its `}`.
fn object_members(b: &[u8], i: usize) -> Option<(Vec<Member>, usize)> {
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let mut members = Vec::new();
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some((members, i + 1));
    }
    loop {
        let start = i;
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let name_end = skip_string(b, i)?;
        i = skip_ws(b, name_end);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let value_end = skip_value(b, value_start)?;
        members.push(Member {
            start,
            name: start + 1..name_end - 1,
            value: value_start..value_end,
        });
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return Some((members, i + 1)),
            _ => return None,
        }
    }
}

/// The index just past the string whose opening quote is at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// The index just past the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            // A number or literal: up to the next delimiter.
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// What the `Value` path makes of the same bytes: decode, stamp, drop type meta.
    fn via_value(stored: &str, revision: i64) -> Value {
        let mut v: Value = serde_json::from_str(stored).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("apiVersion");
        m.remove("kind");
        m["metadata"]
            .as_object_mut()
            .unwrap()
            .insert("resourceVersion".into(), json!(revision.to_string()));
        v
    }

    #[test]
    fn items_equal_the_value_path() {
        let cases = [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"d","labels":{"app":"web"}},"spec":{"containers":[{"name":"c","image":"i"}]},"status":{}}"#,
            r#"{"kind":"ConfigMap","metadata":{},"data":{"k":"v \" } ] { [ \\"}}"#,
            r#"{"metadata":{"name":"x","resourceVersion":"3","uid":"u"},"n":-1.5e3,"t":true,"z":null,"a":[]}"#,
            r#" { "apiVersion" : "v1" , "metadata" : { "name" : "sp" } , "x" : [ 1 , { "y" : "}" } ] } "#,
            r#"{"metadata":{"name":"ü☃","annotations":{"k":"\u00e9\n"}},"apiVersion":"v1"}"#,
        ];
        for stored in cases {
            let mut out = b"prefix".to_vec();
            assert!(
                append_list_item(stored.as_bytes(), 42, &mut out),
                "{stored}"
            );
            assert_eq!(&out[..6], b"prefix");
            let got: Value = serde_json::from_slice(&out[6..]).unwrap();
            assert_eq!(got, via_value(stored, 42), "{stored}");
        }
    }

    #[test]
    fn stored_member_order_is_kept() {
        let stored = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"1","uid":"u"},"spec":{},"status":{}}"#;
        let mut out = Vec::new();
        assert!(append_list_item(stored.as_bytes(), 7, &mut out));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"metadata":{"name":"a","resourceVersion":"7","uid":"u"},"spec":{},"status":{}}"#
        );
    }

    #[test]
    fn unexpected_shapes_fall_back() {
        let cases = [
            r#"[1,2]"#,
            r#"{"kind":"Pod"}"#,
            r#"{"metadata":null}"#,
            r#"{"metadata":{},"metadata":{}}"#,
            r#"{"kind":"a","kind":"b","metadata":{}}"#,
            r#"{"metadata":{"resourceVersion":"1","resourceVersion":"2"}}"#,
            r#"{"metad\u0061ta":{}}"#,
            r#"{"metadata":{}} x"#,
            r#"{"metadata":{"name":"a"}"#,
            r#"{"metadata":{"name":"a}}"#,
        ];
        for stored in cases {
            let mut out = b"keep".to_vec();
            assert!(
                !append_list_item(stored.as_bytes(), 1, &mut out),
                "{stored}"
            );
            assert_eq!(out, b"keep", "{stored}");
        }
    }
}
