//! A binary that is nothing but the exec helper (`runtime-exec container-exec <state_dir>
//! ... -- <argv...>`), so the runtime crate's tests can exec into containers without building
//! skiff. skiff itself runs the same code through its hidden `container-exec` subcommand.

fn main() {
    let mut args = std::env::args_os().skip(1);
    match args.next() {
        Some(cmd) if cmd == runtime::exec::EXEC_SUBCOMMAND => runtime::exec::run_exec(args),
        _ => {
            eprintln!(
                "usage: runtime-exec {} <state-dir> [--tty] [--env K=V]... [--cwd DIR] -- <argv...>",
                runtime::exec::EXEC_SUBCOMMAND
            );
            std::process::exit(2);
        }
    }
}
