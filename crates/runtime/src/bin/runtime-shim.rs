//! A binary that is nothing but the shim (`runtime-shim container-shim <state_dir>`), so the
//! runtime crate's tests can start containers without building skiff. skiff itself runs the
//! same code through its hidden `container-shim` subcommand.

fn main() {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(cmd) if cmd == runtime::shim::SHIM_SUBCOMMAND => runtime::shim::run_shim(args),
        _ => {
            eprintln!(
                "usage: runtime-shim {} <state-dir>",
                runtime::shim::SHIM_SUBCOMMAND
            );
            std::process::exit(2);
        }
    }
}
