//! The control channel of a simulated fleet: one command per line on stdin, one reply per
//! line on stdout, so a test harness (or a person at a terminal) can stop and start nodes
//! to simulate failures.
//!
//! ```text
//! stop sim-3        -> ok stop sim-3       (its lease and status stop; its pods are frozen)
//! start sim-3       -> ok start sim-3      (lease renewed and status posted at once)
//! list              -> ok list sim-0=running sim-1=stopped ...
//! frobnicate        -> error unknown command "frobnicate" (want stop NAME | start NAME | list)
//! ```
//!
//! When all nodes are registered the process prints `ready N` first. End of input is not
//! an error: the fleet keeps running without a controller.

/// One command, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Stop(String),
    Start(String),
    List,
}

/// Parses one line; blank lines are `Ok(None)`.
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let mut words = line.split_whitespace();
    let Some(verb) = words.next() else {
        return Ok(None);
    };
    let arg = words.next();
    if words.next().is_some() {
        return Err(format!("too many arguments in {:?}", line.trim()));
    }
    match (verb, arg) {
        ("stop", Some(name)) => Ok(Some(Command::Stop(name.to_string()))),
        ("start", Some(name)) => Ok(Some(Command::Start(name.to_string()))),
        ("list", None) => Ok(Some(Command::List)),
        ("stop" | "start", None) => Err(format!("{verb} needs a node name")),
        _ => Err(format!(
            "unknown command {:?} (want stop NAME | start NAME | list)",
            line.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let cases: &[(&str, Result<Option<Command>, &str>)] = &[
            ("stop sim-1", Ok(Some(Command::Stop("sim-1".into())))),
            (
                "  start   sim-2  ",
                Ok(Some(Command::Start("sim-2".into()))),
            ),
            ("list", Ok(Some(Command::List))),
            ("", Ok(None)),
            ("stop", Err("stop needs a node name")),
            ("stop a b", Err("too many arguments in \"stop a b\"")),
            (
                "reboot sim-1",
                Err("unknown command \"reboot sim-1\" (want stop NAME | start NAME | list)"),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), want.clone().map_err(String::from), "{line:?}");
        }
    }
}
