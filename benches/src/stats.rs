//! What one client saw, merged into run figures; and what `/proc` says
//! about the server's memory and CPU.

/// Which measured ticks one client has seen, to count gaps and duplicates.
#[derive(Debug, Clone)]
pub struct Seen {
    events: u64,
    bits: Vec<u64>,
    unique: u64,
    duplicates: u64,
}

impl Seen {
    /// Tracks ticks `0..events`.
    pub fn new(events: u64) -> Seen {
        Seen {
            events,
            bits: vec![0; events.div_ceil(64) as usize],
            unique: 0,
            duplicates: 0,
        }
    }

    /// Records tick `seq`; `false` when it is out of range or seen before.
    pub fn record(&mut self, seq: u64) -> bool {
        if seq >= self.events {
            return false;
        }
        let w = &mut self.bits[(seq / 64) as usize];
        let bit = 1u64 << (seq % 64);
        if *w & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        *w |= bit;
        self.unique += 1;
        true
    }

    /// Distinct ticks seen.
    pub fn unique(&self) -> u64 {
        self.unique
    }

    /// Ticks seen more than once (each extra copy counts).
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

/// The `q`-quantile (0..=1) of sorted samples, nearest-rank; 0 when empty.
pub fn quantile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The resident set of process `pid` (or `"self"`) in KiB (`VmRSS`).
pub fn rss_kb(pid: &str) -> Option<u64> {
    status_kb(pid, "VmRSS:")
}

/// The peak resident set of process `pid` so far in KiB (`VmHWM`).
pub fn peak_rss_kb(pid: &str) -> Option<u64> {
    status_kb(pid, "VmHWM:")
}

fn status_kb(pid: &str, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, key)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds (user + system) process `pid` (or `"self"`) has used so far.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name may hold spaces; the fields after its ')' are fixed.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after ')'.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux userland this runs on.
    Some(ticks as f64 / 100.0)
}

/// Machine-wide CPU ticks from `/proc/stat`: (busy, total). Busy is all but
/// idle and iowait; the share shows whether the cores were saturated (the
/// load generator shares them with the server, and with anything else running).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine_ticks(&stat)
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().ok())
        .collect::<Option<_>>()?;
    // Guest time is already counted in user time.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_gaps_and_duplicates() {
        let mut seen = Seen::new(100);
        assert!(seen.record(0));
        assert!(seen.record(99));
        assert!(!seen.record(99));
        assert!(!seen.record(100));
        assert_eq!((seen.unique(), seen.duplicates()), (2, 1));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tx\nVmHWM:\t 2000 kB\nVmRSS:\t   1234 kB\nVmData: 1 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(1234));
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(2000));
        // The peak is read second: it covers the resident set read before it.
        let rss = rss_kb("self").unwrap();
        assert!(peak_rss_kb("self").unwrap() >= rss);
        let stat = "42 (a b) S 1 42 42 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
        assert!(rss_kb("self").unwrap() > 0);
        assert!(cpu_seconds("self").is_some());
        assert_eq!(
            parse_machine_ticks("cpu  10 0 5 80 5 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\n"),
            Some((15, 100))
        );
        assert!(machine_ticks().is_some());
    }
}
