//! The multi-host harness itself: two test hosts reach each other and the root namespace
//! over the test bridge, a cut link isolates a host, and nothing is left behind.

use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::hosts::TestNet;

fn busybox() -> &'static str {
    "/bin/busybox"
}

/// Sends `text` from `client` to `server_ip:port` with busybox nc; true when it arrived.
fn deliver(
    server: &testkit::hosts::TestHost,
    client: &testkit::hosts::TestHost,
    port: u16,
) -> bool {
    let mut listen = Command::new(busybox());
    listen
        .args(["nc", "-l", "-p", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    server.enter(&mut listen).unwrap();
    let listener = listen.spawn().expect("nc -l");
    std::thread::sleep(Duration::from_millis(300));
    let mut send = Command::new(busybox());
    send.args([
        "sh",
        "-c",
        &format!("echo hello | {} nc -w 2 {} {port}", busybox(), server.ip),
    ]);
    client.enter(&mut send).unwrap();
    let sent = send.output().expect("nc").status.success();
    let pid = listener.id();
    // Give the listener a moment, then stop it (by its PID) and read what it got.
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let out = listener.wait_with_output().expect("nc output");
    sent && String::from_utf8_lossy(&out.stdout).contains("hello")
}

#[test]
fn hosts_reach_each_other_until_a_link_is_cut() {
    let (bridge_name, netns_names);
    {
        let mut net = TestNet::new().expect("test net");
        let a = net.add_host("a").expect("host a");
        let b = net.add_host("b").expect("host b");
        assert_ne!(a.ip, b.ip);
        assert!(deliver(&a, &b, 7001), "b reaches a");
        // The root namespace reaches a host, too (kubectl runs there).
        let out = Command::new("ip")
            .args(["route", "get", &a.ip.to_string()])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("sktn"),
            "{out:?}"
        );
        // No default route inside a host: nothing can leave the machine.
        let mut routes = Command::new("ip");
        routes.args(["route", "show", "default"]);
        a.enter(&mut routes).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&routes.output().unwrap().stdout).trim(),
            ""
        );

        b.cut_link().unwrap();
        assert!(!deliver(&a, &b, 7002), "b is cut off");
        b.restore_link().unwrap();
        // The port needs a moment to forward again (carrier, neighbour entries).
        assert!((0..10).any(|i| deliver(&a, &b, 7003 + i)), "b is back");
        bridge_name = format!(
            "sktn{}",
            a.netns
                .trim_start_matches("skth")
                .split('-')
                .next()
                .unwrap()
        );
        netns_names = vec![a.netns.clone(), b.netns.clone()];
    }
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(
        !links.contains(&format!("{bridge_name}:")),
        "bridge left behind: {links}"
    );
    for ns in netns_names {
        assert!(
            !std::path::Path::new("/run/netns").join(&ns).exists(),
            "{ns} left behind"
        );
    }
}
