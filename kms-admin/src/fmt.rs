//! Human-readable output: aligned tables, UTC timestamps, ages, ether amounts.

use alloy::primitives::U256;

/// A table: a header and rows of cells, printed with columns aligned and separated by two
/// spaces (like `kubectl get`), so it reads well and `awk` can still cut it.
#[derive(Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text (ending with a newline).
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, width) in widths.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                l.push_str(c);
                if i + 1 < cols {
                    let pad = width - c.chars().count() + 2;
                    l.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        line(&self.header);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp, `2025-01-02T03:04:05Z`.
pub fn ts(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// An optional timestamp, `-` when absent.
pub fn ts_opt(secs: Option<i64>) -> String {
    secs.map(ts).unwrap_or_else(|| "-".into())
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A duration in seconds as `3d 4h`, `5h 2m`, `7m 3s` or `42s` (negative: `-` prefix).
pub fn duration(secs: i64) -> String {
    if secs < 0 {
        return format!("-{}", duration(secs.saturating_neg()));
    }
    let (d, h, m, s) = (
        secs / 86_400,
        (secs % 86_400) / 3600,
        (secs % 3600) / 60,
        secs % 60,
    );
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// Wei as ether with trailing zeros cut: `1.5 ETH`, `0 ETH`.
pub fn ether(wei: U256) -> String {
    let s = alloy::primitives::utils::format_ether(wei);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s} ETH")
}

/// Wei as ether for a table cell: exact up to 6 decimals, else cut to 6 decimals with `~`
/// (`~0.000337`), or `<0.000001` (`--json` has the exact amounts).
pub fn ether_short(wei: U256) -> String {
    let micro = U256::from(1_000_000_000_000u64); // 10^-6 ETH
    let exact = ether(wei);
    let exact = exact.strip_suffix(" ETH").unwrap_or(&exact);
    if (wei % micro).is_zero() {
        exact.to_owned()
    } else if wei < micro {
        "<0.000001".to_owned()
    } else {
        let cut = ether(wei - wei % micro);
        format!("~{}", cut.strip_suffix(" ETH").unwrap_or(&cut))
    }
}

/// What was used of a cap, compact: `0.2/1.5 ETH` (`?` for an unknown amount), or `?` when the
/// cap itself is unknown. Amounts as [`ether_short`].
pub fn ether_of(used: Option<U256>, cap: Option<U256>) -> String {
    let Some(cap) = cap else {
        return "?".into();
    };
    let used = used.map_or_else(|| "?".to_owned(), ether_short);
    format!("{used}/{} ETH", ether_short(cap))
}

/// Operations used of a usage limit, compact: `3/10`, `3/∞` (no limit), `?/10` (unknown use),
/// or `?` when the limit itself is unknown.
pub fn ops_of(used: Option<u32>, max: Option<u32>) -> String {
    let Some(max) = max else {
        return "?".into();
    };
    let used = used.map_or_else(|| "?".to_owned(), |u| u.to_string());
    if max == 0 {
        format!("{used}/∞")
    } else {
        format!("{used}/{max}")
    }
}

/// A budget period's length in words: `hour`, `day`, `week`, `2 days`, `90 minutes`, `75 s`
/// (the largest of week, day, hour, minute that divides it; else seconds).
pub fn period_name(secs: u32) -> String {
    const UNITS: [(u32, &str); 4] = [
        (604_800, "week"),
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
    ];
    for (len, unit) in UNITS {
        if secs != 0 && secs.is_multiple_of(len) {
            let n = secs / len;
            return if n == 1 {
                unit.to_owned()
            } else {
                format!("{n} {unit}s")
            };
        }
    }
    format!("{secs} s")
}

/// A periodic budget, compact: what the current period spent of its cap and the period's length,
/// `0.02/0.1 ETH per day` (`?` for an unknown amount, as [`ether_of`]); `-` without a period (0),
/// `?` when the period itself is unknown.
pub fn per_period(spent: Option<U256>, cap: Option<U256>, period: Option<u32>) -> String {
    match period {
        None => "?".into(),
        Some(0) => "-".into(),
        Some(p) => format!("{} per {}", ether_of(spent, cap), period_name(p)),
    }
}

/// Wei given as a decimal string (as the database stores caps) as ether, or the string as
/// it is if it does not parse.
pub fn ether_str(wei: &str) -> String {
    wei.parse::<U256>()
        .map(ether)
        .unwrap_or_else(|_| wei.to_owned())
}

/// A validity window `after → until` (`until` 0 means no end).
pub fn window(after: i64, until: i64) -> String {
    let until = if until == 0 {
        "no end".into()
    } else {
        ts(until)
    };
    format!("{} → {until}", ts(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(ts(0), "1970-01-01T00:00:00Z");
        assert_eq!(ts(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(ts(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(ts(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(ts(-1), "1969-12-31T23:59:59Z");
        assert_eq!(ts_opt(None), "-");
    }

    #[test]
    fn durations_keep_two_units() {
        assert_eq!(duration(42), "42s");
        assert_eq!(duration(7 * 60 + 3), "7m 3s");
        assert_eq!(duration(5 * 3600 + 120), "5h 2m");
        assert_eq!(duration(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
        assert_eq!(duration(-90), "-1m 30s");
    }

    #[test]
    fn ether_amounts() {
        assert_eq!(ether(U256::ZERO), "0 ETH");
        assert_eq!(ether(U256::from(1_500_000_000_000_000_000u128)), "1.5 ETH");
        assert_eq!(ether(U256::from(1u8)), "0.000000000000000001 ETH");
        assert_eq!(ether_str("2000000000000000000"), "2 ETH");
        assert_eq!(ether_str("n/a"), "n/a");
    }

    #[test]
    fn compact_use_of_caps() {
        let wei = |w: u128| Some(U256::from(w));
        assert_eq!(
            ether_of(wei(200_000_000_000_000_000), wei(1_500_000_000_000_000_000)),
            "0.2/1.5 ETH"
        );
        assert_eq!(ether_of(wei(0), wei(10_000_000_000_000_000)), "0/0.01 ETH");
        assert_eq!(ether_of(None, wei(1_000_000_000_000_000_000)), "?/1 ETH");
        assert_eq!(ether_of(wei(5), None), "?");
        assert_eq!(
            ether_of(wei(337_687_827_698_796), wei(1_000_000_000_000_000_000)),
            "~0.000337/1 ETH"
        );
        assert_eq!(
            ether_of(wei(1), wei(1_000_000_000_000)),
            "<0.000001/0.000001 ETH"
        );
        assert_eq!(
            ether_short(U256::from(2_500_000_000_000_000_000u128)),
            "2.5"
        );
        assert_eq!(ops_of(Some(3), Some(10)), "3/10");
        assert_eq!(ops_of(Some(3), Some(0)), "3/∞");
        assert_eq!(ops_of(None, Some(10)), "?/10");
        assert_eq!(ops_of(None, Some(0)), "?/∞");
        assert_eq!(ops_of(Some(1), None), "?");
    }

    #[test]
    fn periodic_budgets() {
        assert_eq!(period_name(3600), "hour");
        assert_eq!(period_name(86_400), "day");
        assert_eq!(period_name(604_800), "week");
        assert_eq!(period_name(2 * 86_400), "2 days");
        assert_eq!(period_name(5400), "90 minutes");
        assert_eq!(period_name(60), "minute");
        assert_eq!(period_name(75), "75 s");
        let wei = |w: u128| Some(U256::from(w));
        assert_eq!(
            per_period(
                wei(20_000_000_000_000_000),
                wei(100_000_000_000_000_000),
                Some(86_400)
            ),
            "0.02/0.1 ETH per day"
        );
        assert_eq!(
            per_period(None, wei(100_000_000_000_000_000), Some(3 * 3600)),
            "?/0.1 ETH per 3 hours"
        );
        assert_eq!(per_period(wei(0), wei(0), Some(0)), "-");
        assert_eq!(per_period(None, None, None), "?");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        t.row(vec!["é".into(), "".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x\né\n");
    }
}
