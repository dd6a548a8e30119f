//! How quickly the cluster gives up on a node: the failover profiles and the flags that
//! override them, resolved into the controllers' and the API server's settings.

use std::time::Duration;

/// A named set of node-failure timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Upstream Kubernetes v1.32 defaults.
    Upstream,
    /// A dead node's pods are running elsewhere within ~10 s.
    Fast,
}

/// Resolved timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub node_monitor_period: Duration,
    pub node_monitor_grace_period: Duration,
    pub not_ready_toleration_seconds: i64,
    pub unreachable_toleration_seconds: i64,
}

impl Failover {
    pub fn of(profile: Profile) -> Failover {
        match profile {
            Profile::Upstream => Failover {
                node_monitor_period: Duration::from_secs(5),
                node_monitor_grace_period: Duration::from_secs(50),
                not_ready_toleration_seconds: 300,
                unreachable_toleration_seconds: 300,
            },
            // Agents renew every second (lease duration 4 s); four missed renewals mark the
            // node unreachable, and pods go one second later: failures shorter than that
            // (a GC pause, a slow fsync) must not move pods.
            Profile::Fast => Failover {
                node_monitor_period: Duration::from_secs(1),
                node_monitor_grace_period: Duration::from_secs(4),
                not_ready_toleration_seconds: 1,
                unreachable_toleration_seconds: 1,
            },
        }
    }

    /// The profile's timings with the single-value flags applied on top.
    pub fn resolve(args: &crate::ServerArgs) -> Failover {
        let mut f = Failover::of(args.failover_profile);
        if let Some(d) = args.node_monitor_period {
            f.node_monitor_period = d;
        }
        if let Some(d) = args.node_monitor_grace_period {
            f.node_monitor_grace_period = d;
        }
        if let Some(s) = args.default_not_ready_toleration_seconds {
            f.not_ready_toleration_seconds = s;
        }
        if let Some(s) = args.default_unreachable_toleration_seconds {
            f.unreachable_toleration_seconds = s;
        }
        f
    }
}

/// A Go-style duration as the Kubernetes flags take it: `500ms`, `5s`, `1m30s`, `2h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {text:?} (examples: 500ms, 5s, 1m30s)");
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => value / 1000.0,
            "s" => value,
            "m" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(seconds);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_kubernetes_flags() {
        let cases = [
            ("5s", Some(5_000)),
            ("500ms", Some(500)),
            ("1m30s", Some(90_000)),
            ("2h", Some(7_200_000)),
            ("1.5s", Some(1_500)),
            ("0", Some(0)),
            ("", None),
            ("5", None),
            ("s", None),
            ("5x", None),
        ];
        for (text, want) in cases {
            let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn the_fast_profile_is_faster_than_upstream_on_every_timing() {
        let (up, fast) = (Failover::of(Profile::Upstream), Failover::of(Profile::Fast));
        assert_eq!(up.node_monitor_grace_period, Duration::from_secs(50));
        assert!(fast.node_monitor_grace_period < up.node_monitor_grace_period);
        assert!(fast.node_monitor_period < up.node_monitor_period);
        assert!(fast.unreachable_toleration_seconds < up.unreachable_toleration_seconds);
    }
}
