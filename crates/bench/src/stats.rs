//! Percentiles and the compact tables the scenarios print.

use std::time::Duration;

/// Order statistics of a set of latencies.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

/// The `q` quantile (nearest rank) of an ascending slice.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort_unstable();
    Summary {
        p50: quantile(&v, 0.50),
        p90: quantile(&v, 0.90),
        p99: quantile(&v, 0.99),
        max: v.last().copied().unwrap_or_default(),
    }
}

/// Median of a small set.
pub fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort_unstable();
    quantile(&v, 0.5)
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

/// Prints a titled table with columns aligned to their widest cell.
pub fn print_table(title: &str, headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i == 0 {
                s.push_str(&format!("{:<w$}", c, w = widths[i]));
            } else {
                s.push_str(&format!("  {:>w$}", c, w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    println!("\n## {title}");
    println!("{}", line(headers.to_vec()));
    for row in rows {
        println!("{}", line(row.iter().map(|s| s.as_str()).collect()));
    }
}
