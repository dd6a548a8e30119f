//! Link the skiff binary with its hot functions first: `symbol-order.txt` lists, in order,
//! the functions a server runs at start, when idle and under light work (recorded by
//! `scripts/symbol-order`). Packed together, they occupy a few hundred pages instead of
//! being scattered over the 55 MB of `.text`, so the kernel's fault-around maps far fewer
//! pages that never run (see `src/daemon_memory.rs`). A name the build no longer has is
//! skipped silently: a stale list costs memory, never correctness.

fn main() {
    let order = concat!(env!("CARGO_MANIFEST_DIR"), "/symbol-order.txt");
    println!("cargo:rerun-if-changed=symbol-order.txt");
    println!("cargo:rustc-link-arg-bin=skiff=-Wl,--symbol-ordering-file={order}");
    println!("cargo:rustc-link-arg-bin=skiff=-Wl,--no-warn-symbol-ordering");
}
