//! Kubernetes resource quantities (`resource.Quantity`): parsing with upstream's exact
//! acceptance and rounding, value comparison, integer views (`as_milli`, `as_bytes`) and the
//! canonical string form upstream writes back (`1.5Gi` → `1536Mi`, `1000m` → `1`).
//!
//! Every value upstream can hold is `mantissa × 10^exp` with an i128 mantissa: the fast
//! path keeps an int64 with a decimal scale, the slow path rounds up to nano units and caps
//! at 2^63-1. So that is the representation here; no big-number arithmetic escapes parsing.

use std::cmp::Ordering;
use std::fmt;

/// The regular expression upstream names in its format error.
pub const QUANTITY_REGEX: &str = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// Why a string is not a quantity; messages are upstream's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '{}'", QUANTITY_REGEX)]
    FormatWrong,
    #[error("unable to parse numeric part of quantity")]
    Numeric,
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// How the quantity prints (upstream `resource.Format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `Ki`, `Mi`, ... (powers of 1024)
    BinarySI,
    /// `m`, `k`, `M`, ... (powers of 1000)
    DecimalSI,
    /// `1e3`
    DecimalExponent,
}

/// A parsed quantity. Equality and ordering compare values, not formats.
#[derive(Clone, Debug)]
pub struct Quantity {
    mantissa: i128,
    exp: i32,
    format: Format,
    /// Upstream keeps the input when it is already canonical and prints it back unchanged.
    cached: Option<String>,
}

const MAX_NANOS: i128 = (i64::MAX as i128) * 1_000_000_000;

impl Quantity {
    /// Parses like upstream `resource.ParseQuantity`.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        if s.is_empty() {
            return Err(QuantityError::FormatWrong);
        }
        if s == "0" {
            return Ok(Quantity {
                mantissa: 0,
                exp: 0,
                format: Format::DecimalSI,
                cached: Some(s.to_string()),
            });
        }
        let parts = split(s)?;
        let (base, exponent, format) =
            interpret_suffix(parts.suffix).ok_or(QuantityError::Suffix)?;

        // Upstream's int64 fast path: exact, no rounding and no cap.
        let digits = parts.num.len() + parts.denom.len();
        let (mut scale, mantissa, precision): (i64, i64, i64) = match format {
            Format::DecimalSI | Format::DecimalExponent => (exponent, 1, 18 - digits as i64),
            Format::BinarySI => {
                if exponent >= 0 && parts.denom.is_empty() {
                    let approx = (exponent as f32 * 3.0 / 10.0) as i64;
                    (
                        0,
                        1i64 << exponent.min(62),
                        15 - parts.num.len() as i64 - approx - 1,
                    )
                } else {
                    (0, 1, -1)
                }
            }
        };
        if precision >= 0 {
            scale -= parts.denom.len() as i64;
            if scale >= -9 {
                let shifted = format!("{}{}", parts.num, parts.denom);
                let value: i64 = shifted.parse().map_err(|_| QuantityError::Numeric)?;
                if let Some(mut result) = value.checked_mul(mantissa) {
                    if !parts.positive {
                        result = -result;
                    }
                    let canonical = match format {
                        Format::BinarySI => exponent % 10 == 0 && (value & 0x07) != 0,
                        _ => {
                            scale % 3 == 0 && !shifted.ends_with("000") && !shifted.starts_with('0')
                        }
                    };
                    let exp =
                        i32::try_from(scale).unwrap_or(if scale > 0 { i32::MAX } else { i32::MIN });
                    return Ok(Quantity {
                        mantissa: result as i128,
                        exp,
                        format,
                        cached: canonical.then(|| s.to_string()),
                    });
                }
            }
        }

        // Slow path: exact value, rounded up (away from zero) to nano units, capped at 2^63-1.
        let mut format = format;
        let (e10, e2) = if base == 10 {
            (exponent - parts.denom.len() as i64, 0u32)
        } else {
            (-(parts.denom.len() as i64), exponent.clamp(0, 64) as u32)
        };
        let nanos = slow_nanos(&format!("{}{}", parts.num, parts.denom), e10, e2);
        if format == Format::BinarySI && nanos > 0 && nanos < 1_000_000_000 {
            format = Format::DecimalSI;
        }
        let mantissa = if parts.positive { nanos } else { -nanos };
        Ok(Quantity {
            mantissa,
            exp: -9,
            format,
            cached: None,
        })
    }

    /// An integer count (`3` cpus, `1024` bytes) printed in `format`.
    pub fn from_int(v: i64, format: Format) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exp: 0,
            format,
            cached: None,
        }
    }

    /// Thousandths (`100` → `100m`), as DecimalSI.
    pub fn from_milli(v: i64) -> Quantity {
        Quantity {
            mantissa: v as i128,
            exp: -3,
            format: Format::DecimalSI,
            cached: None,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// ceil(value × 10^-scale), saturating at the i64 range (upstream `ScaledValue`).
    fn scaled_ceil(&self, scale: i32) -> i64 {
        let e = self.exp as i64 - scale as i64;
        if self.mantissa == 0 {
            return 0;
        }
        let sat = if self.mantissa > 0 {
            i64::MAX
        } else {
            i64::MIN
        };
        if e >= 0 {
            if e > 40 {
                return sat;
            }
            let Some(v) = 10i128
                .checked_pow(e as u32)
                .and_then(|p| self.mantissa.checked_mul(p))
            else {
                return sat;
            };
            return i64::try_from(v).unwrap_or(sat);
        }
        let d = -e;
        if d > 38 {
            return if self.mantissa > 0 { 1 } else { 0 };
        }
        let p = 10i128.pow(d as u32);
        let q = self.mantissa.div_euclid(p);
        let r = self.mantissa.rem_euclid(p);
        let v = if r != 0 { q + 1 } else { q };
        i64::try_from(v).unwrap_or(sat)
    }

    /// The value in thousandths, rounded up (upstream `MilliValue`), e.g. CPU millicores.
    pub fn as_milli(&self) -> i64 {
        self.scaled_ceil(-3)
    }

    /// The value in whole units, rounded up (upstream `Value`), e.g. bytes of memory.
    pub fn as_bytes(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// Alias of [`Quantity::as_bytes`] for non-byte quantities (pods, replicas).
    pub fn value(&self) -> i64 {
        self.scaled_ceil(0)
    }

    /// The sum, keeping this quantity's format; None on overflow.
    pub fn checked_add(&self, other: &Quantity) -> Option<Quantity> {
        let exp = self.exp.min(other.exp);
        // Exponents may sit far apart; i64 keeps the difference itself from overflowing.
        let shift = |q: &Quantity| -> Option<i128> {
            let d = u32::try_from(q.exp as i64 - exp as i64).ok()?;
            q.mantissa.checked_mul(10i128.checked_pow(d)?)
        };
        let (a, b) = (shift(self)?, shift(other)?);
        Some(Quantity {
            mantissa: a.checked_add(b)?,
            exp,
            format: self.format,
            cached: None,
        })
    }

    /// The difference, keeping this quantity's format; None on overflow.
    pub fn checked_sub(&self, other: &Quantity) -> Option<Quantity> {
        let neg = Quantity {
            mantissa: -other.mantissa,
            exp: other.exp,
            format: other.format,
            cached: None,
        };
        self.checked_add(&neg)
    }

    /// The canonical string (upstream `Quantity.String`).
    pub fn canonical(&self) -> String {
        if let Some(s) = &self.cached {
            return s.clone();
        }
        if self.mantissa == 0 {
            return "0".to_string();
        }
        let mut format = self.format;
        let mut whole: Option<i128> = None;
        if format == Format::BinarySI {
            let small =
                self.cmp_int(-1024) == Ordering::Greater && self.cmp_int(1024) == Ordering::Less;
            whole = self.exact_integer();
            if small || whole.is_none() {
                format = Format::DecimalSI;
            }
        }
        match (format, whole) {
            (Format::BinarySI, Some(mut v)) => {
                let mut times = 0;
                while v.abs() >= 1024 && v % 1024 == 0 {
                    v /= 1024;
                    times += 1;
                }
                let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
                    .get(times)
                    .copied()
                    .unwrap_or("");
                format!("{v}{suffix}")
            }
            _ => {
                let (mut m, mut e) = (self.mantissa, self.exp as i64);
                while m % 10 == 0 {
                    m /= 10;
                    e += 1;
                }
                while e % 3 != 0 {
                    match m.checked_mul(10) {
                        Some(x) => m = x,
                        None => break,
                    }
                    e -= 1;
                }
                let suffix = if format == Format::DecimalExponent || e % 3 != 0 {
                    if e == 0 {
                        String::new()
                    } else {
                        format!("e{e}")
                    }
                } else {
                    match e {
                        -9 => "n".to_string(),
                        -6 => "u".to_string(),
                        -3 => "m".to_string(),
                        0 => String::new(),
                        3 => "k".to_string(),
                        6 => "M".to_string(),
                        9 => "G".to_string(),
                        12 => "T".to_string(),
                        15 => "P".to_string(),
                        18 => "E".to_string(),
                        other => format!("e{other}"),
                    }
                };
                format!("{m}{suffix}")
            }
        }
    }

    fn exact_integer(&self) -> Option<i128> {
        if self.exp >= 0 {
            self.mantissa
                .checked_mul(10i128.checked_pow(self.exp as u32)?)
        } else {
            let p = 10i128.checked_pow((-self.exp) as u32)?;
            (self.mantissa % p == 0).then(|| self.mantissa / p)
        }
    }

    fn cmp_int(&self, v: i64) -> Ordering {
        self.cmp(&Quantity::from_int(v, Format::DecimalSI))
    }

    /// Digits without trailing zeros and the order of magnitude (value = 0.digits × 10^order).
    fn normalized(&self) -> (String, i64) {
        let digits = self.mantissa.unsigned_abs().to_string();
        let trimmed = digits.trim_end_matches('0');
        let order = digits.len() as i64 + self.exp as i64;
        (trimmed.to_string(), order)
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Quantity) -> Ordering {
        let sign = |q: &Quantity| q.mantissa.signum();
        let (sa, sb) = (sign(self), sign(other));
        if sa != sb || sa == 0 {
            return sa.cmp(&sb);
        }
        let (da, oa) = self.normalized();
        let (db, ob) = other.normalized();
        let magnitude = oa.cmp(&ob).then_with(|| da.cmp(&db));
        if sa > 0 {
            magnitude
        } else {
            magnitude.reverse()
        }
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Quantity) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Quantity) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        Quantity::parse(s)
    }
}

/// The canonical form of a quantity string, or the string itself when it does not parse
/// (for printing what is stored without failing).
pub fn canonicalize(s: &str) -> String {
    Quantity::parse(s)
        .map(|q| q.canonical())
        .unwrap_or_else(|_| s.to_string())
}

struct Parts<'a> {
    positive: bool,
    num: &'a str,
    denom: &'a str,
    suffix: &'a str,
}

/// Upstream `parseQuantityString`: sign, numerator without leading zeros, fraction, suffix.
fn split(s: &str) -> Result<Parts<'_>, QuantityError> {
    let b = s.as_bytes();
    let end = b.len();
    let mut pos = 0;
    let mut positive = true;
    if pos < end {
        match b[0] {
            b'-' => {
                positive = false;
                pos += 1;
            }
            b'+' => pos += 1,
            _ => {}
        }
    }
    while pos < end && b[pos] == b'0' {
        pos += 1;
    }
    if pos >= end {
        return Ok(Parts {
            positive,
            num: "0",
            denom: "",
            suffix: "",
        });
    }
    let num_start = pos;
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    let mut num = &s[num_start..pos];
    if pos >= end {
        return Ok(Parts {
            positive,
            num,
            denom: "",
            suffix: "",
        });
    }
    if num.is_empty() {
        num = "0";
    }
    let mut denom = "";
    if b[pos] == b'.' {
        pos += 1;
        let start = pos;
        while pos < end && b[pos].is_ascii_digit() {
            pos += 1;
        }
        denom = &s[start..pos];
        if pos >= end {
            return Ok(Parts {
                positive,
                num,
                denom,
                suffix: "",
            });
        }
    }
    let suffix_start = pos;
    while pos < end && b"eEinumkKMGTP".contains(&b[pos]) {
        pos += 1;
    }
    if pos < end && (b[pos] == b'-' || b[pos] == b'+') {
        pos += 1;
    }
    while pos < end && b[pos].is_ascii_digit() {
        pos += 1;
    }
    if pos < end {
        return Err(QuantityError::FormatWrong);
    }
    Ok(Parts {
        positive,
        num,
        denom,
        suffix: &s[suffix_start..],
    })
}

/// (base, exponent, format) of a suffix; None for an unknown suffix.
fn interpret_suffix(s: &str) -> Option<(u32, i64, Format)> {
    let dec = match s {
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "" => Some(0),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = dec {
        return Some((10, e, Format::DecimalSI));
    }
    let bin = match s {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = bin {
        return Some((2, e, Format::BinarySI));
    }
    if s.len() > 1 && (s.starts_with('e') || s.starts_with('E')) {
        // Upstream parses an int64 and truncates it to int32.
        let parsed: i64 = s[1..].parse().ok()?;
        return Some((10, parsed as i32 as i64, Format::DecimalExponent));
    }
    None
}

/// ceil(digits × 10^e10 × 2^e2 × 10^9), capped at (2^63-1) × 10^9.
fn slow_nanos(digits: &str, e10: i64, e2: u32) -> i128 {
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return 0;
    }
    // Anything of order above 10^20 exceeds the cap; checking first keeps the exact
    // arithmetic below inside i128.
    let order = (digits.len() as i64 - 1 + e10) as f64 + e2 as f64 * std::f64::consts::LOG10_2;
    if order > 20.0 {
        return MAX_NANOS;
    }
    // Multiply the decimal digit string by 2^e2.
    let mut p: Vec<u8> = digits.bytes().map(|c| c - b'0').collect();
    if e2 > 0 {
        let factor: u128 = 1u128 << e2;
        let mut carry: u128 = 0;
        for d in p.iter_mut().rev() {
            let v = (*d as u128) * factor + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        let mut head = Vec::new();
        while carry > 0 {
            head.push((carry % 10) as u8);
            carry /= 10;
        }
        head.reverse();
        head.extend(p);
        p = head;
    }
    let k = e10 + 9;
    let to_int = |ds: &[u8]| -> Option<i128> {
        ds.iter()
            .try_fold(0i128, |acc, &d| acc.checked_mul(10)?.checked_add(d as i128))
    };
    let nanos = if k >= 0 {
        to_int(&p).and_then(|v| v.checked_mul(10i128.checked_pow(k as u32)?))
    } else {
        let m = (-k) as usize;
        if m >= p.len() {
            Some(1)
        } else {
            let (head, tail) = p.split_at(p.len() - m);
            to_int(head).map(|v| {
                if tail.iter().any(|&d| d != 0) {
                    v + 1
                } else {
                    v
                }
            })
        }
    };
    nanos.unwrap_or(MAX_NANOS).min(MAX_NANOS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_match_upstream() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("1.5", "1500m"),
            ("0.1", "100m"),
            (".5", "500m"),
            ("1", "1"),
            ("1e3", "1e3"),
            ("1E3", "1E3"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("12000", "12k"),
            ("1.5k", "1500"),
            ("1Gi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("1024Mi", "1Gi"),
            ("500Mi", "500Mi"),
            ("8Ki", "8Ki"),
            ("1024", "1024"),
            ("2048Ki", "2Mi"),
            ("512", "512"),
            ("0.5Ki", "512"),
            ("1.5Ki", "1536"),
            ("128974848", "128974848"),
            ("129e6", "129e6"),
            ("129M", "129M"),
            ("123Mi", "123Mi"),
            ("-100m", "-100m"),
            ("1n", "1n"),
            ("0.0000000001", "1n"),
            ("1.0000000001", "1000000001n"),
            ("100u", "100u"),
            ("10000000000000000000000", "9223372036854775807"),
            ("0.1m", "100u"),
            ("5Mi", "5Mi"),
            ("0Mi", "0"),
        ];
        for (input, want) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn errors_match_upstream() {
        let re = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
        let cases: &[(&str, &str)] = &[
            ("", re),
            ("abc", re),
            ("1.2.3", re),
            ("1Gb", re),
            ("1 Gi", re),
            ("1Qi", re),
            ("1Ki2", "unable to parse quantity's suffix"),
            ("1e", "unable to parse quantity's suffix"),
            ("1mm", "unable to parse quantity's suffix"),
        ];
        for (input, want) in cases {
            let err = Quantity::parse(input).expect_err(input);
            assert_eq!(err.to_string(), *want, "input {input:?}");
        }
    }

    #[test]
    fn values_and_comparison() {
        let q = |s: &str| Quantity::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(q("100m").as_milli(), 100);
        assert_eq!(q("1").as_milli(), 1000);
        assert_eq!(q("1.5").as_milli(), 1500);
        assert_eq!(q("0.1m").as_milli(), 1);
        assert_eq!(q("1Gi").as_bytes(), 1 << 30);
        assert_eq!(q("500Mi").as_bytes(), 500 << 20);
        assert_eq!(q("1e3").as_bytes(), 1000);
        assert_eq!(q("100m").as_bytes(), 1);
        assert_eq!(q("1e100").as_bytes(), i64::MAX);
        assert!(q("1Gi") > q("1G"));
        assert!(q("1000m") == q("1"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert!(q("100m") < q("0.2"));
        assert!(q("1e100") > q("1E"));
        assert_eq!(
            q("1Gi").checked_add(&q("512Mi")).map(|x| x.to_string()),
            Some("1536Mi".into())
        );
        assert_eq!(
            q("1").checked_sub(&q("250m")).map(|x| x.to_string()),
            Some("750m".into())
        );
        assert_eq!(Quantity::from_milli(2500).to_string(), "2500m");
        assert!(q("1e2000000000").checked_add(&q("1e-2000000000")).is_none());
        assert_eq!(canonicalize("2Gi"), "2Gi");
        assert_eq!(canonicalize("junk"), "junk");
    }
}
