//! Unit tests of SQLite-specific behaviour (the shared semantics live in `conformance`).

use crate::prefix_end;

#[test]
fn prefix_end_bounds_the_prefix() {
    assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
    assert_eq!(prefix_end(""), vec![0xFF]);
    assert!("/a/zzz".as_bytes() < &prefix_end("/a/")[..]);
    assert!("é".as_bytes() < &prefix_end("")[..]);
}
