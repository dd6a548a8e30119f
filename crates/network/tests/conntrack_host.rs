//! The service proxy's conntrack client against the kernel (as root), in a scratch network
//! namespace of its own (conntrack is per namespace): a UDP datagram through a DNAT rule
//! makes a real flow, the client lists it with both tuples, a cleanup plan that allows its
//! endpoint keeps it, one that does not deletes it, and an unrelated flow stays. Nothing
//! leaves the namespace (its only interface is lo); it is deleted even on failure.

use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;

use network::proxy::conntrack::{self, CleanupPlan, Conntrack, Flow, IPPROTO_UDP};

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn ip(args: &[&str]) -> std::process::Output {
    Command::new("/usr/sbin/ip")
        .args(args)
        .output()
        .expect("run ip")
}

/// A namespace made with `ip netns add`, deleted on drop.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

fn in_ns(ns: &str, cmd: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new("/usr/sbin/ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("run ip netns exec");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "{cmd:?} in {ns}");
}

/// The flows of the namespace that concern `port` as a client source port.
fn flows_from(ct: &mut Conntrack, sport: u16) -> Vec<Flow> {
    ct.list()
        .expect("list conntrack")
        .into_iter()
        .filter(|f| f.original.src_port == sport)
        .collect()
}

#[test]
fn udp_flows_are_listed_and_only_stale_ones_deleted() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tag = format!("{:05}", std::process::id() % 100_000);
    let ns = Namespace(format!("skct-{tag}"));
    assert!(ip(&["netns", "add", &ns.0]).status.success());
    in_ns(&ns.0, &["ip", "link", "set", "lo", "up"], None);
    in_ns(
        &ns.0,
        &["ip", "addr", "add", "10.250.9.2/24", "dev", "lo"],
        None,
    );
    // A "Service" 10.250.9.1:53 translated to an "endpoint" 127.0.0.1:5353.
    let nft = ["/usr/sbin/nft", "-f", "-"];
    in_ns(
        &ns.0,
        &nft,
        Some(
            "table ip skct {\n chain out { type nat hook output priority -100;\n \
             ip daddr 10.250.9.1 udp dport 53 dnat to 127.0.0.1:5353\n }\n}\n",
        ),
    );

    let path = format!("/run/netns/{}", ns.0);
    // setns(2) moves only this thread: do everything in one thread of its own.
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns: {}",
            std::io::Error::last_os_error()
        );
        let service = Ipv4Addr::new(10, 250, 9, 1);
        let client = UdpSocket::bind("0.0.0.0:40053").unwrap();
        client.send_to(b"query", (service, 53)).unwrap();
        let other = UdpSocket::bind("0.0.0.0:40054").unwrap();
        other.send_to(b"x", ("10.250.9.3", 9999)).unwrap();

        let mut ct = Conntrack::open().expect("open ctnetlink");
        let flows = flows_from(&mut ct, 40053);
        assert_eq!(flows.len(), 1, "{flows:?}");
        let f = flows[0];
        assert_eq!(f.original.protocol, IPPROTO_UDP);
        assert_eq!(
            (f.original.src, f.original.dst, f.original.dst_port),
            (Ipv4Addr::new(10, 250, 9, 2), service, 53)
        );
        assert_eq!(
            (f.reply.src, f.reply.src_port, f.reply.dst_port),
            (Ipv4Addr::LOCALHOST, 5353, 40053),
            "the reply comes from the DNAT target"
        );
        assert_eq!(flows_from(&mut ct, 40054).len(), 1);

        // The endpoint it was translated to is still serving: kept.
        let mut plan = CleanupPlan::default();
        plan.service_ips
            .insert((service, 53), [Ipv4Addr::LOCALHOST].into());
        assert_eq!(conntrack::clean(&plan).unwrap(), 0);
        assert_eq!(flows_from(&mut ct, 40053).len(), 1);

        // The endpoint was replaced: the flow goes, the unrelated one stays.
        plan.service_ips
            .insert((service, 53), [Ipv4Addr::new(10, 250, 9, 7)].into());
        assert_eq!(conntrack::clean(&plan).unwrap(), 1);
        assert!(flows_from(&mut ct, 40053).is_empty());
        assert_eq!(flows_from(&mut ct, 40054).len(), 1);

        // Deleting a flow that is already gone is not an error.
        ct.delete(&f).expect("delete a missing flow");
        // The client's next datagram is a new flow, translated by the rules of now.
        client.send_to(b"again", (service, 53)).unwrap();
        assert_eq!(flows_from(&mut ct, 40053).len(), 1);
    })
    .join()
    .expect("the test thread failed");
}
